//! `sagaflow-bench`: drives the real service (`sagaflow serve` as a child process) with
//! the real PostgreSQL and a real Kafka-protocol broker, with fast participants in this
//! process, and reports throughput, latency, CPU per step, commits per step, memory and
//! the outbox backlog per scenario; then the same for a bare-minimum baseline.
//! See docs/benchmarks.md.

mod baseline;
mod broker;
mod drain;
mod hops;
mod http;
mod metrics;
mod profile;
mod scale;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use sagaflow::config::KafkaSettings;
use sagaflow::definition::{self, Definition};
use sagaflow::messaging::kafka;
use sagaflow::messaging::reply_token::ReplyKeys;
use sagaflow::participant::{self, Decision, ParticipantSettings, Policy};
use sagaflow::runtime::registry::Registry;
use sagaflow::runtime::transition::{Applier, StartOutcome, StartRequest, TransitionSettings};
use sagaflow::store::{Announcement, Store};
use serde_json::json;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use metrics::{ScenarioResult, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Everything below, in this order.
    All,
    /// The bare-minimum baseline, closed loop.
    Baseline,
    /// One saga at a time.
    Single,
    /// Closed loops at each --concurrency.
    Loop,
    /// 10 % of forward steps fail, closed loop at concurrency 100.
    Failing,
    /// Closed loop at concurrency 100 on each --replicas count of services in one group.
    Scale,
    /// Many sagas parked on a reply; memory and single-saga latency with them.
    Parked,
    /// Outbox backlog published by 1 replica with 1 relay worker, 1 with 4, 2 with 4.
    Relay,
    /// Step timeouts all due at once, fired by 1 replica, then 2.
    Timers,
    /// Starts over HTTP under wrk (64 connections), with and without group commit.
    Http,
}

#[derive(Debug, Parser)]
#[command(
    name = "sagaflow-bench",
    about = "Benchmark sagaflow against real PostgreSQL and Kafka"
)]
struct Opts {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// A few seconds, tiny counts: proves the harness works (the test suite runs it).
    #[arg(long)]
    smoke: bool,
    /// Use this Kafka cluster instead of starting Apache Kafka (scripts/kafka).
    #[arg(long)]
    kafka: Option<String>,
    /// Administrative connection; the bench database is created and dropped through it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    /// The `sagaflow` binary to run as the service (default: next to this one).
    #[arg(long)]
    sagaflow_bin: Option<PathBuf>,
    /// Measurement window of each closed loop (s).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Unmeasured time before each window (s).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Sagas in the one-at-a-time scenario.
    #[arg(long, default_value_t = 200)]
    single_n: usize,
    /// Closed-loop concurrencies.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 100, 1000])]
    concurrency: Vec<usize>,
    /// Sagas parked on a reply in the parked scenario.
    #[arg(long, default_value_t = 1_000_000)]
    parked: u64,
    /// Runs of the single-saga and concurrency-100 scenarios (and the baseline); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// librdkafka fetch.wait.max.ms for every client (default: librdkafka's; Apache Kafka
    /// answers a long-poll fetch as soon as data arrives).
    #[arg(long)]
    fetch_wait_ms: Option<u32>,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Outbox rows in the relay scenario.
    #[arg(long, default_value_t = 50_000)]
    relay_rows: i64,
    /// Due timers in the timers scenario.
    #[arg(long, default_value_t = 10_000)]
    timers: i64,
    /// Replica counts of the scale scenario.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 3])]
    replicas: Vec<usize>,
    /// Write the JSON report here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Connect to PostgreSQL with TLS as libpq's default `sslmode=prefer` does (the bench
    /// otherwise uses `sslmode=disable`: PostgreSQL is on loopback here).
    #[arg(long)]
    pg_tls: bool,
    /// Keep the database afterwards (for inspection).
    #[arg(long)]
    keep_db: bool,
    /// A setting for the measured service, as an environment variable (repeatable):
    /// `--service-env SAGAFLOW_KAFKA__LIFECYCLE_STEPS=false`.
    #[arg(long, value_parser = parse_env)]
    service_env: Vec<(String, String)>,
    /// Only run this many sagas through the CPU path with no I/O (decode, engine,
    /// staging), for valgrind (`scripts/profile`); no database or broker needed.
    #[arg(long)]
    profile_sagas: Option<usize>,
}

impl Opts {
    /// `--service-env` as the environment of a service process.
    fn service_env(&self) -> Vec<(&str, String)> {
        self.service_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect()
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Completed,
    Compensated,
    Failed,
}

/// A saga reached a final status.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    pub id: Uuid,
    pub kind: Kind,
    pub at: Instant,
}

const BENCH_SAGA: &str = r#"# Written by sagaflow-bench: three compensable steps, short payloads.
name: bench
defaults:
  reply_topic: bench.replies
  timeout: 30s
  retry: {max_attempts: 1}
