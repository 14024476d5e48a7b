//! Settings: built-in defaults, then an optional YAML file, then `SAGAFLOW_*`
//! environment variables (`__` separates levels: `SAGAFLOW_DATABASE__URL`).
//! Every setting is documented in README.md ("Configuration").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub http: HttpSettings,
    pub runtime: RuntimeSettings,
    pub api: ApiSettings,
    pub security: SecuritySettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Prefer `url_file` or `SAGAFLOW_DATABASE__URL`: a flag would show in the process list.
    pub url: String,
    /// A file holding the URL (a mounted Secret); read at start-up, takes precedence.
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Consumer group shared by every replica.
    pub group_id: String,
    /// Passed to librdkafka as is (security.protocol, sasl.*, ssl.*, fetch.wait.max.ms, …).
    pub properties: BTreeMap<String, String>,
    pub dead_letter_topic: String,
    /// Where lifecycle events go; empty disables them.
    pub lifecycle_topic: String,
    /// Also publish the per-step lifecycle events (`step_succeeded`, `step_failed`,
    /// `step_skipped`); false keeps only the saga's own (started, completed, …), which
    /// is 3 of the 8 messages of a 3-step saga fewer through the outbox and the broker.
    pub lifecycle_steps: bool,
    /// Create missing topics at start-up (reply, trigger, command, DLQ, lifecycle).
    pub create_topics: bool,
    pub topic_partitions: i32,
    pub topic_replication: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    pub sagas_dir: PathBuf,
    /// CloudEvents `source` of emitted messages.
    pub source: String,
    /// Most replies applied in one database transaction.
    pub consumer_batch_size: usize,
    /// How long the consumer waits to fill a batch once it has one message (ms).
    pub consumer_batch_linger_ms: u64,
    /// Most outbox rows published per round.
    pub outbox_batch_size: i64,
    /// Polling fallback when no LISTEN/NOTIFY wake-up arrives (ms).
    pub outbox_poll_ms: u64,
    /// Most outbox batches (transactions) this replica has in flight at once (1 to 16,
    /// the outbox's shards; see docs/reliability.md).
    pub outbox_relay_concurrency: usize,
    /// Most timers fired per transaction.
    pub timer_batch_size: i64,
    /// Longest sleep of the timer loop (ms): its polling fallback, since commits that
    /// write a timer due within 5 s wake it by NOTIFY. At most 5,000.
    pub timer_poll_ms: u64,
    /// How long the consumer may be left out of its consumer group, while the broker
    /// answers, before the process stops so a fresh one rejoins (s; 0: never).
    pub consumer_wedged_after_s: u64,
    /// Bound on the graceful drain after SIGTERM (s).
    pub shutdown_timeout_s: u64,
    /// How often gauges read from the database and consumer lag are refreshed (ms).
    pub metrics_interval_ms: u64,
    /// How long a reply this replica cannot apply because its saga's state or definition
    /// version does not read is retried before it is parked on the dead-letter topic (s):
    /// during a rolling upgrade, a replica of the other version may still apply it.
    pub park_unreadable_after_s: u64,
    /// Finished (completed or compensated) sagas and their timelines are deleted this
    /// long after their last change (s); 0 keeps them for ever. Failed sagas are kept.
    pub retention_finished_s: u64,
    /// Inbox rows (ids of applied messages, for deduplication) are deleted this long
    /// after they were written (s); 0 keeps them for ever.
    pub retention_inbox_s: u64,
    /// How often retention runs (s), and how many rows one statement deletes.
    pub retention_interval_s: u64,
    pub retention_batch_size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    pub auth: AuthSettings,
    /// Largest request body accepted (bytes); larger requests get 413.
    pub max_body_bytes: usize,
    /// Largest saga input, as compact JSON (bytes): inputs are stored with every
    /// saga and copied into commands, so they are bounded more tightly than bodies.
    pub max_input_bytes: usize,
    /// Requests taking longer are answered 408 (ms).
    pub request_timeout_ms: u64,
    /// A client has this long to send its request headers before the connection is
    /// closed (ms).
    pub header_read_timeout_ms: u64,
    /// Most HTTP connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most definition validations running at once (each on its own thread); more
    /// wait for a slot, so expensive input cannot starve the other requests.
    pub max_concurrent_validations: usize,
    /// Host names (as in the `Host` header, with the port if not 80) a browser may use
    /// to reach the API while it runs without access control. IP addresses and
    /// `localhost` always may; other names are refused to browsers then, which is what
    /// stops a DNS-rebinding page from using the API.
    pub allowed_hosts: Vec<String>,
    /// Where the console links a saga's trace: a URL with `{trace_id}` in it, e.g.
    /// `http://localhost:16686/trace/{trace_id}` (Jaeger). Empty: no link.
    pub trace_url: String,
    /// Concurrent starts share a transaction (group commit): a burst of starts costs a
    /// few commits instead of one each, and none waits longer than one commit more.
    /// Off: one transaction per start (for comparison; docs/benchmarks.md).
    pub group_commit: bool,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            auth: AuthSettings::default(),
            max_body_bytes: 1024 * 1024,
            max_input_bytes: 256 * 1024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            max_connections: 1024,
            max_concurrent_validations: 1,
            allowed_hosts: Vec::new(),
            trace_url: String::new(),
            group_commit: true,
        }
    }
}

