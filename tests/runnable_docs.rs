//! Every shell block marked ```` ```sh runnable ```` in README.md and docs/*.md is run,
//! from the repository root, against a running service with the example sagas: `$B` is
//! its base URL, `$T` a token (auth is off, so any), `sagaflow` the binary under test.
//! `curl` fails on an error status, and the block on any failing command, so an example
//! that no longer works fails here instead of in a reader's terminal.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

/// Run before every block: stop at the first failing command, and make `curl` fail on
/// an error status (the docs write `curl -s`, which would not).
const PREAMBLE: &str =
    "set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error \"$@\"; }\n";

/// (file, line of the fence, script) of every runnable block.
fn runnable_blocks() -> Vec<(String, usize, String)> {
    let mut files = vec![repo_path("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_path("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut current: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut current {
                None if line.trim() == "```sh runnable" => current = Some((i + 1, String::new())),
                Some((start, script)) if line.trim() == "```" => {
                    let name = file
                        .strip_prefix(repo_path(""))
                        .unwrap()
                        .display()
                        .to_string();
                    blocks.push((name, *start, std::mem::take(script)));
                    current = None;
                }
                Some((_, script)) => {
                    script.push_str(line);
                    script.push('\n');
                }
                None => {}
            }
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runnable_example_in_the_docs_runs() {
    let blocks = runnable_blocks();
    assert!(blocks.len() >= 3, "only {} runnable blocks", blocks.len());
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("sagas"));
    let svc = InProcess::start(settings).await;
    let base = svc.url("");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sagaflow"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    // The harness has teeth: a request for a route that does not exist fails its block.
    let mut blocks = blocks.clone();
    let own_check = "(the harness's own check)";
    blocks.push((own_check.into(), 0, "curl -s $B/v1/no-such-route\n".into()));
    for (file, line, script) in &blocks {
        let out = tokio::task::spawn_blocking({
            let (script, base, path) = (format!("{PREAMBLE}{script}"), base.clone(), path.clone());
            move || {
                Command::new("bash")
                    .arg("-c")
                    .arg(script)
                    .current_dir(repo_path(""))
                    .env("B", base)
                    .env("T", "docs-example")
                    .env("PATH", path)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{file}:{line}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    svc.stop().await;
    let harness = failures.iter().position(|f| f.starts_with(own_check));
    assert!(harness.is_some(), "a failing curl did not fail its block");
    failures.remove(harness.unwrap_or_default());
    assert!(
        failures.is_empty(),
        "runnable examples failed:\n{}",
        failures.join("\n")
    );
}
