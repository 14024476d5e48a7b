//! The definitions a process knows: the current version of each saga (from `sagas/`)
//! and every older version that a saga still runs on (from the database snapshots).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::definition::{Definition, parse_stored_definition};
use crate::store::{self, Store, StoreError};

type Current = Arc<HashMap<String, Arc<Definition>>>;

#[derive(Debug, Default)]
pub struct Registry {
    /// Swapped whole by a reload, so every reader sees one consistent set.
    current: RwLock<Current>,
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
            current: RwLock::new(Arc::new(current)),
            versions: RwLock::new(versions),
        }
    }

    fn snapshot(&self) -> Current {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A registry with `defs` as the current set and every version this one knows.
    pub fn with_current(&self, defs: Vec<Definition>) -> Registry {
        let next = Registry::new(defs);
        if let (Ok(mut theirs), Ok(ours)) = (next.versions.write(), self.versions.read()) {
            for (k, v) in ours.iter() {
                theirs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        next
    }

    /// Makes `next`'s current set this registry's (a reload that passed its checks).
    pub fn adopt(&self, next: &Registry) {
        let current = next.snapshot();
        if let Ok(mut versions) = self.versions.write() {
            for def in current.values() {
                versions.insert((def.name.clone(), def.version.clone()), def.clone());
            }
        }
        match self.current.write() {
            Ok(mut c) => *c = current,
            Err(poisoned) => *poisoned.into_inner() = current,
        }
    }

    /// Stores a snapshot of every current definition so sagas started on it can be
    /// resumed by any replica, whatever its `sagas/` directory holds later.
    pub async fn persist(&self, store: &Store) -> Result<(), StoreError> {
        for def in self.snapshot().values() {
            store::save_snapshot(&store.pool, def).await?;
        }
        Ok(())
    }

    pub fn current(&self, name: &str) -> Option<Arc<Definition>> {
        self.snapshot().get(name).cloned()
    }

    pub fn all_current(&self) -> Vec<Arc<Definition>> {
        let mut all: Vec<_> = self.snapshot().values().cloned().collect();
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
        let def = parse_stored_definition(&file, &source).map_err(|_| {
            RegistryError::InvalidSnapshot {
                name: name.into(),
                version: version.into(),
            }
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
            .snapshot()
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
    /// Topics used for two roles that must not share one: a reply topic (of a current
    /// version, or of an older one sagas still run on) that is also a trigger topic, the
    /// dead-letter topic or the lifecycle topic, and a trigger on the dead-letter topic.
    /// Each problem as a sentence.
    pub fn topic_conflicts(&self, dead_letter: &str, lifecycle: &str) -> Vec<String> {
        let current = self.snapshot();
        let mut replies: Vec<(String, String)> = current
            .values()
            .map(|d| (d.reply_topic.clone(), format!("`{}`", d.name)))
            .collect();
        if let Ok(v) = self.versions.read() {
            let older = v
                .values()
                .filter(|d| current.get(&d.name).is_none_or(|c| c.version != d.version));
            replies.extend(older.map(|d| {
                (
                    d.reply_topic.clone(),
                    format!("`{}` version {}", d.name, d.version),
                )
            }));
        }
        let mut problems = Vec::new();
        for (topic, owner) in &replies {
            if self.is_trigger_topic(topic) {
                problems.push(format!(
                    "`{topic}` is the reply topic of {owner} and a trigger topic: replies are never read from trigger topics, so give one of them another topic (or let the sagas on that version finish)"
                ));
            }
            if topic == dead_letter || (!lifecycle.is_empty() && topic == lifecycle) {
                problems.push(format!(
                    "`{topic}` is the reply topic of {owner} and sagaflow's own dead-letter or lifecycle topic"
                ));
            }
        }
        if self.is_trigger_topic(dead_letter) {
            problems.push(format!(
                "the dead-letter topic `{dead_letter}` triggers a saga"
            ));
        }
        problems.sort();
        problems.dedup();
        problems
    }

    /// Whether some current definition is triggered from `topic`: such a topic is
    /// never read for replies.
    pub fn is_trigger_topic(&self, topic: &str) -> bool {
        self.snapshot()
            .values()
            .any(|d| d.trigger.as_ref().is_some_and(|t| t.topic == topic))
    }

    pub fn triggered_by(&self, topic: &str, event_type: &str) -> Vec<Arc<Definition>> {
        self.snapshot()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod conflict_tests {
    use super::*;

    fn def(name: &str, reply: &str, trigger: Option<&str>) -> Definition {
        let trigger = trigger
            .map(|t| format!("trigger: {{topic: {t}, type: x.placed, key: \"{{{{ event.k }}}}\", input: {{}}}}\n"))
            .unwrap_or_default();
        let src = format!(
            "name: {name}\n{trigger}defaults: {{reply_topic: {reply}}}\nsteps:\n  - name: s\n    command: {{topic: c, type: c.do}}\n    reply: {{success: [c.done]}}\n    compensation: none\n"
        );
        crate::definition::parse_definition("x.yaml", &src).unwrap()
    }

    #[test]
    fn topics_with_two_roles_are_reported() {
        let ok = Registry::new(vec![def("a", "a.replies", Some("orders"))]);
        assert!(ok.topic_conflicts("dlq", "life").is_empty());
        let clash = Registry::new(vec![
            def("a", "a.replies", Some("orders")),
            def("b", "orders", None),
            def("c", "dlq", None),
        ]);
        let problems = clash.topic_conflicts("dlq", "life");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`orders` is the reply topic of `b`"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`dlq` is the reply topic of `c`"))
        );
    }
}
