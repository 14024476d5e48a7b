//! Every scenario a run can include, in the order a run takes them.

use super::*;

/// Creates `n` sagas parked on a reply: one real start of `bench-parked`, then its row
/// and timer rows copied `n - 1` times with fresh ids (set-based, in chunks).
pub(crate) async fn park(
    ctx: &Ctx,
    sf: &Sagaflow,
    parked_def: &Definition,
    n: u64,
) -> anyhow::Result<f64> {
    let begin = Instant::now();
    let template = sf.start_def(parked_def, 1).await?[0];
    let row = sqlx::query(
        "SELECT definition, version, status, input_hash, state FROM sagas WHERE id = $1",
    )
    .bind(template)
    .fetch_one(&ctx.pool)
    .await?;
    let (definition, version, status, hash, state): (
        String,
        String,
        String,
        String,
        serde_json::Value,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let timers = sqlx::query("SELECT timer, due_at FROM timers WHERE saga_id = $1")
        .bind(template)
        .fetch_all(&ctx.pool)
        .await?;
    let timer_keys: Vec<String> = timers.iter().map(|r| r.get(0)).collect();
    let timer_due: Vec<chrono::DateTime<chrono::Utc>> = timers.iter().map(|r| r.get(1)).collect();
    let mut done = 1u64;
    let chunk = 50_000u64;
    while done < n {
        let k = chunk.min(n - done);
        sqlx::query(
            "WITH s AS ( \
               INSERT INTO sagas (id, definition, version, status, business_key, input_hash, state, created_at, updated_at) \
               SELECT g.id, $2, $3, $4, NULL, $5, jsonb_set($6::jsonb, '{id}', to_jsonb(g.id::text)), now(), now() \
               FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1::bigint)) g \
               RETURNING id) \
             INSERT INTO timers (saga_id, timer, due_at) \
             SELECT s.id, t.timer, t.due_at FROM s CROSS JOIN UNNEST($7::text[], $8::timestamptz[]) AS t(timer, due_at)",
        )
        .bind(k as i64)
        .bind(&definition)
        .bind(&version)
        .bind(&status)
        .bind(&hash)
        .bind(&state)
        .bind(&timer_keys)
        .bind(&timer_due)
        .execute(&ctx.pool)
        .await?;
        done += k;
        if n >= 200_000 && done % 200_000 < chunk {
            eprintln!(
                "  parked {done} / {n} ({:.0} s)",
                begin.elapsed().as_secs_f64()
            );
        }
    }
    // Settle what a bulk load leaves behind (autovacuum would do it during the measurement).
    sqlx::query("VACUUM (ANALYZE) sagas, timers")
        .execute(&ctx.pool)
        .await?;
    Ok(begin.elapsed().as_secs_f64())
}

pub(crate) struct Report {
    pub(crate) rows: Vec<ScenarioResult>,
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    pub(crate) fn push(&mut self, r: ScenarioResult) {
        eprintln!(
            "{}",
            metrics::table(std::slice::from_ref(&r))
                .lines()
                .nth(1)
                .unwrap_or("")
        );
        self.rows.push(r);
    }
}

/// Which scenarios this run takes, and the counts they share.
struct Plan<'a> {
    opts: &'a Opts,
    runs: usize,
    /// The closed loop's concurrency that the baseline, the failing and the scale
    /// scenarios use: 100 when it is among `--concurrency`.
    loop_conc: usize,
}

impl Plan<'_> {
    fn new(opts: &Opts) -> Plan<'_> {
        Plan {
            opts,
            runs: opts.runs.max(1),
            loop_conc: if opts.concurrency.contains(&100) {
                100
            } else {
                opts.concurrency[0]
            },
        }
    }

    fn want(&self, s: Scenario) -> bool {
        let o = &self.opts.scenarios;
        o.is_empty() || o.contains(&s) || o.contains(&Scenario::All)
    }
}

/// The service and what drives it, for the scenarios that need it.
struct UnderTest {
    service: Proc,
    port: u16,
    sf: Sagaflow,
    rx: mpsc::UnboundedReceiver<Terminal>,
    parked_def: Arc<Definition>,
    /// Failure rate of forward steps, as f64 bits, switched per scenario.
    fail_rate: Arc<AtomicU64>,
    /// The consumer group, which the scale scenario's replicas join.
    group: String,
    sagas_dir: PathBuf,
}

