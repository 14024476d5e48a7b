//! Typed, error-collecting access to a [`Node`] tree.
//!
//! Every getter reports a wrong type at the value's own position and returns `None`,
//! so the caller carries on and the user sees all problems of a file at once.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::definition::diagnostic::Diags;
use crate::definition::duration::{DurationError, format_duration, parse_duration};
use crate::definition::node::{Key, Node, Pos, Value};

const DURATION_HELP: &str =
    "write a number followed by a unit (ms, s, m, h, d), e.g. `250ms`, `5s`, `1m30s`";

/// The fields of one mapping, taken by name; whatever is not taken is reported as unknown.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    pub(crate) pos: Pos,
    what: String,
    entries: &'a [(Key, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// `what` names the mapping in messages, e.g. "step `reserve_stock`".
    pub(crate) fn new(
        node: &'a Node,
        what: impl Into<String>,
        d: &mut Diags,
    ) -> Option<Fields<'a>> {
        let what = what.into();
        match &node.value {
            Value::Map(entries) => Some(Fields {
                pos: node.pos,
                what,
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
            }),
            other => {
                let help = match what.as_str() {
                    "step" | "parallel group item" => {
                        "each item under `steps:` is a mapping: `- name: reserve_stock` followed by `command:`, `reply:`, …, or `- parallel: {name: …, steps: […]}`"
                    }
                    "parallel group" => "write `parallel:` with `name:` and `steps:` under it",
                    _ => {
                        "write `name: value` entries indented under it, or inline as `{name: value}`"
                    }
                };
                d.error_help(
                    node.pos,
                    format!("{what} must be a mapping, found {}", other.kind()),
                    help,
                );
                None
            }
        }
    }

    pub(crate) fn opt(&mut self, name: &'static str) -> Option<&'a Node> {
        self.known.push(name);
        let i = self.entries.iter().position(|(k, _)| k.name == name)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    pub(crate) fn req(&mut self, name: &'static str, d: &mut Diags) -> Option<&'a Node> {
        let node = self.opt(name);
        if node.is_none() {
            d.error_help(
                self.pos,
                format!("missing required field `{name}` in {}", self.what),
                format!("add `{name}:`"),
            );
        }
        node
    }

    /// The key a field was written with, for pointing at the field rather than its value.
    pub(crate) fn key_pos(&self, name: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, _)| k.pos)
    }

    pub(crate) fn opt_str(&mut self, name: &'static str, d: &mut Diags) -> Option<&'a str> {
        self.opt(name).and_then(|n| string(n, name, d))
    }

    pub(crate) fn req_str(&mut self, name: &'static str, d: &mut Diags) -> Option<&'a str> {
        self.req(name, d).and_then(|n| string(n, name, d))
    }

    pub(crate) fn opt_bool(&mut self, name: &'static str, d: &mut Diags) -> Option<bool> {
        let node = self.opt(name)?;
        match node.value {
            Value::Bool(b) => Some(b),
            ref other => {
                wrong_type(node.pos, name, Expected::Bool, other, d);
                None
            }
        }
    }

    pub(crate) fn opt_duration(
        &mut self,
        name: &'static str,
        range: RangeInclusive<Duration>,
        d: &mut Diags,
    ) -> Option<Duration> {
        self.opt(name).and_then(|n| duration(n, name, range, d))
    }

    /// Reports every field that was never taken, suggesting the closest known name.
    pub(crate) fn finish(self, d: &mut Diags) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let message = format!("unknown field `{}` in {}", key.name, self.what);
            match closest(&key.name, &self.known) {
                Some(near) => d.error_help(key.pos, message, format!("did you mean `{near}`?")),
                None => d.error_help(
                    key.pos,
                    message,
                    format!("expected one of: {}", self.known.join(", ")),
                ),
            }
        }
    }
}

