//! The operator CLI, `sagaflow sagas …`: list, show and repair sagas through the REST
//! API (never the database), so it needs only a URL and a token, and every action is
//! checked and recorded by the service exactly as when it comes from any other client.

pub mod client;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use client::{Client, ClientError, exit};

#[derive(Debug, Args)]
pub struct SagasArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: SagasCommand,
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

/// Where the API is and how to talk to it.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the API.
    #[arg(
        long,
        env = "SAGAFLOW_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api_url: String,
    /// Bearer token. Prefer SAGAFLOW_API_TOKEN or --token-file: a flag shows in the
    /// process list.
    #[arg(
        long,
        env = "SAGAFLOW_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// File holding the bearer token (its first line).
    #[arg(long, global = true, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// `table` for people, `json` (the API's own bodies) for scripts.
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Filters shared by `list` and `bulk`, as the list endpoint takes them.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    #[arg(long)]
    pub definition: Option<String>,
    /// running, compensating, completed, compensated, failed or terminated.
    #[arg(long)]
    pub status: Option<String>,
    /// Business (idempotency) key.
    #[arg(long)]
    pub key: Option<String>,
    /// RFC 3339 instant.
    #[arg(long)]
    pub updated_after: Option<String>,
    /// RFC 3339 instant.
    #[arg(long)]
    pub updated_before: Option<String>,
    /// The step the saga is at (where it stopped, or the first in flight).
    #[arg(long)]
    pub step: Option<String>,
    /// Text in the failure reason (case-insensitive).
    #[arg(long)]
    pub failure: Option<String>,
    /// Business keys starting with this.
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// A value in the input: `<JSON pointer>=<value>`, e.g. `/customer_id=c-42`.
    #[arg(long)]
    pub input: Option<String>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("definition", &self.definition),
            ("status", &self.status),
            ("key", &self.key),
            ("updated_after", &self.updated_after),
            ("updated_before", &self.updated_before),
            ("step", &self.step),
            ("failure", &self.failure),
            ("key_prefix", &self.key_prefix),
            ("input", &self.input),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    fn body(&self) -> Json {
        let mut map = serde_json::Map::new();
        for (k, v) in self.query() {
            map.insert(k.to_owned(), Json::String(v));
        }
        Json::Object(map)
    }
}

