//! Starting sagas: alone, or many in one transaction (the HTTP start queue's group
//! commit, the bench's driver) with one insert and one write batch for all of them.

use chrono::Utc;
use uuid::Uuid;

use super::transition::{
    Applier, ApplyError, StartOutcome, StartRequest, input_hash, legacy_input_hash, random,
};
use crate::definition::{Definition, InputError};
use crate::engine::{self, Env, Event, Instance, Rejection, Transition};
use crate::store::{self, Inserted, NewSaga, Tx, WriteBatch};
use crate::telemetry::saga as observe;
use crate::telemetry::spans::{self, SagaRef, Traced};
use crate::telemetry::{metrics, propagation};

/// One start of a batch: its definition, its request, and the span it runs under (its
/// saga's root span is a child of it, as when it runs alone; with `Span::none()`, of
/// the caller's current span). Ids, when given, must differ within a batch: a repeated
/// one fails the batch on the primary key.
#[derive(Debug)]
pub struct Start<'a> {
    pub def: &'a Definition,
    pub req: StartRequest,
    pub span: tracing::Span,
}

/// A start the engine accepted, not yet inserted.
struct Prepared<'a> {
    def: &'a Definition,
    hash: String,
    span: Traced,
    t: Transition,
}

impl Applier {
    /// Starts a saga (idempotent by `key`), in its own transaction.
    pub async fn start(&self, req: StartRequest) -> Result<StartOutcome, ApplyError> {
        let Some(def) = self.registry.current(&req.definition) else {
            return Ok(StartOutcome::UnknownDefinition);
        };
        if let Err(errors) = def.validate_input(&req.input) {
            return Ok(StartOutcome::InvalidInput(errors));
        }
        let mut tx = self.store.begin().await?;
        let outcome = self.start_in_tx(&mut tx, &def, req).await?;
        self.store.commit(tx, outcome.announcement()).await?;
        if let StartOutcome::Created(..) = outcome {
            metrics::saga_started(&def.name);
        }
        Ok(outcome)
    }

    /// Starts a saga inside the caller's transaction (trigger events use this so the
    /// start commits with the consumer's inbox row).
    pub async fn start_in_tx(
        &self,
        tx: &mut Tx<'_>,
        def: &Definition,
        req: StartRequest,
    ) -> Result<StartOutcome, ApplyError> {
        let start = Start {
            def,
            req,
            span: tracing::Span::current(),
        };
        let mut outcomes = self.start_many_in_tx(tx, vec![start]).await?;
        Ok(outcomes.pop().expect("one outcome per start"))
    }

    /// Starts each of `starts` inside the caller's transaction, in their order; one
    /// outcome each. Two round trips whatever their number (three when a business key
    /// was taken), where each start alone costs two.
    pub async fn start_many_in_tx(
        &self,
        tx: &mut Tx<'_>,
        starts: Vec<Start<'_>>,
    ) -> Result<Vec<StartOutcome>, ApplyError> {
        let now = Utc::now();
        let mut outcomes: Vec<Option<StartOutcome>> = Vec::with_capacity(starts.len());
        let mut prepared = Vec::with_capacity(starts.len());
        for s in starts {
            match s.span.in_scope(|| prepare(s.def, s.req, now)) {
                Ok(p) => {
                    outcomes.push(None);
                    prepared.push(p);
                }
                Err(refused) => outcomes.push(Some(refused)),
            }
        }
        let rows: Vec<NewSaga> = prepared
            .iter()
            .map(|p| NewSaga {
                instance: &p.t.instance,
                input_hash: &p.hash,
                trace_context: Some(p.span.stored()),
                step: p.t.instance.spotlight_step(p.def),
            })
            .collect();
        let inserted = store::insert_sagas(tx, &rows)
            .await
            .inspect_err(|e| failed(&prepared, e))?;
        let mut batch = WriteBatch::default();
        let mut decided = Vec::with_capacity(prepared.len());
        for (p, inserted) in prepared.iter().zip(inserted) {
            decided.push(match inserted {
                Inserted::Existing { id, input_hash }
                    if input_hash == p.hash
                        || input_hash == legacy_input_hash(&p.t.instance.input) =>
                {
                    StartOutcome::Existing(id)
                }
                Inserted::Existing { id, .. } => StartOutcome::Conflict(id),
                Inserted::New => {
                    observe::annotate(&p.span, &p.t);
                    self.stage(&mut batch, p.def, &p.t, Some(&p.span.context), now);
                    StartOutcome::Created(p.t.instance.id, p.t.instance.status)
                }
            });
        }
        let mut decided = decided.into_iter();
        let outcomes = outcomes
            .into_iter()
            .map(|refused| refused.or_else(|| decided.next()))
            .collect::<Option<Vec<_>>>()
            .expect("an outcome for each start");
        batch
            .flush(tx)
            .await
            .inspect_err(|e| failed(&prepared, e))?;
        Ok(outcomes)
    }
}

/// Marks the root span of each start in a batch that could not be written (the start
/// queue then tries each start alone, under a new root span).
fn failed(prepared: &[Prepared<'_>], e: &store::StoreError) {
    for p in prepared {
        p.span.error("database", e.to_string());
    }
}

/// The saga's first transition and its root span (which continues the caller, or opens
/// a new trace, so every saga has a stored context for its later transitions to join);
/// or the outcome of a start the engine refused.
fn prepare(
    def: &Definition,
    req: StartRequest,
    now: chrono::DateTime<Utc>,
) -> Result<Prepared<'_>, StartOutcome> {
    let hash = input_hash(&req.input);
    let id = req.id.unwrap_or_else(Uuid::now_v7);
    let caller = propagation::from_stored(req.traceparent.as_deref());
    let span = spans::start(
        SagaRef {
            id,
            name: &def.name,
        },
        caller.as_ref(),
    );
    let inst = Instance::new(id, def, req.input, req.key, now);
    let env = Env {
        now,
        random: random(),
    };
    match engine::apply(&inst, def, Event::Start, env) {
        Ok(t) => Ok(Prepared { def, hash, span, t }),
        // The engine reports whole-input problems as text; they have no narrower path.
        Err(Rejection::InvalidInput(errors)) => Err(StartOutcome::InvalidInput(
            errors
                .into_iter()
                .map(|message| InputError {
                    path: String::new(),
                    message,
                })
                .collect(),
        )),
        Err(other) => Err(StartOutcome::Rejected(other)),
    }
}
