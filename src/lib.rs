pub mod definition;
pub mod engine;
