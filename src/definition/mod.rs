//! Saga definitions: YAML in, validated [`Definition`] out.

mod decode;
pub mod diagnostic;
pub mod duration;
pub mod graph;
mod load;
mod lookalike;
pub mod model;
pub mod node;
mod reader;
mod schema_check;
mod schema_refs;
mod step;
pub mod svg;
pub mod template;
mod validate;

pub use diagnostic::{Diagnostic, Severity};
#[cfg(test)]
pub(crate) use load::compile_schema;
pub use load::{
    InputError, MAX_FILE_SIZE, ParseLimits, load_dir, load_file, parse_definition,
    parse_definition_within, parse_stored_definition,
};
pub use model::*;
pub(crate) use reader::closest;
