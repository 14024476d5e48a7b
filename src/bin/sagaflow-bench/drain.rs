//! Drain scenarios: how fast replicas empty a backlog that is all there at once.
//!
//! - **relay**: N outbox rows (10 per saga id, 256-byte payloads) committed in one
//!   transaction; time until the outbox is empty. One replica with one relay worker
//!   (what a single relay did before the outbox had shards), one replica with the
//!   default four, two replicas with four each.
//! - **timers**: N sagas whose step timeout becomes due in one transaction; time until
//!   every timer has fired (each firing is a transition: timed out, saga compensated,
//!   lifecycle events written). One replica, then two.
//!
//! Each configuration starts its own `sagaflow serve` processes, ready before the clock
//! starts, and reports the median of `--runs`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use uuid::Uuid;

use super::{Ctx, Proc, start_ready_services};

/// One step nobody answers; its timeout is brought forward by the scenario itself.
pub const TIMEOUT_SAGA: &str = r#"# Written by sagaflow-bench: a step whose timeout the timers scenario fires.
name: bench-timeout
defaults:
  reply_topic: bench.replies
  timeout: 24h
  retry: {max_attempts: 1}
steps:
  - name: wait
    command: {topic: bench.parked.commands, type: bench.wait, payload: {n: "{{ input.n }}"}}
    reply: {success: [bench.waited]}
    compensation: none
"#;

#[derive(Debug, Clone, Serialize)]
pub struct DrainRow {
    pub scenario: &'static str,
    pub replicas: usize,
    pub relay_concurrency: usize,
    pub run: String,
    pub items: i64,
    pub seconds: f64,
    pub per_s: f64,
}

impl DrainRow {
    pub fn line(&self) -> String {
        format!(
            "{:<8} replicas {} concurrency {}  run {:<12} {:>7} items in {:>7.2} s  {:>9.0}/s",
            self.scenario,
            self.replicas,
            self.relay_concurrency,
            self.run,
            self.items,
            self.seconds,
            self.per_s
        )
    }
}

/// `replicas` services with `relay_concurrency` each, all ready.
async fn replicas(
    ctx: &Ctx,
    sagas_dir: &Path,
    tmp: &Path,
    replicas: usize,
    relay_concurrency: usize,
) -> anyhow::Result<Vec<(Proc, u16)>> {
    let group = format!("sagaflow-bench-drain-{}", Uuid::new_v4().simple());
    let env = [
        (
            "SAGAFLOW_RUNTIME__OUTBOX_RELAY_CONCURRENCY",
            relay_concurrency.to_string(),
        ),
        ("SAGAFLOW_KAFKA__GROUP_ID", group),
    ];
    start_ready_services(ctx, sagas_dir, tmp, "drain", replicas, &env).await
}

async fn count(ctx: &Ctx, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(&ctx.pool).await?)
}

