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
pub mod template;
mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{
    InputError, MAX_FILE_SIZE, ParseLimits, load_dir, load_file, parse_definition,
    parse_definition_within,
};
pub use model::*;
pub(crate) use reader::closest;
