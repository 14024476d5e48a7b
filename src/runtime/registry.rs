//! The definitions a process knows: the current version of each saga (from `sagas/`)
//! and every older version that a saga still runs on (from the database snapshots).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::definition::{Definition, parse_definition};
use crate::store::{self, Store, StoreError};

#[derive(Debug, Default)]
pub struct Registry {
    current: HashMap<String, Arc<Definition>>,
    versions: RwLock<HashMap<(String, String), Arc<Definition>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no snapshot of definition `{name}` version {version}")]
    MissingSnapshot { name: String, version: String },
    #[error("stored snapshot of `{name}` version {version} no longer parses")]
    InvalidSnapshot { name: String, version: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Registry {
    pub fn new(defs: Vec<Definition>) -> Registry {
        let mut current = HashMap::new();
        let mut versions = HashMap::new();
        for def in defs {
            let def = Arc::new(def);
            versions.insert((def.name.clone(), def.version.clone()), def.clone());
            current.insert(def.name.clone(), def);
        }
        Registry {
            current,
            versions: RwLock::new(versions),
        }
    }

    /// Stores a snapshot of every current definition so sagas started on it can be
    /// resumed by any replica, whatever its `sagas/` directory holds later.
    pub async fn persist(&self, store: &Store) -> Result<(), StoreError> {
        for def in self.current.values() {
            store::save_snapshot(&store.pool, def).await?;
        }
        Ok(())
    }

    pub fn current(&self, name: &str) -> Option<Arc<Definition>> {
        self.current.get(name).cloned()
    }

    pub fn all_current(&self) -> Vec<Arc<Definition>> {
        let mut all: Vec<_> = self.current.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The exact version a saga is pinned to, loading its snapshot on first use.
    pub async fn version(
        &self,
        store: &Store,
        name: &str,
        version: &str,
    ) -> Result<Arc<Definition>, RegistryError> {
        let key = (name.to_owned(), version.to_owned());
        if let Some(def) = self.versions.read().ok().and_then(|v| v.get(&key).cloned()) {
            return Ok(def);
        }
        let Some((source, file)) = store::load_snapshot(&store.pool, name, version).await? else {
            return Err(RegistryError::MissingSnapshot {
                name: name.into(),
                version: version.into(),
            });
        };
        let def = parse_definition(&file, &source).map_err(|_| RegistryError::InvalidSnapshot {
            name: name.into(),
            version: version.into(),
        })?;
        let def = Arc::new(def);
        if let Ok(mut v) = self.versions.write() {
            v.insert(key, def.clone());
        }
        Ok(def)
    }

    /// Topics the consumer must read: every reply topic and trigger topic in use.
    pub fn inbound_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .current
            .values()
            .flat_map(|d| {
                std::iter::once(d.reply_topic.clone())
                    .chain(d.trigger.as_ref().map(|t| t.topic.clone()))
            })
            .collect();
        if let Ok(v) = self.versions.read() {
            topics.extend(v.values().map(|d| d.reply_topic.clone()));
        }
        topics.sort();
        topics.dedup();
        topics
    }

    /// Definitions started by events of `event_type` on `topic`.
    /// Whether some current definition is triggered from `topic`: such a topic is
    /// never read for replies.
    pub fn is_trigger_topic(&self, topic: &str) -> bool {
        self.current
            .values()
            .any(|d| d.trigger.as_ref().is_some_and(|t| t.topic == topic))
    }

    pub fn triggered_by(&self, topic: &str, event_type: &str) -> Vec<Arc<Definition>> {
        self.current
            .values()
            .filter(|d| {
                d.trigger
                    .as_ref()
                    .is_some_and(|t| t.topic == topic && t.event_type == event_type)
            })
            .cloned()
            .collect()
    }
}
