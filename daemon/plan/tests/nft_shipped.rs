//! The golden rulesets against the nft the router ships (Debian trixie, nft
//! 1.1.3), run from the trixie root filesystem that `./test.sh` builds and
//! names in `ROUTERD_TRIXIE_ROOT`. Each check runs in a fresh user and network
//! namespace, so it never touches the machine's own networking.
//!
//! Without `ROUTERD_TRIXIE_ROOT` these tests say so and stop: `cargo test`
//! alone still checks every ruleset with the host's nft (tests/golden.rs).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures by design

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

fn trixie_root() -> Option<PathBuf> {
    match std::env::var_os("ROUTERD_TRIXIE_ROOT") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.join("usr/sbin/nft").exists(),
                "ROUTERD_TRIXIE_ROOT={} has no usr/sbin/nft: build it with image/trixie-root.sh",
                p.display()
            );
            Some(p)
        }
        None => {
            eprintln!("skipped: ROUTERD_TRIXIE_ROOT is not set (./test.sh sets it)");
            None
        }
    }
}

/// Runs `script` (sh) inside the trixie root, in a fresh user + network namespace.
/// `files` are copied into the root's /tmp first.
fn in_trixie(root: &Path, files: &[(&str, &str)], script: &str) -> (bool, String) {
    let dir = tempdir_in(root);
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let inner = format!("/tmp/{}", dir.file_name().unwrap().to_string_lossy());
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "chroot"])
        .arg(root)
        .args(["sh", "-ec", &format!("cd {inner}\n{script}")])
        .output()
        .expect("unshare and chroot run");
    std::fs::remove_dir_all(&dir).ok();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn tempdir_in(root: &Path) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = root.join("tmp").join(format!(
        "routerd-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn golden_rulesets() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path().join("expected.nft");
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path.display().to_string(), text))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_golden_ruleset_passes_the_shipped_nft() {
    let Some(root) = trixie_root() else { return };
    let (ok, version) = in_trixie(&root, &[], "nft --version");
    assert!(ok && version.contains("v1.1."), "unexpected nft: {version}");
    let rulesets = golden_rulesets();
    assert!(rulesets.len() >= 5);
    for (path, text) in rulesets {
        let (ok, out) = in_trixie(&root, &[("r.nft", &text)], "nft -c -f r.nft");
        assert!(ok, "{path}: nft 1.1.3 refused it:\n{out}");
    }
}

/// Loading the example ruleset for real: the ct timeout policy lists back
/// with its values (spec F3), a second load replaces the table with no change,
/// and an address dnsmasq put in the vendor set survives the replace.
#[test]
fn replacing_the_ruleset_is_idempotent_and_keeps_learned_addresses() {
    let Some(root) = trixie_root() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/example/expected.nft");
    let script = std::fs::read_to_string(path).unwrap();
    let (ok, out) = in_trixie(
        &root,
        &[("r.nft", &script)],
        "nft -f r.nft
         nft add element inet routerd_dns vendor_v4 '{ 192.0.2.7 }'
         nft -f r.nft
         nft list ruleset | sed 's/ expires [^ }]*//' > first
         nft -f r.nft
         nft list ruleset | sed 's/ expires [^ }]*//' > second
         cmp first second && echo SAME
         cat second",
    );
    assert!(ok, "loading failed:\n{out}");
    assert!(
        out.contains("SAME"),
        "a second replace changed the ruleset:\n{out}"
    );
    assert!(
        out.contains("policy = { unreplied : 10m, replied : 10m }"),
        "the phone UDP timeout policy did not list back:\n{out}"
    );
    assert!(
        out.contains("elements = { 192.0.2.7"),
        "the vendor address learned from DNS was wiped by the replace:\n{out}"
    );
    assert!(!out.contains("ct helper set"), "{out}");
}

/// The dnsmasq configuration the plan writes is accepted by the shipped dnsmasq.
#[test]
fn the_dnsmasq_config_passes_the_shipped_dnsmasq() {
    let Some(root) = trixie_root() else { return };
    let text = include_str!("../../../docs/examples/router.toml");
    let (config, diags) = router_config::parse_config(text);
    assert!(diags.is_empty(), "{diags:?}");
    let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
    let checked = router_config::check(config.unwrap(), policy).unwrap();
    let mut facts = router_config::HostFacts::assumed(["eth0".into(), "eth1".into()]);
    facts.state_dir = "/tmp".into();
    facts.run_dir = "/tmp".into();
    let plan = router_plan::compile(&checked, &facts).unwrap();
    let (ok, out) = in_trixie(
        &root,
        &[("dnsmasq.conf", &plan.dhcp.dnsmasq_conf)],
        "dnsmasq --version | head -1; dnsmasq --test --conf-file=dnsmasq.conf",
    );
    assert!(ok && out.contains("syntax check OK"), "{out}");
    assert!(out.contains("Dnsmasq version 2.9"), "{out}");
}