steps:
  - name: reserve
    command: {topic: bench.commands, type: bench.reserve, payload: {n: "{{ input.n }}"}}
    reply: {success: [bench.reserved], failure: [{type: bench.reserve_refused}]}
    compensation: {topic: bench.commands, type: bench.release, reply: {success: [bench.released]}}
  - name: charge
    command: {topic: bench.commands, type: bench.charge, payload: {n: "{{ input.n }}"}}
    reply: {success: [bench.charged], failure: [{type: bench.charge_declined}]}
    compensation: {topic: bench.commands, type: bench.refund, reply: {success: [bench.refunded]}}
  - name: ship
    command: {topic: bench.commands, type: bench.ship, payload: {n: "{{ input.n }}"}}
    reply: {success: [bench.shipped], failure: [{type: bench.ship_refused}]}
    compensation: {topic: bench.commands, type: bench.unship, reply: {success: [bench.unshipped]}}
"#;

/// Parked sagas wait on a command nobody answers; a day-long timeout keeps them parked.
const PARKED_SAGA: &str = r#"# Written by sagaflow-bench: a saga that waits for a reply that never comes.
name: bench-parked
defaults:
  reply_topic: bench.replies
  timeout: 24h
steps:
  - name: wait
    command: {topic: bench.parked.commands, type: bench.wait, payload: {n: "{{ input.n }}"}}
    reply: {success: [bench.waited]}
    compensation: none
"#;

const LIFECYCLE_TOPIC: &str = "sagaflow.lifecycle";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Everything a scenario needs.
struct Ctx {
    opts: Opts,
    ticks: u64,
    admin: PgPool,
    db_name: String,
    db_url: String,
    pool: PgPool,
    kafka: KafkaSettings,
    broker_pid: Option<u32>,
    outbox: Arc<Mutex<Vec<(Instant, i64)>>>,
}

impl Ctx {
    async fn snapshot(&self, orchestrators: &[u32], steps: &AtomicU64) -> Snapshot {
        let (commits, rollbacks): (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&self.db_name)
        .fetch_one(&self.admin)
        .await
        .unwrap_or((0, 0));
        let backends: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
                .bind(&self.db_name)
                .fetch_all(&self.admin)
                .await
                .unwrap_or_default();
        Snapshot {
            postgres_ticks: backends
                .iter()
                .filter_map(|p| metrics::cpu_ticks(*p as u32))
                .sum(),
            at: Instant::now(),
            orchestrator_ticks: orchestrators
                .iter()
                .filter_map(|p| metrics::cpu_ticks(*p))
                .sum(),
            broker_ticks: self.broker_pid.and_then(metrics::cpu_ticks).unwrap_or(0),
            bench_ticks: metrics::cpu_ticks(std::process::id()).unwrap_or(0),
            machine: metrics::machine_jiffies(),
            commits,
            rollbacks,
            steps: steps.load(Ordering::Relaxed),
        }
    }

    fn outbox_between(&self, r: &mut ScenarioResult, a: Instant, b: Instant) {
        let samples: Vec<(f64, i64)> = self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(t, _)| *t >= a && *t <= b)
            .map(|(t, n)| ((*t - a).as_secs_f64(), *n))
            .collect();
        r.outbox_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let stride = (samples.len() / 8).max(1);
        r.outbox_samples = samples
            .iter()
            .step_by(stride)
            .map(|(t, n)| ((t * 10.0).round() / 10.0, *n))
            .collect();
    }
}

/// What a closed loop drives: sagaflow (started through its library, run by the child)
/// or the baseline.
trait Target {
    async fn start(&self, n: usize) -> anyhow::Result<Vec<Uuid>>;
    /// Starts one saga; also returns when its start transaction had committed.
    async fn start_one(&self) -> anyhow::Result<(Uuid, Instant)> {
        let id = self.start(1).await?[0];
        Ok((id, Instant::now()))
    }
    /// Every orchestrator process (replicas of the service, or the bench itself).
    fn orchestrator_pids(&self) -> Vec<u32>;
    fn steps(&self) -> &AtomicU64;
    /// Resident and peak memory, summed over the orchestrator processes.
    fn memory(&self) -> (f64, f64) {
        self.orchestrator_pids()
            .into_iter()
            .map(|p| metrics::memory_mib(p).unwrap_or((f64::NAN, f64::NAN)))
            .fold((0.0, 0.0), |(r, p), (r1, p1)| (r + r1, p + p1))
    }
}

struct Sagaflow {
    applier: Applier,
    def: Arc<Definition>,
    child_pid: u32,
    /// Further replicas in the same consumer group (the scale scenario).
    replica_pids: std::sync::Mutex<Vec<u32>>,
    steps: Arc<AtomicU64>,
    counter: AtomicU64,
}

impl Sagaflow {
    async fn start_def(&self, def: &Definition, n: usize) -> anyhow::Result<Vec<Uuid>> {
        // One transaction per batch of starts (the driver batches what it starts at once,
        // as a trigger consumer or a batching API client would).
        let mut ids = Vec::with_capacity(n);
        let mut tx = self.applier.store.begin().await?;
        for _ in 0..n {
            let id = Uuid::now_v7();
            let k = self.counter.fetch_add(1, Ordering::Relaxed);
            let out = self
                .applier
                .start_in_tx(
                    &mut tx,
                    def,
                    StartRequest {
                        definition: def.name.clone(),
                        input: json!({ "n": k }),
                        key: None,
                        id: Some(id),
                        traceparent: None,
                    },
                )
                .await?;
            if !matches!(out, StartOutcome::Created(created, _) if created == id) {
                bail!("start was refused: {out:?}");
            }
            ids.push(id);
        }
        tx.commit().await?;
        // As the service's own starts do: its relay learns of the rows from this.
        self.applier.store.committed(Announcement {
            outbox: true,
            sagas: ids.clone(),
        });
        Ok(ids)
    }
}