pub(crate) async fn run_scenarios(
    ctx: &Ctx,
    report: &mut Report,
    cancel: &CancellationToken,
    tmp: &Path,
) -> anyhow::Result<()> {
    let plan = Plan::new(&ctx.opts);
    // The baseline runs first, before the service exists, so nothing else polls the broker.
    let baseline_median = match plan.want(Scenario::Baseline) {
        true => Some(baseline_scenarios(ctx, report, cancel, &plan).await?),
        false => None,
    };
    let needs_service = [
        Scenario::Single,
        Scenario::Loop,
        Scenario::Failing,
        Scenario::Scale,
        Scenario::Parked,
        Scenario::Http,
    ]
    .into_iter()
    .any(|s| plan.want(s));
    if !needs_service {
        return Ok(());
    }
    let mut t = start_under_test(ctx, report, cancel, tmp).await?;
    let single_median = match plan.want(Scenario::Single) {
        true => Some(single(ctx, report, cancel, &plan, &mut t).await?),
        false => None,
    };
    let loop_median = match plan.want(Scenario::Loop) {
        true => loops(ctx, report, &plan, &mut t).await?,
        false => None,
    };
    if plan.want(Scenario::Failing) {
        eprintln!(
            "== 10 % of forward steps fail, concurrency {}",
            plan.loop_conc
        );
        t.fail_rate.store(0.1f64.to_bits(), Ordering::Relaxed);
        let mut r = closed_loop(ctx, &t.sf, &mut t.rx, "failing-10%", plan.loop_conc).await?;
        t.fail_rate.store(0f64.to_bits(), Ordering::Relaxed);
        r.run = "1".into();
        r.notes = "completed + compensated both count as finished sagas".into();
        report.push(r);
    }
    if plan.want(Scenario::Scale) {
        let dirs = (t.sagas_dir.as_path(), tmp);
        scale::scale(
            ctx,
            report,
            &t.sf,
            &mut t.rx,
            dirs,
            &t.group,
            plan.loop_conc,
        )
        .await?;
    }
    if plan.want(Scenario::Parked) {
        parked(ctx, report, &mut t, single_median).await?;
    }
    if plan.want(Scenario::Http) {
        let main = (t.service.pid(), t.port);
        http::starts(ctx, report, main, &ctx.db_url, &t.sagas_dir, tmp).await?;
    }
    if let (Some(s), Some(b)) = (loop_median, baseline_median) {
        report.extra.insert(
            "ratio_to_baseline".into(),
            json!({"concurrency": plan.loop_conc, "sagaflow_sagas_per_s": s, "baseline_sagas_per_s": b, "ratio": s / b}),
        );
    }
    cancel.cancel();
    t.service.stop();
    Ok(())
}