/// Bearer-token access control. `serve` refuses to start with it off unless
/// `allow_unauthenticated` says so; `sagaflow dev` (loopback only) runs without it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub enabled: bool,
    /// Serve the API without tokens: an explicit choice, never a default.
    pub allow_unauthenticated: bool,
    /// Every token valid at once (several during a rotation).
    pub tokens: Vec<TokenSettings>,
    /// Require a `health` (or `read`) token for /healthz, /readyz and /metrics too.
    pub protect_health: bool,
}

/// How replies are bound to the commands they answer (docs/security.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Keys for reply tokens (HMAC-SHA256 of the command id), at least 32 bytes each.
    /// The first signs commands; every one is accepted on replies, so a new key is
    /// added first and an old one removed once no command signed with it is pending.
    /// Empty: a key generated once and kept in the database, shared by the replicas.
    pub reply_keys: Vec<String>,
    /// Refuse replies without a token. A reply with a wrong token is always refused.
    pub require_reply_token: bool,
    /// Put the saga's input into `sagaflow.saga.started` lifecycle events.
    pub lifecycle_input: bool,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            reply_keys: Vec::new(),
            require_reply_token: true,
            lifecycle_input: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Who uses the token; recorded as the actor of operator actions. Never the secret.
    pub name: String,
    /// Lowercase hex SHA-256 of the token: the secret itself is never configured.
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

/// What a token may do. Scopes do not imply each other: list every one a token needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every GET, and validating a definition.
    Read,
    /// Starting sagas.
    Write,
    /// Operator actions: abort and retry.
    Admin,
    /// Only /healthz, /readyz and /metrics: for probes and scrapers, whose token sits
    /// in pod specs.
    Health,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Health => "health",
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "postgres://postgres@127.0.0.1:5432/sagaflow".into(),
            url_file: None,
            max_connections: 16,
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "sagaflow".into(),
            properties: BTreeMap::new(),
            dead_letter_topic: "sagaflow.dead-letter".into(),
            lifecycle_topic: "sagaflow.lifecycle".into(),
            lifecycle_steps: true,
            create_topics: true,
            topic_partitions: 8,
            topic_replication: 1,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            sagas_dir: PathBuf::from("sagas"),
            source: "/sagaflow".into(),
            consumer_batch_size: 500,
            consumer_batch_linger_ms: 2,
            outbox_batch_size: 1000,
            outbox_poll_ms: 500,
            outbox_relay_concurrency: 4,
            timer_batch_size: 500,
            timer_poll_ms: 1000,
            consumer_wedged_after_s: 120,
            shutdown_timeout_s: 20,
            metrics_interval_ms: 10_000,
            park_unreadable_after_s: 120,
            retention_finished_s: 30 * 86_400,
            retention_inbox_s: 7 * 86_400,
            retention_interval_s: 300,
            retention_batch_size: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML")]
    Yaml {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("invalid settings: {0}")]
    Invalid(#[source] serde_json::Error),
    #[error("invalid settings: {0}")]
    Rule(String),
    #[error("invalid setting `{path}`: {reason}")]
    Setting { path: String, reason: String },
}

