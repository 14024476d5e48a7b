//! docs/protocol.md's table of the reply fields each example step needs is generated
//! from the definitions: this test fails when it is stale, and `BLESS=1 cargo test
//! --test protocol_doc` rewrites it.
#![allow(clippy::unwrap_used)]

mod support;

use sagaflow::contract::reply_fields_table;
use sagaflow::definition;

const BEGIN: &str = "<!-- reply-fields:begin -->\n";
const END: &str = "<!-- reply-fields:end -->";

#[test]
fn the_reply_fields_table_matches_the_example_sagas() {
    let (defs, diags) = definition::load_dir(&support::repo_path("sagas"));
    assert!(diags.is_empty(), "{diags:?}");
    let defs: Vec<&definition::Definition> = defs.iter().collect();
    let table = reply_fields_table(&defs);
    let path = support::repo_path("docs/protocol.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(BEGIN)
        .expect("protocol.md has the reply-fields markers")
        + BEGIN.len();
    let end = text[start..].find(END).unwrap() + start;
    if std::env::var_os("BLESS").is_some() {
        let updated = format!("{}{table}{}", &text[..start], &text[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &text[start..end],
        table,
        "docs/protocol.md is stale: run BLESS=1 cargo test --test protocol_doc"
    );
    // Each row names its fields: a step whose replies are read has them listed.
    assert!(table.contains("| order-fulfilment | reserve_stock | `inventory.stock_reserved` | `reservation_id` | `reservation_id` |"), "{table}");
}
