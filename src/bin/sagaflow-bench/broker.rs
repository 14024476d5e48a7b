//! The Apache Kafka broker the benchmark starts (scripts/kafka), unless `--kafka` names one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A single-node KRaft broker on fresh storage, stopped and deleted when dropped.
pub struct KafkaBroker {
    pub bootstrap: String,
    pub pid: u32,
    dir: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

impl KafkaBroker {
    pub fn start(dir: &Path, port: u16) -> anyhow::Result<KafkaBroker> {
        let out = Command::new(script())
            .arg("start")
            .arg("--dir")
            .arg(dir)
            .args(["--port", &port.to_string()])
            .args(["--parent", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run scripts/kafka (or pass --kafka)")?;
        if !out.status.success() {
            bail!("scripts/kafka start failed");
        }
        let fields: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(KafkaBroker {
            bootstrap: fields
                .get("bootstrap")
                .context("no bootstrap= line")?
                .clone(),
            pid: fields.get("pid").context("no pid= line")?.parse()?,
            dir: dir.to_owned(),
        })
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