#[derive(Debug, Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many (follows pages as needed).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one saga: status, failure, steps and the latest timeline entries.
    Show {
        id: String,
        /// Timeline entries to show (the newest).
        #[arg(long, default_value_t = 20)]
        timeline: usize,
    },
    /// Compensate now (before the pivot only).
    Abort {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Redrive a failed saga, or send now the attempts waiting out a backoff.
    Retry { id: String },
    /// End the saga where it stands; nothing more is sent.
    Terminate {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Settle a step's command (or compensation) by hand, as its participant would.
    ResolveStep {
        id: String,
        step: String,
        #[arg(long, value_enum)]
        outcome: Outcome,
        /// The reply payload (JSON), with `--outcome succeeded`.
        #[arg(long)]
        payload: Option<String>,
        #[arg(long)]
        reason: String,
        /// Resolve the compensation rather than the command.
        #[arg(long)]
        compensation: bool,
        /// Only if this attempt is still the current one (safe to repeat).
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Abort, retry or terminate every saga matching a filter (bounded per call).
    Bulk {
        #[arg(value_enum)]
        action: BulkAction,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value = "")]
        reason: String,
        /// Count and sample the matching sagas; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Act on at most this many sagas.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Needed when no filter is given: act on every saga.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, newest first.
    List {
        /// open, redriven or discarded.
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        source_topic: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one dead letter: reason, source, key, headers, payload.
    Show { id: i64 },
    /// Send a dead letter back to its source topic (once), after a fix.
    Redrive {
        /// One or more dead letter ids.
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Close a dead letter that needs no redrive.
    Discard {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long)]
        reason: String,
    },
    /// List commands and lifecycle events the broker refused for good (parked).
    Parked {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Put parked messages back in the outbox once the cause is fixed.
    Requeue {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Drop parked messages for good.
    DropParked {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BulkAction {
    Abort,
    Retry,
    Terminate,
}

impl BulkAction {
    fn as_str(self) -> &'static str {
        match self {
            BulkAction::Abort => "abort",
            BulkAction::Retry => "retry",
            BulkAction::Terminate => "terminate",
        }
    }
}

/// Runs one `sagaflow sagas …` command; the exit code tells a script what happened.
pub async fn run(args: SagasArgs) -> ExitCode {
    let output = args.api.output;
    let command = args.command;
    with_client(&args.api, |client| async move {
        execute(&client, command, output).await
    })
    .await
}

/// Runs one `sagaflow dead-letters …` command.
pub async fn run_dead_letters(args: DeadLettersArgs) -> ExitCode {
    let output = args.api.output;
    let command = args.command;
    with_client(&args.api, |client| async move {
        dead_letters(&client, command, output).await
    })
    .await
}

async fn with_client<F, Fut>(args: &ApiArgs, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, ClientError>>,
{
    // reqwest is built without a crypto provider of its own (Cargo.toml says why).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => text.lines().next().map(|l| l.trim().to_owned()),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return ExitCode::from(exit::USAGE);
            }
        },
        (None, None) => None,
    };
    let client = match Client::new(&args.api_url, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match f(client).await {
        Ok(code) => code,
        Err(e) => {
            if args.output == Output::Json
                && let ClientError::Api { problem, .. } = &e
            {
                println!("{problem:#}");
            }
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn execute(
    client: &Client,
    command: SagasCommand,
    output: Output,
) -> Result<ExitCode, ClientError> {
    let print = |value: &Json, table: String| match output {
        Output::Json => println!("{value:#}"),
        Output::Table => print!("{table}"),
    };
    match command {
        SagasCommand::List { filter, limit } => {
            let items = list(client, &filter, limit).await?;
            print(&Json::Array(items.clone()), render::saga_table(&items));
        }
        SagasCommand::Show { id, timeline } => {
            let saga = client
                .get(&format!("v1/sagas/{}", segment(&id)), &[])
                .await?;
            print(&saga, render::saga_detail(&saga, timeline));
        }
        SagasCommand::Abort { id, reason } => {
            let body = json!({ "reason": reason });
            let r = client
                .post(&format!("v1/sagas/{}/abort", segment(&id)), Some(&body))
                .await?;
            print(&r, render::action(&r));
        }
        SagasCommand::Retry { id } => {
            let r = client
                .post(&format!("v1/sagas/{}/retry", segment(&id)), None)
                .await?;
            print(&r, render::action(&r));
        }
        SagasCommand::Terminate { id, reason } => {
            let body = json!({ "reason": reason });
            let r = client
                .post(&format!("v1/sagas/{}/terminate", segment(&id)), Some(&body))
                .await?;
            print(&r, render::action(&r));
        }
        SagasCommand::ResolveStep {
            id,
            step,
            outcome,
            payload,
            reason,
            compensation,
            attempt,
        } => {
            let mut body = json!({
                "outcome": match outcome { Outcome::Succeeded => "succeeded", Outcome::Failed => "failed" },
                "reason": reason,
                "compensation": compensation,
            });
            if let Some(p) = payload {
                match serde_json::from_str::<Json>(&p) {
                    Ok(v) => body["payload"] = v,
                    Err(e) => {
                        eprintln!("error: --payload is not JSON: {e}");
                        return Ok(ExitCode::from(exit::USAGE));
                    }
                }
            }
            if let Some(a) = attempt {
                body["attempt"] = json!(a);
            }
            let path = format!("v1/sagas/{}/steps/{}/resolve", segment(&id), segment(&step));
            let r = client.post(&path, Some(&body)).await?;
            print(&r, render::action(&r));
        }
        SagasCommand::Bulk {
            action,
            filter,
            reason,
            dry_run,
            limit,
            all,
        } => {
            if filter.query().is_empty() && !all && !dry_run {
                eprintln!("error: no filter given; add --all to act on every saga");
                return Ok(ExitCode::from(exit::USAGE));
            }
            let body = json!({
                "filter": filter.body(),
                "reason": reason,
                "dry_run": dry_run,
                "limit": limit,
            });
            let r = client
                .post(&format!("v1/bulk/{}", action.as_str()), Some(&body))
                .await?;
            print(&r, render::bulk(&r));
            if r["refused"].as_u64().is_some_and(|n| n > 0) {
                return Ok(ExitCode::from(exit::PARTIAL));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows list pages until `limit` sagas are read or none are left.
async fn list(client: &Client, filter: &Filter, limit: usize) -> Result<Vec<Json>, ClientError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    while items.len() < limit {
        let mut query = filter.query();
        query.push(("limit", (limit - items.len()).min(500).to_string()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get("v1/sagas", &query).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    Ok(items)
}

/// A path segment, percent-encoded so an id or a step name cannot change the path
/// (`.` and `..` would be resolved away by URL joining, so they are encoded too).
fn segment(s: &str) -> String {
    let encoded = url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    match encoded.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => encoded,
    }
}

async fn dead_letters(
    client: &Client,
    command: DeadLettersCommand,
    output: Output,
) -> Result<ExitCode, ClientError> {
    let print = |value: &Json, table: String| match output {
        Output::Json => println!("{value:#}"),
        Output::Table => print!("{table}"),
    };
    match command {
        DeadLettersCommand::List {
            status,
            kind,
            source_topic,
            limit,
        } => {
            let mut query = vec![("status", status), ("limit", limit.to_string())];
            query.extend(kind.map(|k| ("kind", k)));
            query.extend(source_topic.map(|t| ("source_topic", t)));
            let page = client.get("v1/dead-letters", &query).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            print(&page, render::dead_letter_table(&items));
        }
        DeadLettersCommand::Show { id } => {
            let d = client.get(&format!("v1/dead-letters/{id}"), &[]).await?;
            print(&d, render::dead_letter_detail(&d));
        }
        DeadLettersCommand::Redrive { ids, reason } => {
            return act_on_each(client, &ids, "dead-letters", "redrive", &reason, print).await;
        }
        DeadLettersCommand::Discard { ids, reason } => {
            return act_on_each(client, &ids, "dead-letters", "discard", &reason, print).await;
        }
        DeadLettersCommand::Parked { limit } => {
            let page = client
                .get("v1/parked-messages", &[("limit", limit.to_string())])
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            print(&page, render::parked_table(&items));
        }
        DeadLettersCommand::Requeue { ids, reason } => {
            return act_on_each(client, &ids, "parked-messages", "requeue", &reason, print).await;
        }
        DeadLettersCommand::DropParked { ids, reason } => {
            return act_on_each(client, &ids, "parked-messages", "discard", &reason, print).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Redrives or discards each id; carries on past refusals and exits non-zero if any.
async fn act_on_each(
    client: &Client,
    ids: &[i64],
    collection: &str,
    action: &str,
    reason: &str,
    print: impl Fn(&Json, String),
) -> Result<ExitCode, ClientError> {
    let body = json!({ "reason": reason });
    let mut worst: Option<ClientError> = None;
    for id in ids {
        match client
            .post(&format!("v1/{collection}/{id}/{action}"), Some(&body))
            .await
        {
            Ok(r) => {
                let done = r["status"].as_str().unwrap_or(action).to_owned();
                print(&r, format!("{id}  {done}\n"));
            }
            Err(e @ ClientError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                eprintln!("error: {id}: {e}");
                worst = Some(e);
            }
        }
    }
    Ok(match (worst, ids.len()) {
        (None, _) => ExitCode::SUCCESS,
        (Some(e), 1) => ExitCode::from(e.exit_code()),
        (Some(_), _) => ExitCode::from(exit::PARTIAL),
    })
}
