//! Runs every shared vector of protocol/vectors against [`process`], as each library in
//! sdks/ does in its own tests (format: protocol/README.md).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value as Json, json};

use super::*;

fn vectors() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()).unwrap_or_default())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "vectors missing in {}", dir.display());
    files
}

fn registry(v: &Json) -> Registry {
    let p = &v["participant"];
    let text = |j: &Json| j.as_str().map(str::to_owned);
    Registry {
        source: text(&p["source"]).unwrap_or_default(),
        dead_letter_topic: text(&p["dead_letter_topic"]).unwrap_or_default(),
        handlers: p["handlers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| Registration {
                phase: match h["phase"].as_str() {
                    Some("compensation") => Phase::Compensation,
                    _ => Phase::Command,
                },
                command_type: text(&h["type"]).unwrap_or_default(),
                success: text(&h["success"]).unwrap_or_default(),
                refusal: text(&h["refusal"]),
            })
            .collect(),
    }
}

/// A header value of the vector format: a string, or `{"base64": …}`.
fn bytes_of(v: &Json) -> Vec<u8> {
    match v {
        Json::String(s) => s.as_bytes().to_vec(),
        other => base64::engine::general_purpose::STANDARD
            .decode(other["base64"].as_str().unwrap_or_default())
            .unwrap_or_default(),
    }
}

fn result_of(r: &Json) -> HandlerResult {
    if let Some(payload) = r.get("success") {
        return HandlerResult::Success(payload.clone());
    }
    let f = &r["failure"];
    HandlerResult::Failure {
        reply_type: f["type"].as_str().unwrap_or_default().to_owned(),
        payload: f["payload"].clone(),
        retryable: f["retryable"].as_bool().unwrap_or_default(),
    }
}

fn called_with(c: &Command) -> Json {
    json!({
        "id": c.command_id, "type": c.command_type, "phase": c.phase.as_str(),
        "saga_id": c.saga_id.to_string(), "definition": c.definition, "step": c.step,
        "attempt": c.attempt, "reply_to": c.reply_to, "token": c.token, "payload": c.payload,
    })
}

fn run_step(name: &str, i: usize, step: &Json, reg: &Registry, store: &mut MemoryStore) -> Action {
    let m = &step["message"];
    let headers: Vec<(String, Vec<u8>)> = m["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h[0].as_str().unwrap_or_default().to_owned(),
                bytes_of(&h[1]),
            )
        })
        .collect();
    let key = m["key"].as_str().map(str::as_bytes);
    let value = m["value"].as_str().unwrap_or_default();
    let msg = Incoming {
        topic: m["topic"].as_str().unwrap_or_default(),
        partition: m["partition"].as_i64().unwrap_or_default() as i32,
        offset: m["offset"].as_i64().unwrap_or_default(),
        key,
        headers: &headers,
        value: Some(value.as_bytes()),
    };
    let mut calls = 0;
    let action = process(reg, store, &msg, |c| {
        calls += 1;
        let h = &step["handler"];
        assert!(!h.is_null(), "{name} step {i}: the handler ran");
        assert_eq!(called_with(c), h["call"], "{name} step {i}: the command");
        result_of(&h["result"])
    });
    let expected_calls = usize::from(!step["handler"].is_null());
    assert_eq!(calls, expected_calls, "{name} step {i}: handler calls");
    action
}

fn header_map(o: &Outgoing) -> Vec<(String, String)> {
    o.headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn check_reply(name: &str, i: usize, o: &Outgoing, want: &Json, ids: &mut HashSet<String>) {
    let at = format!("{name} step {i}");
    assert_eq!(o.topic, want["topic"].as_str().unwrap_or_default(), "{at}");
    assert_eq!(
        o.key.as_deref(),
        want["key"].as_str().map(str::as_bytes),
        "{at}"
    );
    let got = header_map(o);
    let names: HashSet<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names.len(), got.len(), "{at}: a header repeats: {got:?}");
    let fixed = want["headers"].as_object().cloned().unwrap_or_default();
    let generated = want["generated"].as_object().cloned().unwrap_or_default();
    let expected: HashSet<&str> = fixed
        .keys()
        .chain(generated.keys())
        .map(String::as_str)
        .collect();
    assert_eq!(names, expected, "{at}: header names");
    for (k, v) in &got {
        if let Some(Json::String(w)) = fixed.get(k) {
            assert_eq!(v, w, "{at}: header {k}");
        } else {
            check_generated(&at, k, v, generated[k].as_str().unwrap_or_default(), ids);
        }
    }
    let body: Json = serde_json::from_slice(&o.value).unwrap_or(Json::Null);
    assert_eq!(body, want["body"], "{at}: body");
}

