//! Group commit for starts over HTTP: concurrent starts share one transaction, so a
//! burst of requests costs a few commits instead of one each.
//!
//! Two workers take turns at the queue. An idle worker takes the first waiting start
//! at once, with every other start already waiting (up to [`MAX_BATCH`] starts and
//! [`MAX_BATCH_BYTES`] of input), and commits them together; while it commits, the
//! next worker gathers what arrives meanwhile.
//! Nothing lingers to fill a batch, so no start waits for more than the commit ahead of
//! it and its own. Each caller is answered only after its transaction committed.
//!
//! A batch whose transaction fails is retried one start per transaction, so one start
//! that cannot be stored fails alone. Two starts with one business key in a batch are
//! decided as they would be one after the other: the second sees the first's row.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use super::start::Start;
use super::transition::{Applier, ApplyError, StartOutcome, StartRequest};
use crate::definition::Definition;
use crate::store::{Announcement, StoreError};
use crate::telemetry::metrics;

/// Starts per transaction at most: bounds a transaction's size and time.
pub const MAX_BATCH: usize = 256;
/// Input bytes per transaction: a batch's sagas are inserted by one statement, which
/// carries each input twice (the input and the state that holds it), and PostgreSQL
/// takes at most 1 GiB in one message. The start that crosses it is the batch's last.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Transactions in flight at once (each holds a database connection while it runs):
/// while one commits, the other gathers what arrives meanwhile.
pub const WORKERS: usize = 2;

type Answer = Result<StartOutcome, ApplyError>;

struct Pending {
    def: Arc<Definition>,
    req: StartRequest,
    answer: oneshot::Sender<Answer>,
    /// The input's size as JSON.
    bytes: usize,
    /// The request's span (the HTTP server span): the saga's start span is its child,
    /// as when the handler started the saga itself.
    span: tracing::Span,
}

/// The queue HTTP starts go through.
#[derive(Debug, Clone)]
pub struct StartQueue {
    applier: Applier,
    queue: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("definition", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl StartQueue {
    /// Spawns the workers on `tasks`; they finish the starts already queued and stop
    /// after `stop`.
    pub fn spawn(applier: Applier, tasks: &TaskTracker, stop: CancellationToken) -> StartQueue {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            tasks.spawn(work(applier.clone(), rx.clone(), stop.clone()));
        }
        StartQueue { applier, queue }
    }

    /// Starts a saga, sharing the transaction with concurrent starts. The checks that
    /// need no database (definition, input schema) run here, in the caller's task.
    /// `input_bytes`: the input's size as JSON, which bounds a shared transaction.
    pub async fn start(&self, req: StartRequest, input_bytes: usize) -> Answer {
        let Some(def) = self.applier.registry.current(&req.definition) else {
            return Ok(StartOutcome::UnknownDefinition);
        };
        if let Err(errors) = def.validate_input(&req.input) {
            return Ok(StartOutcome::InvalidInput(errors));
        }
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            def,
            req,
            answer,
            bytes: input_bytes,
            span: tracing::Span::current(),
        };
        if let Err(refused) = self.queue.send(pending) {
            // The workers have stopped (shutting down): start it alone.
            return self.applier.start(refused.0.req).await;
        }
        match answered.await {
            Ok(answer) => answer,
            // The worker is gone (it panicked): say so rather than hang.
            Err(_) => Err(ApplyError::Store(StoreError::Database(
                sqlx::Error::PoolClosed,
            ))),
        }
    }
}

async fn work(
    applier: Applier,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
    stop: CancellationToken,
) {
    loop {
        let batch = {
            let mut rx = queue.lock().await;
            let first = tokio::select! {
                biased;
                p = rx.recv() => p,
                _ = stop.cancelled() => {
                    // Refuse new starts (they run alone) and finish the queued ones.
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(first) = first else { return };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.bytes;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        // A client that went away (its request timed out) gets no saga, as when its
        // own transaction was dropped with its request.
        let mut batch: Vec<Pending> = batch
            .into_iter()
            .filter(|p| !p.answer.is_closed())
            .collect();
        // Each start's id is fixed before its first transaction: if a shared commit
        // fails ambiguously (committed, but the answer was lost), the retry alone hits
        // the same primary key instead of creating the saga twice.
        for p in &mut batch {
            p.req.id.get_or_insert_with(Uuid::now_v7);
        }
        // One order for keys across batches, so two batches never wait on each other's
        // business-key rows in opposite orders (a deadlock).
        batch.sort_by(|a, b| (&a.req.definition, &a.req.key).cmp(&(&b.req.definition, &b.req.key)));
        if !batch.is_empty() {
            commit(&applier, batch).await;
        }
    }
}

/// Runs `batch` in one transaction and answers each start; on failure, one by one.
async fn commit(applier: &Applier, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for p in batch {
            alone(applier, p).await;
        }
        return;
    }
    // Kept for the one-by-one retry: the transaction consumes the requests.
    let requests: Vec<StartRequest> = batch.iter().map(|p| p.req.clone()).collect();
    match together(applier, &batch, requests.clone()).await {
        Ok(outcomes) => {
            for (p, outcome) in batch.into_iter().zip(outcomes) {
                answer(p, Ok(outcome));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, starts = batch.len(), "a shared start transaction failed; starting each alone");
            for (mut p, req) in batch.into_iter().zip(requests) {
                p.req = req;
                alone(applier, p).await;
            }
        }
    }
}

async fn together(
    applier: &Applier,
    batch: &[Pending],
    requests: Vec<StartRequest>,
) -> Result<Vec<StartOutcome>, ApplyError> {
    let mut tx = applier.store.begin().await?;
    let starts = batch
        .iter()
        .zip(requests)
        .map(|(p, req)| Start {
            def: &p.def,
            req,
            span: p.span.clone(),
        })
        .collect();
    let outcomes = applier.start_many_in_tx(&mut tx, starts).await?;
    // Announced also after a failed commit (the starts retried alone then find their
    // sagas and announce nothing).
    let mut announcement = Announcement::default();
    for o in &outcomes {
        announcement.merge(o.announcement());
    }
    applier.store.commit(tx, announcement).await?;
    Ok(outcomes)
}

/// One start in a transaction of its own.
async fn alone(applier: &Applier, p: Pending) {
    let Pending {
        def,
        req,
        answer: to,
        span,
        ..
    } = p;
    let result = async {
        let mut tx = applier.store.begin().await?;
        let start = applier.start_in_tx(&mut tx, &def, req);
        let outcome = start.instrument(span).await?;
        applier.store.commit(tx, outcome.announcement()).await?;
        Ok(outcome)
    }
    .await;
    send(&def, to, result);
}

fn answer(p: Pending, result: Answer) {
    send(&p.def, p.answer, result);
}

fn send(def: &Definition, to: oneshot::Sender<Answer>, result: Answer) {
    if let Ok(StartOutcome::Created(..)) = result {
        metrics::saga_started(&def.name);
    }
    // A caller that went away (its request timed out) still has its saga: a repeat
    // with the same key finds it.
    let _ = to.send(result);
}
