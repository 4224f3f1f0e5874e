//! Host facts: what the plan needs to know about the machine it will run on.
//! `routerd` reads them from the kernel; tests and `routerctl print --facts`
//! give them as a file. They are the only thing tests mock.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Facts about the host the plan is compiled for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// Network interfaces present (physical ports), e.g. `["eth0", "eth1"]`.
    pub interfaces: Vec<String>,
    /// The kernel can make 802.1Q VLAN devices (8021q).
    #[serde(default = "yes")]
    pub vlan: bool,
    /// Memory in MiB; sizes the connection-tracking table.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// routerd runs in the machine's own network namespace and may size the
    /// machine-wide conntrack table. In a child namespace the kernel makes
    /// `nf_conntrack_max` read-only, even for root, so it is left alone there.
    #[serde(default = "yes")]
    pub conntrack_sizing: bool,
    /// The WAN has an IPv4 address (static, or a DHCP lease). While it has
    /// none, the phones' traffic to the WAN is held back: a flow that went out
    /// before NAT had an address would stay tied to a stale mapping and the
    /// phone would never re-register.
    #[serde(default = "yes")]
    pub wan_up: bool,
    /// The kernel has the fq_codel queue discipline. The shaper's classes
    /// then queue in fq_codel (fair queueing with AQM); without it they fall
    /// back to plain FIFOs and the plan warns.
    #[serde(default = "yes")]
    pub fq_codel: bool,
    /// Where routerd keeps state that survives reboots (DHCP leases).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Where routerd keeps run-time files (the generated dnsmasq config, the WAN's DNS servers).
    #[serde(default = "default_run_dir")]
    pub run_dir: String,
}

fn yes() -> bool {
    true
}
fn default_memory() -> u32 {
    512
}
fn default_state_dir() -> String {
    "/var/lib/routerd".into()
}
fn default_run_dir() -> String {
    "/run/routerd".into()
}

impl HostFacts {
    /// Facts assumed when none are given (offline `routerctl print`): every
    /// interface the config names exists, VLANs work, 512 MiB of memory,
    /// fq_codel is available.
    pub fn assumed(interfaces: impl IntoIterator<Item = String>) -> Self {
        let mut interfaces: Vec<String> = interfaces.into_iter().collect();
        interfaces.sort();
        interfaces.dedup();
        Self {
            interfaces,
            vlan: true,
            memory_mib: default_memory(),
            conntrack_sizing: true,
            wan_up: true,
            fq_codel: true,
            state_dir: default_state_dir(),
            run_dir: default_run_dir(),
        }
    }
}
