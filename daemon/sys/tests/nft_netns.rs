//! nft apply and verify against the real kernel, inside a throwaway user and
//! network namespace (no root needed, the host's ruleset is never touched).
//! Each test re-executes itself under `unshare --user --map-root-user --net`;
//! the body runs only inside. With `ROUTERD_TRIXIE_ROOT` set (./test.sh does)
//! the same body also runs with the nft the router ships, chrooted.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures by design

use router_plan::Plan;
use router_sys::netns::in_netns;
use router_sys::nft::{Nft, NftError};

fn plan(case: &str) -> Plan {
    let dir = format!("{}/../plan/tests/golden/{case}", env!("CARGO_MANIFEST_DIR"));
    let (cfg, diags) = router_config::parse_config(
        &std::fs::read_to_string(format!("{dir}/router.toml")).unwrap(),
    );
    assert!(diags.is_empty(), "{diags:?}");
    let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
    let checked = router_config::check(cfg.unwrap(), policy).unwrap();
    let facts = router_config::HostFacts::assumed(["eth0".into(), "eth1".into(), "eth2".into()]);
    router_plan::compile(&checked, &facts).unwrap()
}

/// The nfts to run the body with: the host's, and the shipped one if present.
fn nfts() -> Vec<Nft> {
    let mut out = vec![Nft::default()];
    if let Some(root) = std::env::var_os("ROUTERD_TRIXIE_ROOT") {
        out.push(Nft::new(vec![
            "chroot".into(),
            root.to_string_lossy().into_owned(),
            "nft".into(),
        ]));
    }
    out
}

fn listing(nft: &Nft) -> String {
    let mut s = String::new();
    for t in ["routerd", "routerd_dns"] {
        s.push_str(&format!("{:?}\n", nft.list(t).unwrap()));
    }
    s
}

#[test]
fn apply_then_verify_replace_and_detect_drift() {
    in_netns(
        "apply_then_verify_replace_and_detect_drift",
        apply_then_verify_replace_and_detect_drift_body,
    );
}

fn apply_then_verify_replace_and_detect_drift_body() {
    for nft in nfts() {
        let example = plan("example");
        let script = example.nft.render();
        nft.apply(&script).unwrap();
        nft.verify(&example.nft).unwrap().unwrap();

        // A different plan replaces the table whole and verifies too.
        let strict = plan("phones-strict");
        nft.apply(&strict.nft.render()).unwrap();
        nft.verify(&strict.nft).unwrap().unwrap();
        // ... and the old plan no longer matches.
        let drift = nft.verify(&example.nft).unwrap().unwrap_err();
        assert!(!drift.0.is_empty());

        // Something outside routerd adds a rule: verify names it.
        nft.apply(&script).unwrap();
        nft.apply("add rule inet routerd input accept comment \"intruder\"\n")
            .unwrap();
        let drift = nft.verify(&example.nft).unwrap().unwrap_err().0.join("\n");
        assert!(drift.contains("rules of chain input"), "{drift}");
        assert!(drift.contains("intruder"), "{drift}");

        // A set element changed behind routerd's back is drift as well.
        nft.apply(&script).unwrap();
        nft.apply("add element inet routerd provider_v4 { 192.0.2.0/24 }\n")
            .unwrap();
        let drift = nft.verify(&example.nft).unwrap().unwrap_err().0.join("\n");
        assert!(drift.contains("set provider_v4"), "{drift}");
        nft.apply(&script).unwrap();
        nft.verify(&example.nft).unwrap().unwrap();
    }
}

#[test]
fn a_refused_script_leaves_the_running_ruleset_byte_identical() {
    in_netns(
        "a_refused_script_leaves_the_running_ruleset_byte_identical",
        a_refused_script_leaves_the_running_ruleset_byte_identical_body,
    );
}

fn a_refused_script_leaves_the_running_ruleset_byte_identical_body() {
    for nft in nfts() {
        let example = plan("example");
        nft.apply(&example.nft.render()).unwrap();
        let before = listing(&nft);
        // The same replace transaction, broken halfway through the table.
        let broken = example.nft.render().replacen(
            "chain lan_to_phones {",
            "chain lan_to_phones {\n\t\tno such statement",
            1,
        );
        let err = nft.apply(&broken).unwrap_err();
        assert!(matches!(err, NftError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("unchanged"), "{err}");
        assert_eq!(
            before,
            listing(&nft),
            "a refused script changed the ruleset"
        );
        nft.verify(&example.nft).unwrap().unwrap();
    }
}

#[test]
fn addresses_learned_from_dns_survive_a_replace() {
    in_netns(
        "addresses_learned_from_dns_survive_a_replace",
        addresses_learned_from_dns_survive_a_replace_body,
    );
}

fn addresses_learned_from_dns_survive_a_replace_body() {
    for nft in nfts() {
        let example = plan("example");
        nft.apply(&example.nft.render()).unwrap();
        nft.apply("add element inet routerd_dns vendor_v4 { 192.0.2.7 }\n")
            .unwrap();
        nft.apply(&example.nft.render()).unwrap();
        let dns = format!("{:?}", nft.list("routerd_dns").unwrap());
        assert!(dns.contains("192.0.2.7"), "{dns}");
        nft.verify(&example.nft).unwrap().unwrap();
    }
}
