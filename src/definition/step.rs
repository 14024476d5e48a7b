//! Decoding of steps, the messages they send, their replies and retry policies.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::definition::decode::{Ctx, Scope, check_topic, template};
use crate::definition::duration::format_duration;
use crate::definition::model::{
    Compensation, FailureType, MessageSpec, ReplySpec, RetryPolicy, Schema, Step,
};
use crate::definition::node::{Node, Pos, Value};
use crate::definition::reader::{
    Expected, Fields, closest, duration, list, map, number, string, wrong_type,
};
use crate::definition::template::Template;

const MS: Duration = Duration::from_millis(1);
const DAY: Duration = Duration::from_secs(86_400);
pub(crate) const HOUR: Duration = Duration::from_secs(3_600);
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// What a step declared about its undo, kept with positions for the pivot rules.
#[derive(Debug)]
pub(crate) enum CompensationDecl {
    Missing,
    None,
    Declared(Pos),
}

/// Facts about a step that the semantic checks need but the model does not keep.
#[derive(Debug)]
pub(crate) struct StepInfo {
    pub(crate) name_pos: Pos,
    pub(crate) pivot_pos: Option<Pos>,
    pub(crate) compensation: CompensationDecl,
    pub(crate) group: Option<String>,
}

/// Settings steps inherit when they do not set their own.
#[derive(Debug, Clone)]
pub(crate) struct StepDefaults {
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

pub(crate) fn is_step_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

/// Reports an invalid step or group name; returns the name either way so decoding continues.
pub(crate) fn step_name(node: Option<&Node>, ctx: &mut Ctx) -> (String, Pos) {
    let Some(node) = node else {
        return (String::new(), Pos::START);
    };
    let Some(name) = string(node, "name", &mut ctx.d) else {
        return (String::new(), node.pos);
    };
    if !is_step_name(name) {
        ctx.d.error_help(
            node.pos,
            format!("invalid step name `{name}`"),
            "use lowercase letters, digits and `_`, starting with a letter or `_`, at most 63 characters (e.g. `reserve_stock`)",
        );
    }
    (name.to_owned(), node.pos)
}

pub(crate) fn decode_step(
    node: &Node,
    index: usize,
    stage: usize,
    group: Option<&str>,
    defaults: &StepDefaults,
    ctx: &mut Ctx,
) -> Option<(Step, StepInfo)> {
    let mut f = Fields::new(node, "step", &mut ctx.d)?;
    if let Some(nested) = f.opt("parallel") {
        ctx.d.error_help(
            nested.pos,
            "nested parallel group",
            "a parallel group may contain steps only; move the inner group out as its own stage",
        );
        return None;
    }
    let (name, name_pos) = step_name(f.req("name", &mut ctx.d), ctx);
    let scope = Scope::Step(index);
    let command = match f.req("command", &mut ctx.d) {
        Some(n) => Fields::new(n, "command", &mut ctx.d).map(|mut cf| {
            let spec = message(&mut cf, scope, ctx);
            cf.finish(&mut ctx.d);
            spec
        }),
        None => None,
    };
    let (reply, timeout, retry) = outcome_policy(&mut f, defaults, ctx);
    let pivot = f.opt_bool("pivot", &mut ctx.d).unwrap_or(false);
    let pivot_pos = pivot.then(|| f.key_pos("pivot")).flatten();
    let when = f.opt("when").and_then(|n| condition(n, scope, ctx));
    let (compensation, decl) = match f.opt("compensation") {
        None => (None, CompensationDecl::Missing),
        Some(Node {
            value: Value::String(s),
            ..
        }) if s == "none" => (None, CompensationDecl::None),
        Some(
            n @ Node {
                value: Value::Map(_),
                ..
            },
        ) => (
            compensation(n, index, defaults, ctx),
            CompensationDecl::Declared(f.key_pos("compensation").unwrap_or(n.pos)),
        ),
        Some(n) => {
            ctx.d.error_help(
                n.pos,
                format!("`compensation` must be a mapping or `none`, found {}", n.value.kind()),
                "describe the undo command, or write `compensation: none` if the step needs no undo",
            );
            (None, CompensationDecl::None)
        }
    };
    f.finish(&mut ctx.d);
    let step = Step {
        name,
        index,
        stage,
        pos: node.pos,
        command: command.unwrap_or_else(placeholder_message),
        reply,
        timeout,
        retry,
        compensation,
        pivot,
        when,
    };
    let info = StepInfo {
        name_pos,
        pivot_pos,
        compensation: decl,
        group: group.map(str::to_owned),
    };
    Some((step, info))
}

fn placeholder_message() -> MessageSpec {
    MessageSpec {
        topic: String::new(),
        message_type: String::new(),
        payload: Template::Literal(json!({})),
        key: None,
        headers: Vec::new(),
        schema: None,
    }
}

/// `when:` takes an expression with or without `{{ }}`.
fn condition(node: &Node, scope: Scope, ctx: &mut Ctx) -> Option<Template> {
    let text = string(node, "when", &mut ctx.d)?;
    let trimmed = text.trim();
    let expr = trimmed
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .unwrap_or(trimmed);
    let wrapped = Node {
        pos: node.pos,
        value: Value::String(format!("{{{{ {expr} }}}}")),
    };
    template(&wrapped, scope, ctx);
    Some(Template::expression(expr))
}

/// Headers a definition may not set: a definition could otherwise overwrite a
/// command's saga id, reply topic or reply token (docs/protocol.md).
fn reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("ce_")
        || matches!(name.as_str(), "content-type" | "traceparent" | "tracestate")
}

