//! The table in docs/protocol.md of exactly which reply fields each step needs,
//! generated from the definitions so it cannot go stale (tests/protocol_doc.rs).

use std::collections::BTreeSet;

use crate::definition::Definition;
use crate::simulate::synthesized_replies;

/// A Markdown table: per saga and step, the success reply types, the fields the saga's
/// templates read from the reply, and the fields its declared schemas require.
pub fn reply_fields_table(defs: &[&Definition]) -> String {
    let mut defs = defs.to_vec();
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from(
        "| saga | step | success reply types | fields its templates read | fields its schemas require |\n|---|---|---|---|---|\n",
    );
    let code = |items: &BTreeSet<String>| {
        if items.is_empty() {
            "—".to_owned()
        } else {
            items
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for def in defs {
        let read = synthesized_replies(def);
        for step in &def.steps {
            let fields: BTreeSet<String> = read
                .get(&step.name)
                .and_then(|r| r.as_object())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let required: BTreeSet<String> = step
                .reply
                .success
                .iter()
                .filter_map(|t| step.reply.schemas.get(t))
                .filter_map(|s| s.schema["required"].as_array())
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            let types: BTreeSet<String> = step.reply.success.iter().cloned().collect();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                def.name,
                step.name,
                code(&types),
                code(&fields),
                code(&required)
            ));
        }
    }
    out
}
