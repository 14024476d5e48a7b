//! Hand-written decoding of a [`Node`] tree into a [`Definition`], collecting every problem.

use std::collections::HashMap;
use std::time::Duration;

use crate::definition::diagnostic::Diags;
use crate::definition::model::{
    DEFAULT_REPLY_TOPIC, DEFAULT_STEP_TIMEOUT, Definition, RetryPolicy, Schema, Stage, Step,
    Trigger,
};
use crate::definition::node::{Node, Pos, Value};
use crate::definition::reader::{Fields, list, string};
use crate::definition::step::{MAX_TIMEOUT, StepDefaults, StepInfo, decode_step, retry, step_name};
use crate::definition::template::Template;

/// Where a template sits, which decides the variables it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The command or `when:` of the step with this index.
    Step(usize),
    /// The compensation of the step with this index.
    Compensation(usize),
    Output,
    TriggerKey,
    TriggerInput,
}

/// A variable path read by a template string, e.g. `steps.reserve_stock.reply.id`.
#[derive(Debug)]
pub(crate) struct TemplateUse {
    pub(crate) pos: Pos,
    pub(crate) var: String,
    pub(crate) scope: Scope,
}

#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) d: Diags,
    pub(crate) uses: Vec<TemplateUse>,
    /// Leave out the checks added after a definition may have been stored (unknown
    /// JSON Schema keywords, template fields no schema declares): a snapshot that
    /// loaded when its sagas started must load for as long as they run.
    pub(crate) lenient: bool,
}

/// Checks every string in `node` for template syntax, records the variables it reads,
/// and returns the template. Each string is checked alone so errors point at it.
pub(crate) fn template(node: &Node, scope: Scope, ctx: &mut Ctx) -> Template {
    collect_uses(node, scope, ctx);
    Template::from_json(&node.to_json())
}

