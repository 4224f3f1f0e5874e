//! The provider policy: the provider's own data (address ranges, the port table,
//! vendor provisioning domains, ePDGs, PC-software destinations), versioned and
//! shipped beside the firmware, replaceable without a firmware change (spec O2).
//!
//! The router config names the provider; it never copies these values.

use std::fmt;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Protocol;

/// The policy ipnordic ships with the firmware (its factory copy).
pub const FACTORY_POLICY: &str = include_str!("../provider/ipnordic.toml");

/// One provider's network requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPolicy {
    /// The provider's name; a router config's `provider` must match it.
    pub provider: String,
    /// Version of this data, e.g. `2026.11.1`. Named in the plan and in the generated files.
    pub version: String,
    /// Where the data comes from (the provider's document and its date).
    pub source: String,
    /// Per-call bandwidth in each direction the provider states, e.g. `100k` (spec B1).
    pub per_call: String,
    /// The provider's address ranges: outbound traffic to them is never blocked (spec F5).
    pub provider_ranges: Vec<IpNet>,
    /// What the phone network must reach inside the provider ranges (the spec's port table).
    pub phone_ports: Vec<PhonePort>,
    /// Vendor provisioning servers the phones fetch their profiles from.
    pub vendor_provisioning: VendorProvisioning,
    /// Wi-Fi calling (spec W1).
    pub wifi_calling: WifiCallingPolicy,
    /// Destinations the provider's PC software needs from the data LAN (spec S1-S3).
    pub software: Vec<SoftwareRule>,
}

/// One line of the provider's port table for the phone network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhonePort {
    /// What the port is for, e.g. `SIP` or `provisioning`.
    pub function: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// A port (`5060`) or a range (`"10000-65000"`).
    pub ports: PortRange,
    /// The provider's host name for it, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Vendor provisioning domains, reachable from the phones on a few TCP ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorProvisioning {
    /// TCP ports the phones may use towards these domains, e.g. `[80, 443]`.
    pub tcp_ports: Vec<u16>,
    /// The domains per vendor.
    pub vendors: Vec<Vendor>,
}

/// One phone vendor's provisioning domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vendor {
    /// The vendor, e.g. `snom`.
    pub name: String,
    /// Its provisioning domains; their addresses are learned from DNS at run time.
    pub domains: Vec<String>,
}

/// Wi-Fi calling: the mobile operators' ePDGs (spec W1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WifiCallingPolicy {
    /// ePDG addresses.
    pub epdg: Vec<IpNet>,
    /// The ePDG's host name, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// UDP ports for IKE and NAT-T, e.g. `[500, 4500]`.
    pub udp_ports: Vec<u16>,
    /// IP protocols besides UDP, e.g. `["esp", "ah"]`.
    pub ip_protocols: Vec<IpProtocol>,
    /// Bandwidth of one Wi-Fi call in each direction, e.g. `128k` (spec B4).
    pub per_call: String,
}

/// An IP protocol the policy may name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    /// IPsec Encapsulating Security Payload (50).
    Esp,
    /// IPsec Authentication Header (51).
    Ah,
}

impl IpProtocol {
    /// The nft keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Esp => "esp",
            IpProtocol::Ah => "ah",
        }
    }
}

/// A destination the provider's PC software needs from the data LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoftwareRule {
    /// The spec line, e.g. `S2`.
    pub spec: String,
    /// What it is for, e.g. `Communicator (PC)`.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Destination ports; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
    /// Destination addresses or ranges.
    pub destinations: Vec<IpNet>,
    /// Host names, informational.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// A port or an inclusive port range, written `443` or `"10000-65000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }
}

impl fmt::Display for PortRange {
    /// The nft form: `443` or `10000-65000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
        };
        let range = match s.split_once('-') {
            Some((a, b)) => Self {
                first: port(a)?,
                last: port(b)?,
            },
            None => Self::single(port(s)?),
        };
        if range.first > range.last {
            return Err(format!("`{s}`: the range runs backwards"));
        }
        Ok(range)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .map(PortRange::single)
                .ok_or_else(|| de::Error::custom(format!("{n} is not a port (1-65535)"))),
            Raw::Text(t) => t.parse().map_err(de::Error::custom),
        }
    }
}

impl JsonSchema for PortRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PortRange".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A port (443) or an inclusive range (\"10000-65000\").",
            "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                { "type": "string", "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$" }
            ]
        })
    }
}
