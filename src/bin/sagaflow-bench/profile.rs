//! `sagaflow-bench profile --sagas N`: the service's CPU path for N sagas of the
//! example order-fulfilment definition, with every step answered, and no I/O: the reply
//! decoded as the consumer decodes it, the engine's transition, and its staging into a
//! write batch (outbox records encoded, the saga's state serialized). Single-threaded
//! and deterministic, so `scripts/profile` can run it under valgrind (callgrind for
//! instructions, DHAT for allocations) and divide by the steps: figures that do not
//! move with the machine's load. What it leaves out is I/O: the database's statements
//! and commits, and the broker clients.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::Utc;
use sagaflow::definition::{self, Definition};
use sagaflow::engine::{self, Effect, Env, Event, Instance, Outgoing, Reply, Transition};
use sagaflow::messaging::envelope::{self, Record};
use sagaflow::messaging::reply_token::{EXT_TOKEN, ReplyKeys};
use sagaflow::participant;
use sagaflow::runtime::intake;
use sagaflow::runtime::registry::Registry;
use sagaflow::runtime::transition::{Applier, TransitionSettings};
use sagaflow::store::{Store, WriteBatch};
use serde_json::Value as Json;
use uuid::Uuid;

/// Runs `sagas` sagas to completion; prints the steps taken.
pub async fn run(sagas: usize) -> anyhow::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sagas");
    let (defs, diags) = definition::load_dir(std::path::Path::new(dir));
    if !diags.is_empty() {
        bail!("example sagas invalid: {diags:?}");
    }
    let def = defs
        .iter()
        .find(|d| d.name == "order-fulfilment")
        .cloned()
        .context("sagas/order-fulfilment.yaml")?;
    let keys = Arc::new(ReplyKeys::new(vec![ReplyKeys::random_key()], true)?);
    let applier = Applier {
        // Never connected: staging does no I/O.
        store: Store::from_pool(sqlx::PgPool::connect_lazy(
            "postgres://unused@127.0.0.1/unused",
        )?),
        registry: Arc::new(Registry::new(defs.clone())),
        settings: Arc::new(TransitionSettings {
            lifecycle_topic: Some("sagaflow.lifecycle".into()),
            source: "/sagaflow".into(),
            reply_keys: keys.clone(),
            lifecycle_input: false,
            lifecycle_steps: true,
        }),
    };
    let input = def.example_input().cloned().context("an example input")?;
    let replies = sagaflow::simulate::synthesized_replies(&def);
    let mut steps = 0;
    for _ in 0..sagas {
        steps += saga(&applier, &def, &keys, &input, &replies)?;
    }
    println!("sagas {sagas} steps {steps}");
    Ok(())
}

/// One saga from start to end; the steps answered.
fn saga(
    applier: &Applier,
    def: &Definition,
    keys: &ReplyKeys,
    input: &Json,
    replies: &HashMap<String, Json>,
) -> anyhow::Result<usize> {
    let inst = Instance::new(Uuid::now_v7(), def, input.clone(), None, Utc::now());
    let mut t = engine_phase(&inst, def, Event::Start)?;
    stage_phase(applier, def, &t);
    let mut steps = 0;
    while let Some(command) = sent(&t) {
        let record = answer(def, keys, t.instance.id, command, replies)?;
        let reply = decode_phase(keys, &record)?;
        t = engine_phase(&t.instance, def, reply)?;
        stage_phase(applier, def, &t);
        steps += 1;
    }
    Ok(steps)
}

fn sent(t: &Transition) -> Option<&Outgoing> {
    t.effects.iter().find_map(|e| match e {
        Effect::SendCommand(o) => Some(o),
        _ => None,
    })
}

/// The participant's success reply to `o`, as it goes on the wire (not profiled).
fn answer(
    def: &Definition,
    keys: &ReplyKeys,
    saga_id: Uuid,
    o: &Outgoing,
    replies: &HashMap<String, Json>,
) -> anyhow::Result<Record> {
    let step = def.step(&o.step).context("step")?;
    let command = participant::Command {
        saga_id,
        definition: def.name.clone(),
        step: o.step.clone(),
        attempt: o.attempt,
        phase: o.phase,
        command_type: o.message_type.clone(),
        command_id: o.command_id.to_string(),
        payload: o.payload.clone(),
        reply_to: o.reply_topic.clone(),
        token: Some(keys.sign(o.command_id)),
        traceparent: None,
        tracestate: None,
    };
    let payload = replies.get(&o.step).cloned().unwrap_or_default();
    Ok(participant::reply_record(
        &command,
        &step.reply.success[0],
        &payload,
    ))
}

/// What the consumer does with a reply before the engine: decode the CloudEvent, check
/// it, find its command, check its token.
#[inline(never)]
fn decode_phase(keys: &ReplyKeys, r: &Record) -> anyhow::Result<Event> {
    let headers: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let ev = envelope::decode(&headers, Some(&r.payload))?;
    if let Some(problem) = intake::event_problem(&ev) {
        bail!("invalid reply: {problem}");
    }
    let addr = envelope::reply_address(&ev)?;
    let command = engine::command_id(addr.saga_id, &addr.step, addr.phase, addr.attempt);
    keys.check(command, ev.ext(EXT_TOKEN))
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    Ok(Event::Reply(Reply {
        step: addr.step,
        phase: addr.phase,
        attempt: addr.attempt,
        reply_type: ev.event_type,
        payload: ev.data,
        message_id: ev.id,
        topic: r.topic.clone(),
        source: ev.source,
    }))
}

#[inline(never)]
fn engine_phase(inst: &Instance, def: &Definition, event: Event) -> anyhow::Result<Transition> {
    let env = Env {
        now: Utc::now(),
        random: 7,
    };
    engine::apply(inst, def, event, env).map_err(|r| anyhow::anyhow!("{r}"))
}

/// The transition's rows: outbox records, timers, history, and the saga's state.
#[inline(never)]
fn stage_phase(applier: &Applier, def: &Definition, t: &Transition) {
    let mut batch = WriteBatch::default();
    applier.stage(&mut batch, def, t, None, Utc::now());
    batch.update_saga(&t.instance, t.instance.spotlight_step(def));
    black_box(batch);
}
