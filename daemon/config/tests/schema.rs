//! The JSON Schemas checked in under `docs/` are generated from the typed
//! config and policy; these tests fail when the code and the files drift apart.
//! `BLESS=1 cargo test -p router-config --test schema` rewrites the files.
//!
//! Also: the example config in `docs/` parses and passes validation against
//! the factory provider policy without a single diagnostic.

use std::path::{Path, PathBuf};

use similar::TextDiff;

const BLESS_HINT: &str = "BLESS=1 cargo test -p router-config --test schema";

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn blessing() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v != "0")
}

/// Compares `generated` with the checked-in file `docs/<name>`, or rewrites the
/// file when blessing. Returns a failure message with a unified diff.
fn compare(name: &str, generated: &str) -> Result<(), String> {
    let path = docs().join(name);
    if blessing() {
        return std::fs::write(&path, generated)
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == generated {
        return Ok(());
    }
    let diff = TextDiff::from_lines(current.as_str(), generated)
        .unified_diff()
        .header(&format!("docs/{name} (checked in)"), "generated")
        .to_string();
    Err(format!(
        "docs/{name} does not match the schema the code generates; \
         if the change is intended, re-bless with `{BLESS_HINT}`:\n{diff}"
    ))
}

#[test]
fn config_schema_is_current() {
    if let Err(msg) = compare("config.schema.json", &router_config::config_schema()) {
        panic!("{msg}");
    }
}

#[test]
fn policy_schema_is_current() {
    if let Err(msg) = compare(
        "provider-policy.schema.json",
        &router_config::policy_schema(),
    ) {
        panic!("{msg}");
    }
}

#[test]
fn example_config_parses_and_passes_the_factory_policy() {
    let path = docs().join("examples/router.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (config, diags) = router_config::parse_config(&text);
    assert!(diags.is_empty(), "docs/examples/router.toml: {diags:?}");
    let config = config.expect("docs/examples/router.toml parses");
    let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
    match router_config::check(config, policy) {
        Ok(checked) => assert!(
            checked.warnings.is_empty(),
            "docs/examples/router.toml: {:?}",
            checked.warnings
        ),
        Err(diags) => panic!("docs/examples/router.toml is refused: {diags:?}"),
    }
}
