//! The router configuration as the user (or ipnordic's support) writes it, in TOML.
//!
//! Field docs are the user documentation: they end up in the JSON Schema
//! (`docs/config.schema.json`) and in `docs/config.md`. Values that need parsing
//! with a friendly error (rates, durations) stay strings here and are checked by
//! [`crate::validate`], so that one run reports every problem at once.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole router configuration (`/etc/routerd/router.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Config {
    /// Which provider policy this router follows (the `provider` field of the
    /// provider policy file). The policy itself (ranges, ports, domains) is
    /// never copied into this file.
    pub provider: String,
    /// The internet side.
    pub wan: Wan,
    /// The line behind the WAN port: rates and framing, used for QoS and call capacity.
    pub line: Line,
    /// The office data network (PCs).
    pub lan: Lan,
    /// The network for the IP phones.
    pub phones: Phones,
    /// A separate network for mobiles using Wi-Fi calling. Leave it out when the
    /// mobiles share the data LAN; the Wi-Fi-calling rules then apply to the data LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi_calling: Option<WifiCalling>,
    /// Connection-tracking timeouts for voice flows.
    #[serde(default)]
    pub conntrack: Conntrack,
    /// Port forwards from the WAN to hosts on the data LAN. Never to phones (spec F1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<PortForward>,
}

/// The WAN: interface and how it gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Wan {
    /// The WAN interface, e.g. `eth0`.
    pub interface: String,
    /// `dhcp` (default) or `static`.
    #[serde(default)]
    pub mode: WanMode,
    /// Static mode: the router's WAN address with prefix length, e.g. `203.0.113.10/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Net>,
    /// Static mode: the default gateway; must lie inside `address`'s subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Upstream DNS servers. Required in static mode; in DHCP mode they override
    /// the servers the ISP hands out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// Take an IPv6 address and prefix from the ISP (SLAAC/DHCPv6). Off by default.
    #[serde(default)]
    pub ipv6: bool,
}

/// How the WAN gets its IPv4 address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WanMode {
    /// A DHCP client on the WAN interface.
    #[default]
    Dhcp,
    /// `address`, `gateway` and `dns` set by hand.
    Static,
}

/// The line: what the ISP sells, used for shaping and for the call capacity (spec B1-B4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Line {
    /// Download rate, e.g. `5M`, `5 Mbit`, `5000k`, `100000000` (bit/s).
    pub down: String,
    /// Upload rate, same syntax as `down`.
    pub up: String,
    /// Framing of the line, which decides the per-packet overhead on the wire.
    #[serde(default)]
    pub framing: Framing,
    /// Number of concurrent calls to reserve bandwidth for. Default: as many as
    /// the slower direction carries with real G.711 framing on this line
    /// (18 on a 2 Mbit/s ADSL/PPPoA upload; the spec's 100 kbit/s rule gives 20, spec B2).
    pub calls: Option<u32>,
}

/// Line framing; decides the overhead a voice packet carries on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// Ethernet or fibre (Ethernet framing, preamble and inter-frame gap).
    #[default]
    Ethernet,
    /// VDSL2 with PTM (64/65 encoding) and PPPoE.
    VdslPtm,
    /// ADSL with ATM cells and PPPoA (VC-mux).
    AdslPppoa,
    /// ADSL with ATM cells and PPPoE (LLC/SNAP).
    AdslPppoe,
}

/// Which interface a network lives on: a dedicated port, or an 802.1Q VLAN on a parent.
/// Derived from a network's `interface`, `parent` and `vlan` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment<'a> {
    /// `interface`: a dedicated, untagged port.
    pub interface: Option<&'a str>,
    /// `parent`: the port carrying the tagged VLAN.
    pub parent: Option<&'a str>,
    /// `vlan`: the 802.1Q VLAN id.
    pub vlan: Option<u16>,
}

/// A DHCP pool handed out by the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DhcpPool {
    /// First address of the pool.
    pub start: Ipv4Addr,
    /// Last address of the pool.
    pub end: Ipv4Addr,
    /// Lease time, e.g. `12h`, `30m`, `3600s`. Default `12h`.
    #[serde(default = "default_lease")]
    pub lease: String,
}

fn default_lease() -> String {
    "12h".to_string()
}

/// The office data network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Lan {
    /// The data LAN's port, e.g. `eth1` (untagged).
    pub interface: String,
    /// The router's address on the data LAN with prefix length, e.g. `192.168.1.1/24`.
    pub address: Ipv4Net,
    /// The DHCP pool for PCs. Leave out to run no DHCP server on the data LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpPool>,
    /// `open` (default): PCs may reach the internet. `restricted`: only the
    /// provider's PC-software destinations (spec S1-S3), which stay open in both modes.
    #[serde(default)]
    pub egress: LanEgress,
    /// Route IPv6 for this network (no unsolicited inbound either way, spec O1).
    #[serde(default)]
    pub ipv6: bool,
}

