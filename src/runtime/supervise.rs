//! Supervision of the long-running tasks (consumer, relay, timers, HTTP server).
//!
//! A task that ends while the service is not stopping, by returning or by panicking,
//! stops the whole process with a non-zero exit code, after logging which task ended
//! and why. Restarting the task in place was the alternative; exiting was chosen because
//! every piece of state lives in PostgreSQL and Kafka, so a fresh process loses nothing,
//! while a task restarted next to the others may inherit whatever the panic left half
//! done (a consumer assignment, a held lock, a producer mid-flush). The orchestrator
//! (Kubernetes, systemd) restarts the process with backoff and counts the restarts,
//! which is what an operator should see.
//!
//! Readiness comes from heartbeats, not flags: each loop beats at least every few
//! seconds, so a loop that is stuck (not only one that failed) makes `/readyz` fail.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

/// Longest silence of a healthy loop. The slowest beat is the relay's, which can wait
/// for a 30 s broker acknowledgement.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// A loop's last sign of life, and whether its last round went well.
#[derive(Debug, Default)]
pub struct Heartbeat {
    ok: AtomicBool,
    /// Milliseconds since `epoch()` of the last beat (0: never).
    last_ms: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Heartbeat {
    fn beat(&self, ok: bool) {
        self.ok.store(ok, Ordering::Relaxed);
        let ms = epoch().elapsed().as_millis() as u64;
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// The loop made progress (or had nothing to do) without error.
    pub fn ok(&self) {
        self.beat(true);
    }

    /// The loop is alive but its last round failed.
    pub fn failing(&self) {
        self.beat(false);
    }

    /// Its last round went well, no longer than `stale_after` ago.
    pub fn is_healthy(&self, stale_after: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let age = (epoch().elapsed().as_millis() as u64).saturating_sub(last);
        last > 0 && self.ok.load(Ordering::Relaxed) && age <= stale_after.as_millis() as u64
    }
}

/// Exit code when a supervised task ends unexpectedly (EX_SOFTWARE).
pub const TASK_DIED: u8 = 70;

/// Runs `task` as `name`. If it ends before `stopping` is cancelled, whether by
/// returning or by panicking, the cause is logged and `died` is cancelled: the caller
/// shuts the service down and exits with [`TASK_DIED`].
pub async fn supervised(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
    stopping: CancellationToken,
    died: CancellationToken,
) {
    let outcome = std::panic::AssertUnwindSafe(task).catch_unwind().await;
    if stopping.is_cancelled() {
        if let Err(panic) = outcome {
            tracing::error!(task = name, cause = %cause(panic.as_ref()), "a supervised task panicked while stopping");
        }
        return;
    }
    match outcome {
        Ok(()) => tracing::error!(
            task = name,
            "a supervised task ended unexpectedly; stopping the process"
        ),
        Err(panic) => {
            let cause = cause(panic.as_ref());
            tracing::error!(task = name, %cause, "a supervised task panicked; stopping the process");
        }
    }
    died.cancel();
}

fn cause(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Test hook: stops the process at a named point when the `SAGAFLOW_FAULT` environment
/// variable names it. `point` panics there (the supervision tests); `point:abort`
/// aborts the process on the spot, with no unwinding, flushing or cleanup, like a
/// SIGKILL at that exact line (the crash-point tests). Unset, which it always is
/// outside tests, it costs one comparison.
pub fn fault(point: &str) {
    if let Some((p, abort)) = configured_fault()
        && p == point
    {
        if *abort {
            eprintln!("injected crash at {point}");
            std::process::abort();
        }
        panic!("injected fault at {point}");
    }
}

/// Test hook for faults that are not a crash: whether `SAGAFLOW_FAULT` names `point`
/// (the caller then misbehaves in its own way).
pub fn fault_named(point: &str) -> bool {
    configured_fault().as_ref().is_some_and(|(p, _)| p == point)
}

fn configured_fault() -> &'static Option<(String, bool)> {
    static FAULT: OnceLock<Option<(String, bool)>> = OnceLock::new();
    FAULT.get_or_init(|| {
        let v = std::env::var("SAGAFLOW_FAULT").ok()?;
        Some(match v.strip_suffix(":abort") {
            Some(p) => (p.to_owned(), true),
            None => (v, false),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_go_stale() {
        let h = Heartbeat::default();
        assert!(!h.is_healthy(STALE_AFTER), "never beaten");
        h.ok();
        assert!(h.is_healthy(STALE_AFTER));
        h.failing();
        assert!(!h.is_healthy(STALE_AFTER));
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_stops_the_process() {
        let (stopping, died) = (CancellationToken::new(), CancellationToken::new());
        supervised(
            "boom",
            async { panic!("boom") },
            stopping.clone(),
            died.clone(),
        )
        .await;
        assert!(died.is_cancelled());
        let (stopping, died) = (CancellationToken::new(), CancellationToken::new());
        stopping.cancel();
        supervised("done", async {}, stopping, died.clone()).await;
        assert!(!died.is_cancelled(), "ending while stopping is normal");
    }
}
