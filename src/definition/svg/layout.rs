//! Geometry of the SVG chart: where every node, box and terminal goes.
//!
//! Rows top-down: `start`, one per stage, `completed`. The forward path is the left
//! column; the compensations are a second column to its right, each unit in the row of
//! the stage it undoes, under the `compensated` terminal. Sizes come from estimated text
//! widths (no font metrics on the server), with padding to spare.

use crate::definition::graph;
use crate::definition::model::Definition;

pub(super) const MARGIN: i32 = 24;
/// Between rows: room for an arrow and the fork/join lines.
const ROW_GAP: i32 = 40;
/// Between the columns; the failure edges run up its middle.
const COL_GAP: i32 = 88;
/// Between the steps of a group.
const SIB_GAP: i32 = 20;
const BOX_SIDE: i32 = 12;
/// Above a group's steps: its label, then the fork line.
pub(super) const BOX_TOP: i32 = 36;
/// Below a group's steps: the join line.
pub(super) const BOX_BOTTOM: i32 = 20;
const NODE_SIDE: i32 = 14;
const MIN_NODE_W: i32 = 96;
const TERMINAL_H: i32 = 32;
/// Height of a node with one line of text; each small line adds `SMALL_LINE`.
const NODE_H: i32 = 34;
pub(super) const SMALL_LINE: i32 = 14;

/// Estimated width of `text` in 13 px (`big`) or 11 px system-ui.
pub(super) fn text_width(text: &str, big: bool) -> i32 {
    let per_char = if big { 7.2 } else { 6.2 };
    (text.chars().count() as f64 * per_char).ceil() as i32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl Rect {
    pub fn right(&self) -> i32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> i32 {
        self.y + self.h
    }
    pub fn cx(&self) -> i32 {
        self.x + self.w / 2
    }
    pub fn cy(&self) -> i32 {
        self.y + self.h / 2
    }
    #[cfg(test)]
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.right()
            && other.x < self.right()
            && self.y < other.bottom()
            && other.y < self.bottom()
    }
}

/// A node's text: one 13 px line, then small 11 px lines under it.
#[derive(Debug, Clone, Default)]
pub(super) struct Label {
    pub main: String,
    pub small: Vec<String>,
}

impl Label {
    fn size(&self) -> (i32, i32) {
        let text = self
            .small
            .iter()
            .map(|s| text_width(s, false))
            .fold(text_width(&self.main, true), i32::max);
        let height = NODE_H + SMALL_LINE * self.small.len() as i32;
        ((text + 2 * NODE_SIDE).max(MIN_NODE_W), height)
    }
}

/// The labels of every step's command and compensation, in step order.
#[derive(Debug)]
pub(super) struct Labels {
    pub command: Vec<Label>,
    pub compensation: Vec<Label>,
}

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub step: usize,
    pub rect: Rect,
}

/// Steps side by side, in a dashed box when they are a group.
#[derive(Debug, Clone, Default)]
pub(super) struct Cell {
    pub nodes: Vec<Node>,
    /// The box and its label, for a parallel group (forward) or its undo unit.
    pub group: Option<(Rect, String)>,
}

impl Cell {
    /// What an edge into or out of the cell attaches to: the box, or the single node.
    pub fn outline(&self) -> Rect {
        self.group
            .as_ref()
            .map_or_else(|| self.nodes[0].rect, |(r, _)| *r)
    }

    fn new(steps: &[usize], labels: &[Label], group: Option<String>) -> Cell {
        let nodes = steps
            .iter()
            .map(|&step| {
                let (w, h) = labels[step].size();
                let rect = Rect {
                    w,
                    h,
                    ..Rect::default()
                };
                Node { step, rect }
            })
            .collect();
        Cell {
            nodes,
            group: group.map(|g| (Rect::default(), g)),
        }
    }

    fn height(&self) -> i32 {
        self.nodes.iter().map(|n| n.rect.h).max().unwrap_or(0)
    }

    fn width(&self) -> i32 {
        let nodes: i32 = self.nodes.iter().map(|n| n.rect.w).sum::<i32>()
            + SIB_GAP * (self.nodes.len() as i32 - 1).max(0);
        match &self.group {
            // The line into the box runs down its middle: keep the label left of it.
            Some((_, label)) => {
                (nodes + 2 * BOX_SIDE).max(2 * (text_width(label, false) + BOX_SIDE + 8))
            }
            None => nodes,
        }
    }

