//! What each step did in one saga, and how each state is drawn.

use super::INK;
use crate::definition::graph::Mark;
use crate::definition::model::Definition;

/// What a step's command or compensation did in one saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Pending,
    Succeeded,
    Compensated,
    Failed,
    Unknown,
    Current,
    Skipped,
}

/// How a state is drawn: fill, stroke, text colour.
pub(super) struct Paint {
    pub fill: &'static str,
    pub stroke: &'static str,
    pub ink: &'static str,
}

impl State {
    pub const LEGEND: [State; 7] = [
        State::Succeeded,
        State::Current,
        State::Failed,
        State::Unknown,
        State::Compensated,
        State::Skipped,
        State::Pending,
    ];

    /// From a [`Mark`] class; anything else has not been reached.
    pub fn of(class: Option<&str>) -> State {
        match class {
            Some("succeeded") => State::Succeeded,
            Some("compensated") => State::Compensated,
            Some("failed") => State::Failed,
            Some("unknown") => State::Unknown,
            Some("current") => State::Current,
            Some("skipped") => State::Skipped,
            _ => State::Pending,
        }
    }

    /// The `data-state` value: the Mermaid class name, so both charts agree.
    pub fn attr(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Succeeded => "succeeded",
            State::Compensated => "compensated",
            State::Failed => "failed",
            State::Unknown => "unknown",
            State::Current => "current",
            State::Skipped => "skipped",
        }
    }

    /// What a reader sees in the node and the legend.
    pub fn text(self) -> &'static str {
        match self {
            State::Pending => "not reached",
            State::Unknown => "timed out",
            State::Current => "in flight",
            other => other.attr(),
        }
    }

    pub fn paint(self) -> Paint {
        let (fill, stroke, ink) = match self {
            State::Pending => ("#ffffff", "#64748b", INK),
            State::Succeeded => ("#bbf7d0", "#15803d", INK),
            State::Compensated => ("#bfdbfe", "#1d4ed8", INK),
            State::Failed => ("#fecaca", "#b91c1c", INK),
            State::Unknown => ("#fed7aa", "#c2410c", INK),
            State::Current => ("#e0e7ff", "#4338ca", INK),
            State::Skipped => ("#f3f4f6", "#9ca3af", "#4b5563"),
        };
        Paint { fill, stroke, ink }
    }
}

/// The states of every step, pending where there are no marks.
pub(super) struct States(Vec<(State, State)>);

impl States {
    pub fn new(def: &Definition, marks: Option<&[Mark]>) -> States {
        let mut states = vec![(State::Pending, State::Pending); def.steps.len()];
        for (s, m) in states.iter_mut().zip(marks.unwrap_or_default()) {
            *s = (State::of(m.command), State::of(m.compensation));
        }
        States(states)
    }

    pub fn command(&self, step: usize) -> State {
        self.0[step].0
    }

    pub fn compensation(&self, step: usize) -> State {
        self.0[step].1
    }
}
