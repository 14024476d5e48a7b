//! The saga engine: a pure, deterministic state machine.
//!
//! `apply(instance, definition, event, env)` returns the next instance and the effects
//! (messages, timers, lifecycle events, history) the caller must carry out. It does no
//! I/O and reads no clock or RNG: the same inputs always give the same outputs, which is
//! what lets the runtime replay a transition after a crash and lets tests drive any
//! interleaving of replies, timeouts and operator actions.

mod attempt;
mod compensate;
pub mod effect;
pub mod event;
mod forward;
pub mod instance;
mod late;
mod machine;
mod operator;
mod vars;

pub use effect::{Effect, HistoryEntry, HistoryKind, Lifecycle, LifecycleKind, Outgoing, Timer};
pub use event::{Env, Event, Phase, Rejection, Reply, Resolution};
pub use instance::{Failure, FailurePhase, Instance, SagaStatus, StepState, StepStatus, Track};
pub use machine::command_id;

use crate::definition::Definition;
use machine::Machine;

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub instance: Instance,
    pub effects: Vec<Effect>,
}

impl Transition {
    /// Whether the event changed the saga's state (an ignored duplicate does not).
    pub fn changed(&self, before: &Instance) -> bool {
        self.instance != *before
    }
}

/// Applies `event` to `instance`, which must run on `def` (the same name and version).
pub fn apply(
    instance: &Instance,
    def: &Definition,
    event: Event,
    env: Env,
) -> Result<Transition, Rejection> {
    let mut m = Machine::new(def, instance, env);
    let step_index = |name: &str| {
        def.steps
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Rejection::UnknownStep(name.to_owned()))
    };
    match event {
        Event::Start => {
            let started = instance.stage > 0
                || instance
                    .steps
                    .iter()
                    .any(|s| s.forward.status != StepStatus::Pending);
            if started {
                return Err(Rejection::AlreadyStarted);
            }
            if let Err(errors) = def.validate_input(&instance.input) {
                return Err(Rejection::InvalidInput(
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.path, e.message))
                        .collect(),
                ));
            }
            m.start();
        }
        Event::Reply(reply) => {
            let idx = step_index(&reply.step)?;
            if reply.topic != def.reply_topic {
                return Err(Rejection::WrongReplyTopic {
                    expected: def.reply_topic.clone(),
                    got: reply.topic,
                });
            }
            m.on_reply(idx, reply);
        }
        Event::StepTimeout {
            step,
            phase,
            attempt,
        } => {
            m.on_timeout(step_index(&step)?, phase, attempt);
        }
        Event::RetryDue {
            step,
            phase,
            attempt,
        } => {
            m.on_retry_due(step_index(&step)?, phase, attempt);
        }
        Event::Deadline => m.on_deadline(),
        Event::Abort { reason, actor } => m.on_abort(reason, actor)?,
        Event::Retry { actor } => m.on_retry(actor)?,
        Event::Resolve {
            step,
            phase,
            attempt,
            outcome,
            reason,
            actor,
        } => m.on_resolve(step_index(&step)?, phase, attempt, outcome, reason, actor)?,
        Event::Terminate { reason, actor } => m.on_terminate(reason, actor)?,
    }
    let mut next = m.inst;
    if next != *instance {
        next.updated_at = env.now;
    }
    Ok(Transition {
        instance: next,
        effects: m.effects,
    })
}

#[cfg(test)]
mod tests;
