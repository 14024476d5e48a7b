//! Entry points: text, file or directory in; definitions or diagnostics out.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::definition::decode::{Ctx, decode};
use crate::definition::diagnostic::{Diagnostic, Diags};
use crate::definition::model::Definition;
use crate::definition::node::{Node, Pos};
use crate::definition::validate::validate;

/// Largest definition file accepted, in bytes.
pub const MAX_FILE_SIZE: usize = 256 * 1024;

/// A saga input that does not match the definition's input schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InputError {
    /// JSON pointer to the offending value, `""` for the whole input.
    pub path: String,
    pub message: String,
}

pub(crate) fn sha256_hex(source: &str) -> String {
    Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn compile_schema(
    schema: &Json,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
}

/// How much work one definition may cost to parse. Files are trusted more than
/// definitions posted to the API, which anyone with a `read` token can send.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_bytes: usize,
    /// Deepest nesting of YAML collections (each level costs parser stack).
    pub max_depth: usize,
    pub max_nodes: usize,
    pub max_aliases: usize,
}

impl ParseLimits {
    /// For `sagas/*.yaml` and `sagaflow validate`.
    pub const FILE: ParseLimits = ParseLimits {
        max_bytes: MAX_FILE_SIZE,
        max_depth: 64,
        max_nodes: 250_000,
        max_aliases: 50_000,
    };
    /// For `POST /v1/definitions/validate`: a real definition fits with room to spare.
    pub const API: ParseLimits = ParseLimits {
        max_bytes: 64 * 1024,
        max_depth: 32,
        max_nodes: 20_000,
        max_aliases: 1_000,
    };

    fn budget(&self) -> serde_saphyr::Budget {
        let mut budget = serde_saphyr::Budget::default();
        budget.max_depth = self.max_depth;
        budget.max_nodes = self.max_nodes;
        budget.max_aliases = self.max_aliases;
        budget
    }
}

/// Parses and validates one definition, reporting every problem found.
pub fn parse_definition(file: &str, source: &str) -> Result<Definition, Vec<Diagnostic>> {
    parse_definition_within(file, source, &ParseLimits::FILE)
}

/// A stored snapshot (a version sagas run on): parsed without the checks added since it
/// may have been stored, so an upgrade never makes a running saga's version unreadable.
pub fn parse_stored_definition(file: &str, source: &str) -> Result<Definition, Vec<Diagnostic>> {
    parse(file, source, &ParseLimits::FILE, true)
}

/// [`parse_definition`] under `limits`.
pub fn parse_definition_within(
    file: &str,
    source: &str,
    limits: &ParseLimits,
) -> Result<Definition, Vec<Diagnostic>> {
    parse(file, source, limits, false)
}

fn parse(
    file: &str,
    source: &str,
    limits: &ParseLimits,
    lenient: bool,
) -> Result<Definition, Vec<Diagnostic>> {
    let mut d = Diags::new(file);
    if source.len() > limits.max_bytes {
        d.error_help(
            Pos::START,
            format!(
                "file is too large: {} bytes, the limit is {} bytes ({} KiB)",
                source.len(),
                limits.max_bytes,
                limits.max_bytes / 1024
            ),
            "split the saga or move large constants out of the definition",
        );
        return Err(d.into_sorted());
    }
    // The budget is what rejects alias bombs and nesting deep enough to exhaust a stack.
    // YAML 1.2 core values: `NO`, `on`, `y` stay strings (not YAML 1.1 booleans), and a
    // plain number with leading zeros (`012345`) stays the string it was written as.
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: Some(limits.budget()),
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    };
    let root: Node = match serde_saphyr::from_str_with_options(source, options) {
        Ok(root) => root,
        Err(err) => {
            yaml_error(&err, &limits.budget(), &mut d);
            return Err(d.into_sorted());
        }
    };
    let mut ctx = Ctx {
        d,
        uses: Vec::new(),
        lenient,
    };
    let (mut def, infos) = decode(&root, file, source, &mut ctx);
    validate(&mut def, &infos, &mut ctx);
    if ctx.d.is_empty() {
        def.warnings = super::lookalike::warnings(&root, source, file);
        Ok(def)
    } else {
        Err(ctx.d.into_sorted())
    }
}

