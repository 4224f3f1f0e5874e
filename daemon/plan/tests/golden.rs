//! Golden cases, one directory each under `tests/golden/`, in the style of
//! firewall4's test cases:
//!
//! - `case.toml`: `about` (one line) and `proves` (the spec lines it covers);
//! - `router.toml`: the config; `facts.toml` (optional): mocked host facts;
//!   `policy.toml` (optional): a provider policy instead of the factory one;
//! - `expected.diag`: every diagnostic, one per line (empty when none);
//! - `expected.nft`: the nft script; `expected.plan`: links, sysctl, dhcp, ntp
//!   and tc (both absent when the config is refused).
//!
//! A mismatch prints a full diff. `BLESS=1 cargo test -p router-plan --test golden`
//! rewrites the expected files. Every expected ruleset is also loaded with
//! `nft -c -f` inside a throwaway user and network namespace, so what we
//! generate is real nftables.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures by design

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use router_config::{Diagnostic, HostFacts};
use router_plan::{Part, Plan};
use serde::Deserialize;
use similar::TextDiff;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseMeta {
    about: String,
    #[serde(default)]
    proves: Vec<String>,
}

struct Case {
    name: String,
    dir: PathBuf,
    meta: CaseMeta,
}

struct Outcome {
    diags: Vec<Diagnostic>,
    plan: Option<Plan>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).expect("tests/golden exists") {
        let dir = entry.expect("readable dir entry").path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let meta_text = std::fs::read_to_string(dir.join("case.toml"))
            .unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        let meta: CaseMeta =
            toml::from_str(&meta_text).unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        out.push(Case { name, dir, meta });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no golden cases found");
    out
}

fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Runs the real pipeline: parse, check, compile.
fn run(case: &Case) -> Outcome {
    let text = std::fs::read_to_string(case.dir.join("router.toml"))
        .unwrap_or_else(|e| panic!("{}/router.toml: {e}", case.name));
    let policy_text = read_opt(&case.dir.join("policy.toml"))
        .unwrap_or_else(|| router_config::FACTORY_POLICY.to_string());
    let policy = match router_config::parse_policy(&policy_text) {
        Ok(p) => p,
        Err(diags) => return Outcome { diags, plan: None },
    };
    let (config, mut diags) = router_config::parse_config(&text);
    let Some(config) = config else {
        return Outcome { diags, plan: None };
    };
    let checked = match router_config::check(config, policy) {
        Ok(c) if diags.is_empty() => c,
        Ok(c) => {
            diags.extend(c.warnings);
            diags.sort();
            return Outcome { diags, plan: None };
        }
        Err(more) => {
            diags.extend(more);
            diags.sort();
            return Outcome { diags, plan: None };
        }
    };
    let facts = match read_opt(&case.dir.join("facts.toml")) {
        Some(t) => router_config::parse_facts(&t)
            .unwrap_or_else(|d| panic!("{}/facts.toml: {d:?}", case.name)),
        None => HostFacts::assumed(["eth0".into(), "eth1".into(), "eth2".into()]),
    };
    match router_plan::compile(&checked, &facts) {
        Ok(plan) => Outcome {
            diags: plan.warnings.clone(),
            plan: Some(plan),
        },
        Err(diags) => Outcome { diags, plan: None },
    }
}

fn render_diags(diags: &[Diagnostic]) -> String {
    diags.iter().fold(String::new(), |mut s, d| {
        let _ = writeln!(s, "{d}");
        s
    })
}

fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for (name, part) in [
        ("links", Part::Links),
        ("sysctl", Part::Sysctl),
        ("dhcp", Part::Dhcp),
        ("ntp", Part::Ntp),
        ("tc", Part::Tc),
    ] {
        let _ = writeln!(out, "### {name}");
        out.push_str(&plan.render(part));
        out.push('\n');
    }
    out
}

fn blessing() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v != "0")
}

