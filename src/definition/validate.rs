//! Rules that span several fields: the pivot, compensations and template references.

use crate::definition::decode::{Ctx, Scope, TemplateUse};
use crate::definition::model::Definition;
use crate::definition::reader::closest;
use crate::definition::step::{CompensationDecl, StepInfo};

/// Top-level functions minijinja reports as variables although they are built in.
const BUILTINS: [&str; 8] = [
    "range",
    "dict",
    "namespace",
    "loop",
    "debug",
    "cycler",
    "joiner",
    "self",
];

pub(crate) fn validate(def: &mut Definition, infos: &[StepInfo], ctx: &mut Ctx) {
    pivot(def, infos, ctx);
    compensations(def, infos, ctx);
    let uses = std::mem::take(&mut ctx.uses);
    for u in &uses {
        reference(def, infos, u, ctx);
    }
    if !ctx.lenient {
        super::schema_refs::check(def, &uses, &mut ctx.d);
    }
}

fn pivot(def: &mut Definition, infos: &[StepInfo], ctx: &mut Ctx) {
    for (step, info) in def.steps.iter().zip(infos) {
        let Some(pos) = info.pivot_pos else { continue };
        if let Some(group) = &info.group {
            ctx.d.error_help(
                pos,
                format!(
                    "pivot step `{}` is inside parallel group `{group}`",
                    step.name
                ),
                "move the pivot into its own step after the group",
            );
            continue;
        }
        match def.pivot {
            None => def.pivot = Some(step.index),
            Some(first) => ctx.d.error_help(
                pos,
                format!(
                    "more than one pivot: `{}` and `{}`",
                    def.steps[first].name, step.name
                ),
                "a saga has at most one pivot step; keep `pivot: true` on one of them",
            ),
        }
    }
}

fn compensations(def: &mut Definition, infos: &[StepInfo], ctx: &mut Ctx) {
    let pivot_stage = def.pivot.map(|p| def.steps[p].stage);
    for (step, info) in def.steps.iter_mut().zip(infos) {
        let after = pivot_stage.is_some_and(|p| step.stage >= p);
        match (&info.compensation, after) {
            (CompensationDecl::Missing, false) => ctx.d.error_help(
                step.pos,
                format!("step `{}` has no compensation", step.name),
                if pivot_stage.is_some() {
                    "steps before the pivot must say how to undo them: add `compensation:`, or `compensation: none` if nothing needs undoing"
                } else {
                    "without a pivot every step may be rolled back, so each must say how to undo it: add `compensation:`, or `compensation: none` if nothing needs undoing"
                },
            ),
            (CompensationDecl::Declared(pos), true) => {
                ctx.d.error_help(
                    *pos,
                    format!(
                        "step `{}` is at or after the pivot, so it is never compensated",
                        step.name
                    ),
                    "steps from the pivot on only go forward: remove `compensation:`, or write `compensation: none`",
                );
                step.compensation = None;
            }
            _ => {}
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Step(_) => "a step",
        Scope::Compensation(_) => "a compensation",
        Scope::Output => "`output`",
        Scope::TriggerKey => "the trigger key",
        Scope::TriggerInput => "the trigger input",
    }
}

fn reference(def: &Definition, infos: &[StepInfo], u: &TemplateUse, ctx: &mut Ctx) {
    let mut parts = u.var.split('.');
    let root = parts.next().unwrap_or_default();
    if BUILTINS.contains(&root) {
        return;
    }
    let trigger = matches!(u.scope, Scope::TriggerKey | Scope::TriggerInput);
    if trigger {
        if root != "event" {
            ctx.d.error_help(
                u.pos,
                format!(
                    "{} may only reference `event`, not `{}`",
                    scope_name(u.scope),
                    u.var
                ),
                "the trigger runs before the saga exists; build the key and input from `event`",
            );
        }
        return;
    }
    match root {
        "input" => {}
        "saga" => {
            if let Some(field) = parts.next()
                && !["id", "name", "key"].contains(&field)
            {
                ctx.d.error_help(
                    u.pos,
                    format!("unknown template variable `{}`", u.var),
                    "`saga` has `id`, `name` and `key`",
                );
            }
        }
        "steps" => {
            if let Some(name) = parts.next() {
                step_reference(def, infos, u, name, parts.next(), ctx);
            }
        }
        other => {
            let help = if other == "event" {
                "`event` is only available in the trigger's `key` and `input`".to_owned()
            } else {
                match closest(other, &["input", "steps", "saga"]) {
                    Some(near) => {
                        format!("did you mean `{near}`? available here: input, steps, saga")
                    }
                    None => "available here: input, steps, saga".to_owned(),
                }
            };
            ctx.d.error_help(
                u.pos,
                format!(
                    "unknown template variable `{other}` in {}",
                    scope_name(u.scope)
                ),
                help,
            );
        }
    }
}

fn step_reference(
    def: &Definition,
    infos: &[StepInfo],
    u: &TemplateUse,
    name: &str,
    field: Option<&str>,
    ctx: &mut Ctx,
) {
    let Some(target) = def.step(name) else {
        let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
        let help = match closest(name, &names) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("declared steps: {}", names.join(", ")),
        };
        ctx.d.error_help(
            u.pos,
            format!("template references unknown step `{name}`"),
            help,
        );
        return;
    };
    if let Some(field) = field
        && field != "reply"
    {
        ctx.d.error_help(
            u.pos,
            format!("unknown template variable `steps.{name}.{field}`"),
            format!("a step's result is `steps.{name}.reply`"),
        );
    }
    let (from, own_allowed) = match u.scope {
        Scope::Step(i) => (i, false),
        Scope::Compensation(i) => (i, true),
        _ => return,
    };
    let from_step = &def.steps[from];
    if own_allowed && target.index == from {
        return;
    }
    if target.stage < from_step.stage {
        return;
    }
    if target.stage == from_step.stage
        && target.index != from
        && let Some(group) = &infos[from].group
    {
        ctx.d.error_help(
            u.pos,
            format!(
                "step `{}` cannot use the reply of `{name}`: both run in parallel group `{group}`",
                from_step.name
            ),
            format!(
                "move `{name}` into a stage before `{group}`, or read its reply in a later step"
            ),
        );
        return;
    }
    ctx.d.error_help(
        u.pos,
        format!(
            "step `{}` cannot use the reply of `{name}`: it has not completed when `{}` runs",
            from_step.name, from_step.name
        ),
        "only replies of steps in earlier stages can be used",
    );
}

