//! Model-based tests: random interleavings of replies, duplicates, stale replies,
//! timers and operator actions, checked against the engine's invariants.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::fixtures::{ORDER, TRIP, definition, t0};
use crate::definition::{Definition, ReplyClass};
use crate::engine::{
    Effect, Env, Event, HistoryKind, Instance, Outgoing, Phase, Reply, Resolution, SagaStatus,
    StepStatus, Timer, apply,
};

#[derive(Debug, Clone)]
enum Action {
    /// Answer the `pick`-th message sent so far with an outcome chosen by `outcome`.
    Reply {
        pick: usize,
        outcome: u8,
    },
    /// Deliver again a reply that was already delivered.
    Duplicate {
        pick: usize,
    },
    /// Fire the `pick`-th pending timer (time jumps to it).
    FireTimer {
        pick: usize,
    },
    Abort,
    Retry,
    /// An operator settles the `pick`-th step's command (or compensation) by hand.
    Resolve {
        pick: usize,
        compensation: bool,
        succeed: bool,
        pinned: bool,
    },
    Terminate,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (any::<usize>(), 0u8..4).prop_map(|(pick, outcome)| Action::Reply { pick, outcome }),
        2 => any::<usize>().prop_map(|pick| Action::Duplicate { pick }),
        3 => any::<usize>().prop_map(|pick| Action::FireTimer { pick }),
        1 => Just(Action::Abort),
        1 => Just(Action::Retry),
        1 => (any::<usize>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(pick, compensation, succeed, pinned)| Action::Resolve { pick, compensation, succeed, pinned }
        ),
        1 => Just(Action::Terminate),
    ]
}

struct World {
    def: Definition,
    inst: Instance,
    now: DateTime<Utc>,
    seed: u64,
    sent: Vec<Outgoing>,
    timers: BTreeMap<Timer, DateTime<Utc>>,
    delivered: Vec<Reply>,
    /// (step, phase, attempt) of every message ever emitted.
    emitted: HashSet<(String, Phase, u32)>,
    /// Step of each compensation's first attempt, in the order they went out.
    compensation_order: Vec<String>,
    /// `settled_seq` of each step at the time its compensation first went out.
    settled_at_compensation: HashMap<String, Option<u64>>,
    pivot_succeeded_at: Option<usize>,
    compensations_after_pivot: usize,
    /// (step, phase, attempt) of every attempt a reply of a declared type has reached.
    answered: HashSet<(String, Phase, u32)>,
}

impl World {
    fn new(source: &str, input: serde_json::Value, seed: u64) -> World {
        let def = definition(source);
        let inst = Instance::new(Uuid::from_u128(u128::from(seed)), &def, input, None, t0());
        let mut w = World {
            def,
            inst,
            now: t0(),
            seed,
            sent: Vec::new(),
            timers: BTreeMap::new(),
            delivered: Vec::new(),
            emitted: HashSet::new(),
            compensation_order: Vec::new(),
            settled_at_compensation: HashMap::new(),
            pivot_succeeded_at: None,
            compensations_after_pivot: 0,
            answered: HashSet::new(),
        };
        w.apply(Event::Start);
        w
    }

    fn apply(&mut self, event: Event) {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let env = Env {
            now: self.now,
            random: self.seed,
        };
        let event_copy = event.clone();
        let first = apply(&self.inst, &self.def, event.clone(), env);
        let again = apply(&self.inst, &self.def, event, env);
        // Invariant 5: same inputs, same outputs.
        assert_eq!(first, again, "apply is not deterministic");
        let Ok(t) = first else { return };
        if self.inst.status == SagaStatus::Terminated {
            // Invariant 6: a terminated saga emits nothing more and stays terminated.
            assert_eq!(t.instance.status, SagaStatus::Terminated);
            assert!(
                t.effects.iter().all(|e| matches!(e, Effect::Record(_))),
                "a terminated saga acted: {:?}",
                t.effects
            );
        }
        if let Event::Reply(r) = &event_copy {
            self.check_duplicates(r, &t.effects);
        }
        self.inst = t.instance;
        for effect in t.effects {
            match effect {
                Effect::SendCommand(o) | Effect::SendCompensation(o) => {
                    // Invariant 3: never two messages for the same (step, phase, attempt).
                    let id = (o.step.clone(), o.phase, o.attempt);
                    assert!(
                        self.emitted.insert(id),
                        "second message for {}#{} ({:?})",
                        o.step,
                        o.attempt,
                        o.phase
                    );
                    if o.phase == Phase::Compensation {
                        if self.pivot_succeeded_at.is_some() {
                            self.compensations_after_pivot += 1;
                        }
                        if !self.compensation_order.contains(&o.step) {
                            self.compensation_order.push(o.step.clone());
                            let idx = self.index(&o.step);
                            self.settled_at_compensation
                                .insert(o.step.clone(), self.inst.steps[idx].settled_seq);
                        }
                    }
                    self.sent.push(o);
                }
                Effect::ScheduleTimer { timer, due_at } => {
                    self.timers.insert(timer, due_at);
                }
                Effect::CancelTimer { timer } => {
                    self.timers.remove(&timer);
                }
                Effect::Publish(_) | Effect::Record(_) => {}
            }
        }
        if let Some(p) = self.def.pivot
            && self.inst.steps[p].forward.status == StepStatus::Succeeded
            && self.pivot_succeeded_at.is_none()
        {
            self.pivot_succeeded_at = Some(self.sent.len());
        }
    }

