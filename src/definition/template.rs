//! Payload templates: JSON-shaped values whose strings may contain minijinja.
//!
//! A string that is exactly one `{{ expr }}` is evaluated as an expression and keeps
//! its JSON type; any other string containing `{{` or `{%` renders to a string.
//! Undefined values are errors (strict mode) so a typo never becomes an empty string,
//! and every evaluation is bounded by fuel so a definition cannot loop forever.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use minijinja::{Environment, Expression, UndefinedBehavior, Value};
use serde_json::Value as Json;

/// Upper bound on the work one template evaluation may do (minijinja fuel units).
pub const TEMPLATE_FUEL: u64 = 50_000;

/// A compiled-on-load, JSON-shaped template.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A value with no template syntax in it: rendered as is.
    Literal(Json),
    /// A string that is exactly one `{{ expr }}`: evaluated, keeps its JSON type.
    Expr(String),
    /// A string mixing text and template syntax: rendered to a string.
    Text(String),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

/// Why a template could not be rendered at run time.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct RenderError {
    /// Where in the template the failing string sits, such as `payload.items[0]`.
    pub path: String,
    #[source]
    pub source: minijinja::Error,
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env
    })
}

/// A template context converted to minijinja's values once: converting the whole
/// context (input and every reply) for each expression was most of a transition's cost
/// (docs/benchmarks.md, engine profile).
#[derive(Debug, Clone)]
pub struct Context(Value);

impl Context {
    pub fn new(context: &Json) -> Context {
        Context::of(context)
    }

    /// Any serializable value as the context (the engine serializes its instance
    /// straight in, without a JSON tree in between).
    pub fn of<T: serde::Serialize>(context: &T) -> Context {
        Context(Value::from(minijinja::value::Serde(context)))
    }

    /// The context as JSON text (for comparing contexts in tests).
    pub fn to_json_text(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }
}

type Compiled = Arc<Expression<'static, 'static>>;

/// Distinct expressions kept compiled; past this the cache starts over (reloads that
/// keep changing expressions cannot grow it without bound).
const COMPILED_CACHE_MAX: usize = 4096;

/// `expr` compiled once per process: rendering used to parse each expression again for
/// every message (docs/benchmarks.md, engine profile).
fn compiled(expr: &str) -> Result<Compiled, minijinja::Error> {
    static CACHE: OnceLock<RwLock<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.read().unwrap_or_else(|p| p.into_inner()).get(expr) {
        return Ok(hit.clone());
    }
    let fresh = Arc::new(environment().compile_expression_owned(expr.to_owned())?);
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= COMPILED_CACHE_MAX {
        cache.clear();
    }
    cache.insert(expr.to_owned(), fresh.clone());
    Ok(fresh)
}

/// If `s` is exactly one `{{ expr }}` (surrounding whitespace allowed), the expression.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    // `{{ a }} and {{ b }}` starts and ends with braces but is text.
    if inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    (!inner.is_empty()).then_some(inner)
}

fn has_template_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

