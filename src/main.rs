//! The `sagaflow` command line: a thin layer over the library.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sagaflow::config::Settings;
use sagaflow::definition::{self, Definition, Diagnostic};
use sagaflow::participant;
use sagaflow::runtime::{dev, service};
use sagaflow::simulate::{self, Script};
use sagaflow::store::Store;
use sagaflow::telemetry::{self, TelemetryConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "sagaflow",
    version,
    about = "Saga orchestration over Kafka with state in PostgreSQL"
)]
struct Cli {
    /// YAML settings file (environment variables SAGAFLOW_* override it).
    #[arg(long, global = true, env = "SAGAFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: load sagas/, migrate, consume replies, publish commands, serve HTTP.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Everything on one machine: embedded broker, local PostgreSQL, demo participants.
    Dev {
        /// Use this Kafka cluster instead of the embedded one.
        #[arg(long)]
        kafka: Option<String>,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Probability that a demo participant declines a step.
        #[arg(long, default_value_t = 0.1)]
        failure_rate: f64,
        /// Demo participants' reply latency in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
    },
    /// Run only the demo participants of the loaded sagas against a Kafka cluster
    /// (kafka settings from config/env, e.g. SAGAFLOW_KAFKA__BOOTSTRAP_SERVERS).
    Participants {
        /// Probability that a participant declines a step.
        #[arg(long, default_value_t = 0.1)]
        failure_rate: f64,
        /// Reply latency in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Consumer group of the participants.
        #[arg(long, default_value = "sagaflow-demo-participants")]
        group: String,
    },
    /// Exit 0 when the local service answers /healthz (for container health checks).
    /// With api.auth.protect_health, put a `health` token in SAGAFLOW_HEALTH_TOKEN (an
    /// environment variable, not a flag: flags show in the process list).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Check saga definitions; exit 1 and list every problem if any is invalid.
    Validate {
        /// Files or directories (default: ./sagas).
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print a Mermaid flowchart of a saga: forward path, groups, pivot, compensations.
    Graph {
        /// A definition file, or the name of a saga in --dir.
        saga: String,
        #[arg(long, default_value = "sagas")]
        dir: PathBuf,
        /// Print the chart as an SVG picture instead (what the API serves as image/svg+xml).
        #[arg(long)]
        svg: bool,
    },
    /// Print the OpenAPI document of the HTTP API as YAML (committed as openapi/openapi.yaml).
    Openapi,
    /// Check a running participant against the contract: send each step's command
    /// (rendered from an example input) over Kafka and judge the replies. Exit 0 when
    /// every check passes, 1 on any violation, 3 when the test cannot run.
    ContractTest(Box<sagaflow::contract::cli::ContractTestArgs>),
    /// Print the AsyncAPI 3.0 document of the participant contract of the sagas in DIR
    /// (what GET /v1/asyncapi serves).
    Asyncapi(sagaflow::contract::cli::AsyncapiArgs),
    /// Operate on sagas through the REST API: list, show, abort, retry, terminate,
    /// resolve-step, bulk. Exit codes: 0 done, 1 refused, 2 usage, 3 not found,
    /// 4 denied, 5 API unavailable, 6 bulk partly refused.
    Sagas(Box<sagaflow::ctl::SagasArgs>),
    /// Messages that could not be applied, through the REST API: list, show, redrive,
    /// discard. Same flags and exit codes as `sagas`.
    DeadLetters(Box<sagaflow::ctl::DeadLettersArgs>),
    /// Run a saga through the engine with scripted participants and print what it sends.
    /// Exit code: 0 completed, 3 compensated, 4 failed, 1 error, 2 usage.
    Simulate {
        file: PathBuf,
        /// The saga input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Make every attempt of STEP fail (repeatable).
        #[arg(long = "fail", value_name = "STEP")]
        fail: Vec<String>,
        /// Make every attempt of STEP time out (repeatable).
        #[arg(long = "timeout", value_name = "STEP")]
        timeout: Vec<String>,
        /// Success reply payload for STEP (repeatable), e.g. --reply 'ship_order={"tracking":"T1"}'.
        #[arg(long = "reply", value_name = "STEP=JSON")]
        reply: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(
        cli.command,
        Command::Serve | Command::Migrate | Command::Dev { .. } | Command::Participants { .. }
    );
    if service {
        // Workers get the main thread's 8 MiB, not tokio's 2 MiB: a stored definition
        // snapshot is parsed on them, and file limits allow nesting that needs more
        // than 2 MiB in a debug build (definition::load tests).
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_stack_size(8 * 1024 * 1024)
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(2);
            }
        };
        // Inside the runtime: the gRPC exporter's channel is spawned on it.
        let mut telemetry =
            match runtime.block_on(async { telemetry::init(TelemetryConfig::from_env()) }) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    eprintln!("error: telemetry: {e}");
                    return ExitCode::from(2);
                }
            };
        let result = runtime.block_on(run_service(cli));
        if let Err(e) = &result {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
        }
        // Export the last spans while the runtime that drives the exporter still runs.
        if let Some(guard) = telemetry.as_mut() {
            guard.shutdown();
        }
        drop(runtime);
        let task_died = result.as_ref().err().is_some_and(|e| {
            matches!(
                e.downcast_ref::<service::ServeError>(),
                Some(service::ServeError::TaskDied)
            )
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            // EX_SOFTWARE: an orchestrator (or a person) can tell this from a bad config.
            Err(_) if task_died => ExitCode::from(sagaflow::runtime::supervise::TASK_DIED),
            Err(_) => ExitCode::FAILURE,
        };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install SIGTERM handler");
                    return;
                }
            };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: shutting down (send again to exit at once)");
                t.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

