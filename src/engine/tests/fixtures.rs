//! Definitions and a tiny driver shared by the engine's tests.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::definition::{Definition, parse_definition};
use crate::engine::{Effect, Env, Event, Instance, Outgoing, Phase, Reply, Transition, apply};

/// reserve → authorize → capture (pivot) → ship.
pub const ORDER: &str = r#"
name: order
defaults:
  timeout: 5s
  retry: {max_attempts: 2, initial_interval: 100ms, multiplier: 2.0, max_interval: 1s, jitter: 0.5}
steps:
  - name: reserve
    command: {topic: inventory, type: reserve, payload: {order: "{{ input.order_id }}"}}
    reply:
      success: [reserved]
      failure: [{type: out_of_stock, retryable: false}, {type: busy, retryable: true}]
    compensation:
      topic: inventory
      type: release
      payload: {reservation: "{{ steps.reserve.reply.id | default(none) }}"}
      reply: {success: [released], failure: [{type: busy, retryable: true}, {type: broken}]}
      retry: {max_attempts: 2}
  - name: authorize
    command: {topic: payments, type: authorize, payload: {amount: "{{ input.amount }}", reservation: "{{ steps.reserve.reply.id }}"}}
    reply:
      success: [authorized]
      failure: [{type: declined, retryable: false}, {type: busy, retryable: true}]
    compensation:
      topic: payments
      type: void
      reply: {success: [voided], failure: [{type: busy, retryable: true}, {type: broken}]}
      retry: {max_attempts: 2}
  - name: capture
    pivot: true
    command: {topic: payments, type: capture}
    reply:
      success: [captured]
      failure: [{type: declined}, {type: busy, retryable: true}]
  - name: ship
    command: {topic: shipping, type: ship}
    reply:
      success: [shipped]
      failure: [{type: no_courier}, {type: busy, retryable: true}]
output:
  tracking: "{{ steps.ship.reply.tracking }}"
"#;

/// prepare → (flight, hotel, car in parallel) → confirm (no pivot).
pub const TRIP: &str = r#"
name: trip
deadline: 1h
defaults:
  timeout: 5s
  retry: {max_attempts: 2, initial_interval: 100ms}
steps:
  - name: prepare
    command: {topic: trips, type: prepare}
    reply: {success: [prepared], failure: [{type: busy, retryable: true}, {type: nope}]}
    compensation: none
  - parallel:
      name: book
      steps:
        - name: flight
          command: {topic: flights, type: book}
          reply: {success: [booked], failure: [{type: busy, retryable: true}, {type: nope}]}
          compensation: {topic: flights, type: cancel, reply: {success: [cancelled], failure: [{type: busy, retryable: true}, {type: broken}]}}
        - name: hotel
          command: {topic: hotels, type: book}
          reply: {success: [booked], failure: [{type: busy, retryable: true}, {type: nope}]}
          compensation: {topic: hotels, type: cancel, reply: {success: [cancelled], failure: [{type: busy, retryable: true}, {type: broken}]}}
        - name: car
          when: "input.car"
          command: {topic: cars, type: book}
          reply: {success: [booked], failure: [{type: busy, retryable: true}, {type: nope}]}
          compensation: {topic: cars, type: cancel, reply: {success: [cancelled], failure: [{type: busy, retryable: true}, {type: broken}]}}
  - name: confirm
    command: {topic: trips, type: confirm, payload: {flight: "{{ steps.flight.reply }}"}}
    reply: {success: [confirmed], failure: [{type: busy, retryable: true}, {type: nope}]}
    compensation: {topic: trips, type: unconfirm, reply: {success: [unconfirmed], failure: [{type: busy, retryable: true}, {type: broken}]}}
"#;

pub fn definition(source: &str) -> Definition {
    match parse_definition("test.yaml", source) {
        Ok(d) => d,
        Err(diags) => panic!(
            "fixture must be valid: {}",
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

/// One saga driven event by event, collecting everything it emitted.
pub struct Driver {
    pub def: Definition,
    pub inst: Instance,
    pub now: DateTime<Utc>,
    pub effects: Vec<Effect>,
    pub last: Vec<Effect>,
}

impl Driver {
    pub fn start(source: &str, input: Json) -> Driver {
        let def = definition(source);
        let inst = Instance::new(Uuid::from_u128(7), &def, input, None, t0());
        let mut d = Driver {
            def,
            inst,
            now: t0(),
            effects: Vec::new(),
            last: Vec::new(),
        };
        d.apply(Event::Start);
        d
    }

    pub fn try_apply(&mut self, event: Event) -> Result<Transition, crate::engine::Rejection> {
        let env = Env {
            now: self.now,
            random: 42,
        };
        let t = apply(&self.inst, &self.def, event, env)?;
        self.inst = t.instance.clone();
        self.last = t.effects.clone();
        self.effects.extend(t.effects.clone());
        Ok(t)
    }

    pub fn apply(&mut self, event: Event) -> Transition {
        match self.try_apply(event) {
            Ok(t) => t,
            Err(e) => panic!("event rejected: {e}"),
        }
    }

    pub fn reply(
        &mut self,
        step: &str,
        attempt: u32,
        reply_type: &str,
        payload: Json,
    ) -> Transition {
        self.reply_phase(step, Phase::Command, attempt, reply_type, payload)
    }

    pub fn comp_reply(&mut self, step: &str, attempt: u32, reply_type: &str) -> Transition {
        self.reply_phase(step, Phase::Compensation, attempt, reply_type, json!({}))
    }

    pub fn reply_phase(
        &mut self,
        step: &str,
        phase: Phase,
        attempt: u32,
        reply_type: &str,
        payload: Json,
    ) -> Transition {
        self.apply(Event::Reply(Reply {
            step: step.into(),
            phase,
            attempt,
            reply_type: reply_type.into(),
            payload,
            message_id: format!("{step}-{}-{attempt}-{reply_type}", phase.as_str()),
            topic: self.def.reply_topic.clone(),
            source: "/participant".into(),
        }))
    }

    pub fn timeout(&mut self, step: &str, phase: Phase, attempt: u32) -> Transition {
        self.apply(Event::StepTimeout {
            step: step.into(),
            phase,
            attempt,
        })
    }

    pub fn retry_due(&mut self, step: &str, phase: Phase, attempt: u32) -> Transition {
        self.apply(Event::RetryDue {
            step: step.into(),
            phase,
            attempt,
        })
    }

    /// Messages emitted by the last transition, as `phase:step#attempt`.
    pub fn last_sent(&self) -> Vec<String> {
        sent(&self.last)
    }

    /// Every message emitted so far, in order.
    pub fn all_sent(&self) -> Vec<String> {
        sent(&self.effects)
    }

    pub fn outgoing(&self) -> Vec<&Outgoing> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendCommand(o) | Effect::SendCompensation(o) => Some(o),
                _ => None,
            })
            .collect()
    }
}

pub fn sent(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendCommand(o) => Some(format!("cmd:{}#{}", o.step, o.attempt)),
            Effect::SendCompensation(o) => Some(format!("comp:{}#{}", o.step, o.attempt)),
            _ => None,
        })
        .collect()
}

pub const SCHEMA: &str = r#"
name: schema
input:
  schema: {type: object, properties: {amount: {type: number, minimum: 0}}}
steps:
  - name: only
    command: {topic: t, type: do}
    reply: {success: [done]}
    compensation: none
"#;
