//! The router's configuration room: the typed config (what the user writes),
//! the provider policy (the provider's versioned data), host facts (what the
//! machine has), their parsing and validation. Pure: no I/O, no kernel.
//!
//! `check(config, policy)` is the gate to everything after it: it returns a
//! [`Checked`] config with every value resolved, or every problem at once.

pub mod diag;
pub mod facts;
pub mod line;
pub mod model;
pub mod parse;
pub mod policy;
pub mod units;
pub mod validate;

pub use diag::{has_errors, Diagnostic, Severity};
pub use facts::HostFacts;
pub use model::Config;
pub use parse::{parse_config, parse_facts, parse_policy};
pub use policy::{ProviderPolicy, FACTORY_POLICY};
pub use validate::{check, Checked};

/// The JSON Schema of the router config, as checked in at `docs/config.schema.json`.
pub fn config_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// The JSON Schema of the provider policy, as checked in at `docs/provider-policy.schema.json`.
pub fn policy_schema() -> String {
    let schema = schemars::schema_for!(ProviderPolicy);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
