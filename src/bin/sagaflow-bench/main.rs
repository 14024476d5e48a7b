//! `sagaflow-bench`: drives the real service (`sagaflow serve` as a child process) with
//! the real PostgreSQL and a real Kafka-protocol broker, with fast participants in this
//! process, and reports throughput, latency, CPU per step, commits per step, memory and
//! the outbox backlog per scenario; then the same for a bare-minimum baseline.
//! See docs/benchmarks.md.

mod baseline;
mod broker;
mod consume;
mod drain;
mod hops;
mod http;
mod lifecycle;
mod loops;
mod metrics;
mod profile;
mod scale;
mod scenarios;
mod service;
mod target;

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
use sagaflow::messaging::reply_token::ReplyKeys;
use sagaflow::participant::{self, Decision, ParticipantSettings, Policy};
use sagaflow::runtime::registry::Registry;
use sagaflow::runtime::start::Start;
use sagaflow::runtime::transition::{Applier, StartOutcome, StartRequest, TransitionSettings};
use sagaflow::store::{Store, wake};
use serde_json::json;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lifecycle::{header, lifecycle_listener, outbox_sampler, terminal_of};
use loops::{closed_loop, drain, one_at_a_time};
use metrics::{ScenarioResult, Snapshot};
use scenarios::{Report, run_drains, run_scenarios};
use service::{Proc, free_port, start_ready_services, start_service, wait_ready};
use target::{Sagaflow, Target};

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