/// The fields shared by commands and compensations: topic, type, key, headers, payload.
fn message(f: &mut Fields<'_>, scope: Scope, ctx: &mut Ctx) -> MessageSpec {
    let topic = f
        .req("topic", &mut ctx.d)
        .and_then(|n| check_topic(n, "topic", ctx));
    let message_type = f.req_str("type", &mut ctx.d).map(str::to_owned);
    if let (Some(t), Some(pos)) = (&message_type, f.key_pos("type"))
        && t.trim().is_empty()
    {
        ctx.d.error_help(
            pos,
            "`type` must not be empty",
            "write the CloudEvents type the participant dispatches on, e.g. `type: inventory.reserve_stock`",
        );
    }
    let key = f.opt("key").map(|n| {
        string(n, "key", &mut ctx.d);
        template(n, scope, ctx)
    });
    let mut headers = Vec::new();
    if let Some(n) = f.opt("headers")
        && let Some(entries) = map(n, "headers", &mut ctx.d)
    {
        for (k, v) in entries {
            if reserved_header(&k.name) {
                ctx.d.error_help(
                    k.pos,
                    format!("header `{}` is set by sagaflow", k.name),
                    "`ce_*`, `content-type`, `traceparent` and `tracestate` carry the CloudEvents \
                     attributes, the reply token and the trace: choose another name",
                );
            } else if string(v, &k.name, &mut ctx.d).is_some() {
                headers.push((k.name.clone(), template(v, scope, ctx)));
            }
        }
    }
    let payload = f
        .opt("payload")
        .map(|n| template(n, scope, ctx))
        .unwrap_or(Template::Literal(json!({})));
    let schema = f
        .opt("schema")
        .and_then(|n| super::schema_check::compile(n, "payload", ctx.lenient, &mut ctx.d));
    MessageSpec {
        topic: topic.unwrap_or_default(),
        message_type: message_type.unwrap_or_default(),
        payload,
        key,
        headers,
        schema,
    }
}

fn compensation(
    node: &Node,
    index: usize,
    defaults: &StepDefaults,
    ctx: &mut Ctx,
) -> Option<Compensation> {
    let mut f = Fields::new(node, "compensation", &mut ctx.d)?;
    let command = message(&mut f, Scope::Compensation(index), ctx);
    let (reply, timeout, retry) = outcome_policy(&mut f, defaults, ctx);
    f.finish(&mut ctx.d);
    Some(Compensation {
        command,
        reply,
        timeout,
        retry,
    })
}