/// Compares `actual` with the file, or rewrites it when blessing. Returns a
/// failure message with the full diff.
fn compare(case: &Case, file: &str, actual: Option<&str>) -> Option<String> {
    let path = case.dir.join(file);
    if blessing() {
        match actual {
            Some(a) => std::fs::write(&path, a).expect("write golden file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        return None;
    }
    let expected = read_opt(&path);
    if expected.as_deref() == actual {
        return None;
    }
    let (e, a) = (
        expected.unwrap_or_default(),
        actual.unwrap_or_default().to_string(),
    );
    let diff = TextDiff::from_lines(&e, &a)
        .unified_diff()
        .header(&format!("expected {}/{file}", case.name), "actual")
        .to_string();
    Some(format!(
        "{}/{file} differs (BLESS=1 re-blesses):\n{diff}",
        case.name
    ))
}

#[test]
fn golden_cases_match() {
    let mut failures = Vec::new();
    for case in cases() {
        let out = run(&case);
        let diags = render_diags(&out.diags);
        let nft = out.plan.as_ref().map(|p| p.render(Part::Nft));
        let plan = out.plan.as_ref().map(render_plan);
        failures.extend(compare(&case, "expected.diag", Some(&diags)));
        failures.extend(compare(&case, "expected.nft", nft.as_deref()));
        failures.extend(compare(&case, "expected.plan", plan.as_deref()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `nft -c -f` on a script in a fresh user + network namespace.
fn nft_check(script: &Path) -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "nft", "-c", "-f"])
        .arg(script)
        .output()
        .map_err(|e| {
            format!("cannot run `unshare ... nft` ({e}): install util-linux and nftables")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -c -f {} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_golden_ruleset_is_real_nftables() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases() {
        let path = case.dir.join("expected.nft");
        if !path.exists() {
            continue;
        }
        checked += 1;
        if let Err(e) = nft_check(&path) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(checked >= 5, "only {checked} golden rulesets found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The checker must be able to fail: a broken script is refused.
#[test]
fn nft_check_refuses_a_broken_ruleset() {
    let dir = std::env::temp_dir().join(format!("routerd-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.nft");
    std::fs::write(
        &path,
        "table inet routerd { chain input { type filter hook input priority filter; policy drop; ip daddr @no_such_set accept } }\n",
    )
    .unwrap();
    let result = nft_check(&path);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        result.is_err(),
        "nft -c accepted a ruleset naming a missing set"
    );
}

#[test]
fn every_rule_names_its_reason_and_no_helper_is_assigned() {
    for case in cases() {
        let Some(plan) = run(&case).plan else {
            continue;
        };
        for table in [&plan.nft.table, &plan.nft.dns_table] {
            for (chain, rule) in table.rules() {
                let at = format!("{}: {}/{chain}: `{}`", case.name, table.name, rule.body);
                assert!(
                    !rule.comment.trim().is_empty(),
                    "{at}: rule without a comment"
                );
                // nft refuses comments longer than 128 bytes.
                assert!(rule.comment.len() <= 128, "{at}: comment over 128 bytes");
                let names_origin = rule.comment.contains("spec ")
                    || rule.comment.contains("policy ")
                    || [
                        "wan",
                        "lan",
                        "phones",
                        "wifi_calling",
                        "conntrack",
                        "port_forwards",
                        "the router",
                    ]
                    .iter()
                    .any(|p| rule.comment.starts_with(p));
                assert!(
                    names_origin,
                    "{at}: comment `{}` names no config path or spec line",
                    rule.comment
                );
            }
        }
        // spec F2: nothing assigns a conntrack helper; the guard only matches one.
        let script = plan.render(Part::Nft);
        assert!(
            !script.contains("ct helper set"),
            "{}: assigns a ct helper",
            case.name
        );
        assert!(
            !script.contains("type \"sip\""),
            "{}: declares a ct helper object",
            case.name
        );
        let guards = script.matches("ct helper \"sip\" counter drop").count();
        assert_eq!(guards, 2, "{}: the SIP helper guard is missing", case.name);
    }
}

/// The coverage table in docs/spec-coverage.md lists, for every spec line,
/// the golden cases that prove it; it must match the cases' `proves` lists.
#[test]
fn spec_coverage_table_is_current() {
    let mut by_line: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in cases() {
        for line in &case.meta.proves {
            by_line
                .entry(line.clone())
                .or_default()
                .push(case.name.clone());
        }
    }
    let mut table = String::from(
        "# Which golden case proves which spec line\n\n\
         Generated from the `proves` lists in `daemon/plan/tests/golden/*/case.toml`\n\
         (`BLESS=1 cargo test -p router-plan --test golden` rewrites it).\n\n\
         | spec line | golden cases |\n|---|---|\n",
    );
    for (line, cases) in &by_line {
        let _ = writeln!(table, "| {line} | {} |", cases.join(", "));
    }
    let mut about = String::from("\n## The cases\n\n| case | what it shows |\n|---|---|\n");
    for case in cases() {
        let _ = writeln!(about, "| {} | {} |", case.name, case.meta.about);
    }
    table.push_str(&about);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/spec-coverage.md");
    if blessing() {
        std::fs::write(&path, &table).unwrap();
        return;
    }
    let current = read_opt(&path).unwrap_or_default();
    assert!(
        current == table,
        "docs/spec-coverage.md is stale (BLESS=1 rewrites it):\n{}",
        TextDiff::from_lines(&current, &table).unified_diff()
    );
    for required in [
        "F1", "F2", "F3", "F4", "F5", "F6", "F7", "W1", "S1", "S2", "S3", "S4", "O1", "O2",
    ] {
        assert!(
            by_line.contains_key(required),
            "no golden case proves spec {required}"
        );
    }
}
