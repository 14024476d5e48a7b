//! Payload schemas for the contract: the ones a definition declares, or else the
//! shapes its templates imply (a literal is a constant, `{{ input.x }}` has the input
//! schema's type for `x`, mixed text is a string, anything else may be any value).

use std::collections::BTreeSet;

use serde_json::{Value as Json, json};

use crate::definition::template::Template;
use crate::definition::{Definition, MessageSpec, ReplySpec, Step, Trigger};
use crate::simulate::synthesized_replies;

/// The schema of a command's or compensation's body.
pub fn command_schema(def: &Definition, msg: &MessageSpec) -> Json {
    match &msg.schema {
        Some(s) => s.schema.clone(),
        None => from_template(def, &msg.payload),
    }
}

/// The schema of one reply type's data: declared, or for a step's success the fields
/// its saga's templates read.
pub fn reply_schema(
    def: &Definition,
    step: &Step,
    phase: &str,
    spec: &ReplySpec,
    reply_type: &str,
) -> Json {
    if let Some(s) = spec.schemas.get(reply_type) {
        return s.schema.clone();
    }
    let success = spec.success.iter().any(|t| t == reply_type);
    if !success {
        return json!({"type": "object", "description": "Describes the error, e.g. {\"error\": \"card expired\"}"});
    }
    let fields = (phase == "command")
        .then(|| synthesized_replies(def).remove(&step.name))
        .flatten();
    let fields: Vec<String> = fields
        .and_then(|f| f.as_object().map(|m| m.keys().cloned().collect()))
        .unwrap_or_default();
    let properties: serde_json::Map<String, Json> =
        fields.iter().map(|f| (f.clone(), json!({}))).collect();
    json!({
        "type": "object",
        "description": "Every field the saga's templates read from this reply is required",
        "required": fields,
        "properties": properties,
    })
}

/// The schema of a trigger event: an object with the fields the trigger reads.
pub fn trigger_schema(_def: &Definition, trigger: &Trigger) -> Json {
    let mut fields = BTreeSet::new();
    for t in [&trigger.key, &trigger.input] {
        for var in t.check().unwrap_or_default() {
            if let Some(field) = var.strip_prefix("event.").and_then(|f| f.split('.').next()) {
                fields.insert(field.to_owned());
            }
        }
    }
    let properties: serde_json::Map<String, Json> =
        fields.iter().map(|f| (f.clone(), json!({}))).collect();
    json!({"type": "object", "required": fields, "properties": properties})
}

fn from_template(def: &Definition, t: &Template) -> Json {
    match t {
        Template::Literal(v) => from_literal(v),
        Template::Text(_) => json!({"type": "string"}),
        Template::Expr(expr) => from_expression(def, expr),
        Template::Array(items) => json!({
            "type": "array",
            "prefixItems": items.iter().map(|i| from_template(def, i)).collect::<Vec<_>>(),
        }),
        Template::Object(entries) => {
            let properties: serde_json::Map<String, Json> = entries
                .iter()
                .map(|(k, v)| (k.clone(), from_template(def, v)))
                .collect();
            let required: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
            json!({"type": "object", "required": required, "properties": properties})
        }
    }
}

fn from_literal(v: &Json) -> Json {
    match v {
        Json::Object(map) => {
            let properties: serde_json::Map<String, Json> = map
                .iter()
                .map(|(k, v)| (k.clone(), from_literal(v)))
                .collect();
            json!({"type": "object", "required": map.keys().collect::<Vec<_>>(), "properties": properties})
        }
        Json::Array(items) => json!({
            "type": "array",
            "prefixItems": items.iter().map(from_literal).collect::<Vec<_>>(),
        }),
        other => json!({"const": other}),
    }
}

/// A bare variable path (`input.items`, `steps.s.reply.id`, `saga.id`) takes the type
/// its schema gives; any other expression may produce any value.
fn from_expression(def: &Definition, expr: &str) -> Json {
    let path = expr.trim();
    let bare = path
        .split('.')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !bare {
        return json!({});
    }
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        ["input", rest @ ..] => def
            .input_schema
            .as_ref()
            .and_then(|s| schema_at(&s.schema, rest))
            .unwrap_or_else(|| json!({})),
        ["saga", "id"] => json!({"type": "string", "format": "uuid"}),
        ["saga", "name"] => json!({"type": "string"}),
        ["saga", "key"] => json!({"type": ["string", "null"]}),
        ["steps", step, "reply", rest @ ..] => def
            .step(step)
            .and_then(|s| {
                let first = s.reply.success.first()?;
                schema_at(&s.reply.schemas.get(first)?.schema, rest)
            })
            .unwrap_or_else(|| json!({})),
        _ => json!({}),
    }
}

/// The subschema at `path` through `properties`, if the schema declares it.
fn schema_at(schema: &Json, path: &[&str]) -> Option<Json> {
    let mut at = schema;
    for field in path {
        at = at.get("properties")?.get(*field)?;
    }
    Some(at.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::parse_definition;

    #[test]
    fn payload_schemas_follow_the_templates() {
        let def = parse_definition(
            "d.yaml",
            r#"
name: d
input: {schema: {type: object, properties: {n: {type: integer}}}}
steps:
  - name: s
    command:
      topic: t
      type: do
      payload: {n: "{{ input.n }}", label: "n={{ input.n }}", fixed: 3, id: "{{ saga.id }}", any: "{{ input.n + 1 }}"}
    reply: {success: [done]}
    compensation: none
"#,
        )
        .expect("valid");
        let s = command_schema(&def, &def.steps[0].command);
        assert_eq!(s["properties"]["n"], json!({"type": "integer"}));
        assert_eq!(s["properties"]["label"], json!({"type": "string"}));
        assert_eq!(s["properties"]["fixed"], json!({"const": 3}));
        assert_eq!(s["properties"]["id"]["format"], "uuid");
        assert_eq!(s["properties"]["any"], json!({}));
    }
}
