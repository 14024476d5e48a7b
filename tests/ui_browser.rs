//! The console (`/ui`) in a real browser: `sagaflow dev` on the test run's Kafka with the
//! example sagas and `console-check` (tests/browser/sagas), driven by
//! `scripts/browser/console.mjs` in Debian's Chromium through playwright-core, with
//! axe-core checking accessibility. It also writes the screenshots docs/ui.md shows
//! (docs/ui/*.png), so they are regenerated on every run. `scripts/node-env` installs
//! the npm packages and `scripts/test` installs Chromium. While working on one scenario,
//! `SAGAFLOW_BROWSER_SCENARIOS=c,d` runs only those (the script inherits the test's
//! environment).
#![allow(clippy::unwrap_used)]

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::*;

/// Longest the whole browser run may take (it takes well under a minute; every wait in
/// it has a deadline of its own, this catches a browser that hangs).
const BROWSER_RUN: Duration = Duration::from_secs(180);

/// A child process stopped when this is dropped, also when the test fails: SIGTERM first,
/// so `sagaflow dev`'s demo participants leave their consumer group instead of holding
/// up the next run's rebalance until their session expires; SIGKILL if it lingers.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new directory with the example sagas and console-check, whose commands' `demo`
/// field scripts the demo participants' answers.
fn sagas_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sagaflow-ui-browser-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = std::fs::read_dir(repo_path("sagas")).unwrap();
    let files = examples
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .chain([repo_path("tests/browser/sagas/console-check.yaml")]);
    for file in files {
        std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
    }
    dir
}

/// The last `lines` lines of the file at `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    assert!(
        repo_path("scripts/browser/node_modules/playwright-core").is_dir(),
        "run scripts/node-env first (it installs playwright-core and axe-core)"
    );
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let plain = sagas_dir();
    // Its own database, consumer group and topic names (a namespaced copy of the sagas),
    // so nothing reaches another test on the shared broker.
    let settings = settings(&db, &broker, &plain);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    // The environment `sagaflow serve` gets in the other tests, for `sagaflow dev`.
    let serve = Process::command(&settings, port);
    let mut dev = Command::new(env!("CARGO_BIN_EXE_sagaflow"));
    for (k, v) in serve.get_envs() {
        match v {
            Some(v) => dev.env(k, v),
            None => dev.env_remove(k),
        };
    }
    let log_path = plain.join("dev.log");
    let log = File::create(&log_path).unwrap();
    dev.args(["dev", "--kafka", &settings.kafka.bootstrap_servers])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--failure-rate", "0", "--latency-ms", "300"])
        .current_dir(repo_path(""))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut dev = Stopped(dev.spawn().unwrap());

    eventually(
        "sagaflow dev to answer /readyz",
        Duration::from_secs(60),
        || {
            if let Some(status) = dev.0.try_wait().unwrap() {
                panic!(
                    "sagaflow dev exited ({status}) before it was ready:\n{}",
                    tail(&log_path, 40)
                );
            }
            let url = format!("{base}/readyz");
            async move { http_get(&url).await.filter(|(status, _)| *status == 200) }
        },
    )
    .await;

    // Its output goes to a file, not a pipe: the run is waited for with a deadline, and a
    // pipe nobody reads while waiting could fill up and stall it.
    let out_path = plain.join("console.out");
    let out = File::create(&out_path).unwrap();
    let started = Instant::now();
    let mut node = Stopped(
        Command::new("node")
            .arg(repo_path("scripts/browser/console.mjs"))
            .env("SAGAFLOW_URL", &base)
            .env("SCREENSHOT_DIR", repo_path("docs/ui"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("node runs (scripts/node-env installs it)"),
    );
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < BROWSER_RUN,
            "the browser run took over {BROWSER_RUN:?}:\n{}",
            tail(&out_path, 100)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!(
        "scripts/browser/console.mjs ({:.1} s):\n{output}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "the browser run failed ({status}):\n{output}\nsagaflow dev's log (last lines):\n{}",
        tail(&log_path, 40)
    );

    drop(dev);
    let _ = std::fs::remove_dir_all(&plain);
    let _ = std::fs::remove_dir_all(&settings.runtime.sagas_dir);
}
