//! The variables templates see, serialized straight from the instance into minijinja's
//! values. Building them as a `serde_json::Value` first cloned the input and every
//! reply for each message rendered (docs/benchmarks.md, profiles). Keys come out in the
//! order that tree had (sorted), so nothing a template can observe changes.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;

use super::instance::Instance;
use crate::definition::Definition;
use crate::definition::template::Context;

/// `{input, saga: {id, key, name}, steps: {<name>: {reply}}}` of `inst`.
pub(super) fn context(inst: &Instance, def: &Definition) -> Context {
    Context::of(&Vars { inst, def })
}

struct Vars<'a> {
    inst: &'a Instance,
    def: &'a Definition,
}

impl Serialize for Vars<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("input", &self.inst.input)?;
        m.serialize_entry("saga", &Saga(self))?;
        m.serialize_entry("steps", &Steps(self))?;
        m.end()
    }
}

struct Saga<'a>(&'a Vars<'a>);

impl Serialize for Saga<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("id", &self.0.inst.id.to_string())?;
        m.serialize_entry("key", &self.0.inst.key)?;
        m.serialize_entry("name", &self.0.def.name)?;
        m.end()
    }
}

struct Steps<'a>(&'a Vars<'a>);

impl Serialize for Steps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut steps: Vec<(&str, Option<&Json>)> = self
            .0
            .inst
            .steps
            .iter()
            .zip(&self.0.def.steps)
            .map(|(state, def)| (def.name.as_str(), state.reply.as_ref()))
            .collect();
        steps.sort_unstable_by_key(|(name, _)| *name);
        let mut m = s.serialize_map(Some(steps.len()))?;
        for (name, reply) in steps {
            m.serialize_entry(name, &Reply(reply))?;
        }
        m.end()
    }
}

/// `{"reply": …}`: the step's success reply, or `{}` when it has none.
struct Reply<'a>(Option<&'a Json>);

impl Serialize for Reply<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Empty;
        impl Serialize for Empty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_map(Some(0))?.end()
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        match self.0 {
            Some(reply) => m.serialize_entry("reply", reply)?,
            None => m.serialize_entry("reply", &Empty)?,
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    /// The same values as the JSON tree the engine used to build, to the byte.
    #[test]
    fn the_context_is_the_json_the_engine_used_to_build() {
        let (defs, diags) = crate::definition::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sagas"
        )));
        assert!(diags.is_empty(), "{diags:?}");
        let def = defs
            .iter()
            .find(|d| d.name == "order-fulfilment")
            .unwrap_or_else(|| panic!("order-fulfilment"));
        let input =
            json!({"order_id": "o-1", "items": [{"sku": "A", "quantity": 1}], "amount": 1.5});
        let mut inst = Instance::new(
            Uuid::now_v7(),
            def,
            input.clone(),
            Some("k-1".into()),
            Utc::now(),
        );
        inst.steps[0].reply = Some(json!({"reservation_id": "r-1"}));
        let mut steps = serde_json::Map::new();
        for (state, d) in inst.steps.iter().zip(&def.steps) {
            let reply = state.reply.clone().unwrap_or_else(|| json!({}));
            steps.insert(d.name.clone(), json!({ "reply": reply }));
        }
        let tree = json!({
            "input": input,
            "saga": { "id": inst.id.to_string(), "name": def.name, "key": inst.key },
            "steps": steps,
        });
        let as_text = |c: &Context| c.to_json_text();
        assert_eq!(as_text(&context(&inst, def)), as_text(&Context::new(&tree)));
    }
}