    /// Centres the cell on `cx` with its top at `top`; every node gets height `h`.
    fn place(&mut self, cx: i32, top: i32, h: i32) {
        let width = self.width();
        let inner: i32 = self.nodes.iter().map(|n| n.rect.w).sum::<i32>()
            + SIB_GAP * (self.nodes.len() as i32 - 1).max(0);
        let mut x = cx - inner / 2;
        let y = if self.group.is_some() {
            top + BOX_TOP
        } else {
            top
        };
        for node in &mut self.nodes {
            node.rect.x = x;
            node.rect.y = y;
            node.rect.h = h;
            x += node.rect.w + SIB_GAP;
        }
        if let Some((rect, _)) = &mut self.group {
            let h = h + BOX_TOP + BOX_BOTTOM;
            *rect = Rect {
                x: cx - width / 2,
                y: top,
                w: width,
                h,
            };
        }
    }
}

/// One stage: its steps, and its compensation unit if it has one.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub stage: usize,
    pub forward: Cell,
    pub undo: Option<Cell>,
}

#[derive(Debug)]
pub(super) struct Layout {
    pub start: Rect,
    pub completed: Rect,
    pub compensated: Rect,
    pub rows: Vec<Row>,
    /// x of the vertical run of the failure edges, between the columns.
    pub lane: i32,
    /// Width of both columns together (the legend wraps within it).
    pub content_w: i32,
}

fn terminal(text: &str) -> Rect {
    let w = text_width(text, true) + 2 * 18;
    Rect {
        w,
        h: TERMINAL_H,
        ..Rect::default()
    }
}

/// The rows of `def`'s stages, sized but not yet placed.
fn rows(def: &Definition, labels: &Labels) -> Vec<Row> {
    let units = graph::units(def);
    def.stages
        .iter()
        .enumerate()
        .map(|(stage, s)| Row {
            stage,
            forward: Cell::new(
                &s.steps,
                &labels.command,
                s.group.clone().map(|g| format!("parallel: {g}")),
            ),
            undo: units.iter().find(|u| u.stage == stage).map(|u| {
                let group = s.group.as_ref().map(|g| format!("undo {g}"));
                Cell::new(&u.steps, &labels.compensation, group)
            }),
        })
        .collect()
}

/// Lays out `def`'s chart with the given node labels.
pub(super) fn layout(def: &Definition, labels: &Labels) -> Layout {
    let mut rows = rows(def, labels);
    let (mut start, mut completed, mut compensated) = (
        terminal("start"),
        terminal("completed"),
        terminal("compensated"),
    );

    // Columns are as wide as their widest row.
    let forward_w = rows
        .iter()
        .map(|r| r.forward.width())
        .fold(start.w.max(completed.w), i32::max);
    let undo_w = rows
        .iter()
        .filter_map(|r| r.undo.as_ref().map(Cell::width))
        .fold(compensated.w, i32::max);
    let forward_cx = MARGIN + forward_w / 2;
    let undo_cx = MARGIN + forward_w + COL_GAP + undo_w / 2;

    let mut y = MARGIN;
    for (t, cx) in [(&mut start, forward_cx), (&mut compensated, undo_cx)] {
        (t.x, t.y) = (cx - t.w / 2, y);
    }
    y += TERMINAL_H + ROW_GAP;
    for row in &mut rows {
        // Both columns' nodes share one height, so a failure edge between them is level.
        let h = row
            .forward
            .height()
            .max(row.undo.as_ref().map_or(0, Cell::height));
        row.forward.place(forward_cx, y, h);
        if let Some(undo) = &mut row.undo {
            undo.place(undo_cx, y, h);
        }
        y = row.forward.outline().bottom() + ROW_GAP;
    }
    (completed.x, completed.y) = (forward_cx - completed.w / 2, y);

    Layout {
        start,
        completed,
        compensated,
        rows,
        lane: MARGIN + forward_w + COL_GAP / 2,
        content_w: forward_w + COL_GAP + undo_w,
    }
}

impl Layout {
    /// The rectangle a failure edge or the compensation chain points at: a unit, or
    /// `compensated` for `None`.
    pub fn unit_outline(&self, unit: Option<usize>) -> Rect {
        let cell = unit.and_then(|u| self.rows.iter().filter_map(|r| r.undo.as_ref()).nth(u));
        cell.map_or(self.compensated, Cell::outline)
    }

    /// Bottom of the chart, below `completed`.
    pub fn bottom(&self) -> i32 {
        self.completed.bottom()
    }
}
