//! Mermaid flowchart of a definition, for `sagaflow graph` and for docs.
//!
//! The chart shows the forward path (stages in order, parallel groups as fork/join)
//! and, dashed, where each step's failure leads: into the chain of compensations
//! that runs in reverse back to the start. It is drawn from the validated model, so
//! it shows what the engine will do, not what the YAML happens to say.

use crate::definition::model::{Definition, Stage};
use crate::definition::template::Template;

const START: &str = "saga_start";
const COMPLETED: &str = "saga_completed";
const COMPENSATED: &str = "saga_compensated";

/// Renders `def` as a Mermaid `flowchart TD`.
pub fn mermaid(def: &Definition) -> String {
    let mut out = Chart(String::from("flowchart TD\n"));

    out.line(format!("{START}([start])"));
    for stage in &def.stages {
        let nodes = stage.steps.iter().map(|&i| step_node(def, i));
        match &stage.group {
            Some(group) => out.subgraph(&group_id(group), &format!("parallel: {group}"), nodes),
            None => nodes.for_each(|n| out.line(n)),
        }
    }
    out.line(format!("{COMPLETED}([completed])"));

    // Forward path. A group is a fork/join: every node before it points at each of its
    // steps and each of its steps points at whatever follows.
    let mut previous = vec![START.to_owned()];
    for stage in &def.stages {
        let current: Vec<String> = stage
            .steps
            .iter()
            .map(|&i| step_id(&def.steps[i].name))
            .collect();
        for from in &previous {
            for to in &current {
                out.line(format!("{from} --> {to}"));
            }
        }
        previous = current;
    }
    for from in &previous {
        out.line(format!("{from} --> {COMPLETED}"));
    }

    compensations(def, &mut out);
    if def.pivot.is_some() {
        out.line("classDef pivot fill:#fde68a,stroke:#b45309,stroke-width:3px".into());
    }
    out.line("classDef compensation stroke-dasharray:4 3".into());
    out.0
}

/// The compensation units, the failure edges into them and their chain to the end.
fn compensations(def: &Definition, out: &mut Chart) {
    let units = units(def);
    let ids: Vec<String> = units.iter().map(|u| unit_id(def, u)).collect();
    for unit in &units {
        let nodes = unit.steps.iter().map(|&i| compensation_node(def, i));
        match &def.stages[unit.stage].group {
            Some(group) => out.subgraph(&undo_id(group), &format!("undo {group}"), nodes),
            None => nodes.for_each(|n| out.line(n)),
        }
    }
    out.line(format!("{COMPENSATED}([compensated])"));

    for (k, stage) in def.stages.iter().enumerate() {
        if !rolls_back(def, k) {
            continue;
        }
        let target = rollback_start(&units, k).map_or(COMPENSATED, |u| ids[u].as_str());
        for &i in &stage.steps {
            out.line(format!(
                "{} -. fails .-> {target}",
                step_id(&def.steps[i].name)
            ));
        }
    }
    for pair in ids.windows(2).rev() {
        out.line(format!("{} -.-> {}", pair[1], pair[0]));
    }
    if let Some(first) = ids.first() {
        out.line(format!("{first} -.-> {COMPENSATED}"));
    }
}

/// The compensations of one stage, which run as one unit. A group's compensations
/// share one unit because they run in reverse order of completion, which is only
/// known at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    /// Index into `Definition::stages`.
    pub stage: usize,
    /// The stage's steps that have a compensation, in declaration order.
    pub steps: Vec<usize>,
}

/// One unit per stage that has anything to undo, in stage order.
pub(crate) fn units(def: &Definition) -> Vec<Unit> {
    def.stages
        .iter()
        .enumerate()
        .map(|(stage, s)| Unit {
            stage,
            steps: compensated_steps(def, s).collect(),
        })
        .filter(|u| !u.steps.is_empty())
        .collect()
}

/// Where rollback starts when stage `stage` fails: the index in `units` of the latest
/// unit at or before it (a failing stage is undone itself, since its command went out
/// and may have done work, then every earlier one), or `None` when there is nothing to
/// undo and the saga goes straight to compensated.
pub(crate) fn rollback_start(units: &[Unit], stage: usize) -> Option<usize> {
    units.iter().rposition(|u| u.stage <= stage)
}

/// What one step of a running saga has done, for [`mermaid_marked`]: a class for its
/// command node and one for its compensation node (`None`: not reached).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    pub command: Option<&'static str>,
    pub compensation: Option<&'static str>,
}

