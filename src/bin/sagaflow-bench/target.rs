//! What a closed loop drives: sagaflow started through its library, or the baseline.

use super::*;

/// What a closed loop drives: sagaflow (started through its library, run by the child)
/// or the baseline.
pub(crate) trait Target {
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

pub(crate) struct Sagaflow {
    pub(crate) applier: Applier,
    pub(crate) def: Arc<Definition>,
    pub(crate) child_pid: u32,
    /// Further replicas in the same consumer group (the scale scenario).
    pub(crate) replica_pids: std::sync::Mutex<Vec<u32>>,
    pub(crate) steps: Arc<AtomicU64>,
    pub(crate) counter: AtomicU64,
}

impl Sagaflow {
    pub(crate) async fn start_def(&self, def: &Definition, n: usize) -> anyhow::Result<Vec<Uuid>> {
        // One transaction per batch of starts (the driver batches what it starts at once,
        // as a trigger consumer or a batching API client would).
        let mut tx = self.applier.store.begin().await?;
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let starts = ids
            .iter()
            .map(|id| Start {
                def,
                req: StartRequest {
                    definition: def.name.clone(),
                    input: json!({ "n": self.counter.fetch_add(1, Ordering::Relaxed) }),
                    key: None,
                    id: Some(*id),
                    traceparent: None,
                },
                span: tracing::Span::none(),
            })
            .collect();
        let outcomes = self.applier.start_many_in_tx(&mut tx, starts).await?;
        for (id, out) in ids.iter().zip(&outcomes) {
            if !matches!(out, StartOutcome::Created(created, _) if created == id) {
                bail!("start was refused: {out:?}");
            }
        }
        // The service's relay learns of the rows at this commit, as it would of its own
        // process's starts (woken directly). In the transaction: on its own, the
        // notification was a commit of its own per batch of starts, which the service's
        // starts do not cost. Not `Store::committed`: another replica's announcements
        // wait up to 100 ms to gather, which the single-saga latency would count.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(wake::OUTBOX_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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
