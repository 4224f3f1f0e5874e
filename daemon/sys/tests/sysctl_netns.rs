//! `Sysctls` against the real kernel, without root and without touching the
//! host: each test re-executes this binary in a fresh user + network
//! namespace (`unshare -rn`), where `net/ipv4/*` settings are the namespace's
//! own. The parent checks the child passed and the host's forwarding switch
//! did not move. No `unshare -rn` here is a failure, not a skip: this test is
//! the only proof that apply works on a kernel.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use router_plan::sysctl::{Phase, Sysctl};
use router_sys::sysctl::{Change, SysctlError, Sysctls};

/// Set in the child: run the body instead of spawning.
const IN_NETNS: &str = "ROUTERD_IN_NETNS";
/// Printed by the child after its body passed, so a child that ran no test
/// (a wrong filter) cannot look like success.
const MARKER: &str = "ROUTERD-NETNS-BODY-PASSED";

const FORWARD: &str = "net/ipv4/ip_forward";
const RP: &str = "net/ipv4/conf/all/rp_filter";

fn set(path: &str, value: &str, phase: Phase) -> Sysctl {
    Sysctl {
        path: path.into(),
        value: value.into(),
        reason: "netns test".into(),
        phase,
    }
}

/// Runs `body` in a private network namespace: in the child directly, in the
/// parent by re-executing this test binary under `unshare -rn`.
fn in_netns(test: &str, body: fn()) {
    if std::env::var_os(IN_NETNS).is_some() {
        body();
        println!("{MARKER} {test}");
        return;
    }
    let host = Sysctls::default();
    let host_forward = host.read(FORWARD).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `unshare` (util-linux) for {test}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{test} failed in `unshare -rn` ({}). If unshare itself failed, unprivileged \
         user namespaces are not permitted here (user.max_user_namespaces, \
         kernel.unprivileged_userns_clone, AppArmor restrict_unprivileged_userns) \
         and this test cannot prove apply against the kernel.\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("{MARKER} {test}")),
        "{test}: the child exited 0 without running the body\n--- stdout\n{stdout}"
    );
    assert_eq!(
        host.read(FORWARD).unwrap(),
        host_forward,
        "the host's own {FORWARD} changed"
    );
}

#[test]
fn applies_forwarding_and_rp_filter_in_a_private_namespace() {
    in_netns(
        "applies_forwarding_and_rp_filter_in_a_private_namespace",
        || {
            let kernel = Sysctls::default();
            let wanted = [
                set(RP, "1", Phase::BeforeFirewall),
                set(FORWARD, "1", Phase::AfterFirewall),
            ];
            let rp_old = kernel.read(RP).unwrap();
            let forward_old = kernel.read(FORWARD).unwrap();
            kernel.apply(&wanted, Phase::BeforeFirewall).unwrap();
            kernel.apply(&wanted, Phase::AfterFirewall).unwrap();
            assert_eq!(kernel.read(RP).unwrap(), "1");
            assert_eq!(kernel.read(FORWARD).unwrap(), "1");
            assert_eq!(kernel.verify(&wanted), []);
            // The kernel agrees that nothing differs any more.
            assert_eq!(kernel.apply(&wanted, Phase::BeforeFirewall).unwrap(), []);
            assert_eq!(kernel.apply(&wanted, Phase::AfterFirewall).unwrap(), []);
            println!("rp_filter {rp_old} -> 1, ip_forward {forward_old} -> 1");
        },
    );
}

#[test]
fn a_value_the_kernel_refuses_undoes_the_earlier_writes() {
    in_netns(
        "a_value_the_kernel_refuses_undoes_the_earlier_writes",
        || {
            let kernel = Sysctls::default();
            let rp_old = kernel.read(RP).unwrap();
            let rp_new = if rp_old == "2" { "1" } else { "2" };
            let forward_old = kernel.read(FORWARD).unwrap();
            let wanted = [
                set(RP, rp_new, Phase::BeforeFirewall),
                set(FORWARD, "yes", Phase::BeforeFirewall),
            ];
            let err = kernel.apply(&wanted, Phase::BeforeFirewall).unwrap_err();
            let SysctlError::Write { path, restore, .. } = &err else {
                panic!("expected the kernel to refuse the write, got {err}");
            };
            assert_eq!(path, FORWARD);
            assert_eq!(restore.restored, [RP], "{err}");
            assert_eq!(kernel.read(RP).unwrap(), rp_old);
            assert_eq!(kernel.read(FORWARD).unwrap(), forward_old);
            // What a missing interface looks like on a real kernel.
            let err = kernel.read("net/ipv4/conf/nosuch0/rp_filter").unwrap_err();
            assert!(err.to_string().contains("interface nosuch0"), "{err}");
            // And a change is reported with the kernel's own old value.
            let back = [set(RP, rp_new, Phase::BeforeFirewall)];
            let changes = kernel.apply(&back, Phase::BeforeFirewall).unwrap();
            assert_eq!(
                changes,
                [Change {
                    path: RP.into(),
                    old: rp_old,
                    new: rp_new.into()
                }]
            );
        },
    );
}
