//! The generated dnsmasq file is real dnsmasq syntax: the real binary checks
//! it (`dnsmasq --test`). Needs dnsmasq installed (`apt-get install
//! dnsmasq-base`); without it this test fails rather than pass unchecked.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use router_config::model::{DhcpOption, WanMode};
use router_config::{Config, HostFacts};

fn example() -> Config {
    let text = include_str!("../../../docs/examples/router.toml");
    let (cfg, diags) = router_config::parse_config(text);
    assert!(diags.is_empty(), "{diags:?}");
    cfg.expect("the example config parses")
}

/// A fresh directory under Cargo's per-target temp dir, with the state and
/// run dirs the plan points dnsmasq at.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dnsmasq_syntax")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["state", "run"] {
        std::fs::create_dir_all(dir.join(sub)).expect("create temp dir");
    }
    std::fs::write(dir.join("run/resolv.conf.wan"), "nameserver 192.0.2.53\n")
        .expect("write resolv");
    dir
}

/// dnsmasq lives in /usr/sbin on Debian, which is not always on a user's PATH.
fn dnsmasq() -> PathBuf {
    [
        "/usr/sbin/dnsmasq",
        "/sbin/dnsmasq",
        "/usr/local/sbin/dnsmasq",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("dnsmasq"))
}

fn check_syntax(name: &str, cfg: Config) {
    let dir = scratch(name);
    let policy = router_config::parse_policy(router_config::FACTORY_POLICY).expect("policy");
    let checked = router_config::check(cfg, policy).expect("config checks");
    let mut facts = HostFacts::assumed(["eth0".into(), "eth1".into(), "eth2".into()]);
    facts.state_dir = dir.join("state").display().to_string();
    facts.run_dir = dir.join("run").display().to_string();
    let plan = router_plan::compile(&checked, &facts).expect("plan compiles");
    let conf = dir.join("dnsmasq.conf");
    std::fs::write(&conf, &plan.dhcp.dnsmasq_conf).expect("write dnsmasq.conf");

    let output = Command::new(dnsmasq())
        .arg("--test")
        .arg(format!("--conf-file={}", conf.display()))
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "dnsmasq not found: install it (`apt-get install -y dnsmasq-base`) to check the generated config"
        ),
        Err(e) => panic!("running dnsmasq --test: {e}"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.contains("syntax check OK"),
        "dnsmasq rejected {}:\n{said}\n--- file ---\n{}",
        conf.display(),
        plan.dhcp.dnsmasq_conf
    );
}

#[test]
fn example_config_is_valid_dnsmasq() {
    check_syntax("example", example());
}

/// Static WAN with its own servers, a dedicated phone port, IPv6 on, and
/// raw vendor options: every optional line group at once.
#[test]
fn every_optional_line_is_valid_dnsmasq() {
    let mut cfg = example();
    cfg.wan.mode = WanMode::Static;
    cfg.wan.address = Some("203.0.113.10/24".parse().expect("net"));
    cfg.wan.gateway = Some("203.0.113.1".parse().expect("ip"));
    cfg.wan.dns = vec![
        "9.9.9.9".parse().expect("ip"),
        "2620:fe::fe".parse().expect("ip"),
    ];
    cfg.wan.ipv6 = true;
    cfg.lan.ipv6 = true;
    cfg.phones.ipv6 = true;
    cfg.phones.parent = None;
    cfg.phones.vlan = None;
    cfg.phones.interface = Some("eth2".into());
    cfg.phones.dhcp_options = vec![
        DhcpOption {
            code: 160,
            value: "\"http://prov.example/cfg\"".into(),
        },
        DhcpOption {
            code: 43,
            value: "01:04:de:ad:be:ef".into(),
        },
    ];
    check_syntax("every_option", cfg);
}