/// `reply`, `timeout` and `retry`, which steps and compensations declare alike.
fn outcome_policy(
    f: &mut Fields<'_>,
    defaults: &StepDefaults,
    ctx: &mut Ctx,
) -> (ReplySpec, Duration, RetryPolicy) {
    let reply = f
        .req("reply", &mut ctx.d)
        .map(|n| reply(n, ctx))
        .unwrap_or_default();
    let timeout = f
        .opt_duration("timeout", MS..=MAX_TIMEOUT, &mut ctx.d)
        .unwrap_or(defaults.timeout);
    let retry = f
        .opt("retry")
        .map(|n| retry(n, defaults.retry, ctx))
        .unwrap_or(defaults.retry);
    (reply, timeout, retry)
}

fn reply(node: &Node, ctx: &mut Ctx) -> ReplySpec {
    let Some(mut f) = Fields::new(node, "reply", &mut ctx.d) else {
        return ReplySpec::default();
    };
    // Reply type → whether it was listed under `success`.
    let mut seen = HashMap::new();
    let mut spec = ReplySpec::default();
    let success = f.req("success", &mut ctx.d);
    let success_items = success.and_then(|n| list(n, "success", &mut ctx.d));
    if let (Some(n), Some([])) = (success, success_items) {
        ctx.d.error_help(
            n.pos,
            "no success reply types",
            "list the reply types that mean the step succeeded, e.g. `success: [inventory.stock_reserved]`",
        );
    }
    for item in success_items.unwrap_or_default() {
        if let Some(t) = reply_type(item, "success", true, &mut seen, ctx) {
            spec.success.push(t);
        }
    }
    let failures = f
        .opt("failure")
        .and_then(|n| list(n, "failure", &mut ctx.d));
    for item in failures.unwrap_or_default() {
        let Some(mut ff) = Fields::new(item, "failure reply", &mut ctx.d) else {
            continue;
        };
        let reply_type = ff
            .req("type", &mut ctx.d)
            .and_then(|n| reply_type(n, "type", false, &mut seen, ctx));
        let retryable = ff.opt_bool("retryable", &mut ctx.d).unwrap_or(false);
        ff.finish(&mut ctx.d);
        if let Some(reply_type) = reply_type {
            spec.failure.push(FailureType {
                reply_type,
                retryable,
            });
        }
    }
    if let Some(n) = f.opt("schemas") {
        spec.schemas = reply_schemas(n, &seen, ctx);
    }
    f.finish(&mut ctx.d);
    spec
}

/// `schemas:` maps declared reply types to the JSON Schema of their data.
fn reply_schemas(
    node: &Node,
    declared: &HashMap<String, bool>,
    ctx: &mut Ctx,
) -> BTreeMap<String, Schema> {
    let mut out = BTreeMap::new();
    let Some(entries) = map(node, "schemas", &mut ctx.d) else {
        return out;
    };
    for (key, value) in entries {
        if !declared.contains_key(&key.name) {
            let names: Vec<&str> = declared.keys().map(String::as_str).collect();
            let help = match closest(&key.name, &names) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!(
                    "schemas are for the reply types listed in `success` and `failure`: {}",
                    names.join(", ")
                ),
            };
            ctx.d.error_help(
                key.pos,
                format!("`{}` is not a reply type of this step", key.name),
                help,
            );
            continue;
        }
        let what = format!("reply `{}`", key.name);
        if let Some(schema) = super::schema_check::compile(value, &what, ctx.lenient, &mut ctx.d) {
            out.insert(key.name.clone(), schema);
        }
    }
    out
}

fn reply_type(
    node: &Node,
    field: &str,
    success: bool,
    seen: &mut HashMap<String, bool>,
    ctx: &mut Ctx,
) -> Option<String> {
    let t = string(node, field, &mut ctx.d)?;
    if t.trim().is_empty() {
        ctx.d.error_help(
            node.pos,
            "reply type must not be empty",
            "write the CloudEvents type of the reply, e.g. `inventory.stock_reserved`",
        );
        return None;
    }
    if let Some(first_success) = seen.insert(t.to_owned(), success) {
        let message = if first_success == success {
            format!("reply type `{t}` is listed twice")
        } else {
            format!("reply type `{t}` is listed in both `success` and `failure`")
        };
        ctx.d.error_help(
            node.pos,
            message,
            "each reply type may appear once, in either `success` or `failure`",
        );
        return None;
    }
    Some(t.to_owned())
}

