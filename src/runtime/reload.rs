//! Reloading `sagas/` without a restart (SIGHUP, or `POST /v1/definitions/reload`).
//! Everything is checked before anything changes: a file that does not validate, a
//! topic with two roles, or a topic this replica does not read keeps the old set whole.
//! Running sagas keep their pinned versions; new sagas start on the new ones.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::registry::Registry;
use crate::definition::{self, Diagnostic};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid definitions, the loaded set is unchanged:\n{}", definition::diagnostic::render(.0))]
    Invalid(Vec<Diagnostic>),
    #[error("topics with two roles, the loaded set is unchanged:\n{}", .0.join("\n"))]
    Conflicts(Vec<String>),
    /// The consumer subscribed at start; reading new topics needs a restart.
    #[error("the new set reads topics this replica does not consume ({}); restart to load it", .0.join(", "))]
    NewTopics(Vec<String>),
    /// The consumer would keep reading these topics for nothing; a restart stops it.
    #[error("the new set starts no saga from topics this replica reads as trigger topics ({}); restart to load it", .0.join(", "))]
    DroppedTriggers(Vec<String>),
    #[error("the new set has no definitions; the loaded set is unchanged")]
    Empty,
    #[error("reading the definitions was interrupted")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a reload changed, by definition name.
#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    pub added: Vec<String>,
    /// A new version: new sagas start on it, running ones keep theirs.
    pub changed: Vec<String>,
    /// No longer started; running sagas finish on their version.
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

#[derive(Debug)]
pub struct Reloader {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub sagas_dir: PathBuf,
    /// What the consumer subscribed to at start.
    pub subscribed: BTreeSet<String>,
    pub dead_letter_topic: String,
    pub lifecycle_topic: String,
    /// One reload at a time.
    lock: Mutex<()>,
}

impl Reloader {
    pub fn new(
        registry: Arc<Registry>,
        store: Store,
        sagas_dir: PathBuf,
        subscribed: impl IntoIterator<Item = String>,
        dead_letter_topic: String,
        lifecycle_topic: String,
    ) -> Reloader {
        Reloader {
            registry,
            store,
            sagas_dir,
            subscribed: subscribed.into_iter().collect(),
            dead_letter_topic,
            lifecycle_topic,
            lock: Mutex::new(()),
        }
    }

    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.lock.lock().await;
        let dir = self.sagas_dir.clone();
        let (defs, diags) = tokio::task::spawn_blocking(move || definition::load_dir(&dir))
            .await
            .map_err(|_| ReloadError::Interrupted)?;
        if !diags.is_empty() {
            return Err(ReloadError::Invalid(diags));
        }
        if defs.is_empty() {
            return Err(ReloadError::Empty);
        }
        let before: Vec<(String, String)> = self
            .registry
            .all_current()
            .iter()
            .map(|d| (d.name.clone(), d.version.clone()))
            .collect();
        let next = self.registry.with_current(defs);
        let conflicts = next.topic_conflicts(&self.dead_letter_topic, &self.lifecycle_topic);
        if !conflicts.is_empty() {
            return Err(ReloadError::Conflicts(conflicts));
        }
        // Only the new current set can bring topics the consumer does not read: every
        // older version a saga runs on was loaded, and its topic subscribed, at start.
        let unread: Vec<String> = next
            .all_current()
            .iter()
            .flat_map(|d| {
                std::iter::once(d.reply_topic.clone())
                    .chain(d.trigger.as_ref().map(|t| t.topic.clone()))
            })
            .filter(|t| !self.subscribed.contains(t))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !unread.is_empty() {
            return Err(ReloadError::NewTopics(unread));
        }
        // A trigger topic the consumer keeps reading but no definition is triggered from
        // any more would dead-letter every event on it.
        let dropped: Vec<String> = self
            .registry
            .all_current()
            .iter()
            .filter_map(|d| d.trigger.as_ref().map(|t| t.topic.clone()))
            .filter(|t| !next.is_trigger_topic(t))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !dropped.is_empty() {
            return Err(ReloadError::DroppedTriggers(dropped));
        }
        next.persist(&self.store).await?;
        self.registry.adopt(&next);
        let after = self.registry.all_current();
        let mut report = ReloadReport::default();
        for def in &after {
            match before.iter().find(|(n, _)| *n == def.name) {
                None => report.added.push(def.name.clone()),
                Some((_, v)) if *v != def.version => report.changed.push(def.name.clone()),
                Some(_) => report.unchanged.push(def.name.clone()),
            }
        }
        report.removed = before
            .into_iter()
            .filter(|(n, _)| !after.iter().any(|d| d.name == *n))
            .map(|(n, _)| n)
            .collect();
        tracing::info!(?report, "definitions reloaded");
        Ok(report)
    }
}
