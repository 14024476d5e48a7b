pub mod definition;
pub mod engine;
pub mod messaging;
pub mod simulate;
pub mod store;