impl Target for Sagaflow {
    async fn start(&self, n: usize) -> anyhow::Result<Vec<Uuid>> {
        self.start_def(&self.def, n).await
    }
    fn orchestrator_pids(&self) -> Vec<u32> {
        let replicas = self.replica_pids.lock().unwrap_or_else(|p| p.into_inner());
        std::iter::once(self.child_pid)
            .chain(replicas.iter().copied())
            .collect()
    }
    fn steps(&self) -> &AtomicU64 {
        &self.steps
    }
}

impl Target for baseline::Baseline {
    async fn start(&self, n: usize) -> anyhow::Result<Vec<Uuid>> {
        Ok(baseline::Baseline::start_timed(self, n).await?.0)
    }
    async fn start_one(&self) -> anyhow::Result<(Uuid, Instant)> {
        let (ids, committed) = baseline::Baseline::start_timed(self, 1).await?;
        Ok((ids[0], committed))
    }
    fn orchestrator_pids(&self) -> Vec<u32> {
        vec![std::process::id()]
    }
    fn steps(&self) -> &AtomicU64 {
        &self.steps
    }
}

const START_BATCH: usize = 500;

fn record(r: &mut ScenarioResult, kind: Kind) {
    match kind {
        Kind::Completed => r.completed += 1,
        Kind::Compensated => r.compensated += 1,
        Kind::Failed => r.failed += 1,
    }
}

/// Waits for every saga in `pending` to finish (bounded), so scenarios do not overlap.
async fn drain(
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    pending: &mut HashMap<Uuid, Instant>,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                pending.remove(&e.id);
            }
            _ => break,
        }
    }
}

async fn closed_loop<T: Target>(
    ctx: &Ctx,
    target: &T,
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    name: &str,
    concurrency: usize,
) -> anyhow::Result<ScenarioResult> {
    while rx.try_recv().is_ok() {}
    let mut r = ScenarioResult {
        scenario: name.to_owned(),
        concurrency,
        loadavg_before: metrics::loadavg(),
        ..Default::default()
    };
    let mut pending: HashMap<Uuid, Instant> = HashMap::new();
    let begin = Instant::now();
    let window_start = begin + Duration::from_secs_f64(ctx.opts.warmup);
    let window_end = window_start + Duration::from_secs_f64(ctx.opts.duration);
    let mut left = concurrency;
    while left > 0 {
        let n = left.min(START_BATCH);
        let at = Instant::now();
        for id in target.start(n).await? {
            pending.insert(id, at);
        }
        left -= n;
    }
    let mut first: Option<Snapshot> = None;
    let mut latencies = Vec::new();
    loop {
        let now = Instant::now();
        if first.is_none() && now >= window_start {
            first = Some(
                ctx.snapshot(&target.orchestrator_pids(), target.steps())
                    .await,
            );
        }
        if now >= window_end {
            break;
        }
        let wake = if first.is_none() {
            window_start
        } else {
            window_end
        };
        let mut events = Vec::new();
        match tokio::time::timeout_at(wake.into(), rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => bail!("terminal-event stream ended"),
            Err(_) => continue,
        }
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        let mut replace = 0;
        for e in events {
            if let Some(started) = pending.remove(&e.id) {
                if first.is_some() && e.at <= window_end {
                    latencies.push((e.at - started).as_secs_f64() * 1000.0);
                    record(&mut r, e.kind);
                }
                replace += 1;
            }
        }
        if replace > 0 && Instant::now() < window_end {
            let at = Instant::now();
            for id in target.start(replace).await? {
                pending.insert(id, at);
            }
        }
    }
    let last = ctx
        .snapshot(&target.orchestrator_pids(), target.steps())
        .await;
    let Some(first) = first else {
        bail!("measurement window never started")
    };
    r.fill(&first, &last, ctx.ticks, &mut latencies);
    (r.orchestrator_rss_mib, r.orchestrator_peak_rss_mib) = target.memory();
    ctx.outbox_between(&mut r, first.at, last.at);
    drain(rx, &mut pending, Duration::from_secs(60)).await;
    r.unfinished = pending.len() as u64;
    Ok(r)
}

/// With a tap, the result also splits the sagas' time into hops; `ends_with_event`
/// when a saga's end is an event on the lifecycle topic (sagaflow) rather than a commit.
async fn one_at_a_time<T: Target>(
    ctx: &Ctx,
    target: &T,
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    name: &str,
    n: usize,
    tap: Option<(&hops::Tap, bool)>,
) -> anyhow::Result<ScenarioResult> {
    while rx.try_recv().is_ok() {}
    let mut r = ScenarioResult {
        scenario: name.to_owned(),
        concurrency: 1,
        loadavg_before: metrics::loadavg(),
        ..Default::default()
    };
    let first = ctx
        .snapshot(&target.orchestrator_pids(), target.steps())
        .await;
    let mut latencies = Vec::with_capacity(n);
    let mut done = Vec::with_capacity(n);
    for _ in 0..n {
        let at = Instant::now();
        let (id, committed) = target.start_one().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) if e.id == id => {
                    latencies.push((e.at - at).as_secs_f64() * 1000.0);
                    done.push(hops::Timed {
                        id,
                        started: at,
                        committed,
                        ended: e.at,
                    });
                    record(&mut r, e.kind);
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("terminal-event stream ended"),
                Err(_) => {
                    r.unfinished += 1;
                    break;
                }
            }
        }
    }
    let last = ctx
        .snapshot(&target.orchestrator_pids(), target.steps())
        .await;
    r.fill(&first, &last, ctx.ticks, &mut latencies);
    (r.orchestrator_rss_mib, r.orchestrator_peak_rss_mib) = target.memory();
    ctx.outbox_between(&mut r, first.at, last.at);
    if let Some((tap, ends_with_event)) = tap {
        (r.hops, r.hops_sagas) = tap.breakdown(&done, 3, ends_with_event).await;
        eprint!("{}", metrics::hop_table(&r));
    }
    Ok(r)
}

