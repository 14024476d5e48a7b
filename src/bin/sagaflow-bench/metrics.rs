//! What the harness measures: CPU time and memory of processes (from /proc), machine
//! CPU use, PostgreSQL commit counts, latency percentiles, and the result rows.

use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use crate::hops::Hop;

/// Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`, normally 100).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are space-separated.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` and `VmHWM` (peak RSS) of a process, in MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// (busy, total) jiffies of all CPUs together.
pub fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A reading of every counter, taken at the start and the end of a measurement window.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub orchestrator_ticks: u64,
    pub broker_ticks: u64,
    pub bench_ticks: u64,
    /// PostgreSQL backends connected to the bench database.
    pub postgres_ticks: u64,
    pub machine: (u64, u64),
    pub commits: i64,
    pub rollbacks: i64,
    pub steps: u64,
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ScenarioResult {
    pub scenario: String,
    /// Which run of a repeated scenario (1-based), or "median".
    pub run: String,
    pub concurrency: usize,
    pub window_s: f64,
    pub completed: u64,
    pub compensated: u64,
    pub failed: u64,
    /// Sagas still running when the harness gave up waiting after the window.
    pub unfinished: u64,
    pub sagas_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Replies answered by the participants in the window (forward steps + compensations).
    pub steps: u64,
    pub steps_per_s: f64,
    /// utime+stime of the `sagaflow serve` child (or of the bench process for the baseline).
    pub orchestrator_cpu_us_per_step: f64,
    pub broker_cpu_us_per_step: f64,
    /// The bench process: participants, lifecycle consumer, saga starts.
    pub bench_cpu_us_per_step: f64,
    /// PostgreSQL backends of the bench database (not the WAL writer, checkpointer etc.).
    pub postgres_cpu_us_per_step: f64,
    pub pg_commits_per_step: f64,
    /// `xact_rollback`: relay rounds that found nothing or only held shards, and the like.
    pub pg_rollbacks_per_step: f64,
    /// All CPUs together, 100 % = every core busy.
    pub machine_busy_pct: f64,
    pub orchestrator_rss_mib: f64,
    pub orchestrator_peak_rss_mib: f64,
    pub outbox_max: i64,
    /// (seconds into the window, rows) every 500 ms, thinned to a few.
    pub outbox_samples: Vec<(f64, i64)>,
    pub loadavg_before: String,
    pub notes: String,
    /// One-at-a-time scenarios: the sagas' mean time split into hops (see `hops.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop>,
    /// How many sagas the hops cover (those with the plain message sequence).
    #[serde(skip_serializing_if = "is_zero")]
    pub hops_sagas: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ScenarioResult {
    pub fn fill(&mut self, a: &Snapshot, b: &Snapshot, ticks_per_s: u64, latencies: &mut [f64]) {
        let secs = (b.at - a.at).as_secs_f64();
        self.window_s = secs;
        let steps = b.steps.saturating_sub(a.steps);
        self.steps = steps;
        self.steps_per_s = steps as f64 / secs;
        self.sagas_per_s = (self.completed + self.compensated + self.failed) as f64 / secs;
        let us_per_tick = 1e6 / ticks_per_s as f64;
        let per_step = |ticks: u64| {
            if steps == 0 {
                f64::NAN
            } else {
                ticks as f64 * us_per_tick / steps as f64
            }
        };
        self.orchestrator_cpu_us_per_step =
            per_step(b.orchestrator_ticks.saturating_sub(a.orchestrator_ticks));
        self.broker_cpu_us_per_step = per_step(b.broker_ticks.saturating_sub(a.broker_ticks));
        self.bench_cpu_us_per_step = per_step(b.bench_ticks.saturating_sub(a.bench_ticks));
        self.postgres_cpu_us_per_step = per_step(b.postgres_ticks.saturating_sub(a.postgres_ticks));
        self.pg_commits_per_step = if steps == 0 {
            f64::NAN
        } else {
            (b.commits - a.commits) as f64 / steps as f64
        };
        self.pg_rollbacks_per_step = if steps == 0 {
            f64::NAN
        } else {
            (b.rollbacks - a.rollbacks) as f64 / steps as f64
        };
        let busy = b.machine.0.saturating_sub(a.machine.0) as f64;
        let total = b.machine.1.saturating_sub(a.machine.1) as f64;
        self.machine_busy_pct = if total > 0.0 {
            100.0 * busy / total
        } else {
            f64::NAN
        };
        latencies.sort_by(f64::total_cmp);
        self.p50_ms = percentile(latencies, 0.50);
        self.p90_ms = percentile(latencies, 0.90);
        self.p99_ms = percentile(latencies, 0.99);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Field-wise median of several runs of one scenario.
pub fn median_row(runs: &[ScenarioResult]) -> ScenarioResult {
    let Some(first) = runs.first() else {
        return ScenarioResult::default();
    };
    let m = |f: fn(&ScenarioResult) -> f64| median(runs.iter().map(f).collect());
    let mu =
        |f: fn(&ScenarioResult) -> u64| median(runs.iter().map(|r| f(r) as f64).collect()) as u64;
    ScenarioResult {
        scenario: first.scenario.clone(),
        run: format!("median of {}", runs.len()),
        concurrency: first.concurrency,
        window_s: m(|r| r.window_s),
        completed: mu(|r| r.completed),
        compensated: mu(|r| r.compensated),
        failed: mu(|r| r.failed),
        unfinished: mu(|r| r.unfinished),
        sagas_per_s: m(|r| r.sagas_per_s),
        p50_ms: m(|r| r.p50_ms),
        p90_ms: m(|r| r.p90_ms),
        p99_ms: m(|r| r.p99_ms),
        steps: mu(|r| r.steps),
        steps_per_s: m(|r| r.steps_per_s),
        orchestrator_cpu_us_per_step: m(|r| r.orchestrator_cpu_us_per_step),
        broker_cpu_us_per_step: m(|r| r.broker_cpu_us_per_step),
        bench_cpu_us_per_step: m(|r| r.bench_cpu_us_per_step),
        postgres_cpu_us_per_step: m(|r| r.postgres_cpu_us_per_step),
        pg_commits_per_step: m(|r| r.pg_commits_per_step),
        pg_rollbacks_per_step: m(|r| r.pg_rollbacks_per_step),
        machine_busy_pct: m(|r| r.machine_busy_pct),
        orchestrator_rss_mib: m(|r| r.orchestrator_rss_mib),
        orchestrator_peak_rss_mib: m(|r| r.orchestrator_peak_rss_mib),
        outbox_max: mu(|r| r.outbox_max.max(0) as u64) as i64,
        outbox_samples: Vec::new(),
        loadavg_before: first.loadavg_before.clone(),
        notes: String::new(),
        hops: mean_hops(runs),
        hops_sagas: runs.iter().map(|r| r.hops_sagas).sum(),
    }
}

/// The runs' hops together: each hop's mean over all their sagas.
fn mean_hops(runs: &[ScenarioResult]) -> Vec<Hop> {
    let total: usize = runs.iter().map(|r| r.hops_sagas).sum();
    let Some(first) = runs.first().filter(|_| total > 0) else {
        return Vec::new();
    };
    (0..first.hops.len())
        .map(|i| Hop {
            hop: first.hops[i].hop.clone(),
            mean_ms: runs
                .iter()
                .filter_map(|r| Some(r.hops.get(i)?.mean_ms * r.hops_sagas as f64))
                .filter(|v| v.is_finite())
                .sum::<f64>()
                / total as f64,
        })
        .collect()
}

/// A one-at-a-time row's hops, one line each, and their sum against the mean latency.
pub fn hop_table(r: &ScenarioResult) -> String {
    let mut out = format!(
        "{} run {}: mean ms per saga by hop ({} sagas)\n",
        r.scenario, r.run, r.hops_sagas
    );
    for h in &r.hops {
        out.push_str(&format!("  {:<58} {:>7.2}\n", h.hop, h.mean_ms));
    }
    let sum: f64 = r.hops.iter().map(|h| h.mean_ms).sum();
    out.push_str(&format!("  {:<58} {:>7.2}\n", "sum", sum));
    out
}

pub fn table(rows: &[ScenarioResult]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:<12} {:>5} {:>7} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>6} {:>7} {:>7} {:>8}\n",
        "scenario",
        "run",
        "conc",
        "done",
        "sagas/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "orch µs/st",
        "brkr µs/st",
        "bench µs",
        "pg µs/st",
        "commit/st",
        "busy %",
        "RSS MiB",
        "peak",
        "outbox⌈⌉"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<12} {:>5} {:>7} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>9.3} {:>6.0} {:>7.1} {:>7.1} {:>8}\n",
            r.scenario,
            r.run,
            r.concurrency,
            r.completed + r.compensated + r.failed,
            r.sagas_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.orchestrator_cpu_us_per_step,
            r.broker_cpu_us_per_step,
            r.bench_cpu_us_per_step,
            r.postgres_cpu_us_per_step,
            r.pg_commits_per_step,
            r.machine_busy_pct,
            r.orchestrator_rss_mib,
            r.orchestrator_peak_rss_mib,
            r.outbox_max
        ));
    }
    out
}