fn check_generated(at: &str, name: &str, value: &str, rule: &str, ids: &mut HashSet<String>) {
    match rule {
        "uuid" => {
            assert!(uuid::Uuid::parse_str(value).is_ok(), "{at}: {name} {value}");
            assert!(ids.insert(value.to_owned()), "{at}: {name} {value} reused");
        }
        "rfc3339" => {
            let ok = value.len() == 24
                && value.ends_with('Z')
                && chrono::DateTime::parse_from_rfc3339(value).is_ok()
                && value.as_bytes()[19] == b'.';
            assert!(ok, "{at}: {name} {value}");
        }
        rule => {
            let parent = rule.strip_prefix("child_of:").unwrap_or_default();
            let (p, v): (Vec<&str>, Vec<&str>) =
                (parent.split('-').collect(), value.split('-').collect());
            assert_eq!(v.len(), 4, "{at}: {name} {value}");
            assert_eq!((v[0], v[1], v[3]), (p[0], p[1], p[3]), "{at}: {name}");
            let span_ok = v[2].len() == 16
                && v[2]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && v[2] != "0000000000000000"
                && v[2] != p[2];
            assert!(span_ok, "{at}: {name} {value}");
        }
    }
}

fn check_dead_letter(name: &str, i: usize, o: &Outgoing, want: &Json) {
    let at = format!("{name} step {i}");
    assert_eq!(o.topic, want["topic"].as_str().unwrap_or_default(), "{at}");
    assert_eq!(
        o.key.as_deref(),
        want["key"].as_str().map(str::as_bytes),
        "{at}"
    );
    assert_eq!(
        o.value,
        want["value"].as_str().unwrap_or_default().as_bytes(),
        "{at}"
    );
    let headers = want["headers"].as_array().cloned().unwrap_or_default();
    assert_eq!(o.headers.len(), headers.len(), "{at}: {:?}", o.headers);
    for ((k, v), w) in o.headers.iter().zip(&headers) {
        assert_eq!(k, w[0].as_str().unwrap_or_default(), "{at}");
        match w[1].get("prefix").and_then(Json::as_str) {
            Some(prefix) => {
                let text = String::from_utf8_lossy(v);
                assert!(
                    text.starts_with(prefix),
                    "{at}: {k} `{text}` (want `{prefix}…`)"
                );
            }
            None => assert_eq!(v, &bytes_of(&w[1]), "{at}: header {k}"),
        }
    }
}

#[test]
fn every_shared_vector_passes() {
    for file in vectors() {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let v: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reg = registry(&v);
        let mut store = MemoryStore::default();
        let mut ids = HashSet::new();
        for (i, step) in v["steps"].as_array().into_iter().flatten().enumerate() {
            let action = run_step(&name, i, step, &reg, &mut store);
            let want = &step["expect"];
            match action {
                Action::Reply(o) => check_reply(&name, i, &o, &want["reply"], &mut ids),
                Action::DeadLetter(o) => check_dead_letter(&name, i, &o, &want["dead_letter"]),
                Action::Skip => assert_eq!(want, &json!({"skip": true}), "{name} step {i}"),
            }
            if let Some(kind) = want.as_object().and_then(|o| o.keys().next()) {
                assert!(
                    ["reply", "dead_letter", "skip"].contains(&kind.as_str()),
                    "{name}"
                );
            }
        }
    }
}
