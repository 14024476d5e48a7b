//! Live streams of saga changes as Server-Sent Events, fed by PostgreSQL `NOTIFY`:
//! every commit that changes sagas is followed by a notification of their ids
//! (`store::wake::SAGAS_CHANNEL`, sent by `store::announce`),
//! one listener per process fans them out to the open streams, and each stream reads
//! what it shows from the database. Nothing is kept per client but a cursor into the
//! fan-out, so a stream costs a connection slot and no database connection while idle.
//!
//! A stream lasts at most [`STREAM_LIFETIME`] and then ends; clients reconnect (the
//! `retry` field says after how long) and get the current state again, so nothing is
//! missed between two streams. A client that does not send `Accept:
//! text/event-stream` (a fuzzer, a curious `curl`) gets a snapshot, the opening event
//! and the end, rather than a response that never ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::AppState;
use super::extract::ApiPath;
use super::problem::{Kind, Problem};
use crate::store::wake;

/// Connections are recycled after a minute at the earliest (`server::ServerLimits`):
/// a stream ends before that, on its own terms.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(50);
/// How long a client waits before it reconnects (the SSE `retry` field).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Database reads by streams at once, per replica.
const STREAM_READS: usize = 2;
/// Changes a slow stream may fall behind by before it is told to resync.
const FAN_OUT_BACKLOG: usize = 1024;

/// One Server-Sent Event as a client reads it (the OpenAPI document's description of
/// each event of a stream).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// `saga` or `gone` (one saga); `ready`, `changed` or `resync` (all sagas).
    pub event: String,
    /// JSON text: the saga as `GET /v1/sagas/{saga}` gives it (`saga`), `{"id": …}`
    /// (`gone`), `{"sagas": [ids]}` (`changed`), `{}` (`ready`, `resync`).
    pub data: String,
    /// Milliseconds to wait before reconnecting once the stream ends (first event only).
    pub retry: Option<u64>,
}

/// What the listener fans out.
#[derive(Debug, Clone)]
pub enum Change {
    /// These sagas changed.
    Sagas(Arc<[Uuid]>),
    /// Changes may have been missed (the listener reconnected): look again.
    Resync,
}

/// The fan-out of changes, the cap on open streams, and the end of all streams at
/// shutdown.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    changes: broadcast::Sender<Change>,
    slots: Arc<Semaphore>,
    /// Streams reading the database at once: a resync makes every open stream read,
    /// and they must not take every pooled connection from the rest of the service.
    reads: Arc<Semaphore>,
    stop: CancellationToken,
}

impl LiveFeed {
    /// At most `max_streams` open at once; all end when `stop` is cancelled.
    pub fn new(max_streams: usize, stop: CancellationToken) -> LiveFeed {
        LiveFeed {
            changes: broadcast::channel(FAN_OUT_BACKLOG).0,
            slots: Arc::new(Semaphore::new(max_streams.max(1))),
            reads: Arc::new(Semaphore::new(STREAM_READS)),
            stop,
        }
    }

    /// Listens with `pool`'s settings and fans changes out until the feed stops. The
    /// listening connection is its own, not one of `pool`'s: it is held for good.
    pub async fn listen(self, pool: PgPool) {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone());
        let changes = self.changes.clone();
        wake::listen_with(&own, wake::SAGAS_CHANNEL, self.stop, |payload| {
            let change = match payload {
                None => Change::Resync,
                Some(p) => Change::Sagas(wake::parse_saga_payload(p).into()),
            };
            // No receiver (no stream open) is not an error.
            let _ = changes.send(change);
        })
        .await;
    }
}

/// A stream's hold on the feed: its cursor, its slot, and when it ends.
struct Watch {
    state: AppState,
    changes: broadcast::Receiver<Change>,
    reads: Arc<Semaphore>,
    stop: CancellationToken,
    until: Instant,
    _slot: OwnedSemaphorePermit,
}

impl Watch {
    /// The next change, or `None` when the stream should end.
    async fn next_change(&mut self) -> Option<Change> {
        let received = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return None,
            _ = tokio::time::sleep_until(self.until) => return None,
            c = self.changes.recv() => c,
        };
        match received {
            Ok(change) => Some(change),
            Err(RecvError::Lagged(_)) => Some(Change::Resync),
            Err(RecvError::Closed) => None,
        }
    }
}

