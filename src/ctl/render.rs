//! Plain-text tables of the API's bodies, for people (`--output table`).

use serde_json::Value as Json;

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell; control characters are shown escaped so a
/// value cannot move the cursor or fake another row.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| {
        s.escape_debug()
            .to_string()
            .replace("\\\"", "\"")
            .replace("\\'", "'")
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn saga_table(items: &[Json]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            ["id", "definition", "status", "key", "updated_at"]
                .iter()
                .map(|k| text(&s[*k]))
                .collect()
        })
        .collect();
    table(&["ID", "DEFINITION", "STATUS", "KEY", "UPDATED"], &rows)
}

pub fn saga_detail(saga: &Json, timeline: usize) -> String {
    let mut out = String::new();
    for k in [
        "id",
        "definition",
        "version",
        "status",
        "key",
        "created_at",
        "updated_at",
    ] {
        out.push_str(&format!("{k:<11} {}\n", text(&saga[k])));
    }
    if let Some(f) = saga["failure"].as_object() {
        out.push_str(&format!(
            "failure     {} at {}: {}\n",
            text(&f["phase"]),
            text(&f["step"]),
            text(&f["reason"])
        ));
    }
    out.push('\n');
    let steps: Vec<Vec<String>> = saga["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["status"]),
                text(&s["attempt"]),
                text(&s["compensation"]),
                text(&s["error"]).chars().take(60).collect(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["STEP", "STATUS", "ATTEMPT", "COMPENSATION", "ERROR"],
        &steps,
    ));
    let entries = saga["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let shown = &entries[entries.len().saturating_sub(timeline)..];
    if !shown.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|e| {
                let attempt = e["attempt"]
                    .as_i64()
                    .map(|a| format!("#{a}"))
                    .unwrap_or_default();
                let detail = &e["detail"];
                let note = ["reason", "effect", "why", "type"]
                    .iter()
                    .find_map(|k| detail[*k].as_str())
                    .unwrap_or_default();
                vec![
                    text(&e["at"]),
                    text(&e["kind"]),
                    format!("{}{attempt}", e["step"].as_str().unwrap_or("")),
                    note.chars().take(70).collect(),
                ]
            })
            .collect();
        out.push_str(&table(&["AT", "KIND", "STEP", "NOTE"], &rows));
    }
    out
}

pub fn action(r: &Json) -> String {
    format!("{}  {}\n", text(&r["id"]), text(&r["status"]))
}

pub fn bulk(r: &Json) -> String {
    let mut out = format!(
        "matched {}  acted {}  refused {}{}\n",
        text(&r["matched"]),
        text(&r["applied"]),
        text(&r["refused"]),
        if r["dry_run"] == Json::Bool(true) {
            "  (dry run: nothing changed)"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = r["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|x| {
            vec![
                text(&x["id"]),
                text(&x["outcome"]),
                text(&x["status"]),
                text(&x["detail"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["ID", "OUTCOME", "STATUS", "DETAIL"], &rows));
    }
    out
}

pub fn dead_letter_table(items: &[Json]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            vec![
                text(&d["id"]),
                text(&d["at"]),
                text(&d["kind"]),
                text(&d["source_topic"]),
                text(&d["saga_id"]),
                text(&d["reason"]).chars().take(70).collect(),
            ]
        })
        .collect();
    table(&["ID", "AT", "KIND", "TOPIC", "SAGA", "REASON"], &rows)
}

pub fn parked_table(items: &[Json]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            vec![
                text(&p["id"]),
                text(&p["parked_at"]),
                text(&p["topic"]),
                text(&p["saga_id"]),
                text(&p["payload_bytes"]),
                text(&p["reason"]).chars().take(60).collect(),
            ]
        })
        .collect();
    table(&["ID", "PARKED", "TOPIC", "SAGA", "BYTES", "REASON"], &rows)
}

pub fn dead_letter_detail(d: &Json) -> String {
    let mut out = String::new();
    for k in [
        "id",
        "at",
        "status",
        "kind",
        "reason",
        "source_topic",
        "source_partition",
        "source_offset",
        "saga_id",
        "key",
        "redrivable",
        "resolved_by",
        "resolution",
    ] {
        out.push_str(&format!("{k:<17} {}\n", text(&d[k]).escape_debug()));
    }
    for h in d["headers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "header           {}: {}\n",
            text(&h[0]).escape_debug(),
            text(&h[1]).escape_debug()
        ));
    }
    let payload = if d["payload"].is_string() {
        &d["payload"]
    } else {
        &d["payload_base64"]
    };
    out.push_str(&format!(
        "payload          {}\n",
        text(payload).escape_debug()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_escape_control_characters() {
        let t = table(
            &["A", "B"],
            &[
                vec!["x\u{1b}[2J".into(), "long value".into()],
                vec!["yy".into(), "z".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("x\\u{1b}[2J  long value"), "{t}");
        assert_eq!(lines[0].find('B'), lines[1].find("long value"), "{t}");
        assert_eq!(lines[2].find('z'), lines[1].find("long value"), "{t}");
        assert!(!t.contains('\u{1b}'));
    }
}