/// Process-level variables that share the prefix but are read elsewhere (the CLI and
/// `telemetry`): not settings keys, so `deny_unknown_fields` must not see them.
const NOT_SETTINGS: &[&str] = &[
    "SAGAFLOW_CONFIG",
    "SAGAFLOW_LOG_FORMAT",
    "SAGAFLOW_LOG_PAYLOADS",
];

impl Settings {
    /// Defaults ← `file` ← environment (`vars`, normally `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut tree = serde_json::to_value(Settings::default()).map_err(ConfigError::Invalid)?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            // No snippet: the lines around an error may hold a password.
            let options = serde_saphyr::options! { with_snippet: false };
            let from_file: Json =
                serde_saphyr::from_str_with_options(&text, options).map_err(|source| {
                    ConfigError::Yaml {
                        path: path.to_owned(),
                        source: Box::new(source),
                    }
                })?;
            merge(&mut tree, from_file);
        }
        for (name, value) in vars {
            // Settings are always nested (`SAGAFLOW_<SECTION>__<KEY>`); single-level names
            // such as SAGAFLOW_CONFIG or SAGAFLOW_LOG_FORMAT belong to the CLI and logging.
            let Some(rest) = name.strip_prefix("SAGAFLOW_").filter(|r| r.contains("__")) else {
                continue;
            };
            if NOT_SETTINGS.contains(&name.as_str()) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let path = match path.as_slice() {
                // librdkafka names use dots, which environment variables cannot hold.
                [kafka, props, key] if kafka == "kafka" && props == "properties" => {
                    vec![kafka.clone(), props.clone(), key.replace('_', ".")]
                }
                _ => path,
            };
            set_path(&mut tree, &path, scalar(&value, &path));
        }
        let mut settings: Settings =
            serde_path_to_error::deserialize(tree).map_err(|e| ConfigError::Setting {
                path: e.path().to_string(),
                // serde quotes the offending value, which may be a secret.
                reason: crate::redact::quoted(&e.inner().to_string()),
            })?;
        if let Some(path) = &settings.database.url_file {
            let url = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            settings.database.url = url.trim().to_owned();
        }
        settings.check()?;
        Ok(settings)
    }

    /// `serve` exposes the API to the network: it runs without tokens only when told to.
    pub fn refuse_unauthenticated(&self) -> Result<(), ConfigError> {
        let auth = &self.api.auth;
        if auth.enabled || auth.allow_unauthenticated {
            return Ok(());
        }
        Err(ConfigError::Rule(
            "the API has no access control: set api.auth.enabled with tokens, or \
             api.auth.allow_unauthenticated: true to run without (SAGAFLOW_API__AUTH__ALLOW_UNAUTHENTICATED=true)"
                .into(),
        ))
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.database.max_connections < 2 {
            return Err(ConfigError::Rule(
                "database.max_connections must be at least 2".into(),
            ));
        }
        if self.runtime.consumer_batch_size == 0
            || self.runtime.outbox_batch_size <= 0
            || self.runtime.timer_batch_size <= 0
        {
            return Err(ConfigError::Rule("batch sizes must be positive".into()));
        }
        let horizon_ms = crate::store::wake::TIMER_NOTIFY_HORIZON.num_milliseconds() as u64;
        if self.runtime.timer_poll_ms == 0 || self.runtime.timer_poll_ms > horizon_ms {
            return Err(ConfigError::Rule(format!(
                "runtime.timer_poll_ms must be between 1 and {horizon_ms}: timers due later are not announced by NOTIFY"
            )));
        }
        if !(1..=crate::store::OUTBOX_SHARDS as usize)
            .contains(&self.runtime.outbox_relay_concurrency)
        {
            return Err(ConfigError::Rule(format!(
                "runtime.outbox_relay_concurrency must be between 1 and {} (the outbox's shards)",
                crate::store::OUTBOX_SHARDS
            )));
        }
        // A century is "for ever" for a saga; larger numbers are typos, and 0 already
        // means "keep".
        const CENTURY_S: u64 = 100 * 366 * 86_400;
        if self.runtime.retention_finished_s > CENTURY_S
            || self.runtime.retention_inbox_s > CENTURY_S
        {
            return Err(ConfigError::Rule(
                "runtime.retention_finished_s and runtime.retention_inbox_s are at most a century; 0 keeps rows for ever".into(),
            ));
        }
        if self.kafka.group_id.is_empty() || self.kafka.bootstrap_servers.is_empty() {
            return Err(ConfigError::Rule(
                "kafka.group_id and kafka.bootstrap_servers must be set".into(),
            ));
        }
        self.api.check()
    }

    /// Settings safe to log: the URL's password and query, every Kafka property not
    /// known to be harmless, reply keys and token hashes masked.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        s.database.url = crate::redact::url(&s.database.url);
        s.kafka.properties = crate::redact::kafka_properties(&s.kafka.properties);
        for key in &mut s.security.reply_keys {
            *key = crate::redact::MASK.to_owned();
        }
        for token in &mut s.api.auth.tokens {
            token.sha256 = crate::redact::MASK.to_owned();
        }
        s
    }
}

