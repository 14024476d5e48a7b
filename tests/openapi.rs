//! The committed spec is the one the code generates. `BLESS=1 cargo test --test openapi`
//! rewrites it after an intended API change (or `sagaflow openapi > openapi/openapi.yaml`).
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn committed_openapi_spec_matches_the_code() {
    let generated = sagaflow::api::openapi::yaml(&sagaflow::api::openapi_doc());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.yaml");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.yaml is stale: run `BLESS=1 cargo test --test openapi` and commit it"
    );
}

#[test]
fn every_path_template_is_unique_up_to_parameter_names() {
    // OpenAPI forbids `/a/{x}` next to `/a/{y}`: they are the same path.
    let doc = sagaflow::api::openapi_doc();
    let mut shapes: Vec<String> = doc
        .paths
        .paths
        .keys()
        .map(|p| {
            p.split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let n = shapes.len();
    shapes.sort();
    shapes.dedup();
    assert_eq!(shapes.len(), n, "{shapes:?}");
}