/// The stream's opening: refuses clients that do not ask for events, and takes a slot.
fn open(state: &AppState, headers: &HeaderMap) -> Result<Watch, Box<Response>> {
    let wants_events = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let feed = &state.live;
    let Ok(slot) = feed.slots.clone().try_acquire_owned() else {
        let mut busy = Problem::of(Kind::Unavailable)
            .detail("too many live streams are open; try again later")
            .into_response();
        busy.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return Err(Box::new(busy));
    };
    Ok(Watch {
        state: state.clone(),
        changes: feed.changes.subscribe(),
        reads: feed.reads.clone(),
        stop: feed.stop.clone(),
        // A snapshot ends at once, after its opening event.
        until: Instant::now()
            + if wants_events {
                STREAM_LIFETIME
            } else {
                Duration::ZERO
            },
        _slot: slot,
    })
}

fn respond(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn event(name: &str, data: String) -> Event {
    Event::default().event(name).data(data)
}

/// Follow one saga live: an event `saga` with the saga as `GET /v1/sagas/{saga}`
/// gives it, at once and after each change; `gone` if it is deleted (retention).
/// The stream ends after 50 s: reconnect to go on (EventSource does). Without
/// `Accept: text/event-stream`, only the opening event is sent (a snapshot).
#[utoipa::path(
    get, path = "/v1/streams/sagas/{saga}", tag = "sagas", operation_id = "stream_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "Server-Sent Events: `saga` (data: the saga, as `GET /v1/sagas/{saga}`), `gone`",
         content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many streams open", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn saga_stream(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Response {
    let watch = match open(&state, &headers) {
        Ok(w) => w,
        Err(res) => return *res,
    };
    let first = match super::sagas::detail(&state, id).await {
        Ok(Some(d)) => serde_json::to_string(&d).unwrap_or_default(),
        Ok(None) => return Problem::not_found(&format!("no saga {id}")).into_response(),
        Err(res) => return res,
    };
    let opening = event("saga", first.clone()).retry(RECONNECT_AFTER);
    let later = futures::stream::unfold(
        (watch, first, false),
        move |(mut watch, mut last, gone)| async move {
            if gone {
                return None;
            }
            loop {
                match watch.next_change().await? {
                    Change::Sagas(ids) if !ids.contains(&id) => continue,
                    _ => {}
                }
                let read = {
                    let _turn = watch.reads.acquire().await.ok()?;
                    super::sagas::detail(&watch.state, id).await
                };
                match read {
                    // Unchanged as shown (e.g. a notification for an earlier commit).
                    Ok(Some(d)) => {
                        let text = serde_json::to_string(&d).unwrap_or_default();
                        if text != last {
                            last = text.clone();
                            return Some((Ok(event("saga", text)), (watch, last, false)));
                        }
                    }
                    Ok(None) => {
                        let gone = event("gone", serde_json::json!({ "id": id }).to_string());
                        return Some((Ok(gone), (watch, last, true)));
                    }
                    // Logged where it was built; the next change tries again.
                    Err(_) => {}
                }
            }
        },
    );
    respond(futures::StreamExt::chain(
        futures::stream::once(async move { Ok(opening) }),
        later,
    ))
}

/// Every saga change as it commits: `ready` once the stream listens, then `changed`
/// (data: `{"sagas": [ids]}`) per commit, and `resync` when changes may have been
/// missed (read what you show again). Reconnect after the end (50 s), and read again
/// on `ready`: changes between two streams are not replayed. Without `Accept:
/// text/event-stream`, only `ready` is sent.
#[utoipa::path(
    get, path = "/v1/streams/sagas", tag = "sagas", operation_id = "stream_sagas",
    responses(
        (status = 200, description = "Server-Sent Events: `ready`, `changed` (data: `{\"sagas\": [ids]}`), `resync`",
         content_type = "text/event-stream", body = StreamEvent),
        (status = 503, description = "Too many streams open", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn sagas_stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let watch = match open(&state, &headers) {
        Ok(w) => w,
        Err(res) => return *res,
    };
    let ready = event("ready", "{}".into()).retry(RECONNECT_AFTER);
    let later = futures::stream::unfold(watch, |mut watch| async move {
        let e = loop {
            match watch.next_change().await? {
                Change::Sagas(ids) if ids.is_empty() => continue,
                Change::Sagas(ids) => {
                    break event("changed", serde_json::json!({ "sagas": ids }).to_string());
                }
                Change::Resync => break event("resync", "{}".into()),
            }
        };
        Some((Ok(e), watch))
    });
    respond(futures::StreamExt::chain(
        futures::stream::once(async move { Ok(ready) }),
        later,
    ))
}
