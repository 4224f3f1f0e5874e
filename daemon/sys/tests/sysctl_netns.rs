//! `Sysctls` against the real kernel, without root and without touching the
//! host: each test re-executes this binary in a fresh user + network
//! namespace (`unshare -rn`), where `net/ipv4/*` settings are the namespace's
//! own. The parent checks the child passed and the host's forwarding switch
//! did not move. No `unshare -rn` here is a failure, not a skip: this test is
//! the only proof that apply works on a kernel.
#![allow(clippy::unwrap_used)]

use router_plan::sysctl::{Phase, Sysctl};
use router_sys::netns::in_netns;
use router_sys::sysctl::{Change, SysctlError, Sysctls};

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