/// The definition's chart with each step coloured by what it did in one saga:
/// `succeeded`, `failed`, `unknown` (timed out), `current` (in flight), `skipped`,
/// and for compensations `compensated`, `failed`, `current`. `marks` is in step order.
pub fn mermaid_marked(def: &Definition, marks: &[Mark]) -> String {
    let mut out = Chart(mermaid(def));
    for (step, mark) in def.steps.iter().zip(marks) {
        if let Some(class) = mark.command {
            out.line(format!("class {} {class}", step_id(&step.name)));
        }
        if let (Some(class), true) = (mark.compensation, step.compensation.is_some()) {
            out.line(format!("class {} {class}", compensation_id(&step.name)));
        }
    }
    for (class, style) in [
        ("succeeded", "fill:#bbf7d0,stroke:#15803d"),
        ("compensated", "fill:#bfdbfe,stroke:#1d4ed8"),
        ("failed", "fill:#fecaca,stroke:#b91c1c"),
        ("unknown", "fill:#fed7aa,stroke:#c2410c"),
        ("current", "fill:#e0e7ff,stroke:#4338ca,stroke-width:3px"),
        ("skipped", "fill:#f3f4f6,stroke:#9ca3af,color:#6b7280"),
    ] {
        out.line(format!("classDef {class} {style}"));
    }
    out.0
}

/// Chart text, indented the way Mermaid's own examples are.
struct Chart(String);

impl Chart {
    fn line(&mut self, line: String) {
        self.0.push_str("    ");
        self.0.push_str(&line);
        self.0.push('\n');
    }

    fn subgraph(&mut self, id: &str, label: &str, nodes: impl Iterator<Item = String>) {
        self.line(format!("subgraph {id} [\"{}\"]", escape(label)));
        nodes.for_each(|n| self.line(format!("    {n}")));
        self.line("end".into());
    }
}

/// True when a failure in stage `k` leads to compensation (it is before or is the pivot).
/// Stages after the pivot never roll back.
pub(crate) fn rolls_back(def: &Definition, stage: usize) -> bool {
    match def.pivot {
        Some(p) => stage <= def.steps[p].stage,
        None => true,
    }
}

fn compensated_steps<'a>(
    def: &'a Definition,
    stage: &'a Stage,
) -> impl Iterator<Item = usize> + 'a {
    stage
        .steps
        .iter()
        .copied()
        .filter(|&i| def.steps[i].compensation.is_some())
}

fn step_node(def: &Definition, i: usize) -> String {
    let step = &def.steps[i];
    let mut label = escape(&step.name);
    if let Some(when) = &step.when {
        label.push_str("<br/>when: ");
        label.push_str(&escape(&template_text(when)));
    }
    if step.pivot {
        // A hexagon plus a class: visible even where classDefs are not rendered.
        format!(
            "{}{{{{\"{label}<br/>pivot\"}}}}:::pivot",
            step_id(&step.name)
        )
    } else {
        format!("{}[\"{label}\"]", step_id(&step.name))
    }
}

fn compensation_node(def: &Definition, i: usize) -> String {
    let name = &def.steps[i].name;
    format!(
        "{}[\"{}\"]:::compensation",
        compensation_id(name),
        escape(&format!("undo {name}"))
    )
}

