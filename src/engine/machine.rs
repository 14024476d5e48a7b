//! The transition machinery shared by the forward and compensation paths: a mutable
//! copy of the instance plus the effects emitted so far.

use chrono::Duration as ChronoDuration;
use serde_json::Value as Json;
use uuid::Uuid;

use super::effect::{Effect, HistoryEntry, HistoryKind, Lifecycle, LifecycleKind, Outgoing, Timer};
use super::event::{Env, Phase};
use super::instance::Instance;
use crate::definition::template::{Context, RenderError};
use crate::definition::{Definition, MessageSpec};

pub(super) struct Machine<'a> {
    pub def: &'a Definition,
    pub inst: Instance,
    pub env: Env,
    pub effects: Vec<Effect>,
}

impl<'a> Machine<'a> {
    pub fn new(def: &'a Definition, inst: &Instance, env: Env) -> Self {
        Machine {
            def,
            inst: inst.clone(),
            env,
            effects: Vec::new(),
        }
    }

    pub fn step_name(&self, idx: usize) -> &'a str {
        &self.def.steps[idx].name
    }

    pub fn record(&mut self, kind: HistoryKind, step: Option<usize>, detail: Json) {
        self.effects.push(Effect::Record(HistoryEntry {
            at: self.env.now,
            kind,
            step: step.map(|i| self.def.steps[i].name.clone()),
            phase: None,
            attempt: None,
            command_id: None,
            detail,
        }));
    }

    pub fn record_attempt(
        &mut self,
        kind: HistoryKind,
        step: usize,
        phase: Phase,
        attempt: u32,
        detail: Json,
    ) {
        self.effects.push(Effect::Record(HistoryEntry {
            at: self.env.now,
            kind,
            step: Some(self.def.steps[step].name.clone()),
            phase: Some(phase),
            attempt: Some(attempt),
            command_id: Some(command_id(
                self.inst.id,
                self.step_name(step),
                phase,
                attempt,
            )),
            detail,
        }));
    }

    pub fn publish(&mut self, kind: LifecycleKind, step: Option<usize>, detail: Json) {
        self.effects.push(Effect::Publish(Lifecycle {
            kind,
            step: step.map(|i| self.def.steps[i].name.clone()),
            detail,
        }));
    }

    pub fn schedule(&mut self, timer: Timer, after: std::time::Duration) {
        let delta = ChronoDuration::from_std(after).unwrap_or(ChronoDuration::MAX);
        let due_at = self
            .env
            .now
            .checked_add_signed(delta)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        self.effects.push(Effect::ScheduleTimer { timer, due_at });
    }

    pub fn cancel(&mut self, timer: Timer) {
        self.effects.push(Effect::CancelTimer { timer });
    }

    pub fn timeout_timer(&self, step: usize, phase: Phase, attempt: u32) -> Timer {
        Timer::StepTimeout {
            step: self.step_name(step).to_owned(),
            phase,
            attempt,
        }
    }

    pub fn retry_timer(&self, step: usize, phase: Phase, attempt: u32) -> Timer {
        Timer::RetryDue {
            step: self.step_name(step).to_owned(),
            phase,
            attempt,
        }
    }

    /// Gives `step` the next position in the order steps settled in.
    pub fn mark_settled(&mut self, step: usize) {
        self.inst.seq += 1;
        self.inst.steps[step].settled_seq = Some(self.inst.seq);
    }

    /// A uniform number in [0, 1) for the jitter of one (step, phase, attempt), derived
    /// from the event's seed so the same event always gives the same delay.
    pub fn jitter(&self, step: usize, phase: Phase, attempt: u32) -> f64 {
        let direction = match phase {
            Phase::Command => 0,
            Phase::Compensation => 1u64 << 31,
        };
        let mixed =
            splitmix64(self.env.random ^ ((step as u64) << 32) ^ direction ^ u64::from(attempt));
        (mixed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The variables templates can see: `input`, `saga`, and `steps.<name>.reply` for
    /// every step: its success reply, or an empty object when it has none (not reached,
    /// skipped, failed, outcome unknown). So `steps.x.reply.id | default(none)` works for
    /// a step that may not have succeeded, while a bare `steps.x.reply.id` stays an error.
    pub fn template_context(&self) -> Context {
        super::vars::context(&self.inst, self.def)
    }

    pub fn render_message(
        &self,
        step: usize,
        phase: Phase,
        attempt: u32,
        spec: &MessageSpec,
    ) -> Result<Outgoing, RenderError> {
        let ctx = self.template_context();
        let payload = spec.payload.render_in(&ctx)?;
        let key = match &spec.key {
            Some(t) => json_to_text(t.render_in(&ctx)?),
            None => self.inst.id.to_string(),
        };
        let mut headers = Vec::with_capacity(spec.headers.len());
        for (name, t) in &spec.headers {
            headers.push((name.clone(), json_to_text(t.render_in(&ctx)?)));
        }
        Ok(Outgoing {
            command_id: command_id(self.inst.id, self.step_name(step), phase, attempt),
            step: self.step_name(step).to_owned(),
            phase,
            attempt,
            topic: spec.topic.clone(),
            key,
            message_type: spec.message_type.clone(),
            payload,
            headers,
            reply_topic: self.def.reply_topic.clone(),
        })
    }
}

/// The id of one attempt's message: a name-based UUID under the saga id, so any replay
/// of the transition that emits it produces the same id.
pub fn command_id(saga: Uuid, step: &str, phase: Phase, attempt: u32) -> Uuid {
    Uuid::new_v5(
        &saga,
        format!("{}/{step}/{attempt}", phase.as_str()).as_bytes(),
    )
}

fn json_to_text(v: Json) -> String {
    match v {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