async fn run_service(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref(), std::env::vars())?;
    tracing::debug!(settings = ?settings.redacted(), "settings");
    let cancel = shutdown_on_signals();
    match cli.command {
        Command::Serve => {
            settings.refuse_unauthenticated()?;
            service::run(settings, cancel, None).await?
        }
        Command::Migrate => {
            let store = Store::connect(&settings.database.url, 2).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
        }
        Command::Dev {
            kafka,
            listen,
            failure_rate,
            latency_ms,
        } => {
            let mut settings = settings;
            // The database comes from settings (SAGAFLOW_DATABASE__URL, database.url_file),
            // never a flag, which would show a password in the process list.
            if settings.database.url == sagaflow::config::DatabaseSettings::default().url {
                settings.database.url = DEV_DATABASE_URL.into();
            }
            settings.http.listen = listen;
            let loopback = settings
                .http
                .listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback());
            if !loopback {
                tracing::warn!(listen = %settings.http.listen, "`sagaflow dev` serves its API without access control; listening beyond loopback lets anyone who can reach this address use it");
            }
            let opts = dev::DevOptions {
                kafka,
                failure_rate,
                latency: std::time::Duration::from_millis(latency_ms),
            };
            dev::run(settings, opts, cancel).await?;
        }
        Command::Participants {
            failure_rate,
            latency_ms,
            group,
        } => {
            let (defs, diags) = definition::load_dir(&settings.runtime.sagas_dir);
            if !diags.is_empty() {
                bail!(
                    "invalid definitions:\n{}",
                    definition::diagnostic::render(&diags)
                );
            }
            let topics = participant::command_topics(&defs);
            let defs = defs.into_iter().map(std::sync::Arc::new).collect();
            let policy = participant::random_policy(
                failure_rate,
                std::time::Duration::from_millis(latency_ms),
            );
            tracing::info!(?topics, %group, "demo participants running");
            let ps = participant::ParticipantSettings {
                kafka: settings.kafka.clone(),
                group_id: group,
                topics,
            };
            participant::run(defs, ps, policy, cancel).await?;
        }
        _ => {}
    }
    Ok(())
}

const DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/sagaflow_dev";