impl ApiSettings {
    fn check(&self) -> Result<(), ConfigError> {
        let rule = |m: &str| Err(ConfigError::Rule(m.to_owned()));
        if self.max_body_bytes == 0 || self.max_input_bytes == 0 || self.request_timeout_ms == 0 {
            return rule(
                "api.max_body_bytes, api.max_input_bytes and api.request_timeout_ms must be positive",
            );
        }
        if self.auth.enabled && self.auth.tokens.is_empty() {
            return rule("api.auth.enabled needs at least one token in api.auth.tokens");
        }
        let web = self.trace_url.starts_with("http://") || self.trace_url.starts_with("https://");
        let template = web && self.trace_url.contains("{trace_id}");
        if !(self.trace_url.is_empty() || template) {
            return rule(
                "api.trace_url must be an http(s) URL with {trace_id} in it, e.g. http://localhost:16686/trace/{trace_id}",
            );
        }
        for t in &self.auth.tokens {
            let hex = t.sha256.len() == 64 && t.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(ConfigError::Rule(format!(
                    "api.auth.tokens: `{}` needs sha256 = 64 hex digits (sha256sum of the token)",
                    t.name
                )));
            }
            if t.name.is_empty() || t.scopes.is_empty() {
                return rule("api.auth.tokens: every token needs a name and at least one scope");
            }
        }
        Ok(())
    }
}

/// Environment values are text; numbers and booleans are read as such where the
/// setting is not a string-valued map.
fn scalar(value: &str, path: &[String]) -> Json {
    if path.get(1).is_some_and(|p| p == "properties") {
        return Json::String(value.to_owned());
    }
    // Lists and maps (e.g. SAGAFLOW_API__AUTH__TOKENS) are given as JSON.
    if (value.starts_with('[') || value.starts_with('{'))
        && let Ok(v) = serde_json::from_str(value)
    {
        return v;
    }
    if let Ok(n) = value.parse::<u64>() {
        return Json::from(n);
    }
    match value {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        _ => Json::String(value.to_owned()),
    }
}

