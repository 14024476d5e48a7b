//! The pure engine, event by event: what one transition costs without any I/O, so a
//! regression in the state machine shows up as a number (`cargo bench --bench engine`;
//! docs/benchmarks.md). The saga is the example order-fulfilment definition, with reply
//! payloads that satisfy its reply schemas.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use sagaflow::definition::{self, Definition};
use sagaflow::engine::{self, Env, Event, Instance, Phase, Reply};
use serde_json::{Value, json};
use uuid::Uuid;

fn order_fulfilment() -> Definition {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sagas");
    let (defs, diags) = definition::load_dir(std::path::Path::new(dir));
    assert!(diags.is_empty(), "{diags:?}");
    defs.into_iter()
        .find(|d| d.name == "order-fulfilment")
        .expect("sagas/order-fulfilment.yaml")
}

fn env() -> Env {
    Env {
        now: Utc::now(),
        random: 7,
    }
}

/// The success reply to attempt 1 of `step`'s command.
fn success(
    def: &Definition,
    replies: &std::collections::HashMap<String, Value>,
    step: &str,
) -> Event {
    let s = def.step(step).expect("step");
    Event::Reply(Reply {
        step: step.to_owned(),
        phase: Phase::Command,
        attempt: 1,
        reply_type: s.reply.success[0].clone(),
        payload: replies.get(step).cloned().unwrap_or_else(|| json!({})),
        message_id: Uuid::now_v7().to_string(),
        topic: def.reply_topic.clone(),
        source: "/bench".into(),
    })
}

fn started(def: &Definition, input: &Value) -> Instance {
    let inst = Instance::new(Uuid::now_v7(), def, input.clone(), None, Utc::now());
    engine::apply(&inst, def, Event::Start, env())
        .expect("start")
        .instance
}

fn benches(c: &mut Criterion) {
    let def = order_fulfilment();
    let input = def.example_input().cloned().expect("an example input");
    let replies = sagaflow::simulate::synthesized_replies(&def);
    let steps: Vec<String> = def.steps.iter().map(|s| s.name.clone()).collect();

    c.bench_function("engine/start", |b| {
        b.iter(|| {
            let inst = Instance::new(Uuid::now_v7(), &def, input.clone(), None, Utc::now());
            black_box(engine::apply(&inst, &def, Event::Start, env()))
        })
    });
    let running = started(&def, &input);
    let reply = success(&def, &replies, &steps[0]);
    c.bench_function("engine/reply", |b| {
        b.iter(|| black_box(engine::apply(&running, &def, reply.clone(), env())))
    });
    c.bench_function("engine/saga (start and 4 replies)", |b| {
        b.iter(|| {
            let mut inst = started(&def, &input);
            for step in &steps {
                let event = success(&def, &replies, step);
                inst = engine::apply(&inst, &def, event, env())
                    .expect("reply")
                    .instance;
            }
            black_box(inst)
        })
    });
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
