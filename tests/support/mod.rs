//! Real infrastructure for integration tests: a database per test on the local
//! PostgreSQL, Apache Kafka (shared by the run, or a test's own), the service in-process
//! or as a child process, and participants speaking the documented protocol.
#![allow(dead_code, clippy::unwrap_used)]

pub mod held;
pub mod load;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sagaflow::config::Settings;
use sagaflow::definition::{self, Definition};
use sagaflow::engine::{Instance, Phase, SagaStatus};
use sagaflow::messaging::reply_token::ReplyKeys;
use sagaflow::participant::{self, ParticipantSettings, Policy};
use sagaflow::runtime::service;
use sagaflow::store::{self, HistoryRow, Store};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn log_init() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,sagaflow=debug,librdkafka=warn,rdkafka=warn")
            .with_test_writer()
            .try_init();
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh database, dropped when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("sagaflow_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (scripts/test starts it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, 4).await.unwrap();
        store.migrate().await.unwrap();
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(ADMIN_URL).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// An Apache Kafka broker (scripts/kafka). Most tests share the one `scripts/test` starts
/// for the whole run (`SAGAFLOW_TEST_KAFKA`), isolated by topic names and consumer groups
/// (see `settings`). A test that kills, pauses or restarts its broker owns one.
pub struct Broker {
    pub bootstrap: String,
    own: Option<OwnBroker>,
}

/// A broker this test started: its data directory and process id.
struct OwnBroker {
    dir: PathBuf,
    pid: u32,
}

/// Runs `scripts/kafka ARGS` and returns its `key=value` lines.
fn kafka_script(args: &[&str]) -> std::collections::HashMap<String, String> {
    try_kafka_script(args).unwrap_or_else(|| panic!("scripts/kafka {args:?} failed"))
}

/// [`kafka_script`], or `None` when the script fails.
fn try_kafka_script(args: &[&str]) -> Option<std::collections::HashMap<String, String>> {
    let out = Command::new(repo_path("scripts/kafka"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/kafka runs");
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

impl Broker {
    /// The test run's broker, or one of this test's own when none was started for the run
    /// (for example under a bare `cargo nextest run`: slower, but the same broker).
    pub fn shared() -> Broker {
        match std::env::var("SAGAFLOW_TEST_KAFKA") {
            Ok(bootstrap) if !bootstrap.is_empty() => Broker {
                bootstrap,
                own: None,
            },
            _ => Broker::own(),
        }
    }

    /// A broker of this test's own, on fresh storage; stopped and deleted when dropped.
    /// A free port can be taken between the check and the broker's bind: up to three
    /// tries, each on fresh ports and storage.
    pub fn own() -> Broker {
        let parent = std::process::id().to_string();
        for attempt in 1..=3 {
            let dir =
                std::env::temp_dir().join(format!("sagaflow-kafka-{}", Uuid::new_v4().simple()));
            let port = free_port().to_string();
            let dir_arg = dir.to_string_lossy().into_owned();
            let out = try_kafka_script(&[
                "start", "--dir", &dir_arg, "--port", &port, "--parent", &parent,
            ]);
            match out {
                Some(out) => {
                    return Broker {
                        bootstrap: out["bootstrap"].clone(),
                        own: Some(OwnBroker {
                            dir,
                            pid: out["pid"].parse().unwrap(),
                        }),
                    };
                }
                None if attempt < 3 => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                None => panic!("scripts/kafka start failed three times; log in {dir_arg}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn owned(&self) -> &OwnBroker {
        self.own
            .as_ref()
            .expect("only a broker of the test's own (Broker::own) may be stopped or paused")
    }

    pub fn pause(&self) {
        signal(self.owned().pid, "STOP");
    }

    pub fn resume(&self) {
        signal(self.owned().pid, "CONT");
    }

    /// SIGKILL: the broker dies with whatever it had not yet written to its log.
    pub fn kill9(&self) {
        kafka_script(&["kill", &self.owned().dir.to_string_lossy()]);
    }

    /// Starts the broker again on the same data directory and port.
    pub fn restart(&mut self) {
        let parent = std::process::id().to_string();
        let dir = self.owned().dir.to_string_lossy().into_owned();
        let out = kafka_script(&["start", "--dir", &dir, "--parent", &parent]);
        assert_eq!(out["bootstrap"], self.bootstrap);
        self.own.as_mut().unwrap().pid = out["pid"].parse().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let _ = Command::new(repo_path("scripts/kafka"))
                .args(["kill", &own.dir.to_string_lossy()])
                .status();
            if std::thread::panicking() {
                eprintln!(
                    "==> the test's own broker's log: {}/kafka.log",
                    own.dir.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(&own.dir);
            }
        }
    }
}

/// librdkafka's in-process mock cluster, on a real loopback port: only for what a real
/// broker cannot be made to do on cue. Points `settings` at it and creates every topic
/// the test sagas use.
pub fn mock_broker(
    settings: &mut Settings,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    settings.kafka.bootstrap_servers = mock.bootstrap_servers();
    settings.kafka.create_topics = false;
    let defs = load_defs(&settings.runtime.sagas_dir);
    let mut topics = command_topics(&defs);
    topics.extend(defs.iter().map(|d| d.reply_topic.clone()));
    topics.push(settings.kafka.dead_letter_topic.clone());
    topics.push(settings.kafka.lifecycle_topic.clone());
    for t in topics {
        mock.create_topic(&t, settings.kafka.topic_partitions, 1)
            .unwrap();
    }
    mock
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Settings for one test: its own database, consumer group and topics; fast polling.
///
/// Tests share a broker, so each test gets a namespace `ns`: every topic of its sagas
/// (commands, replies, triggers, dead letters, lifecycle) is renamed `<ns>.<topic>` in a
/// copy of `sagas_dir`, and its consumer group is `sagaflow-<ns>`. Nothing a test sends
/// or reads can reach another test. `topic(&settings, name)` gives a topic's real name.
pub fn settings(db: &TestDb, broker: &Broker, sagas_dir: &Path) -> Settings {
    let ns = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut s = Settings::default();
    s.database.url = db.url.clone();
    s.database.max_connections = 8;
    s.kafka.bootstrap_servers = broker.bootstrap.clone();
    s.kafka.group_id = format!("sagaflow-{ns}");
    s.kafka.dead_letter_topic = format!("{ns}.{}", s.kafka.dead_letter_topic);
    s.kafka.lifecycle_topic = format!("{ns}.{}", s.kafka.lifecycle_topic);
    s.kafka.topic_partitions = 4;
    s.http.listen = "127.0.0.1:0".into();
    s.runtime.sagas_dir = namespaced_sagas(sagas_dir, &ns);
    for def in load_defs(&s.runtime.sagas_dir) {
        let mut topics = command_topics(std::slice::from_ref(&def));
        topics.push(def.reply_topic.clone());
        topics.extend(def.trigger.iter().map(|t| t.topic.clone()));
        for t in topics {
            assert!(
                t.starts_with(&format!("{ns}.")),
                "topic `{t}` of `{}` escaped the test's namespace (see namespaced_yaml)",
                def.name
            );
        }
    }
    s.runtime.outbox_poll_ms = 100;
    s.runtime.timer_poll_ms = 50;
    s.runtime.shutdown_timeout_s = 5;
    // A key the test knows, so it can sign replies it writes by hand (a real participant
    // echoes the command's token instead).
    s.security.reply_keys = vec![format!("test-reply-key-{ns}-0123456789abcdef")];
    s
}

/// The reply token of the command `(saga, step, phase, attempt)`, as the service signs it.
pub fn reply_token(
    settings: &Settings,
    saga: Uuid,
    step: &str,
    phase: Phase,
    attempt: u32,
) -> String {
    let keys = settings
        .security
        .reply_keys
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    ReplyKeys::new(keys, true)
        .expect("test keys are long enough")
        .sign(sagaflow::engine::command_id(saga, step, phase, attempt))
}

/// The namespace of the test these settings belong to.
pub fn namespace(settings: &Settings) -> &str {
    settings
        .kafka
        .group_id
        .strip_prefix("sagaflow-")
        .expect("settings made by support::settings")
}

/// The real name of topic `name` for the test these settings belong to.
pub fn topic(settings: &Settings, name: &str) -> String {
    format!("{}.{name}", namespace(settings))
}

/// A new directory holding one definition, `file`, with `yaml` in it.
pub fn sagas_dir_with(file: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sagaflow-defs-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), yaml).unwrap();
    dir
}

/// A copy of every `*.yaml` in `dir` with its topics renamed by `namespaced_yaml`.
pub fn namespaced_sagas(dir: &Path, ns: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("sagaflow-sagas-{ns}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(
                out.join(path.file_name().unwrap()),
                namespaced_yaml(&text, ns),
            )
            .unwrap();
        }
    }
    out
}

/// `text` with every `topic:` and `reply_topic:` value prefixed by `<ns>.`; a definition
/// without a reply topic gets `<ns>.sagaflow.replies`, so the default is not shared either.
pub fn namespaced_yaml(text: &str, ns: &str) -> String {
    let re = regex::Regex::new(r"\b((?:reply_)?topic:\s*)([A-Za-z0-9._-]+)").unwrap();
    let renamed = re.replace_all(text, |c: &regex::Captures| {
        format!("{}{ns}.{}", &c[1], &c[2])
    });
    if renamed.contains("reply_topic:") {
        return renamed.into_owned();
    }
    let default = format!("{ns}.{}", sagaflow::definition::DEFAULT_REPLY_TOPIC);
    match renamed.find("\ndefaults:\n") {
        Some(at) => {
            let (head, tail) = renamed.split_at(at + "\ndefaults:\n".len());
            format!("{head}  reply_topic: {default}\n{tail}")
        }
        None if !renamed.contains("\ndefaults:") => {
            format!("defaults: {{reply_topic: {default}}}\n{renamed}")
        }
        None => panic!("namespaced_yaml: give this definition's `defaults:` a block form"),
    }
}

/// The service running inside the test process.
pub struct InProcess {
    pub addr: SocketAddr,
    pub cancel: CancellationToken,
    pub handle: JoinHandle<Result<(), service::ServeError>>,
}

impl InProcess {
    pub async fn start(settings: Settings) -> InProcess {
        let cancel = CancellationToken::new();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(service::run(settings, cancel.clone(), Some(tx)));
        let addr = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!("service did not start: {:?}", handle.await),
        };
        InProcess {
            addr,
            cancel,
            handle,
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "service did not stop cleanly: {r:?}"
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The `sagaflow serve` binary as a child process (for kill -9 tests).
pub struct Process {
    pub child: Child,
    pub port: u16,
}

impl Process {
    pub fn start(settings: &Settings) -> Process {
        let port = free_port();
        let mut cmd = Process::command(settings, port);
        if std::env::var("TEST_LOG").is_err() {
            cmd.stderr(Stdio::null());
        }
        Process {
            child: cmd.spawn().unwrap(),
            port,
        }
    }

    /// `sagaflow serve` configured from `settings` through the environment, listening
    /// on `port`; stdout discarded, stderr inherited.
    pub fn command(settings: &Settings, port: u16) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagaflow"));
        cmd.arg("serve")
            .env("SAGAFLOW_API__AUTH__ALLOW_UNAUTHENTICATED", "true")
            .env(
                "SAGAFLOW_SECURITY__REPLY_KEYS",
                serde_json::to_string(&settings.security.reply_keys).expect("strings serialise"),
            )
            .env("SAGAFLOW_DATABASE__URL", &settings.database.url)
            .env(
                "SAGAFLOW_DATABASE__MAX_CONNECTIONS",
                settings.database.max_connections.to_string(),
            )
            .env(
                "SAGAFLOW_KAFKA__BOOTSTRAP_SERVERS",
                &settings.kafka.bootstrap_servers,
            )
            .env("SAGAFLOW_KAFKA__GROUP_ID", &settings.kafka.group_id)
            .env(
                "SAGAFLOW_KAFKA__DEAD_LETTER_TOPIC",
                &settings.kafka.dead_letter_topic,
            )
            .env(
                "SAGAFLOW_KAFKA__LIFECYCLE_TOPIC",
                &settings.kafka.lifecycle_topic,
            )
            .env(
                "SAGAFLOW_KAFKA__TOPIC_PARTITIONS",
                settings.kafka.topic_partitions.to_string(),
            )
            .env(
                "SAGAFLOW_KAFKA__CREATE_TOPICS",
                settings.kafka.create_topics.to_string(),
            )
            .env("SAGAFLOW_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("SAGAFLOW_RUNTIME__SAGAS_DIR", &settings.runtime.sagas_dir)
            .env(
                "SAGAFLOW_RUNTIME__OUTBOX_POLL_MS",
                settings.runtime.outbox_poll_ms.to_string(),
            )
            .env(
                "SAGAFLOW_RUNTIME__OUTBOX_BATCH_SIZE",
                settings.runtime.outbox_batch_size.to_string(),
            )
            .env(
                "SAGAFLOW_RUNTIME__OUTBOX_RELAY_CONCURRENCY",
                settings.runtime.outbox_relay_concurrency.to_string(),
            )
            .env(
                "SAGAFLOW_RUNTIME__TIMER_POLL_MS",
                settings.runtime.timer_poll_ms.to_string(),
            )
            .env(
                "SAGAFLOW_RUNTIME__TIMER_BATCH_SIZE",
                settings.runtime.timer_batch_size.to_string(),
            )
            .env(
                "SAGAFLOW_RUNTIME__CONSUMER_WEDGED_AFTER_S",
                settings.runtime.consumer_wedged_after_s.to_string(),
            )
            .env(
                "SAGAFLOW_RUNTIME__SHUTDOWN_TIMEOUT_S",
                settings.runtime.shutdown_timeout_s.to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").map(|_| "info").unwrap_or("warn"),
            )
            .stdout(Stdio::null());
        for (k, v) in &settings.kafka.properties {
            cmd.env(
                format!(
                    "SAGAFLOW_KAFKA__PROPERTIES__{}",
                    k.replace('.', "_").to_uppercase()
                ),
                v,
            );
        }
        cmd
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        eventually(
            "the service process to be ready",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move { http_get(&url).await.filter(|(status, _)| *status == 200) }
            },
        )
        .await;
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `cmd` (from [`Process::command`] for `port`).
    pub fn spawn(mut cmd: Command, port: u16) -> Process {
        Process {
            child: cmd.spawn().unwrap(),
            port,
        }
    }

    /// Waits for the process to exit by itself; its status.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id();
        eventually(&format!("process {pid} to exit"), within, || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 client (no client crate needed): returns status and body.
pub async fn http(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Starts saga `name` over HTTP on the service at `base` (`http://host:port`); its id.
pub async fn start_saga(base: &str, name: &str, input: serde_json::Value) -> Uuid {
    let body = serde_json::json!({ "input": input });
    let (status, text) = http("POST", &format!("{base}/v1/sagas/{name}"), Some(&body), &[])
        .await
        .expect("the service answers");
    assert_eq!(status, 201, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

pub async fn http_get(url: &str) -> Option<(u16, String)> {
    http("GET", url, None, &[]).await
}

pub fn load_defs(dir: &Path) -> Vec<Arc<Definition>> {
    let (defs, diags) = definition::load_dir(dir);
    assert!(diags.is_empty(), "{diags:?}");
    defs.into_iter().map(Arc::new).collect()
}

/// Every command and compensation topic of these definitions.
pub fn command_topics(defs: &[Arc<Definition>]) -> Vec<String> {
    let owned: Vec<Definition> = defs.iter().map(|d| (**d).clone()).collect();
    participant::command_topics(&owned)
}

/// Running participants; `stop` them before the broker goes away.
pub struct Participants {
    cancel: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl Participants {
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), h).await;
        }
    }
}

impl Drop for Participants {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Participants for these definitions, answering by `policy`.
pub fn participants(
    settings: &Settings,
    defs: Vec<Arc<Definition>>,
    policy: Policy,
) -> Participants {
    let cancel = CancellationToken::new();
    let ps = ParticipantSettings {
        kafka: settings.kafka.clone(),
        group_id: format!("participants-{}", Uuid::new_v4().simple()),
        topics: command_topics(&defs),
    };
    let c = cancel.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = participant::run(defs, ps, policy, c).await {
            panic!("participant failed: {e}");
        }
    });
    Participants {
        cancel,
        handle: Some(handle),
    }
}

pub async fn saga(store: &Store, id: Uuid) -> Instance {
    store::get_saga(&store.pool, id)
        .await
        .unwrap()
        .expect("saga exists")
        .instance
}

pub async fn wait_status(
    store: &Store,
    id: Uuid,
    status: SagaStatus,
    timeout: Duration,
) -> Instance {
    eventually(
        &format!("saga {id} to be {}", status.as_str()),
        timeout,
        || async {
            let inst = saga(store, id).await;
            (inst.status == status).then_some(inst)
        },
    )
    .await
}

pub async fn timeline(store: &Store, id: Uuid) -> Vec<HistoryRow> {
    store::history(&store.pool, id).await.unwrap()
}

/// `phase:step#attempt` of every message sent, in order.
pub async fn sent(store: &Store, id: Uuid) -> Vec<String> {
    timeline(store, id)
        .await
        .into_iter()
        .filter(|h| h.kind == "command_sent" || h.kind == "compensation_sent")
        .map(|h| {
            format!(
                "{}:{}#{}",
                if h.kind == "command_sent" {
                    "cmd"
                } else {
                    "comp"
                },
                h.step.unwrap_or_default(),
                h.attempt.unwrap_or_default()
            )
        })
        .collect()
}

/// Every message on `topic` from its beginning up to its end as of this call (the high
/// watermark of each partition), read by a consumer outside any group.
pub async fn read_topic(settings: &Settings, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let kafka = settings.kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&kafka, &topic))
        .await
        .unwrap()
}

fn read_topic_blocking(
    kafka: &sagaflow::config::KafkaSettings,
    topic: &str,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = sagaflow::messaging::kafka::consumer_config(
        kafka,
        &format!("reader-{}", Uuid::new_v4().simple()),
    )
    .create()
    .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut ends = std::collections::HashMap::new();
    let mut list = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).unwrap();
        if high > low {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap().detach();
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
        out.push(m);
    }
    out
}

/// A CloudEvent in binary mode, as a trigger source sends one: JSON `data` as the body.
pub fn cloud_event(
    topic: String,
    key: &str,
    (id, source, event_type): (&str, &str, &str),
    data: &serde_json::Value,
) -> sagaflow::messaging::envelope::Record {
    sagaflow::messaging::envelope::Record {
        topic,
        key: key.to_owned(),
        headers: vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), id.into()),
            ("ce_source".into(), source.into()),
            ("ce_type".into(), event_type.into()),
            ("content-type".into(), "application/json".into()),
        ],
        payload: serde_json::to_vec(data).unwrap(),
    }
}

/// The value of header `name` of a received message.
pub fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    sagaflow::messaging::kafka::headers_of(m)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
}

/// An API token named `name` whose secret is `secret`, as `api.auth.tokens` lists it.
#[allow(dead_code)]
pub fn token(
    name: &str,
    secret: &str,
    scopes: &[sagaflow::config::Scope],
) -> sagaflow::config::TokenSettings {
    use sha2::Digest;
    let sha256 = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sagaflow::config::TokenSettings {
        name: name.into(),
        sha256,
        scopes: scopes.to_vec(),
    }
}
