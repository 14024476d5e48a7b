//! No request can crash or starve the service: the review's probes, over real TCP
//! connections to the real accept loop (`api::server`).
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use std::time::{Duration, Instant};

use oneshot::*;
use sagaflow::api::server::{self, ServerLimits};
use sagaflow::config::ApiSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Serves the API on a loopback port; the address, and the token that stops it.
async fn serve(settings: ApiSettings) -> (String, CancellationToken, App) {
    let limits = ServerLimits::from(&settings);
    let app = app_with(settings).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        app.router.clone(),
        limits,
        stop.clone(),
    ));
    (addr, stop, app)
}

/// Sends a whole `GET path` and reads the answer's status line, if one comes within
/// `wait`.
async fn get(addr: &str, path: &str, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(wait, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&out)
            .lines()
            .next()
            .map(str::to_owned),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_cut_off_after_the_header_read_timeout() {
    let settings = ApiSettings {
        header_read_timeout_ms: 300,
        ..ApiSettings::default()
    };
    let (addr, stop, _app) = serve(settings).await;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    // The server closes the connection (answering 408 or not); before the fix it
    // waited for the rest of the headers for as long as the client liked.
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut out))
        .await
        .expect("the server closed the half-open request")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        get(&addr, "/healthz", Duration::from_secs(5))
            .await
            .unwrap()
            .contains("200")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed_after_the_header_read_timeout() {
    let settings = ApiSettings {
        header_read_timeout_ms: 300,
        max_connections: 1,
        ..ApiSettings::default()
    };
    let (addr, stop, _app) = serve(settings).await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut out))
        .await
        .expect("the server closed the silent connection")
        .unwrap();
    // Its slot is free again: the only one there is.
    assert!(
        get(&addr, "/healthz", Duration::from_secs(5))
            .await
            .unwrap()
            .contains("200")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let settings = ApiSettings {
        max_connections: 2,
        ..ApiSettings::default()
    };
    let (addr, stop, _app) = serve(settings).await;
    let idle: Vec<TcpStream> = vec![
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&addr).await.unwrap(),
    ];
    // The kernel accepts the third connection into the backlog; it is not served.
    assert_eq!(
        get(&addr, "/healthz", Duration::from_millis(800)).await,
        None
    );
    drop(idle);
    let answer = get(&addr, "/healthz", Duration::from_secs(5)).await;
    assert!(answer.unwrap().contains("200"));
    stop.cancel();
}

/// A definition whose input schema holds a regular expression that takes about half a
/// second to compile in a debug build (well under the API's 64 KiB).
fn expensive_definition() -> String {
    let alternatives: Vec<String> = (0..6000).map(|i| format!("x{i}y")).collect();
    format!(
        "name: heavy\ninput:\n  schema:\n    type: object\n    properties:\n      a: {{type: string, pattern: \"^({}){{1,20}}$\"}}\nsteps:\n  - name: s\n    command: {{topic: t, type: t.do, payload: {{}}}}\n    reply: {{success: [t.done]}}\n    compensation: none\n",
        alternatives.join("|")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_fast_while_expensive_validations_run() {
    let (addr, stop, _app) = serve(ApiSettings::default()).await;
    let body = expensive_definition();
    let client = reqwest_free_post(addr.clone(), body);
    let validations: Vec<_> = (0..4).map(|_| tokio::spawn(client.clone()())).collect();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while validations.iter().any(|v| !v.is_finished()) {
        let started = Instant::now();
        let status = get(&addr, "/healthz", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(status.contains("200"), "{status}");
        slowest = slowest.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for v in validations {
        let status = v.await.unwrap();
        assert!(status.contains("200"), "{status}");
    }
    assert!(
        probes >= 5,
        "only {probes} probes ran during the validations"
    );
    // Before the fix two validations held both workers and /healthz for 0.5 s or more.
    assert!(
        slowest < Duration::from_millis(300),
        "/healthz took {slowest:?}"
    );
    stop.cancel();
}

/// A closure that posts `body` to the validation endpoint and returns the status line.
fn reqwest_free_post(
    addr: String,
    body: String,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Clone {
    move || {
        let (addr, body) = (addr.clone(), body.clone());
        Box::pin(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /v1/definitions/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    }
}
