//! The scale-out scenario: the closed loop on 1, 2, 3… replicas of the service in one
//! consumer group, over one PostgreSQL and one broker. On one small machine the
//! replicas share its cores, so this shows what coordination costs (CPU per step of all
//! replicas together, commits and rollbacks per step), not a speed-up.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::mpsc;

use super::{
    Ctx, Proc, Report, Sagaflow, Target, Terminal, closed_loop, drain, http_status, start_service,
};

/// The service's further replicas, ready, in `group`.
async fn start_replicas(
    ctx: &Ctx,
    sagas_dir: &Path,
    tmp: &Path,
    group: &str,
    n: usize,
) -> anyhow::Result<Vec<Proc>> {
    let mut env: Vec<(&str, String)> = ctx
        .opts
        .service_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    env.push(("SAGAFLOW_KAFKA__GROUP_ID", group.to_owned()));
    let mut procs = Vec::new();
    for i in 0..n {
        let log = tmp.join(format!("replica-{}.log", i + 2));
        procs.push(start_service(ctx, &ctx.db_url, sagas_dir, &log, &env)?);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for (p, port) in &mut procs {
        while http_status(*port, "/readyz").await != Some(200) {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("a replica exited ({status}); logs in {}", tmp.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "a replica was not ready after 90 s; logs in {}",
                    tmp.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(procs.into_iter().map(|(p, _)| p).collect())
}

/// One closed loop at `concurrency` per replica count in `--replicas`.
pub(super) async fn scale(
    ctx: &Ctx,
    report: &mut Report,
    sf: &Sagaflow,
    rx: &mut mpsc::UnboundedReceiver<Terminal>,
    dirs: (&Path, &Path),
    group: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (sagas_dir, tmp) = dirs;
    for &n in &ctx.opts.replicas {
        eprintln!("== scale: {n} replica(s), concurrency {concurrency}");
        let mut extra = start_replicas(ctx, sagas_dir, tmp, group, n.saturating_sub(1)).await?;
        *sf.replica_pids.lock().unwrap_or_else(|p| p.into_inner()) =
            extra.iter().map(Proc::pid).collect();
        // The group rebalances as members join: let it settle (a saga through, then a
        // few seconds) before the loop's own warm-up, so the window measures the
        // steady state.
        let id = sf.start(1).await?[0];
        let mut pending = HashMap::from([(id, Instant::now())]);
        drain(rx, &mut pending, Duration::from_secs(90)).await;
        if !pending.is_empty() {
            bail!("no saga completed within 90 s of starting {n} replicas");
        }
        tokio::time::sleep(Duration::from_secs_f64(if ctx.opts.smoke {
            0.2
        } else {
            5.0
        }))
        .await;
        let mut r = closed_loop(ctx, sf, rx, &format!("scale-{n}"), concurrency).await?;
        r.run = "1".into();
        r.notes = format!(
            "{n} replica(s) in one group; CPU and RSS summed over them; {:.3} rollbacks per step",
            r.pg_rollbacks_per_step
        );
        report.push(r);
        sf.replica_pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for p in &mut extra {
            p.stop();
        }
    }
    Ok(())
}