/// The first value of header `key`, as text.
fn header<'m>(m: &'m impl Message, key: &str) -> Option<&'m str> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// The saga and its final status, if `m` is a lifecycle event of a saga's end.
fn terminal_of(m: &impl Message) -> Option<(Uuid, Kind)> {
    let kind = match header(m, "ce_type")? {
        "sagaflow.saga.completed" => Kind::Completed,
        "sagaflow.saga.compensated" => Kind::Compensated,
        "sagaflow.saga.failed" => Kind::Failed,
        _ => return None,
    };
    Some((Uuid::parse_str(header(m, "ce_sagaid")?).ok()?, kind))
}

/// Reads the lifecycle topic and reports sagas reaching a final status.
fn lifecycle_listener(
    kafka: &KafkaSettings,
    cancel: CancellationToken,
) -> anyhow::Result<mpsc::UnboundedReceiver<Terminal>> {
    let consumer: StreamConsumer = kafka::consumer_config(
        kafka,
        &format!("bench-lifecycle-{}", Uuid::new_v4().simple()),
    )
    .set("enable.auto.offset.store", "true")
    .create()?;
    consumer.subscribe(&[LIFECYCLE_TOPIC])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                _ = cancel.cancelled() => return,
                m = consumer.recv() => m,
            };
            let Ok(m) = m else { continue };
            let at = Instant::now();
            if let Some((id, kind)) = terminal_of(&m)
                && tx.send(Terminal { id, kind, at }).is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

/// Samples the outbox backlog every 500 ms for the whole run.
fn outbox_sampler(
    pool: PgPool,
    samples: Arc<Mutex<Vec<(Instant, i64)>>>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            // The table exists once the service has migrated.
            if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(&pool)
                .await
            {
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), n));
            }
        }
    });
}

/// `sagaflow serve` on a free port; `env` is set last, so it overrides the rest.
fn start_service(
    ctx: &Ctx,
    db_url: &str,
    sagas_dir: &Path,
    log: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<(Proc, u16)> {
    let bin = match &ctx.opts.sagaflow_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary has no directory")?
            .join("sagaflow"),
    };
    let port = free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.arg("serve")
        .env("SAGAFLOW_API__AUTH__ALLOW_UNAUTHENTICATED", "true")
        .env("SAGAFLOW_DATABASE__URL", db_url)
        .env(
            "SAGAFLOW_KAFKA__BOOTSTRAP_SERVERS",
            &ctx.kafka.bootstrap_servers,
        )
        .env(
            "SAGAFLOW_KAFKA__GROUP_ID",
            format!("sagaflow-bench-{}", Uuid::new_v4().simple()),
        )
        .env(
            "SAGAFLOW_KAFKA__TOPIC_PARTITIONS",
            ctx.opts.partitions.to_string(),
        )
        .env("SAGAFLOW_KAFKA__LIFECYCLE_TOPIC", LIFECYCLE_TOPIC)
        .env("SAGAFLOW_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SAGAFLOW_RUNTIME__SAGAS_DIR", sagas_dir)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    if let Some(ms) = ctx.opts.fetch_wait_ms {
        cmd.env(
            "SAGAFLOW_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS",
            ms.to_string(),
        );
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v)));
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Ok((Proc { child }, port))
}

