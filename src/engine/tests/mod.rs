#![allow(clippy::unwrap_used)]

mod fixtures;
mod late_and_manual;
mod model;
mod reply_schema;
mod rules;