fn collect_uses(node: &Node, scope: Scope, ctx: &mut Ctx) {
    match &node.value {
        Value::String(s) => {
            match Template::from_json(&serde_json::Value::String(s.clone())).check() {
                Ok(vars) => ctx.uses.extend(vars.into_iter().map(|var| TemplateUse {
                    pos: node.pos,
                    var,
                    scope,
                })),
                Err(err) => ctx.d.error_help(
                    node.pos,
                    format!(
                        "template syntax error: {}",
                        err.detail().unwrap_or("invalid template")
                    ),
                    "templates are minijinja: `{{ input.order_id }}`, `{{ steps.reserve_stock.reply.id | default(none) }}`",
                ),
            }
        }
        Value::Seq(items) => items.iter().for_each(|n| collect_uses(n, scope, ctx)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|(_, n)| collect_uses(n, scope, ctx)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A Kafka topic name, or `None` (reported) when it is not one.
pub(crate) fn check_topic(node: &Node, field: &str, ctx: &mut Ctx) -> Option<String> {
    let topic = string(node, field, &mut ctx.d)?;
    if !is_topic(topic) {
        ctx.d.error_help(
            node.pos,
            format!("invalid topic name `{topic}`"),
            "Kafka topic names use letters, digits, `.`, `_` and `-`, at most 249 characters",
        );
    }
    Some(topic.to_owned())
}

fn is_saga_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '0'..='9'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
        && name.len() <= 63
}

/// Decodes the document; problems go to `ctx`. The result is only meaningful when none were found.
pub(crate) fn decode(
    root: &Node,
    file: &str,
    source: &str,
    ctx: &mut Ctx,
) -> (Definition, Vec<StepInfo>) {
    let mut def = Definition {
        name: String::new(),
        description: String::new(),
        version: crate::definition::load::sha256_hex(source),
        source: source.to_owned(),
        file: file.to_owned(),
        input_schema: None,
        reply_topic: DEFAULT_REPLY_TOPIC.to_owned(),
        deadline: None,
        trigger: None,
        steps: Vec::new(),
        stages: Vec::new(),
        pivot: None,
        output: None,
        warnings: Vec::new(),
    };
    let mut infos = Vec::new();
    if !matches!(root.value, Value::Map(_)) {
        ctx.d.error_help(
            root.pos,
            format!(
                "the saga definition must be a mapping, found {}",
                root.value.kind()
            ),
            "a definition is a YAML mapping that starts with `name:` and `steps:`",
        );
        return (def, infos);
    }
    let Some(mut f) = Fields::new(root, "the saga definition", &mut ctx.d) else {
        return (def, infos);
    };
    if let Some(n) = f.req("name", &mut ctx.d)
        && let Some(name) = string(n, "name", &mut ctx.d)
    {
        if !is_saga_name(name) {
            ctx.d.error_help(
                n.pos,
                format!("invalid saga name `{name}`"),
                "use lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters (e.g. `order-fulfilment`)",
            );
        }
        def.name = name.to_owned();
    }
    def.description = f
        .opt_str("description", &mut ctx.d)
        .unwrap_or_default()
        .to_owned();
    let mut defaults = StepDefaults {
        timeout: DEFAULT_STEP_TIMEOUT,
        retry: RetryPolicy::default(),
    };
    if let Some(n) = f.opt("defaults")
        && let Some(mut df) = Fields::new(n, "defaults", &mut ctx.d)
    {
        if let Some(topic) = df
            .opt("reply_topic")
            .and_then(|n| check_topic(n, "reply_topic", ctx))
        {
            def.reply_topic = topic;
        }
        if let Some(t) = df.opt_duration(
            "timeout",
            Duration::from_millis(1)..=MAX_TIMEOUT,
            &mut ctx.d,
        ) {
            defaults.timeout = t;
        }
        if let Some(r) = df.opt("retry") {
            defaults.retry = retry(r, defaults.retry, ctx);
        }
        df.finish(&mut ctx.d);
    }
    def.deadline = f.opt_duration(
        "deadline",
        Duration::from_secs(1)..=Duration::from_secs(365 * 86_400),
        &mut ctx.d,
    );
    def.input_schema = f.opt("input").and_then(|n| input(n, ctx));
    def.trigger = f.opt("trigger").and_then(|n| trigger(n, ctx));
    if let Some(n) = f.req("steps", &mut ctx.d) {
        let (steps, stages, step_infos) = steps(n, &defaults, ctx);
        def.steps = steps;
        def.stages = stages;
        infos = step_infos;
    }
    def.output = f.opt("output").map(|n| template(n, Scope::Output, ctx));
    f.finish(&mut ctx.d);
    (def, infos)
}

fn steps(
    node: &Node,
    defaults: &StepDefaults,
    ctx: &mut Ctx,
) -> (Vec<Step>, Vec<Stage>, Vec<StepInfo>) {
    let mut steps = Vec::new();
    let mut stages = Vec::new();
    let mut infos = Vec::new();
    let Some(items) = list(node, "steps", &mut ctx.d) else {
        return (steps, stages, infos);
    };
    if items.is_empty() {
        ctx.d.error_help(
            node.pos,
            "`steps` is empty",
            "a saga needs at least one step",
        );
    }
    // Step and group names share one namespace so every name in the saga is unambiguous.
    let mut names: HashMap<String, Pos> = HashMap::new();
    let mut claim = |name: &str, pos: Pos, d: &mut Diags| {
        if name.is_empty() {
            return;
        }
        if let Some(first) = names.get(name) {
            d.error_help(
                pos,
                format!("duplicate step name `{name}`"),
                format!(
                    "`{name}` is already used at line {}; step and group names must be unique",
                    first.line
                ),
            );
        } else {
            names.insert(name.to_owned(), pos);
        }
    };
    for item in items {
        let stage = stages.len();
        let group = match &item.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == "parallel")
                .map(|(_, n)| n),
            _ => None,
        };
        let Some(group) = group else {
            if let Some((step, info)) = decode_step(item, steps.len(), stage, None, defaults, ctx) {
                claim(&step.name, info.name_pos, &mut ctx.d);
                stages.push(Stage {
                    group: None,
                    steps: vec![step.index],
                });
                steps.push(step);
                infos.push(info);
            }
            continue;
        };
        if let Some(mut outer) = Fields::new(item, "parallel group item", &mut ctx.d) {
            outer.opt("parallel");
            outer.finish(&mut ctx.d);
        }
        let Some(mut gf) = Fields::new(group, "parallel group", &mut ctx.d) else {
            continue;
        };
        let (name, name_pos) = step_name(gf.req("name", &mut ctx.d), ctx);
        claim(&name, name_pos, &mut ctx.d);
        let mut members = Vec::new();
        if let Some(n) = gf.req("steps", &mut ctx.d)
            && let Some(group_items) = list(n, "steps", &mut ctx.d)
        {
            if group_items.len() < 2 {
                ctx.d.error_help(
                    n.pos,
                    format!("parallel group `{name}` has {} step(s)", group_items.len()),
                    "a parallel group needs at least 2 steps; write a single step directly under `steps`",
                );
            }
            for gi in group_items {
                if let Some((step, info)) =
                    decode_step(gi, steps.len(), stage, Some(&name), defaults, ctx)
                {
                    claim(&step.name, info.name_pos, &mut ctx.d);
                    members.push(step.index);
                    steps.push(step);
                    infos.push(info);
                }
            }
        }
        gf.finish(&mut ctx.d);
        stages.push(Stage {
            group: Some(name),
            steps: members,
        });
    }
    (steps, stages, infos)
}