/// Waits until the service answers `/readyz`; fails, with its log, if it exits first
/// or is not ready within `limit`.
async fn wait_ready(p: &mut Proc, port: u16, log: &Path, limit: Duration) -> anyhow::Result<()> {
    let begin = Instant::now();
    while http_status(port, "/readyz").await != Some(200) {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!(
                "sagaflow serve exited ({status}); log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if begin.elapsed() > limit {
            bail!(
                "sagaflow serve not ready after {} s; log: {}",
                limit.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `n` services, each logging to `tmp/<name>-<i>.log`, with `env`; returns once every
/// one is ready (within 90 s of the start).
async fn start_ready_services(
    ctx: &Ctx,
    sagas_dir: &Path,
    tmp: &Path,
    name: &str,
    n: usize,
    env: &[(&str, String)],
) -> anyhow::Result<Vec<(Proc, u16)>> {
    let mut procs = Vec::new();
    for i in 0..n {
        let log = tmp.join(format!("{name}-{i}.log"));
        let (p, port) = start_service(ctx, &ctx.db_url, sagas_dir, &log, env)?;
        procs.push((p, port, log));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for (p, port, log) in &mut procs {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_ready(p, *port, log, left).await?;
    }
    Ok(procs.into_iter().map(|(p, port, _)| (p, port)).collect())
}

/// Creates `n` sagas parked on a reply: one real start of `bench-parked`, then its row
/// and timer rows copied `n - 1` times with fresh ids (set-based, in chunks).
async fn park(ctx: &Ctx, sf: &Sagaflow, parked_def: &Definition, n: u64) -> anyhow::Result<f64> {
    let begin = Instant::now();
    let template = sf.start_def(parked_def, 1).await?[0];
    let row = sqlx::query(
        "SELECT definition, version, status, input_hash, state FROM sagas WHERE id = $1",
    )
    .bind(template)
    .fetch_one(&ctx.pool)
    .await?;
    let (definition, version, status, hash, state): (
        String,
        String,
        String,
        String,
        serde_json::Value,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let timers = sqlx::query("SELECT timer, due_at FROM timers WHERE saga_id = $1")
        .bind(template)
        .fetch_all(&ctx.pool)
        .await?;
    let timer_keys: Vec<String> = timers.iter().map(|r| r.get(0)).collect();
    let timer_due: Vec<chrono::DateTime<chrono::Utc>> = timers.iter().map(|r| r.get(1)).collect();
    let mut done = 1u64;
    let chunk = 50_000u64;
    while done < n {
        let k = chunk.min(n - done);
        sqlx::query(
            "WITH s AS ( \
               INSERT INTO sagas (id, definition, version, status, business_key, input_hash, state, created_at, updated_at) \
               SELECT g.id, $2, $3, $4, NULL, $5, jsonb_set($6::jsonb, '{id}', to_jsonb(g.id::text)), now(), now() \
               FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1::bigint)) g \
               RETURNING id) \
             INSERT INTO timers (saga_id, timer, due_at) \
             SELECT s.id, t.timer, t.due_at FROM s CROSS JOIN UNNEST($7::text[], $8::timestamptz[]) AS t(timer, due_at)",
        )
        .bind(k as i64)
        .bind(&definition)
        .bind(&version)
        .bind(&status)
        .bind(&hash)
        .bind(&state)
        .bind(&timer_keys)
        .bind(&timer_due)
        .execute(&ctx.pool)
        .await?;
        done += k;
        if n >= 200_000 && done % 200_000 < chunk {
            eprintln!(
                "  parked {done} / {n} ({:.0} s)",
                begin.elapsed().as_secs_f64()
            );
        }
    }
    // Settle what a bulk load leaves behind (autovacuum would do it during the measurement).
    sqlx::query("VACUUM (ANALYZE) sagas, timers")
        .execute(&ctx.pool)
        .await?;
    Ok(begin.elapsed().as_secs_f64())
}

struct Report {
    rows: Vec<ScenarioResult>,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn push(&mut self, r: ScenarioResult) {
        eprintln!(
            "{}",
            metrics::table(std::slice::from_ref(&r))
                .lines()
                .nth(1)
                .unwrap_or("")
        );
        self.rows.push(r);
    }
}

async fn run_scenarios(
    ctx: &Ctx,
    report: &mut Report,
    cancel: &CancellationToken,
    tmp: &Path,
) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let want = |s: Scenario| {
        o.scenarios.is_empty() || o.scenarios.contains(&s) || o.scenarios.contains(&Scenario::All)
    };
    let runs = o.runs.max(1);
    let loop_conc = if o.concurrency.contains(&100) {
        100
    } else {
        o.concurrency[0]
    };

    // The baseline runs first, before the service exists, so nothing else polls the broker.
    let mut baseline_median = None;
    if want(Scenario::Baseline) {
        eprintln!("== baseline (bare minimum per step), concurrency {loop_conc}");
        let (bl, mut rx) = baseline::Baseline::setup(
            ctx.pool.clone(),
            &ctx.kafka,
            o.partitions,
            500,
            Duration::from_millis(2),
            cancel.child_token(),
        )
        .await?;
        // Wait for both consumer groups: one saga through.
        let id = bl.start(1).await?[0];
        let mut p = HashMap::from([(id, Instant::now())]);
        drain(&mut rx, &mut p, Duration::from_secs(60)).await;
        if !p.is_empty() {
            bail!("the baseline did not complete a warm-up saga in 60 s");
        }
        let tap_cancel = cancel.child_token();
        let tap = hops::Tap::start(
            &ctx.kafka,
            &hops::Topics {
                commands: baseline::COMMANDS,
                replies: baseline::REPLIES,
                lifecycle: None,
            },
            tap_cancel.clone(),
        )?;
        tap.ready(async || Ok(bl.start(1).await?[0])).await;
        let mut rows = Vec::new();
        for i in 0..runs {
            let mut r = one_at_a_time(
                ctx,
                &bl,
                &mut rx,
                "baseline-single",
                o.single_n,
                Some((&tap, false)),
            )
            .await?;
            r.run = (i + 1).to_string();
            r.orchestrator_rss_mib = f64::NAN;
            r.orchestrator_peak_rss_mib = f64::NAN;
            report.push(r.clone());
            rows.push(r);
        }
        tap_cancel.cancel();
        if runs > 1 {
            report.push(metrics::median_row(&rows));
        }
        let mut rows = Vec::new();
        for i in 0..runs {
            let mut r = closed_loop(ctx, &bl, &mut rx, "baseline", loop_conc).await?;
            r.run = (i + 1).to_string();
            r.orchestrator_rss_mib = f64::NAN;
            r.orchestrator_peak_rss_mib = f64::NAN;
            r.notes = "orchestrator = the bench process (echo participant + baseline orchestrator + driver)".into();
            report.push(r.clone());
            rows.push(r);
        }
        if runs > 1 {
            let m = metrics::median_row(&rows);
            report.push(m.clone());
            baseline_median = Some(m.sagas_per_s);
        } else {
            baseline_median = rows.first().map(|r| r.sagas_per_s);
        }
    }
    let needs_service = [
        Scenario::Single,
        Scenario::Loop,
        Scenario::Failing,
        Scenario::Scale,
        Scenario::Parked,
        Scenario::Http,
    ]
    .into_iter()
    .any(want);
    if !needs_service {
        return Ok(());
    }

    // The service, as a child process.
    let sagas_dir = tmp.join("sagas");
    std::fs::create_dir_all(&sagas_dir)?;
    std::fs::write(sagas_dir.join("bench.yaml"), BENCH_SAGA)?;
    std::fs::write(sagas_dir.join("bench-parked.yaml"), PARKED_SAGA)?;
    std::fs::write(sagas_dir.join("bench-http.yaml"), http::HTTP_SAGA)?;
    let log = tmp.join("service.log");
    let db_url = ctx.db_url.clone();
    // Named here so that the scale scenario's replicas join the same group.
    let group = format!("sagaflow-bench-{}", Uuid::new_v4().simple());
    let mut env: Vec<(&str, String)> = vec![("SAGAFLOW_KAFKA__GROUP_ID", group.clone())];
    env.extend(o.service_env());
    let (mut service, port) = start_service(ctx, &db_url, &sagas_dir, &log, &env)?;
    eprintln!(
        "sagaflow serve: pid {}, log {}",
        service.pid(),
        log.display()
    );
    let started = Instant::now();
    wait_ready(&mut service, port, &log, Duration::from_secs(60)).await?;
    let (defs, diags) = definition::load_dir(&sagas_dir);
    if !diags.is_empty() {
        bail!("bench definitions are invalid: {diags:?}");
    }
    let defs: Vec<Arc<Definition>> = defs.into_iter().map(Arc::new).collect();
    let find = |name: &str| {
        defs.iter()
            .find(|d| d.name == name)
            .cloned()
            .context("definition missing")
    };
    let bench_def = find("bench")?;
    let parked_def = find("bench-parked")?;
    let store = Store::connect(&db_url, 4).await?;
    let applier = Applier {
        store: store.clone(),
        registry: Arc::new(Registry::new(defs.iter().map(|d| (**d).clone()).collect())),
        settings: Arc::new(TransitionSettings {
            lifecycle_topic: Some(LIFECYCLE_TOPIC.into()),
            source: "/sagaflow".into(),
            // The key the service keeps in the database: commands this process stages
            // are answered to the service, which checks their tokens.
            reply_keys: Arc::new(ReplyKeys::new(
                vec![sagaflow::store::reply_key(&store.pool, &ReplyKeys::random_key()).await?],
                true,
            )?),
            lifecycle_input: false,
            lifecycle_steps: true,
        }),
    };
    let steps = Arc::new(AtomicU64::new(0));
    // Failure rate of forward steps, as f64 bits, switched per scenario.
    let fail_rate = Arc::new(AtomicU64::new(0f64.to_bits()));
    let policy: Policy = {
        let steps = steps.clone();
        let fail_rate = fail_rate.clone();
        Arc::new(move |c: &participant::Command| {
            steps.fetch_add(1, Ordering::Relaxed);
            let rate = f64::from_bits(fail_rate.load(Ordering::Relaxed));
            if rate == 0.0 {
                return (Decision::Success, Duration::ZERO);
            }
            participant::random_policy(rate, Duration::ZERO)(c)
        })
    };
    let mut rx = lifecycle_listener(&ctx.kafka, cancel.child_token())?;
    let ps = ParticipantSettings {
        kafka: ctx.kafka.clone(),
        group_id: format!("bench-participants-{}", Uuid::new_v4().simple()),
        topics: vec!["bench.commands".into()],
    };
    let pc = cancel.child_token();
    let pdefs = vec![bench_def.clone()];
    tokio::spawn(async move {
        if let Err(e) = participant::run(pdefs, ps, policy, pc).await {
            eprintln!("participants failed: {e}");
        }
    });
    let sf = Sagaflow {
        applier,
        def: bench_def,
        child_pid: service.pid(),
        replica_pids: std::sync::Mutex::default(),
        steps,
        counter: AtomicU64::new(0),
    };
    // Warm-up: every consumer group has joined once a saga completes.
    let id = sf.start(1).await?[0];
    let mut p = HashMap::from([(id, Instant::now())]);
    drain(&mut rx, &mut p, Duration::from_secs(90)).await;
    if !p.is_empty() {
        bail!(
            "no saga completed within 90 s of start-up; service log: {}",
            log.display()
        );
    }
    // What the service costs doing nothing (consumers polling the broker every
    // fetch.wait.max.ms, relay and timer polls): part of every per-step CPU figure.
    let idle = Duration::from_secs_f64(if o.smoke { 0.5 } else { 5.0 });
    let (c0, b0) = (
        metrics::cpu_ticks(sf.child_pid).unwrap_or(0),
        ctx.broker_pid.and_then(metrics::cpu_ticks).unwrap_or(0),
    );
    tokio::time::sleep(idle).await;
    let (c1, b1) = (
        metrics::cpu_ticks(sf.child_pid).unwrap_or(0),
        ctx.broker_pid.and_then(metrics::cpu_ticks).unwrap_or(0),
    );
    let ms_per_s = |d: u64| d as f64 * 1000.0 / ctx.ticks as f64 / idle.as_secs_f64();
    report.extra.insert(
        "idle_cpu_ms_per_s".into(),
        json!({"service": ms_per_s(c1.saturating_sub(c0)), "broker": ms_per_s(b1.saturating_sub(b0)), "window_s": idle.as_secs_f64()}),
    );
    report.extra.insert(
        "service_ready_s".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );

    let mut single_median = None;
    if want(Scenario::Single) {
        eprintln!("== single: {} sagas one at a time", o.single_n);
        let tap_cancel = cancel.child_token();
        let tap = hops::Tap::start(
            &ctx.kafka,
            &hops::Topics {
                commands: "bench.commands",
                replies: "bench.replies",
                lifecycle: Some(LIFECYCLE_TOPIC),
            },
            tap_cancel.clone(),
        )?;
        tap.ready(async || Ok(sf.start(1).await?[0])).await;
        let mut rows = Vec::new();
        for i in 0..runs {
            let mut r =
                one_at_a_time(ctx, &sf, &mut rx, "single", o.single_n, Some((&tap, true))).await?;
            r.run = (i + 1).to_string();
            report.push(r.clone());
            rows.push(r);
        }
        tap_cancel.cancel();
        if runs > 1 {
            let m = metrics::median_row(&rows);
            single_median = Some(m.p50_ms);
            report.push(m);
        } else {
            single_median = rows.first().map(|r| r.p50_ms);
        }
    }
    let mut loop_median = None;
    if want(Scenario::Loop) {
        for &c in &o.concurrency {
            eprintln!("== closed loop, concurrency {c}");
            let n = if c == loop_conc { runs } else { 1 };
            let mut rows = Vec::new();
            for i in 0..n {
                let mut r = closed_loop(ctx, &sf, &mut rx, "closed-loop", c).await?;
                r.run = (i + 1).to_string();
                report.push(r.clone());
                rows.push(r);
            }
            if n > 1 {
                let m = metrics::median_row(&rows);
                if c == loop_conc {
                    loop_median = Some(m.sagas_per_s);
                }
                report.push(m);
            } else if c == loop_conc {
                loop_median = rows.first().map(|r| r.sagas_per_s);
            }
        }
    }
    if want(Scenario::Failing) {
        eprintln!("== 10 % of forward steps fail, concurrency {loop_conc}");
        fail_rate.store(0.1f64.to_bits(), Ordering::Relaxed);
        let mut r = closed_loop(ctx, &sf, &mut rx, "failing-10%", loop_conc).await?;
        fail_rate.store(0f64.to_bits(), Ordering::Relaxed);
        r.run = "1".into();
        r.notes = "completed + compensated both count as finished sagas".into();
        report.push(r);
    }
    if want(Scenario::Scale) {
        let dirs = (sagas_dir.as_path(), tmp);
        scale::scale(ctx, report, &sf, &mut rx, dirs, &group, loop_conc).await?;
    }
    if want(Scenario::Parked) {
        let n = o.parked.max(1);
        eprintln!("== parking {n} sagas on a reply");
        let before = metrics::memory_mib(service.pid()).unwrap_or((f64::NAN, f64::NAN));
        let setup_s = park(ctx, &sf, &parked_def, n).await?;
        let parked_now: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sagas WHERE definition = 'bench-parked' AND status = 'running'",
        )
        .fetch_one(&ctx.pool)
        .await?;
        let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM timers")
            .fetch_one(&ctx.pool)
            .await?;
        let mut r =
            one_at_a_time(ctx, &sf, &mut rx, "single-with-parked", o.single_n, None).await?;
        r.run = "1".into();
        r.notes = format!(
            "{parked_now} sagas parked (running, waiting on a reply; {timers} timer rows) in {setup_s:.0} s; service RSS before parking {:.1} MiB",
            before.0
        );
        report.extra.insert(
            "parked".into(),
            json!({
                "requested": n,
                "parked_running": parked_now,
                "timer_rows": timers,
                "setup_s": (setup_s * 10.0).round() / 10.0,
                "service_rss_before_mib": before.0,
                "service_rss_after_mib": r.orchestrator_rss_mib,
                "service_peak_rss_mib": r.orchestrator_peak_rss_mib,
                "single_p50_before_ms": single_median,
                "single_p50_after_ms": r.p50_ms,
            }),
        );
        report.push(r);
    }
    if want(Scenario::Http) {
        let main = (service.pid(), port);
        http::starts(ctx, report, main, &db_url, &sagas_dir, tmp).await?;
    }
    if let (Some(s), Some(b)) = (loop_median, baseline_median) {
        report.extra.insert(
            "ratio_to_baseline".into(),
            json!({"concurrency": loop_conc, "sagaflow_sagas_per_s": s, "baseline_sagas_per_s": b, "ratio": s / b}),
        );
    }
    cancel.cancel();
    service.stop();
    Ok(())
}

/// The relay and timers scenarios, after the others (whose service has stopped).
async fn run_drains(ctx: &Ctx, report: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let want = |s: Scenario| {
        o.scenarios.is_empty() || o.scenarios.contains(&s) || o.scenarios.contains(&Scenario::All)
    };
    let dir = tmp.join("drain-sagas");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench-timeout.yaml"), drain::TIMEOUT_SAGA)?;
    let mut rows = Vec::new();
    if want(Scenario::Relay) {
        eprintln!("== relay: {} outbox rows committed at once", o.relay_rows);
        rows.extend(drain::run(ctx, drain::Drain::Relay, o.relay_rows, &dir, tmp).await?);
    }
    if want(Scenario::Timers) {
        eprintln!("== timers: {} step timeouts due at once", o.timers);
        rows.extend(drain::run(ctx, drain::Drain::Timers, o.timers, &dir, tmp).await?);
    }
    if !rows.is_empty() {
        for r in &rows {
            println!("{}", r.line());
        }
        report
            .extra
            .insert("drains".into(), serde_json::to_value(&rows)?);
    }
    Ok(())
}

async fn run(mut opts: Opts) -> anyhow::Result<()> {
    if opts.smoke {
        opts.duration = 1.5;
        opts.warmup = 0.5;
        opts.single_n = 5;
        opts.concurrency = vec![10];
        opts.parked = 500;
        opts.relay_rows = 200;
        opts.timers = 200;
        opts.runs = 1;
        opts.replicas = vec![1, 2];
    }
    let tmp = std::env::temp_dir().join(format!("sagaflow-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp)?;

    // Broker.
    let broker = match &opts.kafka {
        Some(_) => None,
        None => Some(broker::KafkaBroker::start(
            &tmp.join("kafka"),
            free_port()?,
        )?),
    };
    let bootstrap = match (&opts.kafka, &broker) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => b.bootstrap.clone(),
        (None, None) => unreachable!("a broker was started when --kafka is not given"),
    };
    let mut kafka = KafkaSettings {
        bootstrap_servers: bootstrap,
        ..KafkaSettings::default()
    };
    if let Some(ms) = opts.fetch_wait_ms {
        kafka
            .properties
            .insert("fetch.wait.max.ms".into(), ms.to_string());
    }

    // Database.
    let db_name = format!("sagaflow_bench_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&opts.admin_url)
        .await
        .context("PostgreSQL (--admin-url)")?;
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&admin)
        .await?;
    let db_url = {
        let base = opts
            .admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&opts.admin_url);
        let tls = if opts.pg_tls { "" } else { "?sslmode=disable" };
        format!("{base}/{db_name}{tls}")
    };
    let pool = PgPool::connect(&db_url).await?;
    let cancel = CancellationToken::new();
    let samples = Arc::new(Mutex::new(Vec::new()));
    outbox_sampler(pool.clone(), samples.clone(), cancel.child_token());

    let machine = json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_mib": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok())).map(|k| k / 1024),
        "loadavg_at_start": metrics::loadavg(),
        "broker": if opts.kafka.is_some() { "external" } else { "Apache Kafka (scripts/kafka, one KRaft node)" },
        "fetch_wait_max_ms": opts.fetch_wait_ms,
        "partitions": opts.partitions,
        "postgres_tls": opts.pg_tls,
        "smoke": opts.smoke,
    });
    let ctx = Ctx {
        ticks: metrics::clock_ticks(),
        admin: admin.clone(),
        db_name: db_name.clone(),
        db_url: db_url.clone(),
        pool: pool.clone(),
        kafka,
        broker_pid: broker.as_ref().map(|b| b.pid),
        outbox: samples,
        opts,
    };
    let mut report = Report {
        rows: Vec::new(),
        extra: serde_json::Map::new(),
    };
    report.extra.insert("machine".into(), machine);
    let result = match run_scenarios(&ctx, &mut report, &cancel, &tmp).await {
        Ok(()) => run_drains(&ctx, &mut report, &tmp).await,
        Err(e) => Err(e),
    };
    cancel.cancel();
    report
        .extra
        .insert("loadavg_at_end".into(), json!(metrics::loadavg()));

    // Clean up whatever happened.
    pool.close().await;
    if !ctx.opts.keep_db {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
    drop(broker);
    if result.is_err() {
        eprintln!("(kept {} for inspection)", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }

    println!("{}", metrics::table(&report.rows));
    for r in report.rows.iter().filter(|r| !r.hops.is_empty()) {
        println!("{}", metrics::hop_table(r));
    }
    let mut doc = report.extra.clone();
    doc.insert("scenarios".into(), serde_json::to_value(&report.rows)?);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))?;
    println!("{text}");
    if let Some(path) = &ctx.opts.json {
        std::fs::write(path, &text)?;
    }
    result
}

fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    if let Some(sagas) = opts.profile_sagas {
        // One thread, so valgrind's counts do not depend on scheduling.
        let profiled = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(profile::run(sagas)));
        return match profiled {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
