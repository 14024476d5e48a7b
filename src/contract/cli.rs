//! The contract commands: `sagaflow asyncapi` and `sagaflow contract-test`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::ValueEnum;

use crate::definition::{self, Definition};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocFormat {
    Yaml,
    Json,
}

/// `sagaflow asyncapi`.
#[derive(Debug, clap::Args)]
pub struct AsyncapiArgs {
    #[arg(long, default_value = "sagas")]
    dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DocFormat::Yaml)]
    format: DocFormat,
    /// kafka.dead_letter_topic of the deployment.
    #[arg(long, default_value = "sagaflow.dead-letter")]
    dead_letter_topic: String,
    /// kafka.lifecycle_topic of the deployment (empty: lifecycle events are off).
    #[arg(long, default_value = "sagaflow.lifecycle")]
    lifecycle_topic: String,
}

/// Prints the AsyncAPI document of the sagas in `--dir`.
pub fn asyncapi(args: AsyncapiArgs) -> anyhow::Result<ExitCode> {
    let (defs, diags) = definition::load_dir(&args.dir);
    if !diags.is_empty() {
        eprint!("{}", definition::diagnostic::render(&diags));
        bail!("the definitions in {} are invalid", args.dir.display());
    }
    let topics = super::ContractTopics {
        lifecycle: Some(args.lifecycle_topic).filter(|t| !t.is_empty()),
        dead_letter: args.dead_letter_topic,
    };
    let defs: Vec<&Definition> = defs.iter().collect();
    let doc = super::document(&defs, &topics);
    match args.format {
        DocFormat::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        DocFormat::Yaml => print!("{}", serde_saphyr::to_string(&doc).context("YAML")?),
    }
    Ok(ExitCode::SUCCESS)
}

/// `sagaflow contract-test`.
#[derive(Debug, clap::Args)]
pub struct ContractTestArgs {
    /// Kafka bootstrap servers of the participant under test.
    #[arg(
        long,
        env = "SAGAFLOW_KAFKA__BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    bootstrap_servers: String,
    /// A librdkafka property (security.protocol, sasl.*, ssl.*), repeatable: KEY=VALUE.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    #[arg(long, default_value = "sagas")]
    dir: PathBuf,
    /// Only these sagas (repeatable; default: all in DIR).
    #[arg(long = "saga", value_name = "NAME")]
    sagas: Vec<String>,
    /// Only these steps (repeatable; default: all), e.g. the ones your service owns.
    #[arg(long = "step", value_name = "NAME")]
    steps: Vec<String>,
    /// Example input of a saga, repeatable: NAME=JSON (default: its input schema's
    /// first `examples` entry).
    #[arg(long = "input", value_name = "NAME=JSON")]
    inputs: Vec<String>,
    /// How long to wait for each reply, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Runs the contract test; the exit code says how it went (docs/protocol.md).
pub fn contract_test(args: ContractTestArgs) -> anyhow::Result<ExitCode> {
    let (defs, diags) = definition::load_dir(&args.dir);
    if !diags.is_empty() {
        eprint!("{}", definition::diagnostic::render(&diags));
        return Ok(ExitCode::from(3));
    }
    let mut kafka = crate::config::KafkaSettings {
        bootstrap_servers: args.bootstrap_servers.clone(),
        ..Default::default()
    };
    let Ok(properties) = pairs(&args.properties, "--property", "KEY=VALUE") else {
        return Ok(ExitCode::from(2));
    };
    kafka.properties.extend(properties);
    let Ok(raw_inputs) = pairs(&args.inputs, "--input", "NAME=JSON") else {
        return Ok(ExitCode::from(2));
    };
    let mut inputs = HashMap::new();
    for (name, json) in raw_inputs {
        let Ok(value) = serde_json::from_str(&json) else {
            eprintln!("error: --input for `{name}` is not valid JSON");
            return Ok(ExitCode::from(2));
        };
        inputs.insert(name, value);
    }
    let chosen = match chosen(&defs, &args) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let opts = super::probe::ProbeOptions {
        kafka,
        inputs,
        steps: args.steps.into_iter().collect(),
        timeout: std::time::Duration::from_millis(args.timeout_ms),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let findings = match runtime.block_on(super::probe::run(&chosen, &opts)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("contract-test could not run: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    for f in &findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| f.problem.is_some()).count();
    println!("{} checks, {failed} failed", findings.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `KEY=VALUE` arguments of `flag`, split; a malformed one is reported (a usage mistake).
fn pairs(items: &[String], flag: &str, shape: &str) -> Result<Vec<(String, String)>, ()> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => {
                eprintln!("error: {flag} {item:?} must look like {shape}");
                Err(())
            }
        })
        .collect()
}

/// The definitions `--saga` selects; an unknown saga or step name is a usage mistake.
fn chosen<'a>(
    defs: &'a [Definition],
    args: &ContractTestArgs,
) -> Result<Vec<&'a Definition>, ExitCode> {
    let chosen: Vec<&Definition> = defs
        .iter()
        .filter(|d| args.sagas.is_empty() || args.sagas.contains(&d.name))
        .collect();
    if chosen.is_empty() {
        eprintln!("error: no saga definitions in {}", args.dir.display());
        return Err(ExitCode::from(3));
    }
    let unknown_saga = args
        .sagas
        .iter()
        .find(|n| !defs.iter().any(|d| &d.name == *n));
    let unknown_step = args
        .steps
        .iter()
        .find(|n| !chosen.iter().any(|d| d.step(n).is_some()));
    if let Some(name) = unknown_saga.or(unknown_step) {
        eprintln!(
            "error: no saga or step named `{name}` in {}",
            args.dir.display()
        );
        return Err(ExitCode::from(2));
    }
    Ok(chosen)
}
