use super::layout::{self, Rect};
use super::*;
use crate::definition::graph::tests::def;
use crate::definition::parse_definition;

const EXAMPLES: [(&str, &str); 3] = [
    (
        "order-fulfilment.yaml",
        include_str!("../../../sagas/order-fulfilment.yaml"),
    ),
    (
        "trip-booking.yaml",
        include_str!("../../../sagas/trip-booking.yaml"),
    ),
    (
        "subscription-signup.yaml",
        include_str!("../../../sagas/subscription-signup.yaml"),
    ),
];

fn example(file: &str) -> Definition {
    let (_, source) = EXAMPLES.iter().find(|(f, _)| *f == file).expect(file);
    parse_definition(file, source).expect(file)
}

/// Opening tags of `<g>` elements with `class="<class>"`.
fn groups<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
    let open = format!("<g class=\"{class}\"");
    svg.match_indices(&open)
        .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap_or(0)])
        .collect()
}

/// Checks that `doc` is well-formed XML as far as this renderer goes: one root, tags
/// nested and closed, quoted attributes, `&` only in entities, no `<` in text.
fn assert_well_formed(doc: &str) {
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = doc.trim();
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            assert_text(rest);
            break;
        };
        assert_text(&rest[..lt]);
        assert!(
            lt == 0 || !open.is_empty(),
            "text outside the root: {rest:.40}"
        );
        rest = &rest[lt..];
        let gt = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..gt];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "mismatched </{name}>");
        } else {
            let empty = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad element name {name:?}"
            );
            assert_attrs(attrs);
            if open.is_empty() {
                roots += 1;
            }
            if !empty {
                open.push(name);
            }
        }
        rest = &rest[gt + 1..];
    }
    assert!(open.is_empty(), "unclosed {open:?}");
    assert_eq!(roots, 1, "one root element");
}

fn assert_attrs(mut attrs: &str) {
    let mut names = Vec::new();
    loop {
        attrs = attrs.trim_start();
        if attrs.is_empty() {
            return;
        }
        let (name, after) = attrs
            .split_once("=\"")
            .expect("attribute without a quoted value");
        assert!(!names.contains(&name), "attribute {name} twice");
        names.push(name);
        let end = after.find('"').expect("unterminated value");
        assert_text(&after[..end]);
        attrs = &after[end + 1..];
    }
}

fn assert_text(text: &str) {
    assert!(!text.contains('<'), "`<` in text: {text}");
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..i + text[i..].find(';').expect("bare &")];
        assert!(
            ["&amp", "&lt", "&gt", "&quot", "&apos"].contains(&entity),
            "bad entity {entity}"
        );
    }
}

#[test]
fn every_step_and_compensation_is_a_node_with_its_data_attributes() {
    for (file, _) in EXAMPLES {
        let d = example(file);
        let out = svg(&d, None);
        assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\""));
        assert!(
            out.contains(" role=\"img\"") && out.contains("<title>"),
            "{out}"
        );
        let nodes = groups(&out, "node");
        for step in &d.steps {
            let command = format!(
                " data-step=\"{}\" data-phase=\"command\" data-state=\"pending\"",
                step.name
            );
            assert!(
                nodes.iter().any(|n| n.contains(&command)),
                "{file}: {command}"
            );
            let undo = format!(" data-step=\"{}\" data-phase=\"compensation\"", step.name);
            let undos = nodes.iter().filter(|n| n.contains(&undo)).count();
            assert_eq!(
                undos,
                usize::from(step.compensation.is_some()),
                "{file}: {undo}"
            );
        }
        let compensations = d.steps.iter().filter(|s| s.compensation.is_some()).count();
        assert_eq!(nodes.len(), d.steps.len() + compensations, "{file}");
        for name in ["start", "completed", "compensated"] {
            let terminal = format!("<g class=\"terminal\" data-node=\"{name}\"");
            assert_eq!(out.matches(&terminal).count(), 1, "{file}: {name}");
        }
        // Presentation attributes only: nothing a strict CSP or an <img> would refuse.
        for banned in ["<style", "<script", "foreignObject", "href", "url("] {
            assert!(!out.contains(banned), "{file}: {banned}");
        }
    }
}

#[test]
fn the_pivot_is_amber_with_a_second_line_and_only_stages_up_to_it_fail_into_undo() {
    let out = svg(&example("order-fulfilment.yaml"), None);
    let pivot = out
        .split("<g class=\"node\" data-step=\"capture_payment\"")
        .nth(1)
        .and_then(|s| s.split("</g>").next())
        .unwrap_or_default();
    assert!(
        pivot.contains("fill=\"#fde68a\"") && pivot.contains("stroke-width=\"3\""),
        "{pivot}"
    );
    assert!(pivot.contains(">pivot</text>"), "{pivot}");
    // reserve_stock, authorize_payment and the pivot itself; not ship_order.
    assert_eq!(out.matches(">fails</text>").count(), 3, "{out}");
    // Two units chained up to `compensated`.
    assert_eq!(
        out.matches(&format!("stroke=\"{UNDO_EDGE}\"")).count(),
        2,
        "{out}"
    );
}

#[test]
fn a_parallel_group_and_its_undo_are_dashed_boxes() {
    let out = svg(&example("trip-booking.yaml"), None);
    assert_eq!(groups(&out, "group").len(), 2, "{out}");
    assert!(out.contains(">parallel: book_travel</text>"), "{out}");
    assert!(out.contains(">undo book_travel</text>"), "{out}");
    // One failure edge for the group, one for confirm_trip: both into the group's undo.
    assert_eq!(out.matches(">fails</text>").count(), 2, "{out}");
}