/// What a field's value should have been, for wrong-type diagnostics and their help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    String,
    List,
    Mapping,
    Number,
    WholeNumber,
    Bool,
    Duration,
}

impl Expected {
    fn describe(self) -> &'static str {
        match self {
            Expected::String => "a string",
            Expected::List => "a list",
            Expected::Mapping => "a mapping",
            Expected::Number => "a number",
            Expected::WholeNumber => "a whole number",
            Expected::Bool => "`true` or `false`",
            Expected::Duration => "a duration such as `5s`",
        }
    }

    /// How to write a value of this kind for `field`, with an example where one helps.
    fn help(self, field: &str, found: &Value) -> String {
        match self {
            Expected::String => {
                let example = match field {
                    "topic" => "topic: orders.commands",
                    "reply_topic" => "reply_topic: orders.saga-replies",
                    "type" => "type: inventory.reserve_stock",
                    "success" => "success: [inventory.stock_reserved]",
                    "name" => "name: reserve_stock",
                    "description" => "description: Reserve stock, take payment, ship.",
                    "key" => "key: \"{{ input.order_id }}\"",
                    "when" => "when: input.plan == \"premium\"",
                    _ => "",
                };
                let quote = match found {
                    Value::Null | Value::Bool(_) | Value::Number(_) => {
                        "; put it in quotes, or YAML reads it as a number, boolean or null"
                    }
                    _ => "",
                };
                if example.is_empty() {
                    format!("write a string, e.g. `{field}: \"text\"`{quote}")
                } else {
                    format!("write a string, e.g. `{example}`{quote}")
                }
            }
            Expected::List => match field {
                "steps" => "expected a list with one `- name: …` item per step (or `- parallel: …` group)".to_owned(),
                "success" => "expected a list like `[inventory.stock_reserved]`".to_owned(),
                "failure" => "expected a list like `[{type: inventory.out_of_stock}]`, or one `- type: …` item per line".to_owned(),
                _ => "expected a list like `[a, b]`, or one `- item` per line".to_owned(),
            },
            Expected::Mapping => match field {
                "headers" => "write header names and values, e.g. `headers: {x-tenant: \"{{ input.tenant }}\"}`".to_owned(),
                _ => format!("write `name: value` entries indented under `{field}:`, or inline as `{{name: value}}`"),
            },
            Expected::Number => {
                let example = if field == "jitter" { "0.2" } else { "2.0" };
                format!("write a number without quotes, e.g. `{field}: {example}`")
            }
            Expected::WholeNumber => {
                format!("write a whole number without quotes, e.g. `{field}: 5`")
            }
            Expected::Bool => {
                format!("write `{field}: true` or `{field}: false`, without quotes")
            }
            Expected::Duration => DURATION_HELP.to_owned(),
        }
    }
}

pub(crate) fn wrong_type(pos: Pos, field: &str, expected: Expected, found: &Value, d: &mut Diags) {
    d.error_help(
        pos,
        format!(
            "`{field}` must be {}, found {}",
            expected.describe(),
            found.kind()
        ),
        expected.help(field, found),
    );
}

pub(crate) fn string<'a>(node: &'a Node, field: &str, d: &mut Diags) -> Option<&'a str> {
    match &node.value {
        Value::String(s) => Some(s),
        other => {
            wrong_type(node.pos, field, Expected::String, other, d);
            None
        }
    }
}

pub(crate) fn list<'a>(node: &'a Node, field: &str, d: &mut Diags) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        other => {
            wrong_type(node.pos, field, Expected::List, other, d);
            None
        }
    }
}

pub(crate) fn map<'a>(node: &'a Node, field: &str, d: &mut Diags) -> Option<&'a [(Key, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        other => {
            wrong_type(node.pos, field, Expected::Mapping, other, d);
            None
        }
    }
}

pub(crate) fn number(node: &Node, field: &str, d: &mut Diags) -> Option<f64> {
    match &node.value {
        Value::Number(n) => n.as_f64(),
        other => {
            wrong_type(node.pos, field, Expected::Number, other, d);
            None
        }
    }
}

