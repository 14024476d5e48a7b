pub mod config;
pub mod definition;
pub mod engine;
pub mod messaging;
pub mod runtime;
pub mod simulate;
pub mod store;
