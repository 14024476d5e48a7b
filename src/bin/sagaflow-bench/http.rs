//! HTTP starts: `POST /v1/sagas/bench-http` under `wrk` at 64 connections, against the
//! service with group commit (the default) and against a second service with
//! `api.group_commit = false`, one after the other on the same database. The saga's one
//! command is never answered (a day-long timeout), so the figure is the start path
//! alone: HTTP, the input check, the transaction, and the relay publishing the command.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use super::metrics::{self, ScenarioResult};
use super::{Ctx, Report, start_service, wait_ready};

pub const HTTP_SAGA: &str = r#"# Written by sagaflow-bench: started over HTTP, then parked (nobody answers).
name: bench-http
defaults:
  reply_topic: bench.replies
  timeout: 24h
steps:
  - name: wait
    command: {topic: bench.http.commands, type: bench.http_wait, payload: {n: "{{ input.n }}"}}
    reply: {success: [bench.http_waited]}
    compensation: none
"#;

const CONNECTIONS: usize = 64;

/// What wrk printed that the report keeps.
#[derive(Debug, Default, PartialEq)]
struct WrkFigures {
    requests_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// Answers that were not 2xx/3xx, plus socket errors.
    failures: u64,
}

fn duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("m") {
        (n, 60_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(out: &str) -> anyhow::Result<WrkFigures> {
    let mut f = WrkFigures::default();
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(n)) => f.requests_per_s = n.parse()?,
            (Some("50%"), Some(t)) => f.p50_ms = duration_ms(t).context("50%")?,
            (Some("90%"), Some(t)) => f.p90_ms = duration_ms(t).context("90%")?,
            (Some("99%"), Some(t)) => f.p99_ms = duration_ms(t).context("99%")?,
            (Some("Non-2xx"), _) => {
                f.failures += line.rsplit(' ').next().unwrap_or("0").parse::<u64>()?;
            }
            (Some("Socket"), Some("errors:")) => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                f.failures += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if f.requests_per_s == 0.0 {
        bail!("wrk printed no Requests/sec:\n{out}");
    }
    Ok(f)
}

fn wrk(script: &Path, url: &str, connections: usize, seconds: f64) -> anyhow::Result<String> {
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string()])
        .arg(format!("-d{}s", seconds.ceil() as u64))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install wrk; scripts/bench installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn started(ctx: &Ctx) -> u64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sagas WHERE definition = 'bench-http'")
        .fetch_one(&ctx.pool)
        .await
        .unwrap_or(0) as u64
}

/// One measured wrk run against the service at `port` (pid `pid`).
async fn measure(
    ctx: &Ctx,
    name: &str,
    pid: u32,
    port: u16,
    script: &Path,
) -> anyhow::Result<ScenarioResult> {
    let smoke = ctx.opts.smoke;
    let connections = if smoke { 4 } else { CONNECTIONS };
    let url = format!("http://127.0.0.1:{port}/v1/sagas/bench-http");
    // Unmeasured: connections, caches and the first relay rounds warm up.
    wrk(
        script,
        &url,
        connections,
        if smoke { 1.0 } else { ctx.opts.warmup.max(1.0) },
    )?;
    let starts = AtomicU64::new(started(ctx).await);
    let mut r = ScenarioResult {
        scenario: name.to_owned(),
        run: "1".into(),
        concurrency: connections,
        loadavg_before: metrics::loadavg(),
        ..Default::default()
    };
    let a = ctx.snapshot(&[pid], &starts).await;
    let out = wrk(
        script,
        &url,
        connections,
        if smoke { 1.0 } else { ctx.opts.duration },
    )?;
    starts.store(started(ctx).await, Ordering::Relaxed);
    let b = ctx.snapshot(&[pid], &starts).await;
    let figures = parse_wrk(&out)?;
    r.completed = b.steps - a.steps;
    r.fill(&a, &b, ctx.ticks, &mut []);
    // Per start, not per step; latency and rate as wrk saw them.
    r.sagas_per_s = figures.requests_per_s;
    (r.p50_ms, r.p90_ms, r.p99_ms) = (figures.p50_ms, figures.p90_ms, figures.p99_ms);
    r.notes = format!(
        "HTTP starts: per-step columns are per start; {} failed requests; wrk's CPU not counted",
        figures.failures
    );
    if figures.failures > 0 {
        bail!("{name}: {} requests failed:\n{out}", figures.failures);
    }
    Ok(r)
}

/// Both measurements; `main` is the running service (group commit on).
pub async fn starts(
    ctx: &Ctx,
    report: &mut Report,
    main: (u32, u16),
    db_url: &str,
    sagas_dir: &Path,
    tmp: &Path,
) -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        if ctx.opts.smoke {
            eprintln!("== http starts: skipped, wrk is not installed");
            return Ok(());
        }
        bail!("wrk is not installed (apt-get install wrk; scripts/bench installs it)");
    }
    let script = tmp.join("start.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"input\":{\"n\":1}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )?;
    eprintln!("== http starts, group commit ({CONNECTIONS} connections)");
    runs(ctx, report, "http-starts", main, &script).await?;

    let log = tmp.join("service-one-tx.log");
    let env = [("SAGAFLOW_API__GROUP_COMMIT", "false".to_owned())];
    let (mut alone, port) = start_service(ctx, db_url, sagas_dir, &log, &env)?;
    wait_ready(&mut alone, port, &log, Duration::from_secs(60)).await?;
    eprintln!("== http starts, one transaction per start");
    let r = runs(ctx, report, "http-starts-1tx", (alone.pid(), port), &script).await;
    alone.stop();
    r
}

/// `--runs` measurements of one service, and their median.
async fn runs(
    ctx: &Ctx,
    report: &mut Report,
    name: &str,
    (pid, port): (u32, u16),
    script: &Path,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for i in 0..ctx.opts.runs.max(1) {
        let mut r = measure(ctx, name, pid, port, script).await?;
        r.run = (i + 1).to_string();
        report.push(r.clone());
        rows.push(r);
    }
    if rows.len() > 1 {
        report.push(metrics::median_row(&rows));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read_with_its_units() {
        let out = "Running 10s test @ http://127.0.0.1:1/v1/sagas/bench-http
  2 threads and 64 connections
  Latency Distribution
     50%   12.50ms
     75%   20.00ms
     90%    1.20s
     99%  850.00us
  20000 requests in 10.00s, 3.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2000.50
";
        let f = parse_wrk(out).unwrap();
        assert_eq!(f.requests_per_s, 2000.5);
        assert_eq!((f.p50_ms, f.p90_ms), (12.5, 1200.0));
        assert!((f.p99_ms - 0.85).abs() < 1e-9);
        assert_eq!(f.failures, 7);
        assert!(parse_wrk("nothing").is_err());
    }
}
