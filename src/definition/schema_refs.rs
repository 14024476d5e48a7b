//! Templates against the schemas they read from: a template that reads
//! `input.<field>` or `steps.<s>.reply.<field>` must name a field the input schema, or
//! a success reply schema of `<s>`, declares. Such a template would otherwise fail at
//! run time, on a saga in flight, for a typo a load could have caught.
//!
//! A level of the path is checked only where the schema lists `properties`; below a
//! free-form object (no `properties`), an array, or a `$ref`/combinator the check stops,
//! since the field may well exist there.

use serde_json::Value as Json;

use super::closest;
use super::decode::TemplateUse;
use super::diagnostic::Diags;
use super::model::Definition;

/// Reports every template field that no schema declares.
pub(crate) fn check(def: &Definition, uses: &[TemplateUse], d: &mut Diags) {
    for u in uses {
        let parts: Vec<&str> = u.var.split('.').collect();
        match parts.as_slice() {
            ["input", fields @ ..] if !fields.is_empty() => {
                let Some(schema) = &def.input_schema else {
                    continue;
                };
                if let Some((at, field, known)) = undeclared(&[&schema.schema], fields) {
                    let path = format!("input.{}", fields[..=at].join("."));
                    report(d, u, &path, field, &known, "the input schema declares");
                }
            }
            ["steps", step, "reply", fields @ ..] if !fields.is_empty() => {
                let Some(target) = def.step(step) else {
                    continue;
                };
                let spec = &target.reply;
                // Any success type may be the reply: check only when each has a schema.
                let schemas: Option<Vec<&Json>> = spec
                    .success
                    .iter()
                    .map(|t| spec.schemas.get(t).map(|s| &s.schema))
                    .collect();
                let Some(schemas) = schemas else {
                    continue;
                };
                if let Some((at, field, known)) = undeclared(&schemas, fields) {
                    let path = format!("steps.{step}.reply.{}", fields[..=at].join("."));
                    let what = format!("the success reply schemas of `{step}` declare");
                    report(d, u, &path, field, &known, &what);
                }
            }
            _ => {}
        }
    }
}

fn report(d: &mut Diags, u: &TemplateUse, path: &str, field: &str, known: &[String], what: &str) {
    let names: Vec<&str> = known.iter().map(String::as_str).collect();
    let help = match closest(field, &names) {
        Some(near) => format!("did you mean `{near}`? declared: {}", names.join(", ")),
        None => format!(
            "declared: {}; add `{field}` to the schema's `properties` if the message carries it",
            names.join(", ")
        ),
    };
    d.error_help(
        u.pos,
        format!("template reads `{path}`, but {what} no field `{field}`"),
        help,
    );
}

/// The first level (its index, its field and the fields declared there) at which none
/// of `schemas` declares the path's field.
fn undeclared<'a>(schemas: &[&Json], fields: &[&'a str]) -> Option<(usize, &'a str, Vec<String>)> {
    let mut level: Vec<&Json> = schemas.to_vec();
    for (i, field) in fields.iter().enumerate() {
        let mut known = Vec::new();
        let mut next = Vec::new();
        for schema in &level {
            let Some(props) = declared_properties(schema) else {
                return None; // free-form here: anything may exist
            };
            known.extend(props.keys().cloned());
            if let Some(sub) = props.get(*field) {
                next.push(sub);
            }
        }
        if next.is_empty() {
            known.sort();
            known.dedup();
            return Some((i, field, known));
        }
        level = next;
    }
    None
}

/// The `properties` of an object schema that lists them and nothing that could add
/// more fields out of sight (`$ref`, combinators, conditionals).
fn declared_properties(schema: &Json) -> Option<&serde_json::Map<String, Json>> {
    let obj = schema.as_object()?;
    let opaque = [
        "$ref",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "patternProperties",
    ];
    // Extra fields with a schema of their own (not `additionalProperties: false`) may
    // be read too.
    let open_extra = obj
        .get("additionalProperties")
        .is_some_and(|a| a != &Json::Bool(false))
        || obj.contains_key("unevaluatedProperties")
        || obj.contains_key("dependentSchemas");
    if open_extra || opaque.iter().any(|k| obj.contains_key(*k)) {
        return None;
    }
    obj.get("properties")?.as_object()
}

#[cfg(test)]
mod tests {
    use crate::definition::diagnostic::render;
    use crate::definition::load::parse_definition;

    const DEF: &str = r#"
name: refs
input:
  schema:
    type: object
    properties:
      order_id: {type: string}
      customer: {type: object, properties: {id: {type: string}}}
      extra: {type: object}
steps:
  - name: reserve
    command: {topic: t, type: reserve, payload: {o: "{{ input.order_id }}", x: "{{ input.extra.anything }}"}}
    reply:
      success: [reserved]
      schemas:
        reserved: {type: object, properties: {reservation_id: {type: string}}}
    compensation: {topic: t, type: release, payload: {r: "{{ steps.reserve.reply.reservation_id }}"}, reply: {success: [released]}}
  - name: pay
    command:
      topic: t
      type: pay
      payload:
        a: "{{ input.ordr_id }}"
        b: "{{ input.customer.name }}"
        c: "{{ steps.reserve.reply.reservation }}"
    reply: {success: [paid]}
    compensation: none
"#;

    #[test]
    fn fields_no_schema_declares_are_errors_at_their_line() {
        let out = match parse_definition("refs.yaml", DEF) {
            Ok(_) => String::new(),
            Err(diags) => render(&diags),
        };
        assert!(out.contains("refs.yaml:23:12: error: template reads `input.ordr_id`, but the input schema declares no field `ordr_id`\n  help: did you mean `order_id`?"), "{out}");
        assert!(
            out.contains("template reads `input.customer.name`"),
            "{out}"
        );
        assert!(out.contains("template reads `steps.reserve.reply.reservation`, but the success reply schemas of `reserve` declare no field `reservation`\n  help: did you mean `reservation_id`?"), "{out}");
        assert_eq!(out.matches("error:").count(), 3, "{out}");
    }
}
