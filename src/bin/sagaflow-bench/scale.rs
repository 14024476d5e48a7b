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
    Ctx, Proc, Report, Sagaflow, Target, Terminal, closed_loop, drain, start_ready_services,
};

/// The service's further replicas, ready, in `group`.
async fn start_replicas(
    ctx: &Ctx,
    sagas_dir: &Path,
    tmp: &Path,
    group: &str,
    n: usize,
) -> anyhow::Result<Vec<Proc>> {
    let mut env = ctx.opts.service_env();
    env.push(("SAGAFLOW_KAFKA__GROUP_ID", group.to_owned()));
    let procs = start_ready_services(ctx, sagas_dir, tmp, "replica", n, &env).await?;
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
