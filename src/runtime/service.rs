//! `sagaflow serve`: loads definitions, migrates, and supervises the consumer, the
//! outbox relay, the timer loop and the HTTP server until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::Registry;
use super::reload::Reloader;
use super::retention::{self, RetentionSettings};
use super::supervise::supervised;
use super::timers::{self, TimerSettings};
use super::transition::{Applier, TransitionSettings};
use crate::api::{self, AppState, Health};
use crate::config::Settings;
use crate::definition::diagnostic::render as render_diagnostics;
use crate::definition::{self, Diagnostic};
use crate::messaging::consumer::{self, ConsumerSettings};
use crate::messaging::kafka;
use crate::messaging::membership;
use crate::messaging::relay::{self, RelaySettings};
use crate::messaging::reply_token::{KeyTooShort, ReplyKeys};
use crate::store::{self, Store};
use crate::telemetry::metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("saga definitions are invalid:\n{}", render_diagnostics(.0))]
    Definitions(Vec<Diagnostic>),
    #[error("database")]
    Store(#[from] store::StoreError),
    #[error("kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped before the database was reachable")]
    Cancelled,
    #[error("security.reply_keys")]
    ReplyKeys(#[from] KeyTooShort),
    #[error("a supervised task ended unexpectedly (see the log above)")]
    TaskDied,
    #[error("topics are used for roles that exclude each other:\n{}", .0.join("\n"))]
    Topics(Vec<String>),
}

/// A long-running task, boxed so the supervisor takes each kind.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The configured reply keys, else the one kept in the database (made on first start).
pub async fn reply_keys(settings: &Settings, store: &Store) -> Result<ReplyKeys, ServeError> {
    let security = &settings.security;
    let keys = if security.reply_keys.is_empty() {
        vec![store::reply_key(&store.pool, &ReplyKeys::random_key()).await?]
    } else {
        security
            .reply_keys
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect()
    };
    Ok(ReplyKeys::new(keys, security.require_reply_token)?)
}

/// Connects with backoff until the database answers (or `cancel`): a database that is
/// down at start-up delays the service, it does not crash-loop it.
pub async fn connect(settings: &Settings, cancel: &CancellationToken) -> Result<Store, ServeError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Store::connect(&settings.database.url, settings.database.max_connections).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "database not reachable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(ServeError::Cancelled),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Every topic the loaded definitions and settings name.
pub fn topic_names(settings: &Settings, registry: &Registry) -> Vec<String> {
    let mut names = registry.inbound_topics();
    names.push(settings.kafka.dead_letter_topic.clone());
    if !settings.kafka.lifecycle_topic.is_empty() {
        names.push(settings.kafka.lifecycle_topic.clone());
    }
    for def in registry.all_current() {
        for step in &def.steps {
            names.push(step.command.topic.clone());
            if let Some(c) = &step.compensation {
                names.push(c.command.topic.clone());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Creates the topics sagaflow reads and writes (and the command topics of the loaded
/// definitions), ignoring those that exist. Brokers with auto-creation do not need it.
pub async fn ensure_topics(settings: &Settings, registry: &Registry) -> Result<(), ServeError> {
    let names = topic_names(settings, registry);
    let admin: AdminClient<DefaultClientContext> =
        kafka::create(&kafka::admin_config(&settings.kafka))?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                settings.kafka.topic_partitions,
                TopicReplication::Fixed(settings.kafka.topic_replication),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(_) => {}
            Err((topic, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "topic exists")
            }
            Err((topic, code)) => tracing::warn!(%topic, ?code, "could not create topic"),
        }
    }
    Ok(())
}

/// Reloads the definitions on every SIGHUP until `cancel`; the outcome goes to the log.
async fn reload_on_sighup(reloader: Arc<Reloader>, cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the API instead");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        match reloader.reload().await {
            Ok(report) => tracing::info!(?report, "SIGHUP: definitions reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: reload refused; the loaded definitions are unchanged")
            }
        }
    }
}

/// Runs the service until `cancel`; sends the bound HTTP address on `bound` once ready.
pub async fn run(
    settings: Settings,
    cancel: CancellationToken,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), ServeError> {
    // Before anything records: metrics recorded without a recorder are lost.
    metrics::install();
    let (defs, diags) = definition::load_dir(&settings.runtime.sagas_dir);
    if !diags.is_empty() {
        return Err(ServeError::Definitions(diags));
    }
    tracing::info!(count = defs.len(), dir = %settings.runtime.sagas_dir.display(), "definitions loaded");
    for warning in defs.iter().flat_map(|d| &d.warnings) {
        tracing::warn!(%warning, "definition warning");
    }
    let store = connect(&settings, &cancel).await?;
    store.migrate().await?;
    let registry = Arc::new(Registry::new(defs));
    registry.persist(&store).await?;
    for (name, version) in store::versions_in_use(&store.pool).await? {
        if let Err(e) = registry.version(&store, &name, &version).await {
            tracing::error!(error = %e, "a running saga's definition version cannot be loaded");
        }
    }
    let conflicts = registry.topic_conflicts(
        &settings.kafka.dead_letter_topic,
        &settings.kafka.lifecycle_topic,
    );
    if !conflicts.is_empty() {
        return Err(ServeError::Topics(conflicts));
    }
    if settings.kafka.create_topics
        && let Err(e) = ensure_topics(&settings, &registry).await
    {
        // Not fatal: the topics may exist already, or be created by the platform team.
        tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "could not create topics");
    }
    let applier = Applier {
        store: store.clone(),
        registry: registry.clone(),
        settings: Arc::new(TransitionSettings {
            lifecycle_topic: (!settings.kafka.lifecycle_topic.is_empty())
                .then(|| settings.kafka.lifecycle_topic.clone()),
            source: settings.runtime.source.clone(),
            reply_keys: Arc::new(reply_keys(&settings, &store).await?),
            lifecycle_input: settings.security.lifecycle_input,
            lifecycle_steps: settings.kafka.lifecycle_steps,
        }),
    };
    let producer: FutureProducer = kafka::producer(&settings.kafka)?;
    let consumer: StreamConsumer = kafka::create(&kafka::consumer_config(
        &settings.kafka,
        &settings.kafka.group_id,
    ))?;
    let topics = registry.inbound_topics();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    tracing::info!(?topics, group = %settings.kafka.group_id, "consuming");

    let health = Arc::new(Health::default());
    let intake = CancellationToken::new();
    let outbound = CancellationToken::new();
    let tasks = TaskTracker::new();
    let rt = &settings.runtime;
    // `stopping` tells the supervisors that tasks ending now is the plan; `died` is
    // cancelled by a supervisor when one ends anyway.
    let (stopping, died) = (CancellationToken::new(), CancellationToken::new());
    let watch = |name, task: Task| supervised(name, task, stopping.clone(), died.clone());
    tasks.spawn(watch(
        "consumer",
        Box::pin(consumer::run(
            applier.clone(),
            consumer,
            producer.clone(),
            ConsumerSettings {
                batch_size: rt.consumer_batch_size,
                linger: Duration::from_millis(rt.consumer_batch_linger_ms),
                dead_letter_topic: settings.kafka.dead_letter_topic.clone(),
                send_timeout: Duration::from_secs(30),
                lag_interval: Duration::from_millis(rt.metrics_interval_ms),
                park_unreadable_after: Duration::from_secs(rt.park_unreadable_after_s),
                watchdog: watchdog_on(&settings).then(|| membership::Watchdog {
                    group: settings.kafka.group_id.clone(),
                    client_id: kafka::consumer_client_id(&settings.kafka),
                    wedged_after: Duration::from_secs(rt.consumer_wedged_after_s),
                }),
                group_id: settings.kafka.group_id.clone(),
                bootstrap_servers: settings.kafka.bootstrap_servers.clone(),
            },
            health.consumer.clone(),
            intake.clone(),
        )),
    ));
    tasks.spawn(watch(
        "timers",
        Box::pin(timers::run(
            applier.clone(),
            TimerSettings {
                batch_size: rt.timer_batch_size,
                max_sleep: Duration::from_millis(rt.timer_poll_ms),
            },
            health.timers.clone(),
            intake.clone(),
        )),
    ));
    tasks.spawn(watch(
        "metrics",
        Box::pin(refresh_metrics(
            store.clone(),
            settings.database.max_connections,
            Duration::from_millis(rt.metrics_interval_ms),
            intake.clone(),
        )),
    ));
    tasks.spawn(watch(
        "retention",
        Box::pin(retention::run(
            store.clone(),
            RetentionSettings {
                finished: (rt.retention_finished_s > 0)
                    .then(|| Duration::from_secs(rt.retention_finished_s)),
                inbox: (rt.retention_inbox_s > 0)
                    .then(|| Duration::from_secs(rt.retention_inbox_s)),
                every: Duration::from_secs(rt.retention_interval_s.max(1)),
                batch_size: rt.retention_batch_size.max(1),
            },
            intake.clone(),
        )),
    ));
    let outbound_tasks = TaskTracker::new();
    outbound_tasks.spawn(watch(
        "relay",
        Box::pin(relay::run(
            store.clone(),
            producer.clone(),
            RelaySettings {
                batch_size: rt.outbox_batch_size,
                poll: Duration::from_millis(rt.outbox_poll_ms),
                send_timeout: Duration::from_secs(30),
                concurrency: relay_concurrency(&settings),
                kafka: settings.kafka.clone(),
            },
            health.relay.clone(),
            outbound.clone(),
        )),
    ));
    let listener = tokio::net::TcpListener::bind(&settings.http.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: settings.http.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: settings.http.listen.clone(),
        source,
    })?;
    let reloader = Arc::new(Reloader::new(
        registry.clone(),
        store.clone(),
        settings.runtime.sagas_dir.clone(),
        topics.clone(),
        settings.kafka.dead_letter_topic.clone(),
        settings.kafka.lifecycle_topic.clone(),
    ));
    tokio::spawn(reload_on_sighup(reloader.clone(), cancel.clone()));
    let mut state = AppState::new(applier.clone(), health.clone(), settings.api.clone());
    state.reloader = Some(reloader);
    state.contract_topics = crate::contract::ContractTopics::of(&settings.kafka);
    if settings.api.group_commit {
        state.starts = Some(crate::runtime::start_queue::StartQueue::spawn(
            applier.clone(),
            &tasks,
            intake.clone(),
        ));
    }
    // Streams end when HTTP stops taking requests.
    state.live = api::live::LiveFeed::new(settings.api.max_connections / 2, intake.clone());
    tokio::spawn(state.live.clone().listen(store.pool.clone()));
    let app = api::router(state);
    tasks.spawn(watch(
        "http",
        Box::pin(api::server::serve(
            listener,
            app,
            api::server::ServerLimits::from(&settings.api),
            intake.clone(),
        )),
    ));
    tracing::info!(%addr, "sagaflow is serving");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }

    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = died.cancelled() => {}
    }
    let budget = Duration::from_secs(rt.shutdown_timeout_s);
    tracing::info!(?budget, "shutting down: stopping intake");
    stopping.cancel();
    intake.cancel();
    tasks.close();
    if tokio::time::timeout(budget, tasks.wait()).await.is_err() {
        tracing::warn!("intake tasks did not stop in time");
    }
    // Publish what the last transactions wrote, then flush the producer.
    outbound.cancel();
    outbound_tasks.close();
    if tokio::time::timeout(budget / 2, outbound_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("outbox relay did not stop in time; unpublished rows stay in the outbox");
    }
    kafka::flush(&producer, Duration::from_secs(5));
    store.pool.close().await;
    if died.is_cancelled() {
        return Err(ServeError::TaskDied);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Gauges read from the database and the pool, refreshed periodically rather than
/// maintained per transition: replicas share the database, so any replica reports
/// the same, correct figure and a restart loses nothing.
pub async fn refresh_metrics(
    store: Store,
    max_connections: u32,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        refresh_metrics_once(&store, max_connections).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

pub async fn refresh_metrics_once(store: &Store, max_connections: u32) {
    if let Ok(counts) = store::count_unfinished(&store.pool).await {
        for status in ["running", "compensating", "failed"] {
            let n = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            metrics::sagas_in_flight(status, n);
        }
    }
    if let Ok(rows) = store::outbox_backlog(&store.pool).await {
        metrics::outbox_backlog(rows);
    }
    if let Ok(open) = store::count_open_dead_letters(&store.pool).await {
        metrics::dead_letters_open(open);
    }
    metrics::db_pool(store.pool.size(), store.pool.num_idle(), max_connections);
    metrics::upkeep();
}

/// The group watchdog runs unless turned off, or the group uses the KIP-848 protocol,
/// which the classic group description it reads does not cover.
fn watchdog_on(settings: &Settings) -> bool {
    let kip848 = settings
        .kafka
        .properties
        .get("group.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("consumer"));
    settings.runtime.consumer_wedged_after_s > 0 && !kip848
}

/// `runtime.outbox_relay_concurrency`, within what the pool leaves after the consumer,
/// the timer loop and the API (each batch holds a connection while the broker answers).
fn relay_concurrency(settings: &Settings) -> usize {
    let wanted = settings.runtime.outbox_relay_concurrency;
    let room = (settings.database.max_connections as usize)
        .saturating_sub(3)
        .max(1);
    if wanted > room {
        tracing::warn!(
            wanted,
            used = room,
            max_connections = settings.database.max_connections,
            "runtime.outbox_relay_concurrency lowered to leave database connections for the rest"
        );
    }
    wanted.min(room)
}
