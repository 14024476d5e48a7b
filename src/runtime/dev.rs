//! `sagaflow dev`: the whole product on one machine with one command. An embedded
//! Kafka-protocol broker (librdkafka's mock cluster) unless `--kafka` is given, the
//! local PostgreSQL, the example sagas, and demo participants answering their commands.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::service::{self, ServeError};
use crate::config::Settings;
use crate::definition;
use crate::participant::{self, ParticipantSettings};
use crate::store;

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub kafka: Option<String>,
    pub failure_rate: f64,
    pub latency: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("could not start the embedded Kafka broker")]
    Broker(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("database {url} is not reachable (is PostgreSQL running?)")]
    Database {
        url: String,
        #[source]
        source: store::StoreError,
    },
}

pub async fn run(
    mut settings: Settings,
    opts: DevOptions,
    cancel: CancellationToken,
) -> Result<(), DevError> {
    // The mock cluster lives as long as this function: dropping it stops the broker.
    let mock = match &opts.kafka {
        Some(_) => None,
        None => Some(rdkafka::mocking::MockCluster::new(1).map_err(DevError::Broker)?),
    };
    settings.kafka.bootstrap_servers = match (&opts.kafka, &mock) {
        (Some(k), _) => k.clone(),
        (None, Some(m)) => m.bootstrap_servers(),
        (None, None) => unreachable!("a mock cluster exists when no --kafka is given"),
    };
    if mock.is_some() {
        // The mock cluster answers a fetch only when its wait expires.
        settings
            .kafka
            .properties
            .entry("fetch.wait.max.ms".into())
            .or_insert_with(|| "10".into());
    }
    // `service::run` loads and validates the directory again and refuses bad files;
    // here the definitions only name topics and drive the demo participants.
    let (defs, _) = definition::load_dir(&settings.runtime.sagas_dir);
    if let Some(mock) = &mock {
        // The mock cluster has no CreateTopics API: create topics through its own handle.
        settings.kafka.create_topics = false;
        // Nor a group coordinator that describes its members to the group watchdog.
        settings.runtime.consumer_wedged_after_s = 0;
        let registry = super::registry::Registry::new(defs.clone());
        for topic in service::topic_names(&settings, &registry) {
            if let Err(e) = mock.create_topic(&topic, settings.kafka.topic_partitions, 1) {
                tracing::warn!(%topic, error = %e, "could not create topic on the embedded broker");
            }
        }
    }
    store::ensure_database(&settings.database.url)
        .await
        .map_err(|source| DevError::Database {
            url: settings.redacted().database.url,
            source,
        })?;

    let topics = participant::command_topics(&defs);

    let (bound_tx, bound_rx) = oneshot::channel::<SocketAddr>();
    let service_cancel = cancel.child_token();
    let service_settings = settings.clone();
    let service = tokio::spawn(service::run(
        service_settings,
        service_cancel.clone(),
        Some(bound_tx),
    ));
    let Ok(addr) = bound_rx.await else {
        return match service.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Ok(()),
        };
    };
    let participant_settings = ParticipantSettings {
        kafka: settings.kafka.clone(),
        group_id: "sagaflow-demo-participants".into(),
        topics,
    };
    let policy = participant::random_policy(opts.failure_rate, opts.latency);
    let defs: Vec<Arc<definition::Definition>> = defs.into_iter().map(Arc::new).collect();
    let participants = tokio::spawn(participant::run(
        defs,
        participant_settings,
        policy,
        cancel.child_token(),
    ));
    print_next_steps(addr, &settings, opts.kafka.is_none());
    let result = service.await;
    participants.abort();
    match result {
        Ok(r) => r.map_err(DevError::from),
        Err(e) => {
            tracing::error!(error = %e, "service task failed");
            Ok(())
        }
    }
}

fn print_next_steps(addr: SocketAddr, settings: &Settings, embedded: bool) {
    let base = format!("http://{addr}");
    let broker = if embedded {
        format!("{} (embedded)", settings.kafka.bootstrap_servers)
    } else {
        settings.kafka.bootstrap_servers.clone()
    };
    println!(
        r#"
sagaflow dev is running
  API:       {base}
  Kafka:     {broker}
  Database:  {db}
  Sagas:     {dir}

Start an order (the demo participants answer every command):
  curl -s -X POST {base}/v1/sagas/order-fulfilment -H 'content-type: application/json'{auth} \
    -d '{{"input": {{"order_id": "ord-1", "customer_id": "cus-1", "amount": 42.5, "currency": "EUR", "items": [{{"sku": "MUG", "quantity": 2}}]}}}}'

Then look at it (use the id the first command printed):
  curl -s {base}/v1/sagas/<id>{auth}
{auth_note}
Press Ctrl-C to stop.
"#,
        // With auth on, the curls need a token; the config holds only hashes, so the
        // user supplies it (never printed).
        auth = if settings.api.auth.enabled {
            " -H \"authorization: Bearer $TOKEN\""
        } else {
            ""
        },
        auth_note = if settings.api.auth.enabled {
            "(api.auth is enabled: set TOKEN to a token with the write and read scopes)\n"
        } else {
            ""
        },
        db = settings.redacted().database.url,
        dir = settings.runtime.sagas_dir.display(),
    );
}
