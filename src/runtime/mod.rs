//! Wiring: the apply-persist-acknowledge loop, timers, supervision and shutdown.

pub mod registry;
pub mod transition;
