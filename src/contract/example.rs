//! A value that satisfies a schema, for replies nobody scripted (`sagaflow simulate`,
//! `sagaflow contract-test`'s rendering of later steps): the schema's own example,
//! constant, default or first enum value, else the simplest value of its type. Strings
//! get `sim-<hint>` so a reader sees where each one came from.

use serde_json::{Map, Value as Json, json};

/// A value `schema` accepts, for the usual keywords (nested objects and arrays included).
pub fn example_of(schema: &Json, hint: &str) -> Json {
    if let Some(v) = schema["examples"]
        .get(0)
        .or(schema.get("const"))
        .or(schema.get("default"))
    {
        return v.clone();
    }
    if let Some(v) = schema["enum"].get(0) {
        return v.clone();
    }
    let ty = match &schema["type"] {
        Json::String(t) => t.as_str(),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            for name in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
            {
                let sub = &schema["properties"][name];
                out.insert(name.to_owned(), example_of(sub, &format!("{hint}-{name}")));
            }
            Json::Object(out)
        }
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(0);
            Json::Array(
                (0..n)
                    .map(|i| example_of(&schema["items"], &format!("{hint}-{i}")))
                    .collect(),
            )
        }
        "integer" | "number" => {
            let min = schema["minimum"]
                .as_f64()
                .or(schema["exclusiveMinimum"].as_f64().map(|m| m + 1.0));
            let n = min
                .unwrap_or(1.0)
                .max(schema["minimum"].as_f64().unwrap_or(f64::MIN))
                .ceil();
            if ty == "integer" {
                json!(n as i64)
            } else {
                json!(n)
            }
        }
        "boolean" => json!(true),
        "null" => Json::Null,
        _ => match schema["format"].as_str() {
            Some("uuid") => json!("00000000-0000-0000-0000-000000000000"),
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            Some("date") => json!("2026-01-01"),
            Some("email") => json!("sim@example.com"),
            _ => {
                let text = format!("sim-{hint}");
                let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
                json!(format!(
                    "{text}{}",
                    "x".repeat(min.saturating_sub(text.len()))
                ))
            }
        },
    }
}

/// `base` with every field of `extra` it lacks (objects only).
pub fn merged(mut base: Json, extra: Json) -> Json {
    if let (Json::Object(b), Json::Object(e)) = (&mut base, extra) {
        for (k, v) in e {
            b.entry(k).or_insert(v);
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Schema, compile_schema};

    #[test]
    fn examples_satisfy_their_schemas() {
        for schema in [
            json!({"type": "object", "required": ["id", "n", "tags", "at", "ok", "kind"],
                   "properties": {"id": {"type": "string", "minLength": 12}, "n": {"type": "integer", "minimum": 3},
                                  "tags": {"type": "array", "minItems": 2, "items": {"type": "string"}},
                                  "at": {"type": "string", "format": "date-time"}, "ok": {"type": "boolean"},
                                  "kind": {"enum": ["a", "b"]}}}),
            json!({"type": ["object", "null"], "required": ["x"], "properties": {"x": {"const": 7}}}),
            json!({"type": "number", "exclusiveMinimum": 0}),
        ] {
            let compiled = Schema {
                validator: std::sync::Arc::new(compile_schema(&schema).expect("a valid schema")),
                schema: schema.clone(),
            };
            let value = example_of(&schema, "s");
            assert_eq!(compiled.violations(&value), [], "{value} for {schema}");
        }
    }
}
