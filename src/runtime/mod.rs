//! Wiring: the apply-persist-acknowledge loop, timers, supervision and shutdown.

pub mod dev;
pub mod intake;
pub mod registry;
pub mod reload;
pub mod retention;
pub mod service;
pub mod start;
pub mod start_queue;
pub mod supervise;
pub mod timers;
pub mod transition;
pub mod trigger;