/// Outbound policy of the data LAN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LanEgress {
    /// Any outbound connection.
    #[default]
    Open,
    /// Only the provider's software destinations (spec S1-S3).
    Restricted,
}

/// The phone network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Phones {
    /// A dedicated, untagged port for this network, e.g. `eth2`. Give either
    /// this, or `parent` and `vlan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The port carrying this network as a tagged 802.1Q VLAN, e.g. `eth1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The 802.1Q VLAN id (1-4094) on `parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The router's address on the phone network with prefix length, e.g. `10.20.0.1/24`.
    pub address: Ipv4Net,
    /// The DHCP pool for the phones.
    pub dhcp: DhcpPool,
    /// Provisioning URL handed to the phones as DHCP option 66.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_url: Option<String>,
    /// Further DHCP options the phones' vendors read (for example 43, 120, 160).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcp_options: Vec<DhcpOption>,
    /// What the phones may reach outside.
    #[serde(default)]
    pub egress: PhoneEgress,
    /// Route IPv6 for the phones. The provider publishes no IPv6 addresses (spec O1),
    /// so this is off by default and warned about when on.
    #[serde(default)]
    pub ipv6: bool,
}

/// A raw DHCP option handed out on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DhcpOption {
    /// Option code (1-254).
    pub code: u8,
    /// The value as dnsmasq writes it: a quoted string, an address, or hex bytes `01:02`.
    pub value: String,
}

/// Outbound policy of the phone network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PhoneEgress {
    /// The whole provider range on every port, the vendor provisioning domains on
    /// 80/443, DNS and NTP through the router; nothing else.
    #[default]
    Provider,
    /// The provider range only on the spec's port table, plus the vendor domains.
    Strict,
    /// Any outbound connection.
    Open,
}

/// A separate network for Wi-Fi calling (spec W1, W2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WifiCalling {
    /// A dedicated, untagged port for this network, e.g. `eth2`. Give either
    /// this, or `parent` and `vlan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The port carrying this network as a tagged 802.1Q VLAN, e.g. `eth1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The 802.1Q VLAN id (1-4094) on `parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The router's address on this network, e.g. `10.30.0.1/24`.
    pub address: Ipv4Net,
    /// The DHCP pool for the mobiles.
    pub dhcp: DhcpPool,
    /// `open` (default): the mobiles may reach the internet (they need it for
    /// everything but calls). `epdg-only`: only the ePDGs, DNS through the router.
    #[serde(default)]
    pub egress: WifiEgress,
    /// Route IPv6 for this network.
    #[serde(default)]
    pub ipv6: bool,
}

/// Outbound policy of the Wi-Fi-calling network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WifiEgress {
    /// Any outbound connection; the ePDG rules still apply (timeouts, QoS).
    #[default]
    Open,
    /// Only the ePDGs (spec W1).
    EpdgOnly,
}

/// Connection-tracking timeouts for voice flows (spec F3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Conntrack {
    /// UDP timeout for the phones' flows, replied and unreplied (spec F3: at least 300 s).
    #[serde(default = "default_udp_timeout")]
    pub phone_udp_timeout: String,
    /// UDP timeout for IKE/NAT-T flows to the ePDGs (spec W1).
    #[serde(default = "default_udp_timeout")]
    pub epdg_udp_timeout: String,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self {
            phone_udp_timeout: default_udp_timeout(),
            epdg_udp_timeout: default_udp_timeout(),
        }
    }
}

fn default_udp_timeout() -> String {
    "600s".to_string()
}

/// A port forward (DNAT) from the WAN to a host on the data LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PortForward {
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// The WAN port.
    pub port: u16,
    /// The internal host.
    pub to: Ipv4Addr,
    /// The internal port; default: the same as `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<u16>,
}

/// A transport protocol.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name nft and most tools use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Attachment<'_> {
    /// The kernel name of the network's interface: the port, or `parent.vlan`.
    /// `None` when the attachment is incomplete or ambiguous (validation reports it).
    pub fn interface_name(&self) -> Option<String> {
        match (self.interface, self.parent, self.vlan) {
            (Some(i), None, None) => Some(i.to_string()),
            (None, Some(p), Some(v)) => Some(format!("{p}.{v}")),
            _ => None,
        }
    }
}

macro_rules! attached {
    ($ty:ty) => {
        impl $ty {
            /// Where this network is plugged in.
            pub fn attachment(&self) -> Attachment<'_> {
                Attachment {
                    interface: self.interface.as_deref(),
                    parent: self.parent.as_deref(),
                    vlan: self.vlan,
                }
            }
        }
    };
}
attached!(Phones);
attached!(WifiCalling);
