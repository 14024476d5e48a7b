//! Saga definitions: YAML in, validated [`Definition`] out.

pub mod graph;
pub mod model;
pub mod node;
pub mod template;

pub use model::*;
