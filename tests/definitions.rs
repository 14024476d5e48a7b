#![allow(clippy::unwrap_used)]
//! Loading the example sagas and the invalid fixtures.

use std::path::Path;

use sagaflow::definition::{self, Definition, diagnostic::render};

fn examples() -> Vec<Definition> {
    let (defs, diags) = definition::load_dir(Path::new("sagas"));
    assert!(diags.is_empty(), "{}", render(&diags));
    defs
}

#[test]
fn example_sagas_load_cleanly() {
    let names: Vec<String> = examples().into_iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        ["order-fulfilment", "subscription-signup", "trip-booking"]
    );
}