pub(crate) fn duration(
    node: &Node,
    field: &str,
    range: RangeInclusive<Duration>,
    d: &mut Diags,
) -> Option<Duration> {
    let text = match &node.value {
        Value::String(s) => s,
        Value::Number(n) => {
            d.error_help(
                node.pos,
                format!("`{field}` must be a duration with a unit, found the bare number {n}"),
                format!("add a unit, e.g. `{n}s` or `{n}ms`"),
            );
            return None;
        }
        other => {
            wrong_type(node.pos, field, Expected::Duration, other, d);
            return None;
        }
    };
    match parse_duration(text) {
        Ok(value) if range.contains(&value) => Some(value),
        Ok(_) => {
            d.error_help(
                node.pos,
                format!("`{field}` {text} is out of range"),
                format!(
                    "use a duration between {} and {}",
                    format_duration(*range.start()),
                    format_duration(*range.end())
                ),
            );
            None
        }
        Err(err @ DurationError::MissingUnit(_)) => {
            d.error_help(
                node.pos,
                format!("invalid duration for `{field}`: {err}"),
                format!("add a unit, e.g. `{text}s`"),
            );
            None
        }
        Err(err) => {
            d.error_help(
                node.pos,
                format!("invalid duration for `{field}`: {err}"),
                DURATION_HELP,
            );
            None
        }
    }
}

/// The candidate nearest to `word`, if near enough to be a likely typo.
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    // Roughly one typo per three characters, so `inptu` still finds `input`.
    let limit = word.chars().count().div_ceil(3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(dist, _)| *dist <= limit)
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Node {
        serde_saphyr::from_str(src).expect("valid yaml")
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("timout", &["topic", "timeout"]), Some("timeout"));
        assert_eq!(closest("colour", &["topic", "timeout"]), None);
    }

    #[test]
    fn fields_report_missing_unknown_and_wrong_types() {
        let node = parse("topic: 5\ntimout: 1s\nflag: yes please\n");
        let mut d = Diags::new("f.yaml");
        let mut f = Fields::new(&node, "command", &mut d).expect("a map");
        assert_eq!(f.req_str("topic", &mut d), None);
        assert_eq!(f.req_str("type", &mut d), None);
        assert_eq!(f.opt_bool("flag", &mut d), None);
        assert_eq!(
            f.opt_duration("timeout", Duration::ZERO..=Duration::MAX, &mut d),
            None
        );
        f.finish(&mut d);
        let out: Vec<String> = d.into_sorted().iter().map(ToString::to_string).collect();
        assert_eq!(
            out,
            [
                "f.yaml:1:1: error: missing required field `type` in command\n  help: add `type:`",
                "f.yaml:1:8: error: `topic` must be a string, found a number\n  help: write a string, e.g. `topic: orders.commands`; put it in quotes, or YAML reads it as a number, boolean or null",
                "f.yaml:2:1: error: unknown field `timout` in command\n  help: did you mean `timeout`?",
                "f.yaml:3:7: error: `flag` must be `true` or `false`, found a string\n  help: write `flag: true` or `flag: false`, without quotes",
            ]
        );
    }

    #[test]
    fn durations_check_units_and_range() {
        let node = parse("[5, 5x, 2d, 1s]");
        let Value::Seq(items) = &node.value else {
            panic!("a list")
        };
        let range = Duration::from_millis(1)..=Duration::from_secs(86_400);
        let mut d = Diags::new("f");
        for item in items {
            duration(item, "timeout", range.clone(), &mut d);
        }
        let out: Vec<String> = d.into_sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(
            out,
            [
                "`timeout` must be a duration with a unit, found the bare number 5",
                "invalid duration for `timeout`: `5x` has an unknown unit `x`",
                "`timeout` 2d is out of range",
            ]
        );
    }
}
