//! The `routerctl` binary as a user runs it: exit codes, what it prints, and
//! that `print --part nft` is a script real nft loads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn routerctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("routerctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_accepts_the_example_config() {
    let out = routerctl(&["check", "docs/examples/router.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (0 warnings)"));
}

#[test]
fn check_reports_all_five_mistakes_with_their_paths() {
    let out = routerctl(&[
        "check",
        "daemon/plan/tests/golden/refuse-five-mistakes/router.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for path in [
        "lan.interface:",
        "line.up:",
        "phones.vlan:",
        "port_forwards[0].to:",
        "wifi_calling.dhcp.start:",
    ] {
        assert!(
            err.contains(&format!("error: {path}")),
            "missing {path} in:\n{err}"
        );
    }
    assert_eq!(err.matches("error: ").count(), 5, "{err}");
    assert!(err.contains("refused: 5 errors"), "{err}");
}

#[test]
fn check_against_host_facts_refuses_a_missing_port() {
    let out = routerctl(&[
        "check",
        "daemon/plan/tests/golden/refuse-missing-interface/router.toml",
        "--facts",
        "daemon/plan/tests/golden/refuse-missing-interface/facts.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("phones.interface: interface `eth2` does not exist"));
}

#[test]
fn unreadable_config_is_a_clear_error() {
    let out = routerctl(&["check", "no/such/router.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config no/such/router.toml"));
}

#[test]
fn print_nft_loads_in_real_nft_and_every_rule_has_a_comment() {
    let out = routerctl(&["print", "docs/examples/router.toml", "--part", "nft"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    // Every rule line (inside a chain, or an `add rule`) carries a comment.
    let mut in_chain = false;
    let mut rules = 0;
    for line in script.lines().map(str::trim) {
        if line.starts_with("chain ") {
            in_chain = true;
            continue;
        }
        if line == "}" {
            in_chain = false;
            continue;
        }
        let is_rule = (in_chain && !line.starts_with("type ")) || line.starts_with("add rule ");
        if is_rule && !line.is_empty() {
            rules += 1;
            assert!(
                line.contains(" comment \""),
                "rule without a comment: {line}"
            );
        }
    }
    assert!(rules > 30, "only {rules} rules found");

    // routerctl print ... --part nft | nft -c -f -   (in a throwaway namespace)
    let mut nft = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare and nft are installed (./test.sh installs them)");
    nft.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let res = nft.wait_with_output().expect("nft finishes");
    assert!(
        res.status.success(),
        "nft -c refused the script:\n{}",
        text(&res.stderr)
    );
}

#[test]
fn capacity_of_five_two_is_twenty_calls_and_shows_framing() {
    let out = routerctl(&["capacity", "--down", "5M", "--up", "2M"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.contains("20 calls at the provider's 100.0 kbit/s per call"),
        "{s}"
    );
    assert!(s.contains("22 calls with real G.711 framing"), "{s}");
    let atm = text(
        &routerctl(&[
            "capacity",
            "--down",
            "5M",
            "--up",
            "2M",
            "--framing",
            "adsl-pppoa",
        ])
        .stdout,
    );
    assert!(atm.contains("18 calls with real G.711 framing"), "{atm}");
    assert!(atm.contains("106.0 kbit/s per call"), "{atm}");
    // The tree's upload voice class: 95 % of 2 Mbit/s less bulk's 5 %, at
    // 106 kbit/s and 5 % headroom a call.
    assert!(
        atm.contains("16 calls protected from bulk traffic by the shaper: it shapes the upload at 95% (1.9 Mbit/s) and keeps 95.0 kbit/s for other traffic, 1.805 Mbit/s for voice, 111.3 kbit/s per call with 5% headroom"),
        "{atm}"
    );
    // The download's acknowledgements while those calls are in progress:
    // what routerctl print --part tc shows as class 1:15.
    assert!(
        atm.contains("87.0 kbit/s of the upload's 95.0 kbit/s for other traffic guaranteed to the download's TCP acknowledgements while those 16 calls are in progress"),
        "{atm}"
    );
    // On a symmetric line the download's wider margin decides.
    let fibre = text(&routerctl(&["capacity", "--down", "100M", "--up", "100M"]).stdout);
    assert!(
        fibre.contains("881 calls protected from bulk traffic by the shaper: it shapes the download at 85% (85 Mbit/s)"),
        "{fibre}"
    );
}

#[test]
fn capacity_refuses_a_bad_rate_by_name() {
    let out = routerctl(&["capacity", "--down", "5MB", "--up", "2M"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--down: `5MB`: rates are in bits"));
}

#[test]
fn online_verbs_without_a_running_routerd_say_so_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("control.sock");
    let socket = socket.to_string_lossy();
    for verb in [&["status"][..], &["reload"][..]] {
        let mut args = vec!["--socket", &socket];
        args.extend_from_slice(verb);
        let out = routerctl(&args);
        assert_eq!(out.status.code(), Some(2), "{verb:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("cannot reach routerd at") && err.contains("is it running?"),
            "{err}"
        );
    }
}

#[test]
fn a_dhcp_event_without_its_environment_names_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl"))
        .args([
            "--socket",
            "/nonexistent/control.sock",
            "dhcp-event",
            "bound",
        ])
        .env_clear()
        .output()
        .expect("routerctl runs");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("DHCP client event `bound`"), "{err}");
}
