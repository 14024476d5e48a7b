//! Chaos under load, on Apache Kafka: three replicas serve `crash-flow` sagas (started
//! over HTTP and by trigger events) while random replicas are SIGKILLed and restarted,
//! the broker is SIGKILLed and restarted, and (in the long run) PostgreSQL restarts.
//! Then the invariant checker reads the database and the topics: no saga lost or
//! stuck, each ending exactly as its participants decided, no step attempt commanded
//! twice with different contents, compensations in reverse order, exactly one terminal
//! lifecycle event per saga, nothing dead-lettered.
//!
//! The README test command runs the short version (1,000 sagas, 3 replica kills, one
//! broker restart). `scripts/chaos` runs the long one (10,000 sagas, 20 kills, a broker
//! restart and a PostgreSQL restart) and docs/reliability.md has its figures. Sizes:
//! `CHAOS_SAGAS`, `CHAOS_KILLS`, `CHAOS_RESTART_POSTGRES=1`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sagaflow::messaging::kafka;
use serde_json::json;
use support::load::*;
use support::*;
use uuid::Uuid;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Ports of the replicas that are up, shared with the load generator.
type Live = Arc<Mutex<Vec<u16>>>;

/// Starts order `n` over HTTP on any live replica, retrying on another one when a
/// replica dies under the request (the key makes a repeated start idempotent).
async fn start_one(live: &Live, n: u64) {
    let body = json!({"input": {"n": n}, "key": format!("order-{n}")});
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = n as usize;
    loop {
        let port = {
            let ports = live.lock().unwrap();
            (!ports.is_empty()).then(|| ports[i % ports.len()])
        };
        if let Some(port) = port {
            let url = format!("http://127.0.0.1:{port}/v1/sagas/crash-flow");
            if let Some((status, _)) = http("POST", &url, Some(&body), &[]).await
                && (status == 200 || status == 201)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "order {n} could not be started");
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `total` orders, 9 of 10 over HTTP and 1 of 10 by a trigger event, about
/// `per_second` a second; the numbers started.
async fn load(
    settings: sagaflow::config::Settings,
    live: Live,
    total: u64,
    per_second: u64,
) -> Vec<u64> {
    let producer = kafka::producer(&settings.kafka).unwrap();
    let started = Instant::now();
    let mut orders = Vec::new();
    for chunk in (0..total).collect::<Vec<_>>().chunks(20) {
        let mut http_starts = Vec::new();
        for &n in chunk {
            if n % 10 == 9 {
                let record = cloud_event(
                    topic(&settings, "crash.orders"),
                    &format!("order-{n}"),
                    (&format!("placed-{n}"), "/tests/shop", "crash.order_placed"),
                    &json!({"n": n}),
                );
                kafka::send(&producer, &record, Duration::from_secs(120))
                    .await
                    .unwrap();
            } else {
                let live = live.clone();
                http_starts.push(tokio::spawn(async move { start_one(&live, n).await }));
            }
            orders.push(n);
        }
        for h in http_starts {
            h.await.unwrap();
        }
        // Pace the load so that the faults hit sagas in flight, not an idle service.
        let due = Duration::from_secs_f64(orders.len() as f64 / per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    orders
}

/// Every compensated saga compensated its steps in the reverse order they settled.
async fn compensations_in_reverse_order(store: &sagaflow::store::Store) -> usize {
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT h.saga_id, h.kind, h.step FROM saga_history h JOIN sagas s ON s.id = h.saga_id \
         WHERE s.status = 'compensated' \
           AND h.kind IN ('step_succeeded', 'step_failed', 'compensation_sent') ORDER BY h.id",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let mut by_saga: HashMap<Uuid, (Vec<String>, Vec<String>)> = HashMap::new();
    for (id, kind, step) in rows {
        let step = step.unwrap_or_default();
        let (settled, compensated) = by_saga.entry(id).or_default();
        let list = if kind == "compensation_sent" {
            compensated
        } else {
            settled
        };
        if !list.contains(&step) {
            list.push(step);
        }
    }
    let mut out_of_order = 0;
    for (id, (settled, compensated)) in &by_saga {
        let expected: Vec<&String> = settled
            .iter()
            .rev()
            .filter(|s| compensated.contains(s))
            .collect();
        let actual: Vec<&String> = compensated.iter().collect();
        if expected != actual {
            eprintln!("saga {id}: settled {settled:?}, compensated {compensated:?}");
            out_of_order += 1;
        }
    }
    out_of_order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_broker_and_database_killed_under_load_lose_nothing() {
    let sagas = env("CHAOS_SAGAS", 1_000);
    let kills = env("CHAOS_KILLS", 3);
    let restart_postgres = env("CHAOS_RESTART_POSTGRES", 0) == 1;
    let began = Instant::now();
    let mut broker = Broker::own();
    let mut rig = Rig::new(&broker).await;
    let mut replicas = vec![
        rig.replica().await,
        rig.replica().await,
        rig.replica().await,
    ];
    let live: Live = Arc::new(Mutex::new(replicas.iter().map(|r| r.port).collect()));
    // Spread the faults over the load: about 60 sagas a second.
    let per_second = 60;
    let loader = tokio::spawn(load(rig.settings.clone(), live.clone(), sagas, per_second));
    let span = Duration::from_secs(sagas / per_second).max(Duration::from_secs(10));
    let gap = span / (kills as u32 + 2);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for k in 0..kills {
        tokio::time::sleep(gap).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % replicas.len() as u64) as usize;
        let port = replicas[victim].port;
        live.lock().unwrap().retain(|p| *p != port);
        replicas[victim].kill9();
        eprintln!("chaos: killed replica on :{port} ({}/{kills})", k + 1);
        if k == kills / 2 {
            broker.kill9();
            eprintln!("chaos: killed the broker");
            tokio::time::sleep(Duration::from_secs(2)).await;
            broker.restart();
            eprintln!("chaos: restarted the broker");
        }
        if restart_postgres && k == kills / 3 {
            let out = std::process::Command::new("bash")
                .args([
                    "-c",
                    "pg_ctlcluster $(pg_lsclusters -h | awk 'NR==1{print $1}') main restart",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("chaos: restarted PostgreSQL");
        }
        let fresh = rig.replica().await;
        live.lock().unwrap().push(fresh.port);
        replicas[victim] = fresh;
    }
    rig.orders = loader.await.unwrap();
    let load_done = began.elapsed();
    rig.wait_terminal(sagas as i64).await;
    let out_of_order = compensations_in_reverse_order(&rig.store).await;
    let hidden: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, count(*) FROM saga_history \
         WHERE kind IN ('timed_out', 'retry_scheduled') GROUP BY kind",
    )
    .fetch_all(&rig.store.pool)
    .await
    .unwrap();
    let compensated: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status = 'compensated'")
            .fetch_one(&rig.store.pool)
            .await
            .unwrap();
    // Lost, stuck, ended wrongly, commanded twice, dead-lettered, terminal events.
    rig.check_outcomes(Retries::Allowed).await;
    assert_eq!(out_of_order, 0, "sagas compensated out of reverse order");
    println!(
        "chaos: {sagas} sagas ({compensated} compensated), {kills} replica kills, 1 broker kill{}; \
         load {:.0} s, all settled and checked after {:.0} s; lost 0, stuck 0, double-commanded 0, \
         compensations out of order 0, terminal events 1 per saga; timeouts and retries the faults cost: {hidden:?}",
        if restart_postgres {
            ", 1 PostgreSQL restart"
        } else {
            ""
        },
        load_done.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    );
    for mut r in replicas {
        r.terminate();
    }
}
