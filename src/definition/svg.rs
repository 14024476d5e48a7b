//! The chart of [`graph`](super::graph) drawn as a standalone SVG document, for the web
//! console, which shows it through an `<img>` under a strict CSP: no Mermaid library,
//! no script, no `<style>` (presentation attributes only), no external references.
//!
//! Nodes carry `data-step`, `data-phase` and `data-state`, terminals `data-node`: the
//! browser tests read them, so they are a contract. A state is never shown by colour
//! alone: it is also a text line in the node and in the node's `<title>`.

mod layout;
mod state;
#[cfg(test)]
mod tests;

use self::layout::{Cell, Label, Labels, Layout, MARGIN, Node, Rect, SMALL_LINE, text_width};
use self::state::{State, States};
use super::graph::{self, Mark};
use super::model::Definition;

const INK: &str = "#0f172a";
const MUTED: &str = "#475569";
const FORWARD_EDGE: &str = "#334155";
const FAIL_EDGE: &str = "#b91c1c";
const UNDO_EDGE: &str = "#1e40af";
const DASH: &str = "5 4";
/// Longest condition shown in a node (the `<title>` has all of it).
const MAX_WHEN: usize = 30;

/// Renders `def` as an SVG document; with `marks` (in step order, as for
/// [`graph::mermaid_marked`]) each node is coloured and labelled with its state.
pub fn svg(def: &Definition, marks: Option<&[Mark]>) -> String {
    let states = States::new(def, marks);
    let labels = Labels {
        command: (0..def.steps.len())
            .map(|i| command_label(def, i, states.command(i), marks.is_some()))
            .collect(),
        compensation: (0..def.steps.len())
            .map(|i| undo_label(def, i, states.compensation(i)))
            .collect(),
    };
    let lay = layout::layout(def, &labels);

    let mut body = String::new();
    for row in &lay.rows {
        group_box(&mut body, &row.forward, "command");
        if let Some(undo) = &row.undo {
            group_box(&mut body, undo, "compensation");
        }
    }
    forward_edges(&mut body, &lay);
    failure_edges(&mut body, def, &lay);
    terminal(&mut body, lay.start, "start");
    terminal(&mut body, lay.completed, "completed");
    terminal(&mut body, lay.compensated, "compensated");
    for row in &lay.rows {
        for n in &row.forward.nodes {
            let label = &labels.command[n.step];
            node(&mut body, def, n, label, Phase::Command, &states);
        }
        for n in row.undo.iter().flat_map(|c| &c.nodes) {
            let label = &labels.compensation[n.step];
            node(&mut body, def, n, label, Phase::Compensation, &states);
        }
    }
    let mut bottom = lay.bottom();
    if marks.is_some() {
        bottom = legend(&mut body, &lay, bottom + 24);
    }

    let (w, h) = (lay.content_w + 2 * MARGIN, bottom + MARGIN);
    let what = if marks.is_some() {
        "saga chart, each step marked with its state"
    } else {
        "saga chart"
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" font-family=\"system-ui, sans-serif\">\n\
         <title>{}: {what}</title>\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#f8fafc\"/>\n{body}</svg>\n",
        escape(&def.name)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Command,
    Compensation,
}

fn command_label(def: &Definition, step: usize, state: State, marked: bool) -> Label {
    let step = &def.steps[step];
    let mut small = Vec::new();
    if let Some(when) = &step.when {
        small.push(format!(
            "when: {}",
            truncate(&graph::template_text(when), MAX_WHEN)
        ));
    }
    if step.pivot {
        small.push("pivot".to_owned());
    }
    if marked && state != State::Pending {
        small.push(state.text().to_owned());
    }
    Label {
        main: step.name.clone(),
        small,
    }
}

fn undo_label(def: &Definition, step: usize, state: State) -> Label {
    Label {
        main: format!("undo {}", def.steps[step].name),
        small: (state != State::Pending)
            .then(|| state.text().to_owned())
            .into_iter()
            .collect(),
    }
}

fn node(
    out: &mut String,
    def: &Definition,
    n: &Node,
    label: &Label,
    phase: Phase,
    states: &States,
) {
    let step = &def.steps[n.step];
    let (state, pivot) = match phase {
        Phase::Command => (states.command(n.step), step.pivot),
        Phase::Compensation => (states.compensation(n.step), false),
    };
    let paint = state.paint();
    // The pivot keeps its amber until it has a state, and its thick border always.
    let (fill, stroke) = match (pivot, state) {
        (true, State::Pending) => ("#fde68a", "#b45309"),
        _ => (paint.fill, paint.stroke),
    };
    let width = if pivot || state == State::Current {
        3.0
    } else {
        1.5
    };
    let dash = match phase {
        Phase::Command => String::new(),
        Phase::Compensation => format!(" stroke-dasharray=\"{DASH}\""),
    };
    let (phase_attr, what) = match phase {
        Phase::Command => ("command", step.name.clone()),
        Phase::Compensation => ("compensation", format!("undo {}", step.name)),
    };
    let mut title = format!("{what}: {}", state.text());
    if pivot {
        title.push_str(" (pivot)");
    }
    if let (Some(when), Phase::Command) = (&step.when, phase) {
        title.push_str(&format!("; when: {}", graph::template_text(when)));
    }
    let r = n.rect;
    out.push_str(&format!(
        "<g class=\"node\" data-step=\"{}\" data-phase=\"{phase_attr}\" data-state=\"{}\">\
         <title>{}</title>\
         <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" \
         stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>",
        escape(&step.name),
        state.attr(),
        escape(&title),
        r.x,
        r.y,
        r.w,
        r.h,
    ));
    text_lines(out, r, label, paint.ink);
    out.push_str("</g>\n");
}

/// The label's lines, centred in `r` as one block.
fn text_lines(out: &mut String, r: Rect, label: &Label, ink: &str) {
    let block = 16 + SMALL_LINE * label.small.len() as i32;
    let top = r.cy() - block / 2;
    text(out, r.cx(), top + 12, 13, ink, "middle", &label.main);
    for (i, line) in label.small.iter().enumerate() {
        let y = top + 16 + SMALL_LINE * i as i32 + 10;
        text(out, r.cx(), y, 11, MUTED, "middle", line);
    }
}

fn text(out: &mut String, x: i32, y: i32, size: u8, fill: &str, anchor: &str, content: &str) {
    out.push_str(&format!(
        "<text x=\"{x}\" y=\"{y}\" font-size=\"{size}\" fill=\"{fill}\" text-anchor=\"{anchor}\">{}</text>",
        escape(content)
    ));
}

fn terminal(out: &mut String, r: Rect, name: &str) {
    out.push_str(&format!(
        "<g class=\"terminal\" data-node=\"{name}\"><title>{name}</title>\
         <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" fill=\"#e2e8f0\" \
         stroke=\"{MUTED}\" stroke-width=\"1.5\"/>",
        r.x,
        r.y,
        r.w,
        r.h,
        r.h / 2
    ));
    text(out, r.cx(), r.cy() + 5, 13, INK, "middle", name);
    out.push_str("</g>\n");
}

/// The dashed box around a group's steps or its compensations, label top left.
fn group_box(out: &mut String, cell: &Cell, phase: &str) {
    let Some((r, label)) = &cell.group else {
        return;
    };
    out.push_str(&format!(
        "<g class=\"group\" data-phase=\"{phase}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" \
         height=\"{}\" rx=\"10\" fill=\"#f1f5f9\" stroke=\"#94a3b8\" stroke-width=\"1.5\" \
         stroke-dasharray=\"6 4\"/>",
        r.x, r.y, r.w, r.h
    ));
    text(out, r.x + 10, r.y + 17, 11, MUTED, "start", label);
    out.push_str("</g>\n");
}

#[derive(Debug, Clone, Copy)]
enum Dir {
    Down,
    Up,
    Right,
}

/// A line (SVG path data `d`) ending in an arrowhead at `(x, y)` pointing `dir`.
fn edge(out: &mut String, d: &str, (x, y): (i32, i32), dir: Dir, colour: &str, dashed: bool) {
    let dash = if dashed {
        format!(" stroke-dasharray=\"{DASH}\"")
    } else {
        String::new()
    };
    let head = match dir {
        Dir::Down => format!("M{x} {y}L{} {}L{} {}Z", x - 4, y - 8, x + 4, y - 8),
        Dir::Up => format!("M{x} {y}L{} {}L{} {}Z", x - 4, y + 8, x + 4, y + 8),
        Dir::Right => format!("M{x} {y}L{} {}L{} {}Z", x - 8, y - 4, x - 8, y + 4),
    };
    out.push_str(&format!(
        "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}/>\
         <path d=\"{head}\" fill=\"{colour}\"/>\n"
    ));
}

fn line(out: &mut String, d: &str, colour: &str) {
    out.push_str(&format!(
        "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>\n"
    ));
}

/// Down the middle of the forward column. A group is a fork and a join: the line
/// enters its box, splits to every step, and joins again below them.
fn forward_edges(out: &mut String, lay: &Layout) {
    let cx = lay.start.cx();
    let mut exit = lay.start.bottom();
    for row in &lay.rows {
        let cell = &row.forward;
        let Some((outline, _)) = &cell.group else {
            let r = cell.nodes[0].rect;
            edge(
                out,
                &format!("M{cx} {exit}V{}", r.y),
                (cx, r.y),
                Dir::Down,
                FORWARD_EDGE,
                false,
            );
            exit = r.bottom();
            continue;
        };
        let first = cell.nodes[0].rect;
        let last = cell.nodes[cell.nodes.len() - 1].rect;
        let (fork, join) = (first.y - 10, first.bottom() + 10);
        line(
            out,
            &format!("M{cx} {exit}V{fork}M{} {fork}H{}", first.cx(), last.cx()),
            FORWARD_EDGE,
        );
        for n in &cell.nodes {
            let (x, r) = (n.rect.cx(), n.rect);
            edge(
                out,
                &format!("M{x} {fork}V{}", r.y),
                (x, r.y),
                Dir::Down,
                FORWARD_EDGE,
                false,
            );
            line(out, &format!("M{x} {}V{join}", r.bottom()), FORWARD_EDGE);
        }
        let joined = format!(
            "M{} {join}H{}M{cx} {join}V{}",
            first.cx(),
            last.cx(),
            outline.bottom()
        );
        line(out, &joined, FORWARD_EDGE);
        exit = outline.bottom();
    }
    let end = lay.completed.y;
    edge(
        out,
        &format!("M{cx} {exit}V{end}"),
        (cx, end),
        Dir::Down,
        FORWARD_EDGE,
        false,
    );
}

/// Dashed: from each stage that rolls back to the unit where its rollback starts (up
/// the lane between the columns), then from each unit up to the one before it.
fn failure_edges(out: &mut String, def: &Definition, lay: &Layout) {
    let units = graph::units(def);
    for row in lay.rows.iter().filter(|r| graph::rolls_back(def, r.stage)) {
        // A group's steps all fail into the same unit: one edge leaves the group's box,
        // so none has to cross a sibling.
        let from = row.forward.outline();
        let to = lay.unit_outline(graph::rollback_start(&units, row.stage));
        let (sy, ty, lane) = (from.cy(), to.cy(), lay.lane);
        let d = format!("M{} {sy}H{lane}V{ty}H{}", from.right(), to.x);
        edge(out, &d, (to.x, ty), Dir::Right, FAIL_EDGE, true);
        text(out, lane - 4, sy - 5, 11, FAIL_EDGE, "end", "fails");
    }
    for u in 0..units.len() {
        let (from, to) = (
            lay.unit_outline(Some(u)),
            lay.unit_outline(u.checked_sub(1)),
        );
        let d = format!("M{} {}V{}", from.cx(), from.y, to.bottom());
        edge(out, &d, (to.cx(), to.bottom()), Dir::Up, UNDO_EDGE, true);
    }
}

/// A swatch and the text of every state, wrapped to the chart's width; returns the
/// legend's bottom.
fn legend(out: &mut String, lay: &Layout, top: i32) -> i32 {
    out.push_str("<g class=\"legend\">");
    let (mut x, mut y) = (MARGIN, top);
    for state in State::LEGEND {
        let label = state.text();
        let w = 20 + text_width(label, false);
        if x > MARGIN && x + w > MARGIN + lay.content_w {
            (x, y) = (MARGIN, y + 22);
        }
        let p = state.paint();
        out.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"14\" height=\"14\" rx=\"3\" fill=\"{}\" \
             stroke=\"{}\" stroke-width=\"1.5\"/>",
            p.fill, p.stroke
        ));
        text(out, x + 20, y + 11, 11, INK, "start", label);
        x += w + 18;
    }
    out.push_str("</g>\n");
    y + 14
}

/// At most `max` characters, the last an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Escapes text for XML content and attribute values. Control characters are not
/// allowed in XML 1.0 at all, so they become spaces.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