    /// Invariant 7: "duplicate" is kept for attempts that already had their answer, so
    /// no late reply is ever recorded as one.
    fn check_duplicates(&mut self, r: &Reply, effects: &[Effect]) {
        let id = (r.step.clone(), r.phase, r.attempt);
        for e in effects {
            if let Effect::Record(h) = e
                && h.kind == HistoryKind::ReplyIgnored
                && h.detail["why"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("duplicate"))
            {
                assert!(
                    self.answered.contains(&id),
                    "a first reply to {id:?} was recorded as a duplicate"
                );
            }
        }
        let idx = self.index(&r.step);
        let declared = match r.phase {
            Phase::Command => &self.def.steps[idx].reply,
            Phase::Compensation => {
                &self.def.steps[idx]
                    .compensation
                    .as_ref()
                    .expect("compensation")
                    .reply
            }
        };
        if declared.classify(&r.reply_type) != ReplyClass::Undeclared {
            self.answered.insert(id);
        }
    }

    fn resolve(&mut self, pick: usize, compensation: bool, succeed: bool, pinned: bool) {
        let idx = pick % self.def.steps.len();
        let phase = if compensation {
            Phase::Compensation
        } else {
            Phase::Command
        };
        let event = Event::Resolve {
            step: self.def.steps[idx].name.clone(),
            phase,
            attempt: pinned.then(|| self.inst.steps[idx].track(phase).attempt),
            outcome: if succeed {
                Resolution::Succeeded {
                    payload: json!({"id": "by hand"}),
                }
            } else {
                Resolution::Failed { payload: None }
            },
            reason: "test".into(),
            actor: "prop".into(),
        };
        let env = Env {
            now: self.now,
            random: self.seed,
        };
        let accepted = apply(&self.inst, &self.def, event.clone(), env).is_ok();
        self.apply(event.clone());
        if accepted && pinned {
            // Invariant 8: the same resolution, sent again, is refused: it applies once.
            let again = apply(&self.inst, &self.def, event, env);
            assert!(again.is_err(), "a repeated resolution was applied again");
        }
    }

    fn index(&self, step: &str) -> usize {
        self.def
            .steps
            .iter()
            .position(|s| s.name == step)
            .expect("known step")
    }

    fn reply_to(&self, o: &Outgoing, outcome: u8) -> Reply {
        let step = &self.def.steps[self.index(&o.step)];
        let spec = match o.phase {
            Phase::Command => &step.reply,
            Phase::Compensation => &step.compensation.as_ref().expect("compensation").reply,
        };
        let retryable = spec
            .failure
            .iter()
            .find(|f| f.retryable)
            .map(|f| f.reply_type.clone());
        let fatal = spec
            .failure
            .iter()
            .find(|f| !f.retryable)
            .map(|f| f.reply_type.clone());
        let reply_type = match (o.phase, outcome) {
            (_, 0) => spec.success[0].clone(),
            (Phase::Command, 1) => fatal.unwrap_or_else(|| spec.success[0].clone()),
            (Phase::Compensation, 1) => spec.success[0].clone(),
            (_, 2) => retryable.unwrap_or_else(|| spec.success[0].clone()),
            (Phase::Command, _) => "undeclared".to_owned(),
            (Phase::Compensation, _) => fatal.unwrap_or_else(|| "undeclared".to_owned()),
        };
        Reply {
            step: o.step.clone(),
            phase: o.phase,
            attempt: o.attempt,
            reply_type,
            payload: json!({"id": o.attempt}),
            message_id: format!("{}-{outcome}", o.command_id),
            topic: o.reply_topic.clone(),
            source: "/participant".into(),
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Reply { pick, outcome } if !self.sent.is_empty() => {
                let o = self.sent[pick % self.sent.len()].clone();
                let reply = self.reply_to(&o, outcome);
                self.delivered.push(reply.clone());
                self.apply(Event::Reply(reply));
            }
            Action::Duplicate { pick } if !self.delivered.is_empty() => {
                let reply = self.delivered[pick % self.delivered.len()].clone();
                let before = self.inst.clone();
                let env = Env {
                    now: self.now,
                    random: self.seed,
                };
                let t = apply(&before, &self.def, Event::Reply(reply), env).expect("known step");
                // Invariant 3b: a duplicate delivery changes nothing.
                assert_eq!(t.instance, before, "a duplicate reply changed the saga");
                assert!(t.effects.iter().all(|e| matches!(e, Effect::Record(_))));
            }
            Action::FireTimer { pick } if !self.timers.is_empty() => {
                let (timer, due) = self
                    .timers
                    .iter()
                    .nth(pick % self.timers.len())
                    .map(|(t, d)| (t.clone(), *d))
                    .expect("non-empty");
                self.timers.remove(&timer);
                self.now = self.now.max(due);
                self.apply(timer.into_event());
            }
            Action::Abort => self.apply(Event::Abort {
                reason: "test".into(),
                actor: "prop".into(),
            }),
            Action::Retry => self.apply(Event::Retry {
                actor: "prop".into(),
            }),
            Action::Resolve {
                pick,
                compensation,
                succeed,
                pinned,
            } => self.resolve(pick, compensation, succeed, pinned),
            Action::Terminate => self.apply(Event::Terminate {
                reason: "test".into(),
                actor: "prop".into(),
            }),
            _ => {}
        }
    }