fn healthcheck(addr: &str, token: Option<&str>) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let ok = response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sagas(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(sagaflow::ctl::run(*args)))
        }
        Command::DeadLetters(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(sagaflow::ctl::run_dead_letters(*args)))
        }
        Command::Serve | Command::Migrate | Command::Dev { .. } | Command::Participants { .. } => {
            Ok(ExitCode::FAILURE)
        }
        Command::Healthcheck { addr } => healthcheck(
            &addr,
            std::env::var("SAGAFLOW_HEALTH_TOKEN").ok().as_deref(),
        ),
        Command::Validate { paths, format } => Ok(validate(paths, format)),
        Command::Openapi => {
            print!(
                "{}",
                sagaflow::api::openapi::yaml(&sagaflow::api::openapi_doc())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ContractTest(args) => sagaflow::contract::cli::contract_test(*args),
        Command::Asyncapi(args) => sagaflow::contract::cli::asyncapi(args),
        Command::Graph { saga, dir, svg } => {
            let def = find_definition(&saga, &dir)?;
            if svg {
                print!("{}", definition::svg::svg(&def, None));
            } else {
                print!("{}", definition::graph::mermaid(&def));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            file,
            input,
            fail,
            timeout,
            reply,
        } => {
            let def = load_or_report(&file)?;
            let input: serde_json::Value =
                serde_json::from_str(&input).context("--input is not valid JSON")?;
            let mut replies = HashMap::new();
            for r in reply {
                let Some((step, json)) = r.split_once('=') else {
                    bail!("--reply {r:?} must look like STEP=JSON");
                };
                let value = serde_json::from_str(json)
                    .with_context(|| format!("--reply for `{step}` is not valid JSON"))?;
                replies.insert(step.to_owned(), value);
            }
            if let Err(errors) = def.validate_input(&input) {
                for e in errors {
                    eprintln!("input{}: {}", e.path, e.message);
                }
                bail!("the input does not match the saga's input schema");
            }
            let script = Script {
                fail: fail.into_iter().collect::<HashSet<_>>(),
                timeout: timeout.into_iter().collect(),
                replies,
            };
            let lines = simulate::simulate(&def, input, &script)?;
            print!("{}", simulate::render(&lines));
            Ok(simulate_exit(&lines))
        }
    }
}

fn validate(paths: Vec<PathBuf>, format: Format) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("sagas")]
    } else {
        paths
    };
    let mut defs = Vec::new();
    let mut diags: Vec<Diagnostic> = Vec::new();
    for path in &paths {
        if path.is_dir() {
            let (d, e) = definition::load_dir(path);
            // Validating nothing is a mistake (a wrong path, files named *.yaml.txt).
            if d.is_empty() && e.is_empty() {
                diags.push(Diagnostic::about(
                    &path.display().to_string(),
                    "no saga definitions here".into(),
                    "definitions are the *.yaml and *.yml files directly in the directory".into(),
                ));
            }
            defs.extend(d);
            diags.extend(e);
        } else {
            match definition::load_file(path) {
                Ok(d) => defs.push(d),
                Err(e) => diags.extend(e),
            }
        }
    }
    let warnings: Vec<&Diagnostic> = defs.iter().flat_map(|d| &d.warnings).collect();
    match format {
        Format::Json => {
            let report = serde_json::json!({
                "valid": diags.is_empty(),
                "definitions": defs.iter().map(|d| serde_json::json!({"name": d.name, "file": d.file, "version": d.version})).collect::<Vec<_>>(),
                "errors": diags,
                "warnings": warnings,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Format::Text => {
            for d in diags.iter().chain(warnings.iter().copied()) {
                eprintln!("{d}");
            }
            for d in &defs {
                println!("ok  {} ({}, {} steps)", d.name, d.file, d.steps.len());
            }
            if !diags.is_empty() {
                eprintln!("{} error(s)", diags.len());
            }
            if !warnings.is_empty() {
                eprintln!("{} warning(s)", warnings.len());
            }
        }
    }
    if diags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `simulate`'s exit code says how the saga ended, so CI can assert outcomes:
/// 0 completed, 3 compensated, 4 failed (1 is an error, 2 a usage mistake).
fn simulate_exit(lines: &[simulate::Line]) -> ExitCode {
    use sagaflow::engine::SagaStatus;
    let last = lines.iter().rev().find_map(|l| match l {
        simulate::Line::Status { status, .. } => Some(*status),
        _ => None,
    });
    match last {
        Some(SagaStatus::Completed) => ExitCode::SUCCESS,
        Some(SagaStatus::Compensated) => ExitCode::from(3),
        Some(SagaStatus::Failed) => ExitCode::from(4),
        _ => ExitCode::FAILURE,
    }
}

fn load_or_report(path: &Path) -> anyhow::Result<Definition> {
    definition::load_file(path).map_err(|diags| {
        for d in &diags {
            eprintln!("{d}");
        }
        anyhow::anyhow!("{} is not a valid saga definition", path.display())
    })
}

fn find_definition(saga: &str, dir: &Path) -> anyhow::Result<Definition> {
    let as_path = Path::new(saga);
    if as_path.is_file() {
        return load_or_report(as_path);
    }
    let (defs, diags) = definition::load_dir(dir);
    if let Some(def) = defs.into_iter().find(|d| d.name == saga) {
        return Ok(def);
    }
    for d in &diags {
        eprintln!("{d}");
    }
    bail!(
        "no saga named `{saga}` in {} (and no such file)",
        dir.display()
    )
}
