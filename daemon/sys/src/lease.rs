//! The WAN's DHCP lease as the DHCP client reports it. The client (busybox
//! udhcpc, supervised by routerd) runs a small script at each event; the
//! script hands the event to routerd over its control socket, and routerd
//! applies the address and route itself.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// An IPv4 lease on the WAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanLease {
    /// The address with its prefix length.
    pub address: Ipv4Net,
    /// The default gateway (DHCP option 3), if the server gave one.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers (option 6), in the server's order.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51).
    pub lease_secs: Option<u32>,
    /// The DHCP server that granted it (option 54).
    pub server: Option<Ipv4Addr>,
}

/// One event of the WAN DHCP client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event", content = "lease")]
pub enum DhcpEvent {
    /// The client has no lease (at its start, and when a lease is lost).
    Deconfig,
    /// A new lease.
    Bound(WanLease),
    /// The lease was renewed (its address may have changed).
    Renew(WanLease),
    /// No server answered.
    Leasefail,
    /// The server refused the address the client asked for.
    Nak,
}
