//! The participant contract in machine-readable form, derived from the definitions:
//! an AsyncAPI document (`GET /v1/asyncapi`, `sagaflow asyncapi`), the table of reply
//! fields each step needs (docs/protocol.md), and the contract test participant teams
//! run against their service (`sagaflow contract-test`).

pub mod asyncapi;
pub mod check;
pub mod cli;
mod derive;
pub mod example;
pub mod fields;
pub mod probe;

pub use asyncapi::{ContractTopics, document};
pub use fields::reply_fields_table;
