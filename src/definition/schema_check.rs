//! Every problem of a JSON Schema written in a definition (`input.schema`), not only
//! the first: each violation of the draft 2020-12 meta-schema, and each keyword JSON
//! Schema does not know, which a validator would silently ignore (`maxLenght: 5` checks
//! nothing). Misspelled keywords and type names get a suggestion.

use std::sync::Arc;

use serde_json::Value as Json;

use super::Schema;
use super::closest;
use super::decode::node_at_pointer;
use super::diagnostic::Diags;
use super::node::Node;

/// Compiles the JSON Schema written at `node`, reporting every problem at its line;
/// `what` names it in messages (`input`, `command`, `reply inventory.stock_reserved`).
pub(crate) fn compile(node: &Node, what: &str, lenient: bool, d: &mut Diags) -> Option<Schema> {
    let schema = node.to_json();
    let found = if lenient {
        Vec::new()
    } else {
        problems(&schema)
    };
    for p in &found {
        let at = node_at_pointer(node, &p.pointer);
        d.error_help(at.pos, p.message.clone(), p.help.clone());
    }
    if !found.is_empty() {
        return None;
    }
    match super::load::compile_schema(&schema) {
        Ok(validator) => Some(Schema {
            schema,
            validator: Arc::new(validator),
        }),
        Err(err) => {
            let at = node_at_pointer(node, err.instance_path().as_str());
            d.error_help(
                at.pos,
                format!("invalid JSON Schema: {err}"),
                format!("the {what} schema must be valid JSON Schema (draft 2020-12)"),
            );
            None
        }
    }
}

/// One problem: a JSON pointer into the schema, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaProblem {
    pub pointer: String,
    pub message: String,
    pub help: String,
}

const TYPES: [&str; 7] = [
    "array", "boolean", "integer", "null", "number", "object", "string",
];

/// The keywords of draft 2020-12 (core, applicators, validation, formats, content,
/// meta-data), plus `definitions`, which older schemas use for `$defs`.
const KEYWORDS: [&str; 65] = [
    "$schema",
    "$id",
    "$ref",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$defs",
    "$comment",
    "$vocabulary",
    "definitions",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    // OpenAPI's annotations, common in schemas copied from an API description.
    "example",
    "nullable",
    "discriminator",
    "externalDocs",
    "xml",
    "examples",
    "dependencies",
    "additionalItems",
];

/// Keywords whose value is one schema, a map of schemas, or a list of schemas.
const ONE: [&str; 12] = [
    "not",
    "if",
    "then",
    "else",
    "items",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "additionalItems",
];
const MAP: [&str; 5] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
const LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];

pub(crate) fn problems(schema: &Json) -> Vec<SchemaProblem> {
    let mut out: Vec<SchemaProblem> = jsonschema::draft202012::meta::validator()
        .iter_errors(schema)
        .map(|e| {
            let pointer = e.instance_path().as_str().to_owned();
            let in_type = pointer.ends_with("/type") || pointer.contains("/type/");
            match (in_type, e.instance().as_str()) {
                (true, Some(word)) => SchemaProblem {
                    message: format!("invalid JSON Schema: `{word}` is not a type"),
                    help: type_hint(word),
                    pointer,
                },
                _ => SchemaProblem {
                    pointer,
                    message: format!("invalid JSON Schema: {e}"),
                    help: "a schema must be valid JSON Schema (draft 2020-12)".into(),
                },
            }
        })
        .collect();
    unknown_keywords(schema, "", &mut out);
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    out.dedup();
    out
}

/// For a misspelled type name (`nubmer`), the one meant.
fn type_hint(word: &str) -> String {
    let types = TYPES.join(", ");
    match closest(word, &TYPES) {
        Some(t) => format!("did you mean `{t}`? types are {types}"),
        None => format!("types are {types}"),
    }
}

fn unknown_keywords(schema: &Json, at: &str, out: &mut Vec<SchemaProblem>) {
    let Json::Object(map) = schema else {
        return;
    };
    for (key, value) in map {
        let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
        if ONE.contains(&key.as_str()) {
            unknown_keywords(value, &here, out);
        } else if MAP.contains(&key.as_str()) {
            for (name, sub) in value.as_object().into_iter().flatten() {
                let name = name.replace('~', "~0").replace('/', "~1");
                unknown_keywords(sub, &format!("{here}/{name}"), out);
            }
        } else if LIST.contains(&key.as_str()) {
            for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                unknown_keywords(sub, &format!("{here}/{i}"), out);
            }
        } else if !KEYWORDS.contains(&key.as_str()) && !key.starts_with("x-") {
            let help = match closest(key, &KEYWORDS) {
                Some(near) => format!("did you mean `{near}`?"),
                None => {
                    "JSON Schema ignores keywords it does not know; name your own annotations `x-…`"
                        .into()
                }
            };
            out.push(SchemaProblem {
                pointer: here,
                message: format!("unknown JSON Schema keyword `{key}`: it would check nothing"),
                help,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_reported_with_suggestions() {
        let schema = json!({
            "type": "object",
            "properties": {
                "amount": {"type": "nubmer", "minimum": 0},
                "name": {"type": "string", "maxLenght": 5},
                "tags": {"type": "array", "items": {"type": "strng"}},
                "note": {"x-ui": "textarea", "description": "free text"}
            },
            "requird": ["amount"]
        });
        let got = problems(&schema);
        let at: Vec<(&str, &str)> = got
            .iter()
            .map(|p| (p.pointer.as_str(), p.help.as_str()))
            .collect();
        assert!(at.contains(&("/properties/amount/type", "did you mean `number`? types are array, boolean, integer, null, number, object, string")), "{got:#?}");
        assert!(
            at.iter()
                .any(|(p, h)| *p == "/properties/tags/items/type" && h.contains("`string`")),
            "{got:#?}"
        );
        assert!(
            at.contains(&("/properties/name/maxLenght", "did you mean `maxLength`?")),
            "{got:#?}"
        );
        assert!(
            at.contains(&("/requird", "did you mean `required`?")),
            "{got:#?}"
        );
        assert_eq!(got.len(), 4, "{got:#?}");
    }

    #[test]
    fn a_good_schema_has_no_problems() {
        let schema = json!({"type": "object", "required": ["a"],
            "properties": {"a": {"type": ["string", "null"], "pattern": "^x", "x-note": 1}},
            "$defs": {"d": {"anyOf": [{"const": 1}, {"enum": [2, 3]}]}}});
        assert_eq!(problems(&schema), []);
    }
}
