#![allow(clippy::unwrap_used)]

mod fixtures;
mod model;
mod rules;