/// The baseline one at a time, then in its closed loop; the loop's sagas/s (median).
async fn baseline_scenarios(
    ctx: &Ctx,
    report: &mut Report,
    cancel: &CancellationToken,
    plan: &Plan<'_>,
) -> anyhow::Result<f64> {
    let (o, runs, loop_conc) = (plan.opts, plan.runs, plan.loop_conc);
    eprintln!("== baseline (bare minimum per step), concurrency {loop_conc}");
    let (bl, mut rx) = baseline::Baseline::setup(
        ctx.pool.clone(),
        &ctx.kafka,
        o.partitions,
        500,
        Duration::from_millis(2),
        cancel.child_token(),
    )
    .await?;
    // Wait for both consumer groups: one saga through.
    let id = bl.start(1).await?[0];
    let mut p = HashMap::from([(id, Instant::now())]);
    drain(&mut rx, &mut p, Duration::from_secs(60)).await;
    if !p.is_empty() {
        bail!("the baseline did not complete a warm-up saga in 60 s");
    }
    let tap_cancel = cancel.child_token();
    let tap = hops::Tap::start(
        &ctx.kafka,
        &hops::Topics {
            commands: baseline::COMMANDS,
            replies: baseline::REPLIES,
            lifecycle: None,
        },
        tap_cancel.clone(),
    )?;
    tap.ready(async || Ok(bl.start(1).await?[0])).await;
    let mut rows = Vec::new();
    for i in 0..runs {
        let mut r = one_at_a_time(
            ctx,
            &bl,
            &mut rx,
            "baseline-single",
            o.single_n,
            Some((&tap, false)),
        )
        .await?;
        r.run = (i + 1).to_string();
        r.orchestrator_rss_mib = f64::NAN;
        r.orchestrator_peak_rss_mib = f64::NAN;
        report.push(r.clone());
        rows.push(r);
    }
    tap_cancel.cancel();
    if runs > 1 {
        report.push(metrics::median_row(&rows));
    }
    let mut rows = Vec::new();
    for i in 0..runs {
        let mut r = closed_loop(ctx, &bl, &mut rx, "baseline", loop_conc).await?;
        r.run = (i + 1).to_string();
        r.orchestrator_rss_mib = f64::NAN;
        r.orchestrator_peak_rss_mib = f64::NAN;
        r.notes =
            "orchestrator = the bench process (echo participant + baseline orchestrator + driver)"
                .into();
        report.push(r.clone());
        rows.push(r);
    }
    if runs > 1 {
        let m = metrics::median_row(&rows);
        report.push(m.clone());
        Ok(m.sagas_per_s)
    } else {
        Ok(rows.first().map(|r| r.sagas_per_s).unwrap_or(f64::NAN))
    }
}

