//! Reading the service's lifecycle events and sampling its outbox backlog.

use super::*;

/// The first value of header `key`, as text.
pub(crate) fn header<'m>(m: &'m impl Message, key: &str) -> Option<&'m str> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// The saga and its final status, if `m` is a lifecycle event of a saga's end.
pub(crate) fn terminal_of(m: &impl Message) -> Option<(Uuid, Kind)> {
    let kind = match header(m, "ce_type")? {
        "sagaflow.saga.completed" => Kind::Completed,
        "sagaflow.saga.compensated" => Kind::Compensated,
        "sagaflow.saga.failed" => Kind::Failed,
        _ => return None,
    };
    Some((Uuid::parse_str(header(m, "ce_sagaid")?).ok()?, kind))
}

/// Reads the lifecycle topic and reports sagas reaching a final status.
pub(crate) fn lifecycle_listener(
    kafka: &KafkaSettings,
    cancel: CancellationToken,
) -> anyhow::Result<mpsc::UnboundedReceiver<Terminal>> {
    let consumer: StreamConsumer = consume::own_group(kafka, "bench-lifecycle")
        .set("enable.auto.offset.store", "true")
        .create()?;
    consumer.subscribe(&[LIFECYCLE_TOPIC])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = consume::next(&consumer, &cancel).await {
            let at = Instant::now();
            if let Some((id, kind)) = terminal_of(&m)
                && tx.send(Terminal { id, kind, at }).is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

/// Samples the outbox backlog every 500 ms for the whole run.
pub(crate) fn outbox_sampler(
    pool: PgPool,
    samples: Arc<Mutex<Vec<(Instant, i64)>>>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            // The table exists once the service has migrated.
            if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(&pool)
                .await
            {
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), n));
            }
        }
    });
}