/// A condition as the author wrote it, for a label.
pub(crate) fn template_text(t: &Template) -> String {
    match t {
        Template::Expr(e) => e.clone(),
        Template::Text(s) => s.clone(),
        Template::Literal(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}

// Prefixes keep the id spaces apart (a step may be called `start` or `end`, which
// Mermaid would otherwise read as keywords) and the fixed nodes start with `saga_`.
fn step_id(name: &str) -> String {
    format!("s_{}", safe(name))
}

/// A unit's node: a group's undo box, or a single step's compensation.
fn unit_id(def: &Definition, unit: &Unit) -> String {
    match &def.stages[unit.stage].group {
        Some(group) => undo_id(group),
        None => compensation_id(&def.steps[unit.steps[0]].name),
    }
}

fn compensation_id(name: &str) -> String {
    format!("c_{}", safe(name))
}

fn group_id(name: &str) -> String {
    format!("g_{}", safe(name))
}

fn undo_id(name: &str) -> String {
    format!("u_{}", safe(name))
}

/// Validated names are already `[a-z_][a-z0-9_]*`; this only guards hand-built models.
fn safe(name: &str) -> String {
    name.replace(|c: char| !(c.is_ascii_alphanumeric() || c == '_'), "_")
}

/// Escapes text for a quoted Mermaid label (entity codes, as Mermaid expects).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::definition::model::*;
    use crate::definition::node::Pos;

    /// `(name, has compensation, pivot, when)`.
    pub(crate) type StepSpec<'a> = (&'a str, bool, bool, Option<&'a str>);
    /// `(group name, steps)`; a single step is a stage without a group.
    pub(crate) type StageSpec<'a> = (Option<&'a str>, &'a [StepSpec<'a>]);

    /// A definition built by hand, for charts of shapes the YAML would not allow.
    pub(crate) fn def(stages: &[StageSpec]) -> Definition {
        let mut d = Definition {
            name: "test".into(),
            description: String::new(),
            version: String::new(),
            source: String::new(),
            file: "test.yaml".into(),
            input_schema: None,
            reply_topic: DEFAULT_REPLY_TOPIC.into(),
            deadline: None,
            trigger: None,
            steps: Vec::new(),
            stages: Vec::new(),
            pivot: None,
            output: None,
            warnings: Vec::new(),
        };
        for (k, (group, steps)) in stages.iter().enumerate() {
            let mut indexes = Vec::new();
            for &(name, compensated, pivot, when) in steps.iter() {
                let index = d.steps.len();
                let message = MessageSpec {
                    topic: "t".into(),
                    message_type: name.into(),
                    payload: Template::Literal(serde_json::json!({})),
                    key: None,
                    headers: Vec::new(),
                    schema: None,
                };
                if pivot {
                    d.pivot = Some(index);
                }
                d.steps.push(Step {
                    name: name.into(),
                    index,
                    stage: k,
                    pos: Pos::START,
                    command: message.clone(),
                    reply: ReplySpec::default(),
                    timeout: DEFAULT_STEP_TIMEOUT,
                    retry: RetryPolicy::default(),
                    compensation: compensated.then(|| Compensation {
                        command: message.clone(),
                        reply: ReplySpec::default(),
                        timeout: Duration::from_secs(5),
                        retry: RetryPolicy::default(),
                    }),
                    pivot,
                    when: when.map(Template::expression),
                });
                indexes.push(index);
            }
            d.stages.push(Stage {
                group: group.map(str::to_owned),
                steps: indexes,
            });
        }
        d
    }

    /// Asserts that each expected line is in the chart, ignoring indentation.
    fn assert_lines(out: &str, expected: &[&str]) {
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        for line in expected {
            assert!(lines.contains(line), "missing `{line}` in\n{out}");
        }
    }

    fn order_fulfilment() -> Definition {
        def(&[
            (None, &[("reserve_stock", true, false, None)]),
            (None, &[("authorize_payment", true, false, None)]),
            (None, &[("capture_payment", false, true, None)]),
            (None, &[("ship_order", false, false, None)]),
        ])
    }

    #[test]
    fn sequence_runs_from_start_to_completed_with_the_pivot_marked() {
        let out = mermaid(&order_fulfilment());
        assert!(out.starts_with("flowchart TD\n"), "{out}");
        assert_lines(
            &out,
            &[
                "saga_start --> s_reserve_stock",
                "s_reserve_stock --> s_authorize_payment",
                "s_authorize_payment --> s_capture_payment",
                "s_capture_payment --> s_ship_order",
                "s_ship_order --> saga_completed",
                "s_capture_payment{{\"capture_payment<br/>pivot\"}}:::pivot",
            ],
        );
        assert!(out.contains("classDef pivot "), "{out}");
    }

    #[test]
    fn failures_compensate_in_reverse_and_nothing_after_the_pivot() {
        let out = mermaid(&order_fulfilment());
        assert_lines(
            &out,
            &[
                "s_reserve_stock -. fails .-> c_reserve_stock",
                "s_authorize_payment -. fails .-> c_authorize_payment",
                // The pivot has no undo of its own, but failing it unwinds what came before.
                "s_capture_payment -. fails .-> c_authorize_payment",
                "c_authorize_payment -.-> c_reserve_stock",
                "c_reserve_stock -.-> saga_compensated",
            ],
        );
        assert!(!out.contains("s_ship_order -. fails"), "{out}");
        assert!(!out.contains("c_capture_payment"), "{out}");
    }

    #[test]
    fn parallel_group_is_a_fork_join_with_a_shared_undo() {
        let d = def(&[
            (None, &[("reserve_car", true, false, None)]),
            (
                Some("book_travel"),
                &[
                    ("book_flight", true, false, None),
                    ("book_hotel", true, false, None),
                ],
            ),
            (None, &[("notify", false, false, None)]),
        ]);
        let out = mermaid(&d);
        assert_lines(
            &out,
            &[
                "subgraph g_book_travel [\"parallel: book_travel\"]",
                "s_reserve_car --> s_book_flight",
                "s_reserve_car --> s_book_hotel",
                "s_book_flight --> s_notify",
                "s_book_hotel --> s_notify",
                "subgraph u_book_travel [\"undo book_travel\"]",
                "s_book_flight -. fails .-> u_book_travel",
                "s_book_hotel -. fails .-> u_book_travel",
                "u_book_travel -.-> c_reserve_car",
                // `notify` has no undo, so its failure starts with the group before it.
                "s_notify -. fails .-> u_book_travel",
            ],
        );
        // Both steps sit inside the group's box.
        let group = "book_travel\"]\n        s_book_flight[\"book_flight\"]\n        s_book_hotel[\"book_hotel\"]\n    end\n";
        assert!(out.contains(group), "{out}");
    }

    #[test]
    fn conditions_are_escaped_and_no_undo_fails_straight_to_compensated() {
        let when = Some("input.note == \"<3\"");
        let out = mermaid(&def(&[(None, &[("wrap", false, false, when)])]));
        assert_lines(
            &out,
            &[
                "s_wrap[\"wrap<br/>when: input.note == #quot;#lt;3#quot;\"]",
                "s_wrap -. fails .-> saga_compensated",
                "saga_compensated([compensated])",
            ],
        );
        assert!(!out.contains("classDef pivot"), "{out}");
    }
}
