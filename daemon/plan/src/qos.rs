//! Shaping rates and the voice reservation derived from the line (spec B1-B4).
//!
//! The router shapes just below the line's rates so the queue forms here,
//! where voice can jump it, and not in the modem. The voice class is
//! guaranteed `calls x per-call bandwidth on the wire` in each direction.
//! This module computes the figures; the tc tree built from them, and its
//! classification, are applied by routerd.

use router_config::line::voice_wire_bps;
use router_config::model::Framing;
use router_config::units::format_rate;
use router_config::Checked;
use serde::Serialize;

/// Share of the line rate the shaper uses: below the modem's rate so the
/// bottleneck queue is ours (the same margin sqm-scripts recommends).
pub const SHAPE_PERCENT: u64 = 95;

/// The QoS plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QosPlan {
    /// The WAN interface shaped on egress; ingress is shaped on its IFB twin.
    pub wan: String,
    /// Line framing: decides overhead and ATM cell accounting.
    pub framing: Framing,
    /// Upload direction.
    pub egress: Direction,
    /// Download direction.
    pub ingress: Direction,
    /// Calls the voice class is sized for.
    pub calls: u64,
    /// Per-call bit/s on the wire with this framing.
    pub per_call_bps: u64,
}

/// One direction of the shaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Direction {
    /// The line's rate in bit/s.
    pub line_bps: u64,
    /// The shaper's rate in bit/s.
    pub shape_bps: u64,
    /// Guaranteed to the voice class, bit/s (at most the shaper rate).
    pub voice_bps: u64,
}

fn direction(line_bps: u64, voice_bps: u64) -> Direction {
    let shape_bps = line_bps * SHAPE_PERCENT / 100;
    Direction {
        line_bps,
        shape_bps,
        voice_bps: voice_bps.min(shape_bps),
    }
}

/// The QoS plan for this config.
pub fn qos(checked: &Checked) -> QosPlan {
    let framing = checked.config.line.framing;
    let per_call_bps = voice_wire_bps(framing, false);
    let voice = checked.calls * per_call_bps;
    QosPlan {
        wan: checked.config.wan.interface.clone(),
        framing,
        egress: direction(checked.up_bps, voice),
        ingress: direction(checked.down_bps, voice),
        calls: checked.calls,
        per_call_bps,
    }
}

impl QosPlan {
    /// Readable text: the line, then each direction's shaper and voice share.
    pub fn render(&self) -> String {
        let atm = if self.framing.is_atm() {
            ", ATM cells"
        } else {
            ""
        };
        let mut out = format!(
            "# line.framing = {}: {} bytes overhead per packet{atm}; one G.711 call is {} on the wire\n\
             # voice class sized for {} calls (line.calls, or what the line carries)\n",
            self.framing.as_str(),
            self.framing.overhead_bytes(),
            format_rate(self.per_call_bps),
            self.calls,
        );
        for (name, dev, d) in [
            ("egress", self.wan.clone(), self.egress),
            ("ingress", format!("ifb of {}", self.wan), self.ingress),
        ] {
            let warn = if d.voice_bps < self.calls * self.per_call_bps {
                "  # voice needs more than the shaper has: fewer calls fit (spec B2)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{name} {dev}: line {} shaped at {} ({SHAPE_PERCENT}%), voice guaranteed {}, the rest shared fairly{warn}\n",
                format_rate(d.line_bps),
                format_rate(d.shape_bps),
                format_rate(d.voice_bps),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_share_never_exceeds_the_shaper() {
        let d = direction(2_000_000, 20 * 106_000);
        assert_eq!(d.shape_bps, 1_900_000);
        assert_eq!(d.voice_bps, 1_900_000);
        let d = direction(100_000_000, 100 * 87_200);
        assert_eq!(d.shape_bps, 95_000_000);
        assert_eq!(d.voice_bps, 8_720_000);
    }
}