fn input(node: &Node, ctx: &mut Ctx) -> Option<Schema> {
    let mut f = Fields::new(node, "input", &mut ctx.d)?;
    let schema_node = f.req("schema", &mut ctx.d);
    f.finish(&mut ctx.d);
    let schema_node = schema_node?;
    super::schema_check::compile(schema_node, "input", ctx.lenient, &mut ctx.d)
}

/// The node a JSON pointer designates, or the deepest one found on the way.
pub(crate) fn node_at_pointer<'a>(root: &'a Node, pointer: &str) -> &'a Node {
    let mut node = root;
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        let next = match &node.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == token)
                .map(|(_, n)| n),
            Value::Seq(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node
}

fn trigger(node: &Node, ctx: &mut Ctx) -> Option<Trigger> {
    let mut f = Fields::new(node, "trigger", &mut ctx.d)?;
    let topic = f
        .req("topic", &mut ctx.d)
        .and_then(|n| check_topic(n, "topic", ctx));
    let event_type = f.req_str("type", &mut ctx.d).map(str::to_owned);
    let key = match f.opt("key") {
        None => {
            ctx.d.error_help(
                f.pos,
                "trigger without `key`",
                "add a business key over the event, e.g. `key: \"{{ event.order_id }}\"`; one saga runs per key",
            );
            None
        }
        Some(n) => string(n, "key", &mut ctx.d).map(|_| {
            let key = template(n, Scope::TriggerKey, ctx);
            if matches!(key, Template::Literal(_)) {
                ctx.d.error_help(
                    n.pos,
                    "trigger key is a constant, so every event would map to the same saga",
                    "make it a template over the event, e.g. `\"{{ event.order_id }}\"`",
                );
            }
            key
        }),
    };
    let input = f
        .opt("input")
        .map(|n| template(n, Scope::TriggerInput, ctx))
        .unwrap_or_else(|| Template::expression("event"));
    f.finish(&mut ctx.d);
    Some(Trigger {
        topic: topic?,
        event_type: event_type?,
        key: key?,
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_saga_names() {
        assert!(is_topic("inventory.commands_v2-eu"));
        assert!(!is_topic("inventory commands"));
        assert!(!is_topic(""));
        assert!(!is_topic(&"t".repeat(250)));
        assert!(is_saga_name("order-fulfilment"));
        assert!(is_saga_name("2fa-reset"));
        assert!(!is_saga_name("-order"));
        assert!(!is_saga_name("Order"));
        assert!(!is_saga_name(&"a".repeat(64)));
    }

    #[test]
    fn json_pointer_finds_the_nested_node() {
        let node: Node =
            serde_saphyr::from_str("properties:\n  a/b:\n    enum: [x, y]\n").expect("yaml");
        assert_eq!(
            node_at_pointer(&node, "/properties/a~1b/enum/1").pos,
            Pos {
                line: 3,
                column: 15
            }
        );
        // A pointer that leaves the tree stops at the deepest node it reached.
        assert_eq!(
            node_at_pointer(&node, "/properties/zzz").pos,
            node_at_pointer(&node, "/properties").pos
        );
    }

    #[test]
    fn templates_record_each_variable_with_the_string_position() {
        let node: Node =
            serde_saphyr::from_str("a: \"{{ input.x }}\"\nb: [\"id-{{ saga.id }}\", 3]\n")
                .expect("yaml");
        let mut ctx = Ctx {
            d: Diags::new("f"),
            uses: Vec::new(),
            lenient: false,
        };
        let t = template(&node, Scope::Output, &mut ctx);
        assert!(matches!(t, Template::Object(_)));
        let uses: Vec<(String, Pos)> = ctx.uses.into_iter().map(|u| (u.var, u.pos)).collect();
        assert_eq!(
            uses,
            [
                ("input.x".to_owned(), Pos { line: 1, column: 4 }),
                ("saga.id".to_owned(), Pos { line: 2, column: 5 }),
            ]
        );
    }
}