#[cfg(test)]
mod tests {
    use crate::definition::diagnostic::render;
    use crate::definition::load::parse_definition;

    const GROUP: &str = r#"
name: t
steps:
  - name: first
    command: {topic: a, type: a.do, payload: {x: "{{ input.x }}"}}
    reply: {success: [a.done]}
    compensation: none
  - parallel:
      name: both
      steps:
        - name: left
          command: {topic: a, type: a.left, payload: {f: "{{ steps.first.reply.id }}"}}
          reply: {success: [a.left_done]}
          compensation:
            topic: a
            type: a.undo_left
            payload: {own: "{{ steps.left.reply.id | default(none) }}", SIBLING}
            reply: {success: [a.left_undone]}
        - name: right
          command: {topic: a, type: a.right}
          reply: {success: [a.right_done]}
          compensation: none
  - name: last
    pivot: true
    command: {topic: a, type: a.last, payload: {l: "{{ steps.left.reply }}", r: "{{ steps.right.reply }}"}}
    reply: {success: [a.last_done]}
output: {all: "{{ steps.last.reply }}", n: "{{ saga.name }}"}
"#;

    #[test]
    fn earlier_stages_and_own_step_may_be_referenced() {
        let def = parse_definition("t.yaml", &GROUP.replace(", SIBLING", ""))
            .unwrap_or_else(|d| panic!("{}", render(&d)));
        assert_eq!(def.pivot, Some(3));
        assert_eq!(def.stages.len(), 3);
        assert_eq!(def.stages[1].steps, [1, 2]);
    }

    #[test]
    fn a_compensation_may_not_read_a_sibling() {
        let src = GROUP.replace("SIBLING", "s: \"{{ steps.right.reply.id }}\"");
        let diags = parse_definition("t.yaml", &src).expect_err("sibling");
        assert_eq!(diags.len(), 1, "{}", render(&diags));
        assert_eq!(
            diags[0].message,
            "step `left` cannot use the reply of `right`: both run in parallel group `both`"
        );
    }
}