#[test]
fn marks_give_each_node_its_state_in_text_and_title_and_a_legend() {
    let d = example("order-fulfilment.yaml");
    let marks = [
        Mark {
            command: Some("succeeded"),
            compensation: Some("compensated"),
        },
        Mark {
            command: Some("succeeded"),
            compensation: Some("current"),
        },
        Mark {
            command: Some("unknown"),
            compensation: None,
        },
        Mark {
            command: None,
            compensation: None,
        },
    ];
    let out = svg(&d, Some(&marks));
    for (step, phase, state, text) in [
        ("reserve_stock", "command", "succeeded", "succeeded"),
        (
            "reserve_stock",
            "compensation",
            "compensated",
            "compensated",
        ),
        ("authorize_payment", "compensation", "current", "in flight"),
        ("capture_payment", "command", "unknown", "timed out"),
        ("ship_order", "command", "pending", "not reached"),
    ] {
        let open = format!(
            "<g class=\"node\" data-step=\"{step}\" data-phase=\"{phase}\" data-state=\"{state}\">"
        );
        let node = out
            .split(&open)
            .nth(1)
            .and_then(|s| s.split("</g>").next())
            .unwrap_or_else(|| panic!("no {open} in {out}"));
        assert!(
            node.contains(&format!(
                "<title>{}",
                if phase == "command" {
                    step.to_owned()
                } else {
                    format!("undo {step}")
                }
            )),
            "{node}"
        );
        assert!(node.contains(&format!(": {text}")), "{node}");
        // A pending node has no state line: blank means not reached.
        assert_eq!(
            node.contains(&format!(">{text}</text>")),
            state != "pending",
            "{node}"
        );
    }
    assert!(out.contains("<g class=\"legend\">"), "{out}");
    assert!(!svg(&d, None).contains("class=\"legend\""));
    assert_well_formed(&out);
}

#[test]
fn text_is_escaped_and_long_conditions_are_cut() {
    let when = Some("input.note == \"<3 & 'hugs'\" and input.very_long_field_name_here");
    let mut d = def(&[(None, &[("odd<&>\"'name", true, false, when)])]);
    d.name = "a&b".into();
    let out = svg(&d, None);
    assert!(
        out.contains("data-step=\"odd&lt;&amp;&gt;&quot;&apos;name\""),
        "{out}"
    );
    assert!(out.contains("<title>a&amp;b: saga chart</title>"), "{out}");
    assert!(
        out.contains(">when: input.note == &quot;&lt;3 &amp; &apos;hugs&apos;&quot; a…</text>"),
        "{out}"
    );
    // The title keeps the whole condition.
    assert!(
        out.contains("input.very_long_field_name_here</title>"),
        "{out}"
    );
    assert!(!out.contains("<3"), "{out}");
    assert_well_formed(&out);
}

#[test]
fn every_chart_is_well_formed_xml() {
    for (file, _) in EXAMPLES {
        let d = example(file);
        let marks = vec![
            Mark {
                command: Some("succeeded"),
                compensation: Some("failed")
            };
            d.steps.len()
        ];
        assert_well_formed(&svg(&d, None));
        assert_well_formed(&svg(&d, Some(&marks)));
    }
}

/// Nodes, boxes and terminals of the example sagas: none overlaps another (a group's
/// box holds its own steps), and every node sits inside the picture.
#[test]
fn example_sagas_lay_out_without_overlaps() {
    for (file, _) in EXAMPLES {
        let d = example(file);
        let labels = layout::Labels {
            command: (0..d.steps.len())
                .map(|i| command_label(&d, i, State::Unknown, true))
                .collect(),
            compensation: (0..d.steps.len())
                .map(|i| undo_label(&d, i, State::Compensated))
                .collect(),
        };
        let lay = layout::layout(&d, &labels);
        let mut outlines: Vec<Rect> = vec![lay.start, lay.completed, lay.compensated];
        for cell in lay
            .rows
            .iter()
            .flat_map(|r| [Some(&r.forward), r.undo.as_ref()])
            .flatten()
        {
            let boxed = cell.group.as_ref().map(|(r, _)| *r);
            for (i, a) in cell.nodes.iter().enumerate() {
                for b in &cell.nodes[i + 1..] {
                    assert!(!a.rect.overlaps(&b.rect), "{file}: {a:?} {b:?}");
                }
                if let Some(outer) = boxed {
                    assert!(
                        outer.x < a.rect.x && a.rect.right() < outer.right(),
                        "{file}"
                    );
                    assert!(
                        outer.y < a.rect.y && a.rect.bottom() < outer.bottom(),
                        "{file}"
                    );
                }
            }
            outlines.push(cell.outline());
        }
        for (i, a) in outlines.iter().enumerate() {
            assert!(
                a.x >= MARGIN && a.right() <= MARGIN + lay.content_w,
                "{file}: {a:?}"
            );
            for b in &outlines[i + 1..] {
                assert!(!a.overlaps(b), "{file}: {a:?} overlaps {b:?}");
            }
        }
        // The failure edges run up between the columns, clear of both.
        let forward_right = lay.rows.iter().map(|r| r.forward.outline().right()).max();
        assert!(forward_right.unwrap_or(0) + 30 < lay.lane, "{file}");
        assert!(lay.compensated.x > lay.lane, "{file}");
    }
}
