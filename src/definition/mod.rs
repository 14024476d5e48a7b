//! Saga definitions: YAML in, validated [`Definition`] out.

pub mod diagnostic;
pub mod duration;
pub mod model;
pub mod node;
mod reader;
pub mod template;

pub use diagnostic::Diagnostic;
pub use model::*;
