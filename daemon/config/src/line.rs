//! The line model: what one voice call costs on the wire for a given framing,
//! and how many calls a line carries (spec B1, B2, B4).
//!
//! A G.711 call at 20 ms packetisation sends 50 packets/s of 160 bytes of
//! sound plus RTP (12), UDP (8) and IP (20 or 40) headers: 80 kbit/s at the IP
//! layer. The link layer adds its own bytes per packet, and ATM pads every
//! packet to whole 53-byte cells carrying 48 bytes each.

use crate::model::Framing;

/// Packets per second of one voice stream at 20 ms packetisation.
pub const VOICE_PPS: u64 = 50;
/// Bytes of sound per packet (G.711, 20 ms).
pub const VOICE_PAYLOAD: u64 = 160;
/// RTP + UDP header bytes.
const RTP_UDP: u64 = 12 + 8;

impl Framing {
    /// Every framing, for help texts and tests.
    pub const ALL: [Framing; 4] = [
        Framing::Ethernet,
        Framing::VdslPtm,
        Framing::AdslPppoa,
        Framing::AdslPppoe,
    ];

    /// The name used in the config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Ethernet => "ethernet",
            Framing::VdslPtm => "vdsl-ptm",
            Framing::AdslPppoa => "adsl-pppoa",
            Framing::AdslPppoe => "adsl-pppoe",
        }
    }

    /// Link-layer bytes added to each IP packet before any cell padding:
    /// Ethernet, header 14 and FCS 4; VDSL/PTM with PPPoE, PPPoE 8, Ethernet 14,
    /// VLAN 4 and FCS 4; ADSL PPPoA (VC-mux), PPP 2 and the AAL5 trailer 8;
    /// ADSL PPPoE (LLC/SNAP), 40, the figure sqm-scripts and cake use.
    pub fn overhead_bytes(self) -> u64 {
        match self {
            Framing::Ethernet => 18,
            Framing::VdslPtm => 30,
            Framing::AdslPppoa => 10,
            Framing::AdslPppoe => 40,
        }
    }

    /// Whether packets travel in 53-byte ATM cells with 48 bytes of payload.
    pub fn is_atm(self) -> bool {
        matches!(self, Framing::AdslPppoa | Framing::AdslPppoe)
    }

    /// Bytes one IP packet of `ip_len` bytes occupies on the line.
    /// PTM's 64/65 encoding is rounded up to whole bytes.
    pub fn wire_bytes(self, ip_len: u64) -> u64 {
        let framed = ip_len + self.overhead_bytes();
        match self {
            Framing::AdslPppoa | Framing::AdslPppoe => framed.div_ceil(48) * 53,
            Framing::VdslPtm => (framed * 65).div_ceil(64),
            Framing::Ethernet => framed,
        }
    }
}

impl std::str::FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fiber" | "fibre" => return Ok(Framing::Ethernet),
            "pppoa" | "atm" | "adsl" => return Ok(Framing::AdslPppoa),
            "pppoe" => return Ok(Framing::AdslPppoe),
            "vdsl" | "ptm" => return Ok(Framing::VdslPtm),
            _ => {}
        }
        Framing::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Framing::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown framing `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// Bit/s one G.711 voice stream uses in one direction on a line with `framing`.
pub fn voice_wire_bps(framing: Framing, ipv6: bool) -> u64 {
    let ip_header = if ipv6 { 40 } else { 20 };
    framing.wire_bytes(VOICE_PAYLOAD + RTP_UDP + ip_header) * 8 * VOICE_PPS
}

/// Bit/s one G.711 voice stream uses at the IP layer.
pub fn voice_ip_bps(ipv6: bool) -> u64 {
    let ip_header = if ipv6 { 40 } else { 20 };
    (VOICE_PAYLOAD + RTP_UDP + ip_header) * 8 * VOICE_PPS
}

/// What a line carries, by the spec's rule and with real framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The slower direction in bit/s (spec B2: the lower direction decides).
    pub limiting_bps: u64,
    /// Per-call bit/s the provider states (spec B1).
    pub spec_per_call_bps: u64,
    /// Calls by the spec's rule: floor(min(down, up) / per call).
    pub spec_calls: u64,
    /// Per-call bit/s of G.711 at 20 ms with this line's framing (IPv4).
    pub wire_per_call_bps: u64,
    /// Calls with real framing.
    pub wire_calls: u64,
}

/// Capacity of a line of `down`/`up` bit/s with `framing`.
pub fn capacity(down: u64, up: u64, framing: Framing, spec_per_call_bps: u64) -> Capacity {
    let limiting_bps = down.min(up);
    let wire_per_call_bps = voice_wire_bps(framing, false);
    Capacity {
        limiting_bps,
        spec_per_call_bps,
        spec_calls: limiting_bps / spec_per_call_bps.max(1),
        wire_per_call_bps,
        wire_calls: limiting_bps / wire_per_call_bps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_call_figures_match_the_spec() {
        // spec: 80 kbit/s IP, ~87 Ethernet, ~106 ADSL/PPPoA, ~127 IPv6+PPPoE.
        assert_eq!(voice_ip_bps(false), 80_000);
        assert_eq!(voice_wire_bps(Framing::Ethernet, false), 87_200);
        assert_eq!(voice_wire_bps(Framing::AdslPppoa, false), 106_000);
        assert_eq!(voice_wire_bps(Framing::AdslPppoe, true), 127_200);
        // PTM: (200 + 30) * 65/64 = 233.6 -> 234 bytes.
        assert_eq!(voice_wire_bps(Framing::VdslPtm, false), 93_600);
    }

    #[test]
    fn five_two_adsl_carries_twenty_calls_by_the_spec() {
        let c = capacity(5_000_000, 2_000_000, Framing::Ethernet, 100_000);
        assert_eq!(c.spec_calls, 20);
        assert_eq!(c.limiting_bps, 2_000_000);
        assert_eq!(c.wire_calls, 22); // 2_000_000 / 87_200
        let atm = capacity(5_000_000, 2_000_000, Framing::AdslPppoa, 100_000);
        assert_eq!(atm.spec_calls, 20);
        assert_eq!(atm.wire_calls, 18); // 2_000_000 / 106_000
    }

    #[test]
    fn framing_names_round_trip() {
        for f in Framing::ALL {
            assert_eq!(f.as_str().parse::<Framing>(), Ok(f));
        }
        assert_eq!("fibre".parse::<Framing>(), Ok(Framing::Ethernet));
        assert!("dialup".parse::<Framing>().unwrap_err().contains("one of"));
    }
}
