//! The service under test: `sagaflow serve` as a child process, and when it is ready.

use super::*;

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `sagaflow serve` on a free port; `env` is set last, so it overrides the rest.
pub(crate) fn start_service(
    ctx: &Ctx,
    db_url: &str,
    sagas_dir: &Path,
    log: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<(Proc, u16)> {
    let bin = match &ctx.opts.sagaflow_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary has no directory")?
            .join("sagaflow"),
    };
    let port = free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.arg("serve")
        .env("SAGAFLOW_API__AUTH__ALLOW_UNAUTHENTICATED", "true")
        .env("SAGAFLOW_DATABASE__URL", db_url)
        .env(
            "SAGAFLOW_KAFKA__BOOTSTRAP_SERVERS",
            &ctx.kafka.bootstrap_servers,
        )
        .env(
            "SAGAFLOW_KAFKA__GROUP_ID",
            format!("sagaflow-bench-{}", Uuid::new_v4().simple()),
        )
        .env(
            "SAGAFLOW_KAFKA__TOPIC_PARTITIONS",
            ctx.opts.partitions.to_string(),
        )
        .env("SAGAFLOW_KAFKA__LIFECYCLE_TOPIC", LIFECYCLE_TOPIC)
        .env("SAGAFLOW_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SAGAFLOW_RUNTIME__SAGAS_DIR", sagas_dir)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    if let Some(ms) = ctx.opts.fetch_wait_ms {
        cmd.env(
            "SAGAFLOW_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS",
            ms.to_string(),
        );
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v)));
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Ok((Proc { child }, port))
}

/// Waits until the service answers `/readyz`; fails, with its log, if it exits first
/// or is not ready within `limit`.
pub(crate) async fn wait_ready(
    p: &mut Proc,
    port: u16,
    log: &Path,
    limit: Duration,
) -> anyhow::Result<()> {
    let begin = Instant::now();
    while http_status(port, "/readyz").await != Some(200) {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!(
                "sagaflow serve exited ({status}); log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if begin.elapsed() > limit {
            bail!(
                "sagaflow serve not ready after {} s; log: {}",
                limit.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `n` services, each logging to `tmp/<name>-<i>.log`, with `env`; returns once every
/// one is ready (within 90 s of the start).
pub(crate) async fn start_ready_services(
    ctx: &Ctx,
    sagas_dir: &Path,
    tmp: &Path,
    name: &str,
    n: usize,
    env: &[(&str, String)],
) -> anyhow::Result<Vec<(Proc, u16)>> {
    let mut procs = Vec::new();
    for i in 0..n {
        let log = tmp.join(format!("{name}-{i}.log"));
        let (p, port) = start_service(ctx, &ctx.db_url, sagas_dir, &log, env)?;
        procs.push((p, port, log));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for (p, port, log) in &mut procs {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_ready(p, *port, log, left).await?;
    }
    Ok(procs.into_iter().map(|(p, port, _)| (p, port)).collect())
}
