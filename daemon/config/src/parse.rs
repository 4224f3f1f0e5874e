//! Reading TOML into the typed model. Unknown keys are collected (not fatal on
//! their own) so that `routerctl check` reports them together with every other
//! problem; a syntax or type error stops parsing and is reported alone.

use serde::de::DeserializeOwned;

use crate::diag::Diagnostic;
use crate::facts::HostFacts;
use crate::model::Config;
use crate::policy::ProviderPolicy;

/// Parses a router config. Returns the config (if it could be read at all) and
/// one error per unknown key.
pub fn parse_config(text: &str) -> (Option<Config>, Vec<Diagnostic>) {
    parse_collecting(text, "")
}

/// Parses a provider policy file; every problem is an error at `policy.<path>`.
pub fn parse_policy(text: &str) -> Result<ProviderPolicy, Vec<Diagnostic>> {
    strict(text, "policy")
}

/// Parses a host facts file; every problem is an error at `facts.<path>`.
pub fn parse_facts(text: &str) -> Result<HostFacts, Vec<Diagnostic>> {
    strict(text, "facts")
}

fn strict<T: DeserializeOwned>(text: &str, prefix: &str) -> Result<T, Vec<Diagnostic>> {
    match parse_collecting(text, prefix) {
        (Some(v), d) if d.is_empty() => Ok(v),
        (_, d) => Err(d),
    }
}

fn parse_collecting<T: DeserializeOwned>(text: &str, prefix: &str) -> (Option<T>, Vec<Diagnostic>) {
    let join = |path: String| match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    };
    let mut unknown = Vec::new();
    let de = toml::Deserializer::parse(text);
    let de = match de {
        Ok(de) => de,
        Err(e) => return (None, vec![toml_error(&e, text, join(String::new()))]),
    };
    let mut track = serde_path_to_error::Track::new();
    let result = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(de, &mut track),
        |path| unknown.push(path.to_string()),
    );
    match result {
        Ok(value) => {
            let diags = unknown
                .into_iter()
                .map(|path| {
                    let key = path.rsplit('.').next().unwrap_or(&path).to_string();
                    Diagnostic::error(join(path), format!("unknown key `{key}`"))
                })
                .collect();
            (Some(value), diags)
        }
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (None, vec![toml_error(&e, text, join(path))])
        }
    }
}

fn toml_error(e: &toml::de::Error, text: &str, path: String) -> Diagnostic {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let msg = e.message().trim().to_string();
    match line {
        Some(l) => Diagnostic::error(path, format!("{msg} (line {l})")),
        None => Diagnostic::error(path, msg),
    }
}