/// Seconds from `t0` until `sql` counts zero (polled every 5 ms, up to 10 minutes).
async fn until_empty(ctx: &Ctx, sql: &str, t0: Instant) -> anyhow::Result<f64> {
    loop {
        if count(ctx, sql).await? == 0 {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("not drained after 10 minutes: {sql}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Commits `n` outbox rows at once; seconds until the replicas have published them all.
async fn relay_once(ctx: &Ctx, n: i64) -> anyhow::Result<f64> {
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "INSERT INTO outbox (saga_id, topic, key, headers, payload) \
         SELECT s.id, 'bench.parked.commands', s.id::text, \
                jsonb_build_array(jsonb_build_array('ce_id', gen_random_uuid()::text), \
                                  jsonb_build_array('ce_time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))), \
                convert_to(repeat('x', 256), 'UTF8') \
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, ($1::bigint + 9) / 10)) s, \
              generate_series(1, 10) k \
         ORDER BY k, s.id LIMIT $1",
    )
    .bind(n)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify('sagaflow_outbox', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    until_empty(ctx, "SELECT count(*) FROM outbox", Instant::now()).await
}

/// `n` sagas waiting on a step timeout, made due in one commit; seconds until every
/// timer has fired.
async fn timers_once(ctx: &Ctx, port: u16, n: i64) -> anyhow::Result<f64> {
    let template = start_over_http(port).await?;
    sqlx::query(
        "WITH t AS (SELECT * FROM sagas WHERE id = $1), \
         s AS ( \
           INSERT INTO sagas (id, definition, version, status, input_hash, state, created_at, updated_at) \
           SELECT g.id, t.definition, t.version, t.status, t.input_hash, \
                  jsonb_set(t.state, '{id}', to_jsonb(g.id::text)), now(), now() \
           FROM t, (SELECT gen_random_uuid() AS id FROM generate_series(1, $2::bigint)) g \
           RETURNING id) \
         INSERT INTO timers (saga_id, timer, due_at) \
         SELECT s.id, tm.timer, tm.due_at FROM s, timers tm WHERE tm.saga_id = $1",
    )
    .bind(template)
    .bind(n - 1)
    .execute(&ctx.pool)
    .await?;
    sqlx::query("VACUUM (ANALYZE) sagas, timers")
        .execute(&ctx.pool)
        .await?;
    let mut tx = ctx.pool.begin().await?;
    sqlx::query("UPDATE timers SET due_at = now()")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify('sagaflow_timers', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    until_empty(ctx, "SELECT count(*) FROM timers", Instant::now()).await
}

/// Starts one `bench-timeout` saga through the service's API; its id.
async fn start_over_http(port: u16) -> anyhow::Result<Uuid> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"input":{"n":0}}"#;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "POST /v1/sagas/bench-timeout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("start answered {text}"))?;
    v["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("start answered {text}"))
}

/// Empties what a run left behind, so each run starts from the same tables.
async fn reset(ctx: &Ctx) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE sagas, saga_history, timers, outbox, inbox CASCADE")
        .execute(&ctx.pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    Relay,
    Timers,
}

/// Runs `drain` in each configuration, `runs` times; every row, medians included.
pub async fn run(
    ctx: &Ctx,
    drain: Drain,
    n: i64,
    sagas_dir: &Path,
    tmp: &Path,
) -> anyhow::Result<Vec<DrainRow>> {
    let configs: &[(usize, usize)] = match drain {
        Drain::Relay => &[(1, 1), (1, 4), (2, 4)],
        Drain::Timers => &[(1, 4), (2, 4)],
    };
    let scenario = match drain {
        Drain::Relay => "relay",
        Drain::Timers => "timers",
    };
    sagaflow::store::MIGRATOR.run(&ctx.pool).await?;
    let mut rows = Vec::new();
    for &(k, concurrency) in configs {
        let mut times = Vec::new();
        for run in 0..ctx.opts.runs.max(1) {
            reset(ctx).await?;
            let mut procs = replicas(ctx, sagas_dir, tmp, k, concurrency).await?;
            let seconds = match drain {
                Drain::Relay => relay_once(ctx, n).await?,
                Drain::Timers => timers_once(ctx, procs[0].1, n).await?,
            };
            for (p, _) in &mut procs {
                p.stop();
            }
            let row = DrainRow {
                scenario,
                replicas: k,
                relay_concurrency: concurrency,
                run: (run + 1).to_string(),
                items: n,
                seconds,
                per_s: n as f64 / seconds,
            };
            eprintln!("{}", row.line());
            times.push(seconds);
            rows.push(row);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let row = DrainRow {
            scenario,
            replicas: k,
            relay_concurrency: concurrency,
            run: format!("median of {}", times.len()),
            items: n,
            seconds: median,
            per_s: n as f64 / median,
        };
        eprintln!("{}", row.line());
        rows.push(row);
    }
    reset(ctx).await?;
    Ok(rows)
}