fn yaml_error(err: &serde_saphyr::Error, budget: &serde_saphyr::Budget, d: &mut Diags) {
    let pos = err
        .location()
        .map(|l| Pos {
            line: l.line(),
            column: l.column(),
        })
        .filter(|p| p.line > 0)
        .unwrap_or(Pos::START);
    let mut inner = err;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    if let serde_saphyr::Error::Budget { breach, .. } = inner {
        d.error_help(
            pos,
            format!(
                "the document is too large or expands too many aliases (limit: {})",
                budget_limit(breach, budget)
            ),
            "aliases that refer to aliases multiply the data (an \"alias bomb\"); write the values out instead, or split the saga",
        );
        return;
    }
    use serde_saphyr::MessageFormatter;
    let message = serde_saphyr::UserMessageFormatter.format_message(inner);
    let help = if message.contains("duplicate mapping key") {
        "each key may appear once in a mapping: remove or rename one of them"
    } else {
        "check indentation, quotes and `:` around this position"
    };
    d.error_help(pos, format!("YAML syntax error: {message}"), help);
}

/// The parser limit a document broke, in words.
fn budget_limit(
    breach: &serde_saphyr::budget::BudgetBreach,
    budget: &serde_saphyr::Budget,
) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Nodes { .. } => format!("{} YAML nodes", thousands(budget.max_nodes)),
        B::Events { .. } => format!("{} parser events", thousands(budget.max_events)),
        B::Aliases { .. } => format!("{} aliases", thousands(budget.max_aliases)),
        B::Anchors { .. } => format!("{} anchors", thousands(budget.max_anchors)),
        B::Depth { .. } => format!("{} levels of nesting", budget.max_depth),
        B::AliasAnchorRatio { .. } => format!(
            "{} aliases per anchor",
            budget.alias_anchor_ratio_multiplier
        ),
        _ => "the YAML parser's safety budget".to_owned(),
    }
}

/// `250000` → `250,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Loads one definition file; an unreadable file is a diagnostic at 1:1.
pub fn load_file(path: &Path) -> Result<Definition, Vec<Diagnostic>> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse_definition(&file, &source),
        Err(err) => {
            let mut d = Diags::new(&file);
            d.error_help(
                Pos::START,
                format!("cannot read file: {err}"),
                "check that the path exists and is a readable file",
            );
            Err(d.into_sorted())
        }
    }
}

/// Loads every `*.yaml` / `*.yml` file in `path` (not recursively), in name order.
pub fn load_dir(path: &Path) -> (Vec<Definition>, Vec<Diagnostic>) {
    let mut definitions = Vec::new();
    let mut diagnostics = Vec::new();
    let dir_name = path.display().to_string();
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) => {
            let mut d = Diags::new(&dir_name);
            d.error_help(
                Pos::START,
                format!("cannot read directory: {err}"),
                "check that the path exists and is a readable directory",
            );
            return (definitions, d.into_sorted());
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in files {
        match load_file(&file) {
            Ok(def) => {
                if let Some(first) = seen.get(&def.name) {
                    let mut d = Diags::new(&def.file);
                    d.error_help(
                        name_pos(&def),
                        format!("duplicate saga name `{}`", def.name),
                        format!("`{first}` already defines it; saga names must be unique"),
                    );
                    diagnostics.extend(d.into_sorted());
                } else {
                    seen.insert(def.name.clone(), def.file.clone());
                    definitions.push(def);
                }
            }
            Err(diags) => diagnostics.extend(diags),
        }
    }
    diagnostics.extend(trigger_topics_that_carry_replies(&definitions));
    (definitions, diagnostics)
}

/// A trigger topic is never read as a reply topic: anyone allowed to publish business
/// events there could otherwise answer commands (docs/security.md).
fn trigger_topics_that_carry_replies(definitions: &[Definition]) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for def in definitions {
        let Some(trigger) = &def.trigger else {
            continue;
        };
        if let Some(other) = definitions.iter().find(|d| d.reply_topic == trigger.topic) {
            let mut d = Diags::new(&def.file);
            d.error_help(
                name_pos(def),
                format!(
                    "trigger topic `{}` is also the reply topic of `{}`",
                    trigger.topic, other.name
                ),
                "replies are never read from trigger topics: give the saga's replies a topic of their own",
            );
            diagnostics.extend(d.into_sorted());
        }
    }
    diagnostics
}