impl Template {
    /// Classifies a JSON value's strings. Never fails: syntax is checked by [`Template::check`].
    pub fn from_json(value: &Json) -> Template {
        match value {
            Json::String(s) => match single_expression(s) {
                Some(expr) => Template::Expr(expr.to_owned()),
                None if has_template_syntax(s) => Template::Text(s.clone()),
                None => Template::Literal(value.clone()),
            },
            Json::Array(items) => Template::Array(items.iter().map(Template::from_json).collect()),
            Json::Object(map) => Template::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Template::from_json(v)))
                    .collect(),
            ),
            other => Template::Literal(other.clone()),
        }
    }

    /// An expression template (used for `when:` and trigger keys).
    pub fn expression(expr: &str) -> Template {
        Template::Expr(expr.trim().to_owned())
    }

    /// Compiles every string, returning the first syntax error, and collects the
    /// variable paths the template reads (`input.x`, `steps.reserve.reply.id`, …).
    pub fn check(&self) -> Result<BTreeSet<String>, minijinja::Error> {
        let mut vars = BTreeSet::new();
        self.check_into(&mut vars)?;
        Ok(vars)
    }

    fn check_into(&self, vars: &mut BTreeSet<String>) -> Result<(), minijinja::Error> {
        let env = environment();
        match self {
            Template::Literal(_) => {}
            Template::Expr(expr) => {
                let compiled = env.compile_expression(expr)?;
                vars.extend(compiled.undeclared_variables(true));
            }
            Template::Text(text) => {
                let compiled = env.template_from_str(text)?;
                vars.extend(compiled.undeclared_variables(true));
            }
            Template::Array(items) => {
                for item in items {
                    item.check_into(vars)?;
                }
            }
            Template::Object(entries) => {
                for (_, item) in entries {
                    item.check_into(vars)?;
                }
            }
        }
        Ok(())
    }

    /// Renders against a JSON context (`{input, steps, saga, event}`).
    pub fn render(&self, context: &Json) -> Result<Json, RenderError> {
        self.render_in(&Context::new(context))
    }

    /// Renders against a context converted once for several templates.
    pub fn render_in(&self, context: &Context) -> Result<Json, RenderError> {
        self.render_at(&context.0, &mut String::new())
    }

    fn render_at(&self, context: &Value, path: &mut String) -> Result<Json, RenderError> {
        let env = environment();
        let fail = |path: &str, source| RenderError {
            path: if path.is_empty() {
                "value".into()
            } else {
                path.to_owned()
            },
            source,
        };
        match self {
            Template::Literal(v) => Ok(v.clone()),
            Template::Expr(expr) => {
                let value = compiled(expr)
                    .and_then(|e| e.eval(context.clone()))
                    .map_err(|e| fail(path, e))?;
                if value.is_undefined() {
                    let err = minijinja::Error::new(
                        minijinja::ErrorKind::UndefinedError,
                        format!("`{expr}` is undefined"),
                    );
                    return Err(fail(path, err));
                }
                serde_json::to_value(&value).map_err(|e| {
                    fail(
                        path,
                        minijinja::Error::new(
                            minijinja::ErrorKind::BadSerialization,
                            e.to_string(),
                        ),
                    )
                })
            }
            Template::Text(text) => env
                .render_str(text, context.clone())
                .map(Json::String)
                .map_err(|e| fail(path, e)),
            Template::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(item.render_at(context, path)?);
                    path.truncate(len);
                }
                Ok(Json::Array(out))
            }
            Template::Object(entries) => {
                let mut out = serde_json::Map::with_capacity(entries.len());
                for (key, item) in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    out.insert(key.clone(), item.render_at(context, path)?);
                    path.truncate(len);
                }
                Ok(Json::Object(out))
            }
        }
    }

    /// Evaluates as a condition: true when the rendered value is truthy.
    pub fn truthy(&self, context: &Json) -> Result<bool, RenderError> {
        self.truthy_in(&Context::new(context))
    }

    /// [`Template::truthy`] against a context converted once.
    pub fn truthy_in(&self, context: &Context) -> Result<bool, RenderError> {
        let value = self.render_in(context)?;
        Ok(match value {
            Json::Null => false,
            Json::Bool(b) => b,
            Json::Number(n) => n.as_f64() != Some(0.0),
            Json::String(s) => !s.is_empty(),
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Json {
        json!({"input": {"qty": 3, "items": [1, 2], "name": "Ada", "vip": true},
               "steps": {"reserve": {"reply": {"id": "r-1"}}},
               "saga": {"id": "s-1"}})
    }

    #[test]
    fn single_expression_keeps_json_type() {
        let t = Template::from_json(
            &json!({"q": "{{ input.qty }}", "i": "{{input.items}}", "v": "{{ input.vip }}"}),
        );
        assert_eq!(
            t.render(&ctx()).expect("renders"),
            json!({"q": 3, "i": [1, 2], "v": true})
        );
    }

    #[test]
    fn mixed_text_renders_to_string() {
        let t = Template::from_json(&json!("order {{ input.name | upper }} x{{ input.qty }}"));
        assert_eq!(t.render(&ctx()).expect("renders"), json!("order ADA x3"));
    }

    #[test]
    fn two_expressions_are_text_not_one_expression() {
        let t = Template::from_json(&json!("{{ input.qty }}-{{ input.qty }}"));
        assert_eq!(t, Template::Text("{{ input.qty }}-{{ input.qty }}".into()));
        assert_eq!(t.render(&ctx()).expect("renders"), json!("3-3"));
    }

    #[test]
    fn missing_value_is_an_error_with_its_path() {
        let t = Template::from_json(&json!({"a": {"b": ["{{ input.nope }}"]}}));
        let err = t.render(&ctx()).expect_err("undefined");
        assert_eq!(err.path, "a.b[0]");
        let t = Template::from_json(&json!("x {{ input.nope }}"));
        assert!(t.render(&ctx()).is_err());
    }

    #[test]
    fn check_reports_syntax_errors_and_variables() {
        let t = Template::from_json(
            &json!({"a": "{{ steps.reserve.reply.id }}", "b": "{{ input.qty }}"}),
        );
        let vars = t.check().expect("valid");
        assert!(vars.contains("steps.reserve.reply.id"), "{vars:?}");
        assert!(vars.contains("input.qty"), "{vars:?}");
        assert!(
            Template::from_json(&json!("{{ input.qty + }}"))
                .check()
                .is_err()
        );
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = Template::from_json(&json!(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
        ));
        assert!(t.render(&ctx()).is_err());
    }

    #[test]
    fn conditions_are_truthy() {
        assert!(
            Template::expression("input.vip")
                .truthy(&ctx())
                .expect("ok")
        );
        assert!(
            !Template::expression("input.qty > 5")
                .truthy(&ctx())
                .expect("ok")
        );
    }
}
