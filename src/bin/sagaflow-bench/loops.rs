//! The closed loop and the one-at-a-time run, over any [`Target`].

use super::*;

pub(crate) const START_BATCH: usize = 500;

pub(crate) fn record(r: &mut ScenarioResult, kind: Kind) {
    match kind {
        Kind::Completed => r.completed += 1,
        Kind::Compensated => r.compensated += 1,
        Kind::Failed => r.failed += 1,
    }
}

/// Waits for every saga in `pending` to finish (bounded), so scenarios do not overlap.
pub(crate) async fn drain(
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    pending: &mut HashMap<Uuid, Instant>,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                pending.remove(&e.id);
            }
            _ => break,
        }
    }
}

pub(crate) async fn closed_loop<T: Target>(
    ctx: &Ctx,
    target: &T,
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    name: &str,
    concurrency: usize,
) -> anyhow::Result<ScenarioResult> {
    while rx.try_recv().is_ok() {}
    let mut r = ScenarioResult {
        scenario: name.to_owned(),
        concurrency,
        loadavg_before: metrics::loadavg(),
        ..Default::default()
    };
    let mut pending: HashMap<Uuid, Instant> = HashMap::new();
    let begin = Instant::now();
    let window_start = begin + Duration::from_secs_f64(ctx.opts.warmup);
    let window_end = window_start + Duration::from_secs_f64(ctx.opts.duration);
    let mut left = concurrency;
    while left > 0 {
        let n = left.min(START_BATCH);
        let at = Instant::now();
        for id in target.start(n).await? {
            pending.insert(id, at);
        }
        left -= n;
    }
    let mut first: Option<Snapshot> = None;
    let mut latencies = Vec::new();
    loop {
        let now = Instant::now();
        if first.is_none() && now >= window_start {
            first = Some(
                ctx.snapshot(&target.orchestrator_pids(), target.steps())
                    .await,
            );
        }
        if now >= window_end {
            break;
        }
        let wake = if first.is_none() {
            window_start
        } else {
            window_end
        };
        let mut events = Vec::new();
        match tokio::time::timeout_at(wake.into(), rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => bail!("terminal-event stream ended"),
            Err(_) => continue,
        }
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        let mut replace = 0;
        for e in events {
            if let Some(started) = pending.remove(&e.id) {
                if first.is_some() && e.at <= window_end {
                    latencies.push((e.at - started).as_secs_f64() * 1000.0);
                    record(&mut r, e.kind);
                }
                replace += 1;
            }
        }
        if replace > 0 && Instant::now() < window_end {
            let at = Instant::now();
            for id in target.start(replace).await? {
                pending.insert(id, at);
            }
        }
    }
    let last = ctx
        .snapshot(&target.orchestrator_pids(), target.steps())
        .await;
    let Some(first) = first else {
        bail!("measurement window never started")
    };
    r.fill(&first, &last, ctx.ticks, &mut latencies);
    (r.orchestrator_rss_mib, r.orchestrator_peak_rss_mib) = target.memory();
    ctx.outbox_between(&mut r, first.at, last.at);
    drain(rx, &mut pending, Duration::from_secs(60)).await;
    r.unfinished = pending.len() as u64;
    Ok(r)
}

/// With a tap, the result also splits the sagas' time into hops; `ends_with_event`
/// when a saga's end is an event on the lifecycle topic (sagaflow) rather than a commit.
pub(crate) async fn one_at_a_time<T: Target>(
    ctx: &Ctx,
    target: &T,
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    name: &str,
    n: usize,
    tap: Option<(&hops::Tap, bool)>,
) -> anyhow::Result<ScenarioResult> {
    while rx.try_recv().is_ok() {}
    let mut r = ScenarioResult {
        scenario: name.to_owned(),
        concurrency: 1,
        loadavg_before: metrics::loadavg(),
        ..Default::default()
    };
    let first = ctx
        .snapshot(&target.orchestrator_pids(), target.steps())
        .await;
    let mut latencies = Vec::with_capacity(n);
    let mut done = Vec::with_capacity(n);
    for _ in 0..n {
        let at = Instant::now();
        let (id, committed) = target.start_one().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) if e.id == id => {
                    latencies.push((e.at - at).as_secs_f64() * 1000.0);
                    done.push(hops::Timed {
                        id,
                        started: at,
                        committed,
                        ended: e.at,
                    });
                    record(&mut r, e.kind);
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("terminal-event stream ended"),
                Err(_) => {
                    r.unfinished += 1;
                    break;
                }
            }
        }
    }
    let last = ctx
        .snapshot(&target.orchestrator_pids(), target.steps())
        .await;
    r.fill(&first, &last, ctx.ticks, &mut latencies);
    (r.orchestrator_rss_mib, r.orchestrator_peak_rss_mib) = target.memory();
    ctx.outbox_between(&mut r, first.at, last.at);
    if let Some((tap, ends_with_event)) = tap {
        (r.hops, r.hops_sagas) = tap.breakdown(&done, 3, ends_with_event).await;
        eprint!("{}", metrics::hop_table(&r));
    }
    Ok(r)
}
