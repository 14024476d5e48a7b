//! Checks on what comes in (HTTP starts, replies and trigger events from Kafka) before it
//! reaches a transaction. PostgreSQL refuses U+0000 in `text` and `jsonb`, and an index
//! entry above about 2.7 kB; a message that would hit either fails its whole batch, and
//! a batch retried forever stalls every partition of the replica. Whatever fails here is
//! refused with its reason instead: a problem+json answer over HTTP, the dead-letter
//! topic on Kafka.

use serde_json::Value as Json;

use crate::messaging::envelope::InboundEvent;

/// Longest business key (idempotency key), from HTTP or a trigger's `key:` template.
/// Keys are indexed, so they are bounded.
pub const MAX_KEY_LEN: usize = 256;
/// Longest `ce_id` and `ce_source`: together they are a message's inbox key.
pub const MAX_ID_LEN: usize = 512;
/// Longest other attribute or extension (`ce_type`, `ce_sagastep`, `traceparent`, …).
pub const MAX_ATTRIBUTE_LEN: usize = 1024;

/// JSON pointer of the first string or object key holding U+0000, which PostgreSQL
/// cannot store (in `text` or `jsonb`).
pub fn nul_path(v: &Json) -> Option<String> {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Json::String(s) if s.contains('\0') => Some(String::new()),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x).map(|p| format!("/{i}{p}"))),
        Json::Object(map) => map.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                return Some(format!("/{}", escape(k)));
            }
            nul_path(x).map(|p| format!("/{}{p}", escape(k)))
        }),
        _ => None,
    }
}

/// Why a business key cannot be stored, if it cannot.
pub fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        Some(format!(
            "the business key has {} bytes; it must have 1 to {MAX_KEY_LEN}",
            key.len()
        ))
    } else if key.contains('\0') {
        Some("the business key contains U+0000".into())
    } else {
        None
    }
}

/// Why a key given over HTTP (the `Idempotency-Key` header or the body's `key`) breaks
/// the API's rule, if it does: 1 to 256 visible ASCII characters (`!` to `~`), so it
/// reads the same in a header, a URL and a log line. Trigger keys, rendered from
/// events, only need [`key_problem`]'s rule.
pub fn api_key_problem(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Some(format!(
            "the key has {} bytes; it must have 1 to {MAX_KEY_LEN}",
            key.len()
        ));
    }
    key.chars().find(|c| !c.is_ascii_graphic()).map(|c| {
        format!(
            "the key may hold only visible ASCII characters (`!` to `~`); it holds {}",
            match c {
                ' ' => "a space".to_owned(),
                c => format!("U+{:04X}", u32::from(c)),
            }
        )
    })
}

/// Why an inbound CloudEvent cannot be applied, if it cannot: an attribute too long or
/// holding U+0000, or data holding U+0000.
pub fn event_problem(ev: &InboundEvent) -> Option<String> {
    let attributes = [
        ("id", ev.id.as_str(), MAX_ID_LEN),
        ("source", ev.source.as_str(), MAX_ID_LEN),
    ]
    .into_iter()
    .chain(std::iter::once((
        "type",
        ev.event_type.as_str(),
        MAX_ATTRIBUTE_LEN,
    )))
    .chain(
        ev.extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str(), MAX_ATTRIBUTE_LEN)),
    );
    for (name, value, max) in attributes {
        if value.len() > max {
            return Some(format!(
                "attribute `{name}` has {} bytes; at most {max} are accepted",
                value.len()
            ));
        }
        if value.contains('\0') {
            return Some(format!("attribute `{name}` contains U+0000"));
        }
    }
    nul_path(&ev.data).map(|p| format!("data at `{p}` contains U+0000, which cannot be stored"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Json) -> InboundEvent {
        InboundEvent {
            id: "e-1".into(),
            source: "/s".into(),
            event_type: "t".into(),
            data,
            extensions: vec![("sagastep".into(), "reserve".into())],
        }
    }

    #[test]
    fn nul_path_points_at_the_first_nul() {
        assert_eq!(nul_path(&json!({"a": [1, "x\u{0}"]})), Some("/a/1".into()));
        assert_eq!(nul_path(&json!({"a/b\u{0}": 1})), Some("/a~1b\u{0}".into()));
        assert_eq!(nul_path(&json!({"a": "fine"})), None);
    }

    #[test]
    fn events_with_nul_or_oversized_attributes_are_refused() {
        assert_eq!(event_problem(&event(json!({"ok": true}))), None);
        assert!(
            event_problem(&event(json!({"x": "a\u{0}"})))
                .unwrap()
                .contains("`/x`")
        );
        let mut long = event(json!({}));
        long.id = "i".repeat(MAX_ID_LEN + 1);
        assert!(event_problem(&long).unwrap().contains("`id` has 513 bytes"));
        let mut nul = event(json!({}));
        nul.extensions.push(("sagaid".into(), "a\u{0}".into()));
        assert!(
            event_problem(&nul)
                .unwrap()
                .contains("`sagaid` contains U+0000")
        );
    }

    #[test]
    fn keys_are_bounded() {
        assert_eq!(key_problem("order-1"), None);
        assert!(key_problem("").is_some());
        assert!(key_problem(&"k".repeat(MAX_KEY_LEN + 1)).is_some());
        assert!(key_problem("a\u{0}").is_some());
        assert_eq!(api_key_problem("order-1/x_y:z"), None);
        for bad in ["", "a b", "clé-ü", "tab\there", "a\u{0}"] {
            assert!(api_key_problem(bad).is_some(), "{bad:?}");
        }
        assert!(api_key_problem("a b").unwrap().contains("a space"));
        assert!(api_key_problem("clé").unwrap().contains("U+00E9"));
    }
}