/// Reads a retry block; unset fields come from `base`.
pub(crate) fn retry(node: &Node, base: RetryPolicy, ctx: &mut Ctx) -> RetryPolicy {
    let Some(mut f) = Fields::new(node, "retry", &mut ctx.d) else {
        return base;
    };
    let mut policy = base;
    if let Some(n) = f.opt("max_attempts") {
        match &n.value {
            Value::Number(num) => match num.as_u64() {
                Some(v @ 1..=100) => policy.max_attempts = v as u32,
                _ => ctx.d.error_help(
                    n.pos,
                    format!("`max_attempts` must be between 1 and 100, found {num}"),
                    "`max_attempts` counts every attempt, including the first",
                ),
            },
            other => wrong_type(
                n.pos,
                "max_attempts",
                Expected::WholeNumber,
                other,
                &mut ctx.d,
            ),
        }
    }
    if let Some(v) = f
        .opt("initial_interval")
        .and_then(|n| duration(n, "initial_interval", MS..=HOUR, &mut ctx.d))
    {
        policy.initial_interval = v;
    }
    if let Some(v) = f
        .opt("max_interval")
        .and_then(|n| duration(n, "max_interval", MS..=DAY, &mut ctx.d))
    {
        policy.max_interval = v;
    }
    if let Some(n) = f.opt("multiplier")
        && let Some(v) = number(n, "multiplier", &mut ctx.d)
    {
        if (1.0..=10.0).contains(&v) {
            policy.multiplier = v;
        } else {
            ctx.d.error_help(
                n.pos,
                format!("`multiplier` must be between 1.0 and 10.0, found {v}"),
                "each retry waits `multiplier` times longer than the one before",
            );
        }
    }
    if let Some(n) = f.opt("jitter")
        && let Some(v) = number(n, "jitter", &mut ctx.d)
    {
        if (0.0..=1.0).contains(&v) {
            policy.jitter = v;
        } else {
            ctx.d.error_help(
                n.pos,
                format!("`jitter` must be between 0.0 and 1.0, found {v}"),
                "`jitter` is the fraction of each delay removed at random",
            );
        }
    }
    // Only blame this block when it set one of the two; an inherited conflict was
    // already reported where it was written.
    let here = f.key_pos("max_interval").or(f.key_pos("initial_interval"));
    if let Some(pos) = here
        && policy.max_interval < policy.initial_interval
    {
        ctx.d.error_help(
            pos,
            format!(
                "`max_interval` ({}) is shorter than `initial_interval` ({})",
                format_duration(policy.max_interval),
                format_duration(policy.initial_interval)
            ),
            "make `max_interval` at least as long as `initial_interval`",
        );
    }
    f.finish(&mut ctx.d);
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::diagnostic::Diags;

    #[test]
    fn step_names() {
        assert!(is_step_name("reserve_stock"));
        assert!(is_step_name("_internal2"));
        assert!(!is_step_name("2nd_try"));
        assert!(!is_step_name("reserve-stock"));
        assert!(!is_step_name(""));
        assert!(!is_step_name(&"s".repeat(64)));
    }

    #[test]
    fn retry_fields_fall_back_to_the_base_policy() {
        let node: Node = serde_saphyr::from_str("{max_attempts: 7, jitter: 0}").expect("yaml");
        let base = RetryPolicy {
            multiplier: 3.0,
            ..RetryPolicy::default()
        };
        let mut ctx = Ctx {
            d: Diags::new("f"),
            uses: Vec::new(),
            lenient: false,
        };
        let policy = retry(&node, base, &mut ctx);
        assert!(ctx.d.is_empty());
        assert_eq!(
            policy,
            RetryPolicy {
                max_attempts: 7,
                jitter: 0.0,
                ..base
            }
        );
    }
}