fn set_path(tree: &mut Json, path: &[String], value: Json) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for p in parents {
        if !node.get(p).is_some_and(Json::is_object) {
            if let Json::Object(map) = node {
                map.insert(p.clone(), Json::Object(Map::new()));
            } else {
                return;
            }
        }
        let Some(next) = node.get_mut(p) else { return };
        node = next;
    }
    if let Json::Object(map) = node {
        map.insert(last.clone(), value);
    }
}

fn merge(base: &mut Json, over: Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_trace_url_needs_a_web_scheme_and_the_trace_id() {
        let with = |url: &str| Settings::load(None, vars(&[("SAGAFLOW_API__TRACE_URL", url)]));
        let ok = with("http://localhost:16686/trace/{trace_id}").expect("valid");
        assert_eq!(ok.api.trace_url, "http://localhost:16686/trace/{trace_id}");
        for bad in [
            "http://localhost:16686/trace/",
            "javascript:alert({trace_id})",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn process_variables_are_not_settings() {
        let s = Settings::load(
            None,
            vars(&[
                ("SAGAFLOW_LOG_FORMAT", "json"),
                ("SAGAFLOW_LOG_PAYLOADS", "true"),
                ("SAGAFLOW_CONFIG", "/etc/sagaflow.yaml"),
                ("SAGAFLOW_RUNTIME__METRICS_INTERVAL_MS", "500"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.runtime.metrics_interval_ms, 500);
    }

    #[test]
    fn environment_overrides_defaults_with_types() {
        let s = Settings::load(
            None,
            vars(&[
                ("SAGAFLOW_DATABASE__URL", "postgres://u:pw@db/x"),
                ("SAGAFLOW_DATABASE__MAX_CONNECTIONS", "4"),
                ("SAGAFLOW_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "5"),
                ("UNRELATED", "1"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.database.url, "postgres://u:pw@db/x");
        assert_eq!(s.database.max_connections, 4);
        assert_eq!(
            s.kafka
                .properties
                .get("fetch.wait.max.ms")
                .map(String::as_str),
            Some("5")
        );
        assert_eq!(s.redacted().database.url, "postgres://u:****@db/x");
    }

    #[test]
    fn api_tokens_come_from_the_environment_as_json() {
        let hash = "a".repeat(64);
        let tokens = format!(r#"[{{"name":"ci","sha256":"{hash}","scopes":["read","admin"]}}]"#);
        let s = Settings::load(
            None,
            vars(&[
                ("SAGAFLOW_API__AUTH__ENABLED", "true"),
                ("SAGAFLOW_API__AUTH__TOKENS", &tokens),
            ]),
        )
        .expect("valid");
        assert!(s.api.auth.enabled);
        assert_eq!(s.api.auth.tokens[0].scopes, vec![Scope::Read, Scope::Admin]);
        // Enabled without tokens, or a token that is not a hash, is refused.
        assert!(Settings::load(None, vars(&[("SAGAFLOW_API__AUTH__ENABLED", "true")])).is_err());
        let plain = r#"[{"name":"ci","sha256":"secret","scopes":["read"]}]"#;
        assert!(Settings::load(None, vars(&[("SAGAFLOW_API__AUTH__TOKENS", plain)])).is_err());
    }

    #[test]
    fn single_level_variables_are_not_settings() {
        let s = Settings::load(
            None,
            vars(&[
                ("SAGAFLOW_CONFIG", "x.yaml"),
                ("SAGAFLOW_LOG_FORMAT", "json"),
            ]),
        );
        assert!(s.is_ok(), "{s:?}");
    }

    #[test]
    fn unknown_settings_are_errors() {
        assert!(Settings::load(None, vars(&[("SAGAFLOW_DATABASE__URLL", "x")])).is_err());
        assert!(
            Settings::load(None, vars(&[("SAGAFLOW_DATABASE__MAX_CONNECTIONS", "1")])).is_err()
        );
    }
}
