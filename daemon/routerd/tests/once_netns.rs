//! `routerd --once` against the real kernel, inside a throwaway user and
//! network namespace holding veth ports named like the router's (no root
//! needed; the host's networking is never touched). With `ROUTERD_TRIXIE_ROOT`
//! set (./test.sh does) it also runs with the nft the router ships.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures by design

use std::process::{Command, Output};

use router_sys::netns::in_netns;

fn golden(case: &str, file: &str) -> String {
    format!(
        "{}/../plan/tests/golden/{case}/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-ec", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn routerd(config: &str, facts: &str, nft: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_routerd"))
        .args(["--once", "--config", config, "--facts", facts, "--nft", nft])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn nfts() -> Vec<String> {
    let mut out = vec!["nft".to_string()];
    if let Some(root) = std::env::var_os("ROUTERD_TRIXIE_ROOT") {
        out.push(format!("chroot {} nft", root.to_string_lossy()));
    }
    out
}

#[test]
fn once_applies_verifies_and_is_idempotent_and_refuses_bad_configs_untouched() {
    in_netns(
        "once_applies_verifies_and_is_idempotent_and_refuses_bad_configs_untouched",
        once_applies_verifies_and_is_idempotent_and_refuses_bad_configs_untouched_body,
    );
}

fn once_applies_verifies_and_is_idempotent_and_refuses_bad_configs_untouched_body() {
    for i in ["eth0", "eth1", "eth2"] {
        sh(&format!("ip link add {i} type veth peer name {i}-peer"));
    }
    // In a child namespace the kernel keeps nf_conntrack_max read-only.
    let facts = std::env::temp_dir().join(format!("routerd-facts-{}.toml", std::process::id()));
    std::fs::write(
        &facts,
        "interfaces = [\"eth0\", \"eth1\", \"eth2\"]\nvlan = false\nconntrack_sizing = false\nfq_codel = false\n",
    )
    .unwrap();
    let facts = facts.to_string_lossy().into_owned();
    let config = golden("phones-dedicated-port", "router.toml");
    for nft in nfts() {
        // List with the same nft that loaded: bookworm's nft 1.0.6 crashes
        // listing tables that nft 1.1.3 loaded.
        sh(&format!(
            "{nft} flush ruleset; echo 0 > /proc/sys/net/ipv4/ip_forward"
        ));
        let state = format!(
            "{nft} list ruleset; sysctl -a 2>/dev/null | grep -E '^net\\.ipv4\\.(ip_forward|conf\\.all\\.rp_filter)'"
        );
        let first = routerd(&config, &facts, &nft);
        assert!(first.status.success(), "{nft}: {}", text(&first));
        assert!(
            text(&first).contains("net/ipv4/ip_forward 0 -> 1"),
            "{}",
            text(&first)
        );
        assert!(text(&first).contains("applied and verified"));
        assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
        assert_eq!(sh("cat /proc/sys/net/ipv4/conf/eth2/rp_filter").trim(), "1");
        // Forwarding is written after the ruleset is live (spec F1: never un-NATed).
        let order = text(&first);
        let last_change = order.lines().rfind(|l| l.contains(" -> ")).unwrap();
        assert!(
            last_change.contains("ip_forward"),
            "forwarding was not last:\n{order}"
        );

        let second = routerd(&config, &facts, &nft);
        assert!(second.status.success(), "{}", text(&second));
        assert!(
            text(&second).contains("0 settings changed"),
            "{}",
            text(&second)
        );

        let before = sh(&state);
        let bad = routerd(&golden("refuse-five-mistakes", "router.toml"), &facts, &nft);
        assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
        assert!(
            text(&bad).contains("refused, nothing changed"),
            "{}",
            text(&bad)
        );
        assert!(text(&bad).contains("phones.vlan: 4095"), "{}", text(&bad));
        let after = sh(&state);
        assert!(before.contains("table inet routerd"), "{before}");
        assert_eq!(before, after, "a refused config changed the running state");
    }
    std::fs::remove_file(&facts).ok();
}
