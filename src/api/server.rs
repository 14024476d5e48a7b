//! The HTTP accept loop. `axum::serve` sets neither a header read timeout nor a
//! connection cap, so a client that sends half its headers (or nothing) holds a
//! connection and a task for as long as it likes, and enough of them exhaust file
//! descriptors. Here:
//! - HTTP/1.1 only: the API has no use for HTTP/2, and sniffing for it means reading
//!   the first bytes with no timeout of their own;
//! - each connection has `header_read_timeout` to send a request head, the first one
//!   and each next one on a kept-alive connection;
//! - a connection older than `max_age` finishes the request in hand and is closed, and
//!   one that still has not finished `grace` later (a client that never reads its
//!   answer) is dropped;
//! - at most `max_connections` are served at once; the next ones wait in the kernel's
//!   listen backlog rather than being accepted unserved.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Age after which a connection is closed once its request in hand is answered.
    pub max_age: Duration,
    /// How long a closing connection may take to finish its request.
    pub grace: Duration,
}

impl From<&crate::config::ApiSettings> for ServerLimits {
    fn from(api: &crate::config::ApiSettings) -> ServerLimits {
        let request = Duration::from_millis(api.request_timeout_ms);
        ServerLimits {
            header_read_timeout: Duration::from_millis(api.header_read_timeout_ms),
            max_connections: api.max_connections,
            // Long enough for many requests on one connection; short enough that a
            // slot held by a client that never reads is freed within minutes.
            max_age: (request * 4).max(Duration::from_secs(60)),
            grace: request,
        }
    }
}

/// Serves `app` on `listener` until `stop`; then stops accepting and lets the requests
/// in flight finish (within `grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            app.clone(),
            limits,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = tokio::time::sleep(limits.max_age) => None,
        _ = stop.cancelled() => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.grace, conn).await {
                Ok(r) => r,
                Err(_) => return, // dropped: the client did not take its answer
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}