    /// Participants now always answer success; timers fire in due order. Returns when
    /// the saga is terminal or waits for an operator.
    fn drain(&mut self) {
        for _ in 0..500 {
            if self.inst.status.is_terminal() || self.inst.status == SagaStatus::Failed {
                return;
            }
            let awaited = self.sent.iter().find(|o| {
                let t = self.inst.steps[self.index(&o.step)].track(o.phase);
                t.status == StepStatus::Running && t.attempt == o.attempt
            });
            if let Some(o) = awaited.cloned() {
                let reply = self.reply_to(&o, 0);
                self.apply(Event::Reply(reply));
                continue;
            }
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, d)| **d)
                .map(|(t, d)| (t.clone(), *d));
            let Some((timer, due)) = next else {
                panic!(
                    "stuck: {:?} with nothing in flight and no timer",
                    self.inst.status
                );
            };
            self.timers.remove(&timer);
            self.now = self.now.max(due);
            self.apply(timer.into_event());
        }
        panic!("did not settle within 500 events: {:?}", self.inst.status);
    }

    fn check_compensation_invariants(&self) {
        // Invariant 4: after the pivot, no compensation is ever emitted.
        assert_eq!(
            self.compensations_after_pivot, 0,
            "compensation after the pivot"
        );
        // Invariant 2a: only steps whose command went out are compensated.
        for step in &self.compensation_order {
            let st = &self.inst.steps[self.index(step)];
            assert!(st.command_sent(), "{step} compensated but never sent");
            assert_ne!(st.forward.status, StepStatus::Skipped);
        }
        // Invariant 2b: in reverse order of settling.
        let seqs: Vec<_> = self
            .compensation_order
            .iter()
            .map(|s| self.settled_at_compensation[s])
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "compensation order {:?} by settle seq {seqs:?}",
            self.compensation_order
        );
        // Invariant 2c: once compensated, every step that went out and can be undone was.
        if self.inst.status == SagaStatus::Compensated {
            for (i, st) in self.inst.steps.iter().enumerate() {
                let undoable = self.def.steps[i].compensation.is_some();
                if st.command_sent() && undoable {
                    assert_eq!(
                        st.compensation.status,
                        StepStatus::Succeeded,
                        "{} not compensated",
                        self.def.steps[i].name
                    );
                }
            }
        }
    }
}

fn run(source: &str, input: serde_json::Value, seed: u64, actions: Vec<Action>) {
    let mut w = World::new(source, input, seed);
    for a in actions {
        w.act(a);
        w.check_compensation_invariants();
    }
    // Invariant 1: with participants that answer, the saga settles or waits for an operator...
    w.drain();
    w.check_compensation_invariants();
    // ...and an operator's retry, with participants that answer, always finishes it.
    for _ in 0..3 {
        if w.inst.status == SagaStatus::Failed {
            w.apply(Event::Retry {
                actor: "prop".into(),
            });
            w.drain();
            w.check_compensation_invariants();
        }
    }
    assert!(
        w.inst.status.is_terminal(),
        "not terminal after operator retries: {:?}",
        w.inst.status
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn order_saga_invariants(seed in any::<u64>(), actions in prop::collection::vec(action(), 0..40)) {
        run(ORDER, json!({"order_id": "o", "amount": 5}), seed, actions);
    }

    #[test]
    fn trip_saga_invariants(seed in any::<u64>(), car in any::<bool>(), actions in prop::collection::vec(action(), 0..40)) {
        run(TRIP, json!({"car": car}), seed, actions);
    }
}
