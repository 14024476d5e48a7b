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

/// Each invalid fixture must fail with exactly the diagnostics in its `.expected` file.
/// `BLESS=1 cargo test --test definitions` rewrites the expectations (review the diff!).
#[test]
fn invalid_fixtures_report_expected_diagnostics() {
    let dir = Path::new("tests/fixtures/invalid");
    let bless = std::env::var_os("BLESS").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 23, "only {} fixtures", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let actual = match definition::load_file(path) {
            Ok(_) => "<loaded without diagnostics>\n".to_owned(),
            Err(diags) => render(&diags),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "--- {}\nexpected:\n{expected}actual:\n{actual}",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
