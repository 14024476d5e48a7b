//! The `sagaflow` command line: a thin layer over the library.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sagaflow::definition::{self, Definition, Diagnostic};
use sagaflow::simulate::{self, Script};

#[derive(Debug, Parser)]
#[command(
    name = "sagaflow",
    version,
    about = "Saga orchestration over Kafka with state in PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    },
    /// Run a saga through the engine with scripted participants and print what it sends.
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
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { paths, format } => Ok(validate(paths, format)),
        Command::Graph { saga, dir } => {
            let def = find_definition(&saga, &dir)?;
            print!("{}", definition::graph::mermaid(&def));
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
            Ok(ExitCode::SUCCESS)
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
            defs.extend(d);
            diags.extend(e);
        } else {
            match definition::load_file(path) {
                Ok(d) => defs.push(d),
                Err(e) => diags.extend(e),
            }
        }
    }
    match format {
        Format::Json => {
            let report = serde_json::json!({
                "valid": diags.is_empty(),
                "definitions": defs.iter().map(|d| serde_json::json!({"name": d.name, "file": d.file, "version": d.version})).collect::<Vec<_>>(),
                "errors": diags,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Format::Text => {
            for d in &diags {
                eprintln!("{d}");
            }
            for d in &defs {
                println!("ok  {} ({}, {} steps)", d.name, d.file, d.steps.len());
            }
            if !diags.is_empty() {
                eprintln!("{} error(s)", diags.len());
            }
        }
    }
    if diags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