/// Where `name:` is written, found again from the kept source for the cross-file message.
fn name_pos(def: &Definition) -> Pos {
    let root: Option<Node> = serde_saphyr::from_str(&def.source).ok();
    root.and_then(|root| match root.value {
        crate::definition::node::Value::Map(entries) => entries
            .into_iter()
            .find(|(k, _)| k.name == "name")
            .map(|(_, v)| v.pos),
        _ => None,
    })
    .unwrap_or(Pos::START)
}

impl Definition {
    /// Checks a saga input against the definition's input schema (if any).
    pub fn validate_input(&self, input: &Json) -> Result<(), Vec<InputError>> {
        let Some(schema) = &self.input_schema else {
            return Ok(());
        };
        let errors = schema.violations(input);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// A version stored before the contract checks existed keeps loading for its sagas.
    #[test]
    fn stored_snapshots_skip_the_checks_added_since() {
        // An unknown keyword, and a template field no schema declares: errors today.
        let keyword = r#"
name: old
input: {schema: {type: object, properties: {a: {type: string, maxLenght: 3}}}}
steps:
  - name: s
    command: {topic: t, type: do}
    reply: {success: [done]}
    compensation: none
"#;
        let field = keyword
            .replace(", maxLenght: 3", "")
            .replace("type: do}", "type: do, payload: {b: \"{{ input.b }}\"}}");
        for old in [keyword, field.as_str()] {
            let strict = super::parse_definition("old.yaml", old).unwrap_err();
            assert_eq!(strict.len(), 1, "{strict:?}");
            let def = super::parse_stored_definition("old.yaml", old).expect("loads as stored");
            assert_eq!(def.name, "old");
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(7), "7");
        assert_eq!(super::thousands(250_000), "250,000");
        assert_eq!(super::thousands(1_000_000), "1,000,000");
    }

    /// Parses each deep document under `limits` on a thread with `stack` bytes; the
    /// first diagnostic of each deeper than the limit allows.
    fn refusals(limits: super::ParseLimits, stack: usize) -> Vec<String> {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                let mut messages = Vec::new();
                for depth in [50, 70, 1_000, 20_000] {
                    let flow = format!(
                        "name: x\nsteps: {}1{}\n",
                        "{a: ".repeat(depth),
                        "}".repeat(depth)
                    );
                    let block: String = (0..depth.min(2_000))
                        .map(|i| format!("{}- \n", "  ".repeat(i + 1)))
                        .collect();
                    for source in [flow, format!("name: x\nsteps:\n{block}")] {
                        let diags = super::parse_definition_within("deep.yaml", &source, &limits)
                            .expect_err("not a definition");
                        if depth > limits.max_depth {
                            messages.push(diags[0].message.clone());
                        }
                    }
                }
                messages
            })
            .unwrap()
            .join()
            .expect("no stack overflow")
    }

    /// The review's probe: about 50 levels of flow mappings overflowed a 2 MiB tokio
    /// worker stack and aborted the server. API input is now refused within 2 MiB, and
    /// files (whose limit is twice as deep) within the 8 MiB that the main thread and
    /// the runtime's workers have.
    #[test]
    fn deep_nesting_is_refused_within_the_stack_it_runs_on() {
        let api = refusals(super::ParseLimits::API, 2 * 1024 * 1024);
        let files = refusals(super::ParseLimits::FILE, 8 * 1024 * 1024);
        assert_eq!((api.len(), files.len()), (8, 6));
        for messages in [&api, &files] {
            // The shallowest are refused for their depth; deeper ones may be for their size.
            assert!(messages[0].contains("levels of nesting"), "{}", messages[0]);
            for m in messages.iter() {
                assert!(
                    m.contains("levels of nesting") || m.contains("too large"),
                    "{m}"
                );
            }
        }
    }
}