/// `sagaflow serve` started and warmed up, its idle cost recorded, the bench's
/// participants and lifecycle listener running.
async fn start_under_test(
    ctx: &Ctx,
    report: &mut Report,
    cancel: &CancellationToken,
    tmp: &Path,
) -> anyhow::Result<UnderTest> {
    let o = &ctx.opts;
    let sagas_dir = tmp.join("sagas");
    std::fs::create_dir_all(&sagas_dir)?;
    std::fs::write(sagas_dir.join("bench.yaml"), BENCH_SAGA)?;
    std::fs::write(sagas_dir.join("bench-parked.yaml"), PARKED_SAGA)?;
    std::fs::write(sagas_dir.join("bench-http.yaml"), http::HTTP_SAGA)?;
    let log = tmp.join("service.log");
    let db_url = ctx.db_url.clone();
    // Named here so that the scale scenario's replicas join the same group.
    let group = format!("sagaflow-bench-{}", Uuid::new_v4().simple());
    let mut env: Vec<(&str, String)> = vec![("SAGAFLOW_KAFKA__GROUP_ID", group.clone())];
    env.extend(o.service_env());
    let (mut service, port) = start_service(ctx, &db_url, &sagas_dir, &log, &env)?;
    eprintln!(
        "sagaflow serve: pid {}, log {}",
        service.pid(),
        log.display()
    );
    let started = Instant::now();
    wait_ready(&mut service, port, &log, Duration::from_secs(60)).await?;
    let (defs, diags) = definition::load_dir(&sagas_dir);
    if !diags.is_empty() {
        bail!("bench definitions are invalid: {diags:?}");
    }
    let defs: Vec<Arc<Definition>> = defs.into_iter().map(Arc::new).collect();
    let find = |name: &str| {
        defs.iter()
            .find(|d| d.name == name)
            .cloned()
            .context("definition missing")
    };
    let bench_def = find("bench")?;
    let parked_def = find("bench-parked")?;
    let store = Store::connect(&db_url, 4).await?;
    let applier = Applier {
        store: store.clone(),
        registry: Arc::new(Registry::new(defs.iter().map(|d| (**d).clone()).collect())),
        settings: Arc::new(TransitionSettings {
            lifecycle_topic: Some(LIFECYCLE_TOPIC.into()),
            source: "/sagaflow".into(),
            // The key the service keeps in the database: commands this process stages
            // are answered to the service, which checks their tokens.
            reply_keys: Arc::new(ReplyKeys::new(
                vec![sagaflow::store::reply_key(&store.pool, &ReplyKeys::random_key()).await?],
                true,
            )?),
            lifecycle_input: false,
            lifecycle_steps: true,
        }),
    };
    let steps = Arc::new(AtomicU64::new(0));
    // Failure rate of forward steps, as f64 bits, switched per scenario.
    let fail_rate = Arc::new(AtomicU64::new(0f64.to_bits()));
    let policy: Policy = {
        let steps = steps.clone();
        let fail_rate = fail_rate.clone();
        Arc::new(move |c: &participant::Command| {
            steps.fetch_add(1, Ordering::Relaxed);
            let rate = f64::from_bits(fail_rate.load(Ordering::Relaxed));
            if rate == 0.0 {
                return (Decision::Success, Duration::ZERO);
            }
            participant::random_policy(rate, Duration::ZERO)(c)
        })
    };
    let mut rx = lifecycle_listener(&ctx.kafka, cancel.child_token())?;
    let ps = ParticipantSettings {
        kafka: ctx.kafka.clone(),
        group_id: format!("bench-participants-{}", Uuid::new_v4().simple()),
        topics: vec!["bench.commands".into()],
    };
    let pc = cancel.child_token();
    let pdefs = vec![bench_def.clone()];
    tokio::spawn(async move {
        if let Err(e) = participant::run(pdefs, ps, policy, pc).await {
            eprintln!("participants failed: {e}");
        }
    });
    let sf = Sagaflow {
        applier,
        def: bench_def,
        child_pid: service.pid(),
        replica_pids: std::sync::Mutex::default(),
        steps,
        counter: AtomicU64::new(0),
    };
    // Warm-up: every consumer group has joined once a saga completes.
    let id = sf.start(1).await?[0];
    let mut p = HashMap::from([(id, Instant::now())]);
    drain(&mut rx, &mut p, Duration::from_secs(90)).await;
    if !p.is_empty() {
        bail!(
            "no saga completed within 90 s of start-up; service log: {}",
            log.display()
        );
    }
    // What the service costs doing nothing (consumers polling the broker every
    // fetch.wait.max.ms, relay and timer polls): part of every per-step CPU figure.
    let idle = Duration::from_secs_f64(if o.smoke { 0.5 } else { 5.0 });
    let (c0, b0) = (
        metrics::cpu_ticks(sf.child_pid).unwrap_or(0),
        ctx.broker_pid.and_then(metrics::cpu_ticks).unwrap_or(0),
    );
    tokio::time::sleep(idle).await;
    let (c1, b1) = (
        metrics::cpu_ticks(sf.child_pid).unwrap_or(0),
        ctx.broker_pid.and_then(metrics::cpu_ticks).unwrap_or(0),
    );
    let ms_per_s = |d: u64| d as f64 * 1000.0 / ctx.ticks as f64 / idle.as_secs_f64();
    report.extra.insert(
        "idle_cpu_ms_per_s".into(),
        json!({"service": ms_per_s(c1.saturating_sub(c0)), "broker": ms_per_s(b1.saturating_sub(b0)), "window_s": idle.as_secs_f64()}),
    );
    report.extra.insert(
        "service_ready_s".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(UnderTest {
        service,
        port,
        sf,
        rx,
        parked_def,
        fail_rate,
        group,
        sagas_dir,
    })
}

/// One saga at a time, with the hop split; its p50 (median of the runs).
async fn single(
    ctx: &Ctx,
    report: &mut Report,
    cancel: &CancellationToken,
    plan: &Plan<'_>,
    t: &mut UnderTest,
) -> anyhow::Result<f64> {
    let (o, runs) = (plan.opts, plan.runs);
    eprintln!("== single: {} sagas one at a time", o.single_n);
    let tap_cancel = cancel.child_token();
    let tap = hops::Tap::start(
        &ctx.kafka,
        &hops::Topics {
            commands: "bench.commands",
            replies: "bench.replies",
            lifecycle: Some(LIFECYCLE_TOPIC),
        },
        tap_cancel.clone(),
    )?;
    tap.ready(async || Ok(t.sf.start(1).await?[0])).await;
    let mut rows = Vec::new();
    for i in 0..runs {
        let mut r = one_at_a_time(
            ctx,
            &t.sf,
            &mut t.rx,
            "single",
            o.single_n,
            Some((&tap, true)),
        )
        .await?;
        r.run = (i + 1).to_string();
        report.push(r.clone());
        rows.push(r);
    }
    tap_cancel.cancel();
    if runs > 1 {
        let m = metrics::median_row(&rows);
        let p50 = m.p50_ms;
        report.push(m);
        Ok(p50)
    } else {
        Ok(rows.first().map(|r| r.p50_ms).unwrap_or(f64::NAN))
    }
}

/// The closed loop at each `--concurrency`; sagas/s at the plan's (median).
async fn loops(
    ctx: &Ctx,
    report: &mut Report,
    plan: &Plan<'_>,
    t: &mut UnderTest,
) -> anyhow::Result<Option<f64>> {
    let (o, runs, loop_conc) = (plan.opts, plan.runs, plan.loop_conc);
    let mut loop_median = None;
    for &c in &o.concurrency {
        eprintln!("== closed loop, concurrency {c}");
        let n = if c == loop_conc { runs } else { 1 };
        let mut rows = Vec::new();
        for i in 0..n {
            let mut r = closed_loop(ctx, &t.sf, &mut t.rx, "closed-loop", c).await?;
            r.run = (i + 1).to_string();
            report.push(r.clone());
            rows.push(r);
        }
        if n > 1 {
            let m = metrics::median_row(&rows);
            if c == loop_conc {
                loop_median = Some(m.sagas_per_s);
            }
            report.push(m);
        } else if c == loop_conc {
            loop_median = rows.first().map(|r| r.sagas_per_s);
        }
    }
    Ok(loop_median)
}

/// A single saga's latency with `--parked` sagas waiting on a reply, and the memory
/// they take.
async fn parked(
    ctx: &Ctx,
    report: &mut Report,
    t: &mut UnderTest,
    single_median: Option<f64>,
) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let n = o.parked.max(1);
    eprintln!("== parking {n} sagas on a reply");
    let before = metrics::memory_mib(t.service.pid()).unwrap_or((f64::NAN, f64::NAN));
    let setup_s = park(ctx, &t.sf, &t.parked_def, n).await?;
    let parked_now: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sagas WHERE definition = 'bench-parked' AND status = 'running'",
    )
    .fetch_one(&ctx.pool)
    .await?;
    let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM timers")
        .fetch_one(&ctx.pool)
        .await?;
    let mut r = one_at_a_time(
        ctx,
        &t.sf,
        &mut t.rx,
        "single-with-parked",
        o.single_n,
        None,
    )
    .await?;
    r.run = "1".into();
    r.notes = format!(
        "{parked_now} sagas parked (running, waiting on a reply; {timers} timer rows) in {setup_s:.0} s; service RSS before parking {:.1} MiB",
        before.0
    );
    report.extra.insert(
        "parked".into(),
        json!({
            "requested": n,
            "parked_running": parked_now,
            "timer_rows": timers,
            "setup_s": (setup_s * 10.0).round() / 10.0,
            "service_rss_before_mib": before.0,
            "service_rss_after_mib": r.orchestrator_rss_mib,
            "service_peak_rss_mib": r.orchestrator_peak_rss_mib,
            "single_p50_before_ms": single_median,
            "single_p50_after_ms": r.p50_ms,
        }),
    );
    report.push(r);
    Ok(())
}

/// The relay and timers scenarios, after the others (whose service has stopped).
pub(crate) async fn run_drains(ctx: &Ctx, report: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let want = |s: Scenario| {
        o.scenarios.is_empty() || o.scenarios.contains(&s) || o.scenarios.contains(&Scenario::All)
    };
    let dir = tmp.join("drain-sagas");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench-timeout.yaml"), drain::TIMEOUT_SAGA)?;
    let mut rows = Vec::new();
    if want(Scenario::Relay) {
        eprintln!("== relay: {} outbox rows committed at once", o.relay_rows);
        rows.extend(drain::run(ctx, drain::Drain::Relay, o.relay_rows, &dir, tmp).await?);
    }
    if want(Scenario::Timers) {
        eprintln!("== timers: {} step timeouts due at once", o.timers);
        rows.extend(drain::run(ctx, drain::Drain::Timers, o.timers, &dir, tmp).await?);
    }
    if !rows.is_empty() {
        for r in &rows {
            println!("{}", r.line());
        }
        report
            .extra
            .insert("drains".into(), serde_json::to_value(&rows)?);
    }
    Ok(())
}
