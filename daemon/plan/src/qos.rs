//! The WAN shaper (spec B1-B4): rates from the line, and the tc tree that
//! guarantees voice its share of both directions.
//!
//! The router shapes just below the line's rates so the queue forms here,
//! where voice can jump it, and not in the modem. Each direction is one HTB
//! tree, counted in bytes on the line (a size table adds the framing's
//! overhead and, for ADSL, pads to whole ATM cells):
//!
//! ```text
//! 1:   htb, default 1:20, size table for line.framing
//! └ 1:1   the line: rate = ceil = 95 % of line.up, 85 % of line.down (80 %
//!         below 20 Mbit/s, where the bulk leaf's CoDel also judges over 20 ms)
//!   ├ 1:10  voice: prio 0, rate = calls x one call on the wire, ceil = the line
//!   │ └ 10:   fq_codel (a FIFO when the kernel lacks fq_codel)
//!   ├ 1:15  upload only, the download's TCP acknowledgements: prio 1,
//!   │       rate = their load, out of the 5 % voice leaves others
//!   │ └ 15:   fq_codel
//!   └ 1:20  bulk: prio 2, rate = the rest of the 5 %, ceil = the line
//!     └ 20:   fq_codel
//! ```
//!
//! What no class is guaranteed is lent to voice first (prio 0): a burst of
//! voice, or a call more than planned, takes it before the acknowledgements
//! and bulk do.
//!
//! Upload is shaped on the WAN port. Download is redirected from the WAN's
//! ingress to an IFB twin (`ifb-<wan>`) and shaped there.
//!
//! Classification:
//! - upload: after NAT every packet has the WAN's source address, so tc
//!   cannot tell a phone from a PC. The firewall decides before NAT, where the
//!   source network is still known: its `qos_egress` chain sets the packet's
//!   priority to [`ACK_CLASS`] for pure TCP acknowledgements and to
//!   [`VOICE_CLASS`] for traffic from the phone network to the
//!   provider ranges (UDP, and SIP over TCP/TLS) and from the Wi-Fi-calling
//!   network to the ePDGs; HTB puts a packet whose priority names one of its
//!   leaf classes straight into that class, with no tc filter. The same chain
//!   marks RTP DSCP EF and SIP DSCP CS3 for the provider's network.
//! - download: u32 filters on the IFB match the source address (the provider
//!   ranges with UDP or the SIP TCP ports, the ePDGs). DSCP from the internet
//!   is not trusted.
//!
//! Everything here is pure: `router-sys` (`tc.rs`) applies it over netlink.

use std::fmt;
use std::fmt::Write as _;

use ipnet::IpNet;
use router_config::line::{voice_ip_bps, voice_wire_bps};
use router_config::model::{Framing, Protocol};
use router_config::policy::{PortRange, ProviderPolicy};
use router_config::units::format_rate;
use router_config::{Checked, Diagnostic, HostFacts};
use serde::Serialize;

use crate::classifier::{Classifier, Entry, Target, MAX_NODES_PER_BUCKET, TABLE_BUCKETS};

/// Share of the upload rate the shaper uses: below the modem's rate so the
/// bottleneck queue is ours (the margin sqm-scripts recommends).
pub const UPLOAD_SHAPE_PERCENT: u64 = 95;

/// Share of the download rate the IFB's shaper uses. Lower than the
/// upload's: the router shapes the download after the line, so the only
/// way it slows a sender is by dropping, an RTT later. Meanwhile TCP's
/// bursts queue in the DSLAM, where voice waits behind them, and a wider
/// margin drains them faster (sqm-scripts advises 85-90 % for ingress;
/// measured in docs/qos.md).
pub const DOWNLOAD_SHAPE_PERCENT: u64 = 85;

/// Download lines below this rate are slow: the margin of
/// [`DOWNLOAD_SHAPE_PERCENT`] is less than TCP grows into it. Each TCP flow
/// sends one packet a round trip more than the last, whatever the line's
/// rate: four flows at a 20 ms round trip add 2.4 Mbit/s. What the DSLAM
/// serves beyond the router's shaper drains that growth; 15 % of a 20
/// Mbit/s line is 3 Mbit/s, of a 5 Mbit/s line only 0.75, so there TCP
/// fills the DSLAM's queue until the router's AQM drops.
pub const SLOW_DOWNLOAD_BELOW_BPS: u64 = 20_000_000;

/// Share of a slow download line ([`SLOW_DOWNLOAD_BELOW_BPS`]) the IFB's
/// shaper uses: a wider margin drains TCP's growth from the DSLAM faster.
pub const SLOW_DOWNLOAD_SHAPE_PERCENT: u64 = 80;

/// CoDel's interval on a slow download line's bulk leaf, microseconds (plus
/// what the target grows over 5 ms). CoDel drops only once the queue has
/// stayed above its target for a whole interval, and the 100 ms it uses
/// elsewhere (a round trip across the world) is 100 ms of TCP growing into
/// the DSLAM's queue; 20 ms is a round trip within the country. Long-haul
/// downloads lose some throughput for it; the calls keep their sound.
pub const SLOW_DOWNLOAD_BULK_INTERVAL_MICROS: u64 = 20_000;

/// CoDel's interval, microseconds (plus what the target grows over 5 ms):
/// the 100 ms round trip across the world it was designed for.
const CODEL_INTERVAL_MICROS: u64 = 100_000;

/// Share of the shaper always left to bulk traffic, so TCP acknowledgements,
/// DNS and the PCs keep moving however many calls are configured.
pub const BULK_MIN_PERCENT: u64 = 5;

/// Room the voice class keeps above its calls' steady rate, in percent of
/// it. A class filled to its rate has nothing spare to drain a burst with: a
/// packet that comes late or early (a phone's jitter, a Wi-Fi retry, SIP and
/// RTCP beside the sound) starts a queue that drains only at what the class
/// has spare, so the wait grows as 1 / (1 - load). Measured on 5/2 ADSL
/// (docs/qos.md): 16 calls fill the upload class to 94 % and wait 3.7 ms at
/// p99; 17 fill it to 99.8 % and wait 26 ms.
pub const VOICE_HEADROOM_PERCENT: u64 = 5;

/// What one call takes of the voice class: its rate on the wire and
/// [`VOICE_HEADROOM_PERCENT`] on top, rounded up.
pub fn per_call_with_headroom(per_call_bps: u64) -> u64 {
    (per_call_bps * (100 + VOICE_HEADROOM_PERCENT)).div_ceil(100)
}

/// IP bytes of the usual pure TCP acknowledgement: IPv4 and TCP headers
/// with the timestamp option. Two ATM cells on ADSL.
pub const ACK_IP_BYTES: u64 = 52;

/// The largest packet the firewall puts in the acknowledgement class: an
/// IPv6 acknowledgement with timestamps and three SACK blocks.
pub const ACK_MAX_IP_BYTES: u64 = 100;

/// Acknowledgements a receiver sends per full-size segment, as a fraction:
/// one for every second segment (delayed ACK, RFC 1122 4.2.3.2, RFC 5681
/// 4.2), one for every segment while a flow starts or recovers. The lab
/// counted 0.65-0.70 on 5/2 ADSL (docs/qos.md).
pub const ACKS_PER_SEGMENT: (u64, u64) = (2, 3);

/// The smallest rate a class is given, bit/s (HTB needs a rate above zero).
pub const MIN_RATE_BPS: u64 = 8_000;

/// Bytes the kernel counts in a packet's length on the WAN port and on its
/// IFB: the 14-byte Ethernet header. The size table's overhead is the line's
/// per-packet overhead minus these.
pub const KERNEL_L2_HEADER: i32 = 14;

/// The largest IP packet the shaper plans for (the WAN's MTU).
pub const MAX_IP_PACKET: u64 = 1500;

/// A class may send this much time at its rate in one burst (and at least
/// one full-size packet): short, so the modem's queue stays short too.
pub const BURST_MICROS: u64 = 1_000;

/// The HTB qdisc of both trees.
pub const ROOT: Handle = Handle::new(1, 0);
/// The class holding the whole line.
pub const LINE_CLASS: Handle = Handle::new(1, 1);
/// The voice class. The firewall sets this as the packet priority.
pub const VOICE_CLASS: Handle = Handle::new(1, 0x10);
/// The upload class of the download's TCP acknowledgements. The firewall
/// sets this as their packet priority.
pub const ACK_CLASS: Handle = Handle::new(1, 0x15);
/// The bulk class, HTB's default.
pub const BULK_CLASS: Handle = Handle::new(1, 0x20);
/// The voice class's queue.
pub const VOICE_LEAF: Handle = Handle::new(0x10, 0);
/// The acknowledgement class's queue.
pub const ACK_LEAF: Handle = Handle::new(0x15, 0);
/// The bulk class's queue.
pub const BULK_LEAF: Handle = Handle::new(0x20, 0);
/// The WAN's ingress qdisc.
pub const INGRESS: Handle = Handle::new(0xffff, 0);
/// The filter preference of the WAN ingress redirect to the IFB.
pub const REDIRECT_PREF: u16 = 1;
/// The filter preference of the IPv4 download classifier; IPv6's is the next.
pub const FIRST_FILTER_PREF: u16 = 10;
/// Below this shaper rate a port feeding the shaper merges received packets
/// (GRO) only up to one full-size packet, as cake splits aggregates below
/// 1 Gbit/s: HTB sends an aggregate whole, and a 64 KB one holds a 2 Mbit/s
/// line for 260 ms, with voice waiting behind it.
pub const GRO_SPLIT_BELOW_BPS: u64 = 1_000_000_000;
/// The kernel's default GRO limit (`GRO_LEGACY_MAX_SIZE`), kept at and
/// above [`GRO_SPLIT_BELOW_BPS`].
pub const GRO_DEFAULT_MAX: u32 = 65_536;

/// A tc handle or class id, `major:minor`, printed in hex as tc does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Handle {
    /// The qdisc number.
    pub major: u16,
    /// The class within it (0 for the qdisc itself).
    pub minor: u16,
}

impl Handle {
    /// `major:minor`.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The kernel's 32-bit form, `major << 16 | minor`.
    pub fn as_u32(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }
}

impl fmt::Display for Handle {
    /// `1:10`, `1:`, `ffff:`, as tc prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{:x}:", self.major)
        } else {
            write!(f, "{:x}:{:x}", self.major, self.minor)
        }
    }
}

/// The QoS plan: both shapers, the IFB and the redirect feeding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QosPlan {
    /// The WAN interface, shaped on egress.
    pub wan: String,
    /// The IFB device the WAN's ingress is redirected to and shaped on.
    pub ifb: String,
    /// Line framing: decides the size table.
    pub framing: Framing,
    /// Calls asked for (`line.calls`, or what the line carries).
    pub calls: u64,
    /// Whether `line.calls` was given (otherwise the voice class holds as
    /// many calls as fit, without a warning).
    pub calls_configured: bool,
    /// Bit/s of one G.711 call on the wire with this framing.
    pub per_call_bps: u64,
    /// Bit/s of one call by the provider's rule (spec B1).
    pub spec_per_call_bps: u64,
    /// Bit/s of one Wi-Fi call (spec B4); Wi-Fi calls share the voice class.
    pub wifi_per_call_bps: u64,
    /// Upload: the WAN port's root.
    pub egress: Shaper,
    /// Download: the IFB's root.
    pub ingress: Shaper,
    /// The WAN ingress redirect to the IFB.
    pub redirect: Redirect,
    /// How large the ports feeding the shapers may merge what they receive:
    /// the LAN ports feed the upload, the WAN the download. Sorted by name.
    pub gro: Vec<GroLimit>,
    /// What the shaper cannot do as asked (calls that do not fit, no fq_codel).
    pub warnings: Vec<Diagnostic>,
}

/// The receive-offload limit of one port: the largest packet GRO may build
/// from what it receives (IPv4 and IPv6 alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroLimit {
    /// The port.
    pub ifname: String,
    /// Bytes: one full-size packet when its traffic is shaped below
    /// [`GRO_SPLIT_BELOW_BPS`], the kernel's default otherwise.
    pub max_bytes: u32,
    /// The config path or spec line it implements.
    pub why: String,
}

/// Which way a shaper works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Upload, on the WAN port.
    Egress,
    /// Download, on the IFB.
    Ingress,
}

impl Direction {
    fn config_path(self) -> &'static str {
        match self {
            Direction::Egress => "line.up",
            Direction::Ingress => "line.down",
        }
    }

    /// "upload" or "download".
    pub fn word(self) -> &'static str {
        match self {
            Direction::Egress => "upload",
            Direction::Ingress => "download",
        }
    }

    /// This direction's rate of a `down_bps`/`up_bps` line.
    pub fn of(self, down_bps: u64, up_bps: u64) -> u64 {
        match self {
            Direction::Egress => up_bps,
            Direction::Ingress => down_bps,
        }
    }

    /// Share of a `line_bps` line this direction's shaper uses.
    pub fn shape_percent(self, line_bps: u64) -> u64 {
        match self {
            Direction::Egress => UPLOAD_SHAPE_PERCENT,
            Direction::Ingress if self.slow(line_bps) => SLOW_DOWNLOAD_SHAPE_PERCENT,
            Direction::Ingress => DOWNLOAD_SHAPE_PERCENT,
        }
    }

    /// Whether a `line_bps` line in this direction is a slow download
    /// ([`SLOW_DOWNLOAD_BELOW_BPS`]).
    pub fn slow(self, line_bps: u64) -> bool {
        self == Direction::Ingress && line_bps < SLOW_DOWNLOAD_BELOW_BPS
    }
}

/// One direction's HTB tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shaper {
    /// Upload or download.
    pub direction: Direction,
    /// The device whose root it is: the WAN, or its IFB.
    pub device: String,
    /// The line's rate in bit/s.
    pub line_bps: u64,
    /// The shaper's rate in bit/s, counted on the line.
    pub shape_bps: u64,
    /// Calls the voice class holds in this direction.
    pub voice_calls: u64,
    /// The root qdisc's size table: what the line costs per packet.
    pub size_table: SizeTable,
    /// Where unclassified packets go.
    pub default_class: Handle,
    /// The classes, parents before children.
    pub classes: Vec<HtbClass>,
    /// One queue per leaf class.
    pub leaves: Vec<Leaf>,
    /// u32 classifiers on the root, one per address family (download only;
    /// upload is classified by the firewall).
    pub classifiers: Vec<Classifier>,
}

impl Shaper {
    /// The class with this id.
    pub fn class(&self, id: Handle) -> Option<&HtbClass> {
        self.classes.iter().find(|c| c.classid == id)
    }

    /// Bit/s guaranteed to voice.
    pub fn voice_bps(&self) -> u64 {
        self.class(VOICE_CLASS).map_or(0, |c| c.rate_bps)
    }
}

/// How the line carries a packet, for the size table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkLayer {
    /// Bytes as they are, plus the overhead.
    Ethernet,
    /// Padded to whole 53-byte ATM cells of 48 bytes each (ADSL).
    Atm,
    /// 64/65 encoding (VDSL2 PTM).
    Ptm,
}

/// A qdisc size table (`stab`): the kernel replaces each packet's length
/// with what it costs on the line before the shaper counts it.
///
/// The kernel computes `len + overhead`, then (with a table) looks up
/// `data[len + overhead - 1]` (`cell_log` 0, `cell_align` -1). The table is
/// computed here, so framings tc has no keyword for (PTM) work the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeTable {
    /// Bytes added to the kernel's packet length (may be negative).
    pub overhead: i32,
    /// How the line pads a packet.
    pub linklayer: LinkLayer,
}

impl SizeTable {
    /// Packet lengths the table covers one by one; longer (GSO) packets are
    /// charged by the kernel's extrapolation.
    pub const MTU: u32 = 2048;

    /// The table for a framing on an Ethernet WAN port.
    pub fn for_framing(framing: Framing) -> Self {
        let linklayer = if framing.is_atm() {
            LinkLayer::Atm
        } else if framing == Framing::VdslPtm {
            LinkLayer::Ptm
        } else {
            LinkLayer::Ethernet
        };
        Self {
            overhead: i32::try_from(framing.overhead_bytes()).unwrap_or(i32::MAX)
                - KERNEL_L2_HEADER,
            linklayer,
        }
    }

    /// Entries in the table: none when only the overhead is added.
    pub fn tsize(&self) -> u32 {
        match self.linklayer {
            LinkLayer::Ethernet => 0,
            LinkLayer::Atm | LinkLayer::Ptm => Self::MTU,
        }
    }

    /// `cell_align` of the kernel's lookup: the table's first entry is for
    /// a one-byte packet.
    pub fn cell_align(&self) -> i16 {
        if self.tsize() == 0 {
            0
        } else {
            -1
        }
    }

    /// The `linklayer` number the kernel stores with the table (only
    /// informational there): 1 Ethernet, 2 ATM. PTM is a table tc has no
    /// name for, stored as Ethernet.
    pub fn kernel_linklayer(&self) -> u32 {
        match self.linklayer {
            LinkLayer::Atm => 2,
            LinkLayer::Ethernet | LinkLayer::Ptm => 1,
        }
    }

    /// Bytes on the line for `len` bytes after the overhead.
    fn pad(&self, len: u64) -> u64 {
        match self.linklayer {
            LinkLayer::Ethernet => len,
            LinkLayer::Atm => len.div_ceil(48) * 53,
            LinkLayer::Ptm => (len * 65).div_ceil(64),
        }
    }

    /// The table: entry `i` is the cost of `i + 1` bytes.
    pub fn data(&self) -> Vec<u16> {
        (1..=u64::from(self.tsize()))
            .map(|len| u16::try_from(self.pad(len)).unwrap_or(u16::MAX))
            .collect()
    }

    /// What the kernel charges for a packet of `kernel_len` bytes with this
    /// table, computed the way the kernel does (`__qdisc_calculate_pkt_len`).
    pub fn charged(&self, kernel_len: u64) -> u64 {
        let len = i64::try_from(kernel_len).unwrap_or(i64::MAX) + i64::from(self.overhead);
        let tsize = u64::from(self.tsize());
        if tsize == 0 {
            return u64::try_from(len.max(1)).unwrap_or(1);
        }
        let slot = u64::try_from((len + i64::from(self.cell_align())).max(0)).unwrap_or(0);
        let data = self.data();
        let at = |i: u64| u64::from(data[usize::try_from(i).unwrap_or(0)]);
        let cost = if slot < tsize {
            at(slot)
        } else {
            at(tsize - 1) * (slot / tsize) + at(slot % tsize)
        };
        cost.max(1)
    }
}

/// One HTB class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HtbClass {
    /// Its id.
    pub classid: Handle,
    /// Its parent: the qdisc, or a class.
    pub parent: Handle,
    /// Guaranteed bit/s (on the line).
    pub rate_bps: u64,
    /// Bit/s it may reach by borrowing.
    pub ceil_bps: u64,
    /// Bytes it may send at once at `rate`.
    pub burst: u32,
    /// Bytes it may send at once at `ceil`.
    pub cburst: u32,
    /// Bytes served per round among classes of the same priority.
    pub quantum: u32,
    /// 0 is served first, also when borrowing.
    pub prio: u32,
    /// The config path or spec line it implements.
    pub why: String,
}

/// The queue in a leaf class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leaf {
    /// The class it serves.
    pub parent: Handle,
    /// Its own handle.
    pub handle: Handle,
    /// The queue discipline.
    pub kind: LeafKind,
    /// The config path or spec line it implements.
    pub why: String,
}

/// A leaf's queue discipline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeafKind {
    /// Fair queueing per flow with CoDel AQM.
    FqCodel {
        /// Acceptable standing queue delay, microseconds.
        target_us: u32,
        /// Window over which the delay is judged, microseconds.
        interval_us: u32,
    },
    /// A FIFO of at most `limit` packets.
    Pfifo {
        /// Packets.
        limit: u32,
    },
    /// A FIFO of at most `limit` bytes.
    Bfifo {
        /// Bytes.
        limit: u32,
    },
}

impl LeafKind {
    /// The kernel's name of the qdisc.
    pub fn kind(&self) -> &'static str {
        match self {
            LeafKind::FqCodel { .. } => "fq_codel",
            LeafKind::Pfifo { .. } => "pfifo",
            LeafKind::Bfifo { .. } => "bfifo",
        }
    }
}

/// The link-layer protocol a filter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EtherType {
    /// Every packet.
    All,
    /// IPv4.
    Ip,
    /// IPv6.
    Ipv6,
}

impl EtherType {
    /// The Ethernet protocol number (host order).
    pub fn value(self) -> u16 {
        match self {
            EtherType::All => 0x0003,
            EtherType::Ip => 0x0800,
            EtherType::Ipv6 => 0x86dd,
        }
    }

    /// tc's word for it.
    pub fn word(self) -> &'static str {
        match self {
            EtherType::All => "all",
            EtherType::Ip => "ip",
            EtherType::Ipv6 => "ipv6",
        }
    }
}

/// One u32 match: the 32-bit word at `off` bytes into the network header,
/// masked, equals `val`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct U32Key {
    /// Byte offset from the start of the IP header.
    pub off: i32,
    /// The wanted value (already masked).
    pub val: u32,
    /// The bits compared.
    pub mask: u32,
}

/// The WAN's ingress qdisc with one filter redirecting every packet to the IFB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The WAN.
    pub from: String,
    /// The IFB.
    pub to: String,
    /// The filter's preference.
    pub pref: u16,
}

/// The provider's voice ports, from its port table: the lines whose
/// function names SIP or RTP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoicePorts {
    /// SIP: (protocol, port or range).
    pub sip: Vec<(Protocol, PortRange)>,
    /// RTP (UDP).
    pub rtp: Vec<PortRange>,
}

impl VoicePorts {
    /// Single SIP ports over TCP (SIP and SIP over TLS), sorted.
    pub fn sip_tcp(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .sip
            .iter()
            .filter(|(p, r)| *p == Protocol::Tcp && r.first == r.last)
            .map(|(_, r)| r.first)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The voice ports of `policy`'s port table.
pub fn voice_ports(policy: &ProviderPolicy) -> VoicePorts {
    let mut out = VoicePorts::default();
    for pp in &policy.phone_ports {
        if pp.function.contains("SIP") {
            out.sip.push((pp.protocol, pp.ports));
        } else if pp.function.contains("RTP") && pp.protocol == Protocol::Udp {
            out.rtp.push(pp.ports);
        }
    }
    out.sip.sort();
    out.sip.dedup();
    out.rtp.sort();
    out.rtp.dedup();
    out
}

/// The IFB twin of `wan`: `ifb-<wan>`, cut to the kernel's 15 characters.
pub fn ifb_name(wan: &str) -> String {
    format!("ifb-{wan}").chars().take(15).collect()
}

/// The QoS plan on a host with fq_codel, the kernel the router ships.
/// [`qos_for`] is the same for any host.
pub fn qos(checked: &Checked) -> QosPlan {
    build(checked, true)
}

/// The QoS plan for this config on this host: leaves are fq_codel when
/// `facts.fq_codel`, FIFOs (with a warning) otherwise.
pub fn qos_for(checked: &Checked, facts: &HostFacts) -> QosPlan {
    build(checked, facts.fq_codel)
}

fn build(checked: &Checked, fq_codel: bool) -> QosPlan {
    let framing = checked.config.line.framing;
    let per_call_bps = voice_wire_bps(framing, false);
    let wan = checked.config.wan.interface.clone();
    let ifb = ifb_name(&wan);
    let calls_configured = checked.config.line.calls.is_some();
    let mut warnings = Vec::new();
    let sizing = Sizing {
        framing,
        down_bps: checked.down_bps,
        up_bps: checked.up_bps,
        calls: checked.calls,
        per_call_bps,
        calls_configured,
        fq_codel,
    };
    let egress = sizing.shaper(Direction::Egress, &wan, Vec::new());
    let classifiers = download_classifiers(&checked.policy);
    for c in &classifiers {
        if c.dropped > 0 {
            warnings.push(Diagnostic::warning(
                "policy.provider_ranges",
                format!(
                    "the {} download classifier cannot tell {} of its {} entries apart by source address (a bucket holds at most {MAX_NODES_PER_BUCKET}): download voice from those is shaped as bulk (upload and the firewall are not affected)",
                    c.protocol.word(),
                    c.dropped,
                    c.entries,
                ),
            ));
        }
    }
    let ingress = sizing.shaper(Direction::Ingress, &ifb, classifiers);
    for s in [&egress, &ingress] {
        if calls_configured && s.voice_calls < checked.calls {
            warnings.push(Diagnostic::warning(
                "line.calls",
                format!(
                    "{} calls need {} on the wire, but the {} shaper ({}, {}% of {}) keeps at most {} for voice: the voice class holds {} calls with {VOICE_HEADROOM_PERCENT}% headroom each, the others are not protected from bulk traffic (spec B2)",
                    checked.calls,
                    format_rate(checked.calls * per_call_bps),
                    s.direction.word(),
                    format_rate(s.shape_bps),
                    s.direction.shape_percent(s.line_bps),
                    s.direction.config_path(),
                    format_rate(
                        voice_room(s.direction, checked.down_bps, checked.up_bps, framing)
                            .voice_bps
                    ),
                    s.voice_calls,
                ),
            ));
        }
    }
    if !fq_codel {
        warnings.push(Diagnostic::warning(
            "line",
            "this router's kernel has no fq_codel: the shaper's classes queue in plain FIFOs; voice keeps its guarantee, but bulk traffic gets no fair queueing and no AQM",
        ));
    }
    let gro = gro_limits(checked, &egress, &ingress);
    QosPlan {
        gro,
        redirect: Redirect {
            from: wan.clone(),
            to: ifb.clone(),
            pref: REDIRECT_PREF,
        },
        wan,
        ifb,
        framing,
        calls: checked.calls,
        calls_configured,
        per_call_bps,
        spec_per_call_bps: checked.capacity.spec_per_call_bps,
        wifi_per_call_bps: checked.wifi_per_call_bps,
        egress,
        ingress,
        warnings,
    }
}

/// The GRO limit of every port that feeds a shaper: the WAN feeds the
/// download, the ports of the LAN-side networks (a VLAN's parent) the
/// upload. A port doing both takes the smaller limit.
fn gro_limits(checked: &Checked, egress: &Shaper, ingress: &Shaper) -> Vec<GroLimit> {
    let limit = |s: &Shaper| {
        if s.shape_bps < GRO_SPLIT_BELOW_BPS {
            MAX_IP_PACKET as u32
        } else {
            GRO_DEFAULT_MAX
        }
    };
    let why = |s: &Shaper, feeds: &str| {
        if s.shape_bps < GRO_SPLIT_BELOW_BPS {
            format!(
                "spec B2: {feeds} is shaped at {} (below {}): received packets are merged only up to one full-size packet, so no aggregate holds the line ahead of voice",
                format_rate(s.shape_bps),
                format_rate(GRO_SPLIT_BELOW_BPS)
            )
        } else {
            format!(
                "spec B2: {feeds} is shaped at {}: the kernel's default aggregates take under 0.6 ms of the line",
                format_rate(s.shape_bps)
            )
        }
    };
    let mut ports: std::collections::BTreeMap<String, GroLimit> = Default::default();
    let mut add = |ifname: &str, s: &Shaper, feeds: &str, path: &str| {
        let candidate = GroLimit {
            ifname: ifname.to_string(),
            max_bytes: limit(s),
            why: format!("{path}: {}", why(s, feeds)),
        };
        match ports.get(ifname) {
            Some(have) if have.max_bytes <= candidate.max_bytes => {}
            _ => {
                ports.insert(ifname.to_string(), candidate);
            }
        }
    };
    add(
        &checked.config.wan.interface,
        ingress,
        "the download it receives",
        "wan.interface",
    );
    for n in crate::net::networks(checked) {
        let port = n.vlan.as_ref().map_or(n.ifname.as_str(), |(p, _)| p);
        if !port.is_empty() {
            add(
                port,
                egress,
                "the upload it receives",
                &crate::links::interface_origin(&n),
            );
        }
    }
    ports.into_values().collect()
}

/// What one direction's shaper keeps for voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceRoom {
    /// The shaper's rate: [`Direction::shape_percent`] of the line, whole
    /// bytes.
    pub shape_bps: u64,
    /// What bulk is guaranteed ([`BULK_MIN_PERCENT`] of the shaper).
    pub bulk_bps: u64,
    /// The most the voice class may be guaranteed.
    pub voice_bps: u64,
    /// Calls of `per_call_bps` that fit in `voice_bps`, each with its
    /// [`VOICE_HEADROOM_PERCENT`].
    pub calls: u64,
}

/// The shaper's rate for a `line_bps` line in `direction`, whole bytes.
pub fn shaper_rate(direction: Direction, line_bps: u64) -> u64 {
    whole_bytes(line_bps * direction.shape_percent(line_bps) / 100).max(2 * MIN_RATE_BPS)
}

/// The room for voice under the `direction` shaper of a `down_bps`/`up_bps`
/// line with `framing`, and how many calls it holds: the figure the tree is
/// built from, and what `routerctl capacity` prints beside the line's own.
pub fn voice_room(direction: Direction, down_bps: u64, up_bps: u64, framing: Framing) -> VoiceRoom {
    let per_call_bps = voice_wire_bps(framing, false);
    let shape_bps = shaper_rate(direction, direction.of(down_bps, up_bps));
    let bulk_bps = bulk_min(shape_bps);
    let voice_bps = shape_bps.saturating_sub(bulk_bps);
    VoiceRoom {
        shape_bps,
        bulk_bps,
        voice_bps,
        calls: voice_bps / per_call_with_headroom(per_call_bps).max(1),
    }
}

/// Bit/s the acknowledgements of a download take on the upload line, when
/// the download brings `down_bps` of full-size segments on the line with
/// `framing` ([`ACKS_PER_SEGMENT`] of [`ACK_IP_BYTES`] each).
pub fn ack_load_bps(framing: Framing, down_bps: u64) -> u64 {
    let (per, segments) = ACKS_PER_SEGMENT;
    let ack = u128::from(framing.wire_bytes(ACK_IP_BYTES));
    let segment = u128::from(framing.wire_bytes(MAX_IP_PACKET));
    let bps = u128::from(down_bps) * u128::from(per) * ack / (u128::from(segments) * segment);
    u64::try_from(bps).unwrap_or(u64::MAX)
}

/// What the upload keeps for the download's acknowledgements ([`ack_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRoom {
    /// Bit/s the download shaper leaves bulk beside the calls' sound.
    pub down_bulk_bps: u64,
    /// Bit/s that download's acknowledgements take on the upload line
    /// ([`ack_load_bps`]).
    pub load_bps: u64,
    /// What the acknowledgement class is guaranteed: the load, at most the
    /// [`BULK_MIN_PERCENT`] for everything but voice less bulk's own
    /// [`MIN_RATE_BPS`]; whole bytes.
    pub rate_bps: u64,
}

impl AckRoom {
    /// Whether the guarantee is less than the load.
    pub fn capped(&self) -> bool {
        self.rate_bps < whole_bytes(self.load_bps)
    }
}

/// What the upload's acknowledgement class is guaranteed while `calls`
/// calls are in progress on a `down_bps` line whose upload is shaped at
/// `up_shape_bps`: the acknowledgements of what the download shaper leaves
/// the calls' sound, out of the [`BULK_MIN_PERCENT`] the upload keeps for
/// everything but voice, less bulk's own [`MIN_RATE_BPS`]. The voice class
/// keeps all it had, and the classes' guarantees add up to the shaper.
///
/// In the bulk class the acknowledgements waited for tokens the office's
/// full-size upload packets took, then left in a bunch; each sender
/// answered its bunch with a burst of segments, and download voice waited
/// behind the burst in the DSLAM (docs/qos.md). With their own guarantee
/// they leave as they come, and the download is clocked by them.
pub fn ack_room(framing: Framing, down_bps: u64, up_shape_bps: u64, calls: u64) -> AckRoom {
    let sound = calls.saturating_mul(voice_wire_bps(framing, false));
    let down_bulk_bps = shaper_rate(Direction::Ingress, down_bps).saturating_sub(sound);
    let load_bps = ack_load_bps(framing, down_bulk_bps);
    let share = bulk_min(up_shape_bps) - MIN_RATE_BPS;
    AckRoom {
        down_bulk_bps,
        load_bps,
        rate_bps: whole_bytes(load_bps.min(share)).max(MIN_RATE_BPS),
    }
}

/// What everything but voice is guaranteed under a shaper of `shape_bps`
/// (bulk, and on the upload the acknowledgements): [`BULK_MIN_PERCENT`] of
/// it, in whole bytes rounded up, at least [`MIN_RATE_BPS`] for each.
fn bulk_min(shape_bps: u64) -> u64 {
    (shape_bps * BULK_MIN_PERCENT)
        .div_ceil(100 * 8)
        .saturating_mul(8)
        .max(2 * MIN_RATE_BPS)
}

/// Everything one direction's sizing needs.
struct Sizing {
    framing: Framing,
    down_bps: u64,
    up_bps: u64,
    calls: u64,
    per_call_bps: u64,
    calls_configured: bool,
    fq_codel: bool,
}

/// `bps` rounded down to whole bytes per second (what the kernel stores).
fn whole_bytes(bps: u64) -> u64 {
    bps / 8 * 8
}

impl Sizing {
    /// Bytes one full-size packet costs on the line.
    fn max_frame(&self) -> u32 {
        u32::try_from(self.framing.wire_bytes(MAX_IP_PACKET)).unwrap_or(u32::MAX)
    }

    /// `burst` for a class at `bps`: [`BURST_MICROS`] of sending, at least
    /// one full-size packet.
    fn burst(&self, bps: u64) -> u32 {
        let at_rate = u32::try_from(bps / 8 * BURST_MICROS / 1_000_000).unwrap_or(u32::MAX);
        at_rate.max(self.max_frame())
    }

    fn shaper(&self, direction: Direction, device: &str, classifiers: Vec<Classifier>) -> Shaper {
        let line_bps = direction.of(self.down_bps, self.up_bps);
        let room = voice_room(direction, self.down_bps, self.up_bps, self.framing);
        let shape_bps = room.shape_bps;
        let voice_calls = self.calls.min(room.calls);
        let voice_bps =
            whole_bytes(voice_calls * per_call_with_headroom(self.per_call_bps)).max(MIN_RATE_BPS);
        // Bulk is guaranteed only its minimum: the rest of the line is lent
        // to voice first (prio 0), so a burst of voice or a call more than
        // planned drains ahead of bulk instead of queueing at exactly its
        // rate; bulk borrows whatever voice leaves.
        let quantum = self.max_frame();
        let slow = if direction.slow(line_bps) {
            format!(
                " (below {}: a wider margin drains TCP's growth from the DSLAM)",
                format_rate(SLOW_DOWNLOAD_BELOW_BPS)
            )
        } else {
            String::new()
        };
        let line = format!(
            "{}: the line's {}, shaped at {}%{slow} so the queue is ours, not the modem's",
            direction.config_path(),
            direction.word(),
            direction.shape_percent(line_bps)
        );
        let source = if self.calls_configured {
            "line.calls".to_string()
        } else {
            "line.calls unset: what the line carries".to_string()
        };
        let fits = if voice_calls < self.calls {
            format!("; only {voice_calls} of {} fit", self.calls)
        } else {
            String::new()
        };
        let voice_why = format!(
            "spec B2: voice, {voice_calls} calls x {} + {VOICE_HEADROOM_PERCENT}% headroom ({source}{fits}), prio 0, may borrow",
            format_rate(self.per_call_bps)
        );
        let class = |classid, parent, rate_bps, prio, why: String| HtbClass {
            classid,
            parent,
            rate_bps,
            ceil_bps: shape_bps,
            burst: self.burst(rate_bps),
            cburst: self.burst(shape_bps),
            quantum,
            prio,
            why,
        };
        let mut classes = vec![
            class(LINE_CLASS, ROOT, shape_bps, 0, line),
            class(VOICE_CLASS, LINE_CLASS, voice_bps, 0, voice_why),
        ];
        // The download's acknowledgements leave by the upload, sized for
        // the calls both directions hold, out of what voice leaves others.
        let acks = (direction == Direction::Egress).then(|| {
            let down_calls =
                voice_room(Direction::Ingress, self.down_bps, self.up_bps, self.framing).calls;
            let both = voice_calls.min(down_calls);
            (both, ack_room(self.framing, self.down_bps, shape_bps, both))
        });
        let acks_bps = acks.map(|(_, a)| a.rate_bps);
        let bulk_bps = room.bulk_bps - acks_bps.unwrap_or(0);
        if let Some((both, a)) = acks {
            let (per, segments) = ACKS_PER_SEGMENT;
            let load = format!(
                "{per} per {segments} full-size segments of the {} the download shaper leaves {both} calls",
                format_rate(a.down_bulk_bps)
            );
            let size = if a.capped() {
                format!(
                    "{BULK_MIN_PERCENT}% of the shaper less bulk's {} (their load: {load})",
                    format_rate(MIN_RATE_BPS)
                )
            } else {
                format!("their load: {load}; out of the {BULK_MIN_PERCENT}% voice leaves others")
            };
            classes.push(class(
                ACK_CLASS,
                LINE_CLASS,
                a.rate_bps,
                1,
                format!(
                    "spec B3: the download's TCP acknowledgements, {size}; prio 1, may borrow after voice: with their own tokens they leave as they come, not in bunches behind the upload"
                ),
            ));
        }
        let bulk_why = if acks.is_some() {
            format!("spec B3: everything else, fairly: guaranteed what the acknowledgements leave of {BULK_MIN_PERCENT}% of the shaper, borrows what voice and they leave")
        } else {
            format!("spec B3: everything else, fairly: guaranteed {BULK_MIN_PERCENT}% of the shaper, borrows what voice leaves")
        };
        classes.push(class(BULK_CLASS, LINE_CLASS, bulk_bps, 2, bulk_why));
        let leaves = self.leaves(direction.slow(line_bps), shape_bps, voice_calls, acks_bps);
        Shaper {
            direction,
            device: device.to_string(),
            line_bps,
            shape_bps,
            voice_calls,
            size_table: SizeTable::for_framing(self.framing),
            default_class: BULK_CLASS,
            classes,
            leaves,
            classifiers,
        }
    }

    /// The leaves' queues; `slow_download`: the bulk leaf judges its queue
    /// over [`SLOW_DOWNLOAD_BULK_INTERVAL_MICROS`]; `acks`: the rate of the
    /// acknowledgement class, when the shaper has one.
    fn leaves(
        &self,
        slow_download: bool,
        shape_bps: u64,
        voice_calls: u64,
        acks: Option<u64>,
    ) -> Vec<Leaf> {
        if self.fq_codel {
            // CoDel's target must exceed the time one full-size packet takes
            // at this rate, or it drops on a queue of one (sqm-scripts' rule:
            // 1.5 packet times); the interval grows by as much.
            let packet_us = u64::from(self.max_frame()) * 8 * 1_000_000 / shape_bps.max(1);
            let target_us = (packet_us * 3 / 2).div_ceil(100) * 100;
            let target_us = target_us.max(5_000);
            let codel = |interval_us: u64| LeafKind::FqCodel {
                target_us: u32::try_from(target_us).unwrap_or(u32::MAX),
                interval_us: u32::try_from(interval_us + target_us - 5_000).unwrap_or(u32::MAX),
            };
            let (bulk, bulk_why) = if slow_download {
                (
                    codel(SLOW_DOWNLOAD_BULK_INTERVAL_MICROS),
                    format!(
                        "facts.fq_codel: flows share the bulk class fairly; line.down below {}: AQM judges the queue over {} ms, so TCP slows before it fills the DSLAM's queue",
                        format_rate(SLOW_DOWNLOAD_BELOW_BPS),
                        SLOW_DOWNLOAD_BULK_INTERVAL_MICROS / 1_000
                    ),
                )
            } else {
                (
                    codel(CODEL_INTERVAL_MICROS),
                    "facts.fq_codel: flows share the bulk class fairly; AQM keeps its queue short"
                        .to_string(),
                )
            };
            let mut leaves = vec![Leaf {
                parent: VOICE_CLASS,
                handle: VOICE_LEAF,
                kind: codel(CODEL_INTERVAL_MICROS),
                why: "facts.fq_codel: the calls share the voice class fairly, with AQM".into(),
            }];
            if acks.is_some() {
                leaves.push(Leaf {
                    parent: ACK_CLASS,
                    handle: ACK_LEAF,
                    kind: codel(CODEL_INTERVAL_MICROS),
                    why: "facts.fq_codel: the downloads' acknowledgements share their class fairly, with AQM".into(),
                });
            }
            leaves.push(Leaf {
                parent: BULK_CLASS,
                handle: BULK_LEAF,
                kind: bulk,
                why: bulk_why,
            });
            leaves
        } else {
            // 100 ms of the shaper's rate for bulk; two packets per call for voice.
            let bulk_bytes = u32::try_from(shape_bps / 8 / 10)
                .unwrap_or(u32::MAX)
                .max(2 * self.max_frame());
            let voice_packets = u32::try_from(voice_calls * 2).unwrap_or(u32::MAX).max(16);
            let mut leaves = vec![Leaf {
                parent: VOICE_CLASS,
                handle: VOICE_LEAF,
                kind: LeafKind::Pfifo {
                    limit: voice_packets,
                },
                why: "facts.fq_codel = false: a FIFO of two packets per call (at least 16)".into(),
            }];
            if let Some(acks_bps) = acks {
                // 100 ms of acknowledgements at the class's rate.
                let ack_bytes = self.framing.wire_bytes(ACK_IP_BYTES);
                let packets = u32::try_from(acks_bps / 8 / 10 / ack_bytes.max(1))
                    .unwrap_or(u32::MAX)
                    .max(16);
                leaves.push(Leaf {
                    parent: ACK_CLASS,
                    handle: ACK_LEAF,
                    kind: LeafKind::Pfifo { limit: packets },
                    why: "facts.fq_codel = false: a FIFO of 100 ms of acknowledgements at the class's rate (at least 16)".into(),
                });
            }
            leaves.push(Leaf {
                parent: BULK_CLASS,
                handle: BULK_LEAF,
                kind: LeafKind::Bfifo { limit: bulk_bytes },
                why: "facts.fq_codel = false: a FIFO of 100 ms at the shaper's rate".into(),
            });
            leaves
        }
    }
}

/// Where the source address starts in the IP header: byte 12 (IPv4) or 8 (IPv6).
pub(crate) fn source_offset(v6: bool) -> i32 {
    if v6 {
        8
    } else {
        12
    }
}

/// The 32-bit words of an address, big-endian, for u32 keys.
pub(crate) fn words(net: &IpNet) -> Vec<u32> {
    match net {
        IpNet::V4(n) => vec![u32::from(n.network())],
        IpNet::V6(n) => n
            .network()
            .octets()
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Keys matching the source address in `net`.
fn source_keys(net: &IpNet) -> Vec<U32Key> {
    let base = source_offset(matches!(net, IpNet::V6(_)));
    let mut left = u32::from(net.prefix_len());
    let mut keys = Vec::new();
    for (i, word) in (0i32..).zip(words(net)) {
        let bits = left.min(32);
        left -= bits;
        if bits == 0 {
            break;
        }
        let mask = if bits == 32 {
            u32::MAX
        } else {
            !(u32::MAX >> bits)
        };
        keys.push(U32Key {
            off: base + 4 * i,
            val: word & mask,
            mask,
        });
    }
    keys
}

/// The key matching the transport protocol (IPv4 protocol, IPv6 next header).
fn protocol_key(v6: bool, number: u8) -> U32Key {
    if v6 {
        U32Key {
            off: 4,
            val: u32::from(number) << 8,
            mask: 0x0000_ff00,
        }
    } else {
        U32Key {
            off: 8,
            val: u32::from(number) << 16,
            mask: 0x00ff_0000,
        }
    }
}

/// Keys matching a transport source port. For IPv4 also a header without
/// options (IHL 5), so the port sits at a fixed offset; IPv6 assumes no
/// extension headers. A packet with either goes to bulk, never wrongly to voice.
fn source_port_keys(v6: bool, port: u16) -> Vec<U32Key> {
    let port_key = |off| U32Key {
        off,
        val: u32::from(port) << 16,
        mask: 0xffff_0000,
    };
    if v6 {
        vec![port_key(40)]
    } else {
        vec![
            U32Key {
                off: 0,
                val: 0x0500_0000,
                mask: 0x0f00_0000,
            },
            port_key(20),
        ]
    }
}

/// The download classifiers: what comes from the provider ranges (UDP; SIP
/// over TCP/TLS by source port) and from the ePDGs goes to voice. IPv4 at
/// [`FIRST_FILTER_PREF`], IPv6 (if any) at the next preference.
fn download_classifiers(policy: &ProviderPolicy) -> Vec<Classifier> {
    let sorted = |nets: &[IpNet], v6: bool| {
        let mut v: Vec<IpNet> = nets
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .map(IpNet::trunc)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let sip_tcp = voice_ports(policy).sip_tcp();
    let mut out = Vec::new();
    let mut next_table = 1;
    for (v6, protocol, pref) in [
        (false, EtherType::Ip, FIRST_FILTER_PREF),
        (true, EtherType::Ipv6, FIRST_FILTER_PREF + 1),
    ] {
        let fam = if v6 { "ip6" } else { "ip" };
        let mut entries = Vec::new();
        let mut push = |net: IpNet, keys, matches: String, why: &str| {
            entries.push(Entry {
                net,
                keys,
                classid: VOICE_CLASS,
                matches,
                why: why.to_string(),
            });
        };
        for net in sorted(&policy.provider_ranges, v6) {
            let mut keys = source_keys(&net);
            keys.push(protocol_key(v6, 17));
            push(
                net,
                keys,
                format!("{fam} src {net} and udp"),
                "spec B3: SIP and RTP over UDP from the provider (policy provider_ranges)",
            );
            for port in &sip_tcp {
                let mut keys = source_keys(&net);
                keys.push(protocol_key(v6, 6));
                keys.extend(source_port_keys(v6, *port));
                push(
                    net,
                    keys,
                    format!("{fam} src {net} and tcp sport {port}"),
                    "spec B3: SIP over TCP/TLS from the provider (policy phone_ports)",
                );
            }
        }
        for net in sorted(&policy.wifi_calling.epdg, v6) {
            push(
                net,
                source_keys(&net),
                format!("{fam} src {net}"),
                "spec B4, W1: Wi-Fi calls from the ePDG (policy wifi_calling.epdg)",
            );
        }
        if !entries.is_empty() {
            out.push(Classifier::build(pref, protocol, &entries, &mut next_table));
        }
    }
    out
}

impl QosPlan {
    /// Both shapers, upload first.
    pub fn shapers(&self) -> [&Shaper; 2] {
        [&self.egress, &self.ingress]
    }

    /// Readable text close to tc's own syntax, one object per line with the
    /// config path or spec line it implements.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let st = SizeTable::for_framing(self.framing);
        let padding = match st.linklayer {
            LinkLayer::Atm => ", padded to 53-byte ATM cells of 48",
            LinkLayer::Ptm => ", 64/65 PTM encoding",
            LinkLayer::Ethernet => "",
        };
        let _ = writeln!(
            out,
            "# line.framing = {}: {} bytes per packet on the line{padding}; the kernel counts the {KERNEL_L2_HEADER}-byte Ethernet header, so the size table adds {}",
            self.framing.as_str(),
            self.framing.overhead_bytes(),
            st.overhead,
        );
        let _ = writeln!(
            out,
            "# spec B1: one G.711 call (20 ms) is {} on the wire ({} at the IP layer, {} by the provider's rule); a Wi-Fi call is {} (spec B4) and shares the voice class",
            format_rate(self.per_call_bps),
            format_rate(voice_ip_bps(false)),
            format_rate(self.spec_per_call_bps),
            format_rate(self.wifi_per_call_bps),
        );
        let _ = writeln!(
            out,
            "# voice sized for {} calls ({})",
            self.calls,
            if self.calls_configured {
                "line.calls"
            } else {
                "line.calls unset: what the line carries"
            }
        );
        for w in &self.warnings {
            let _ = writeln!(out, "# {w}");
        }
        self.render_shaper(&mut out, &self.egress);
        let _ = writeln!(
            out,
            "# upload classification: the firewall's chain qos_egress sets meta priority {ACK_CLASS} on TCP acknowledgements and {VOICE_CLASS} on voice before NAT (see nft); the rest takes the default {BULK_CLASS}"
        );
        let _ = writeln!(
            out,
            "link {} type ifb up  # spec B1-B3: the download is shaped on the WAN's IFB twin",
            self.ifb
        );
        let _ = writeln!(
            out,
            "qdisc ingress {INGRESS} dev {}  # wan.interface: the WAN's ingress hook",
            self.wan
        );
        let _ = writeln!(
            out,
            "filter dev {} parent {INGRESS} pref {} protocol all u32 match u32 0 0 action mirred egress redirect dev {}  # spec B1-B3: every download packet through the shaper",
            self.redirect.from, self.redirect.pref, self.redirect.to
        );
        self.render_shaper(&mut out, &self.ingress);
        for g in &self.gro {
            let _ = writeln!(
                out,
                "link {} gro_max_size {} gro_ipv4_max_size {}  # {}",
                g.ifname, g.max_bytes, g.max_bytes, g.why
            );
        }
        out
    }

    fn render_shaper(&self, out: &mut String, s: &Shaper) {
        let st = &s.size_table;
        let stab = match st.linklayer {
            LinkLayer::Ethernet => format!("stab overhead {}", st.overhead),
            LinkLayer::Atm => format!(
                "stab overhead {} linklayer atm mtu {} tsize {}",
                st.overhead,
                SizeTable::MTU,
                st.tsize()
            ),
            LinkLayer::Ptm => format!(
                "stab overhead {} table ptm-64/65 mtu {} tsize {}",
                st.overhead,
                SizeTable::MTU,
                st.tsize()
            ),
        };
        let _ = writeln!(
            out,
            "# {}: line {}, shaped at {}; voice {} calls, {} guaranteed",
            s.direction.word(),
            format_rate(s.line_bps),
            format_rate(s.shape_bps),
            s.voice_calls,
            format_rate(s.voice_bps())
        );
        let _ = writeln!(
            out,
            "qdisc htb {ROOT} dev {} root default {:x} {stab}  # line.framing = {}: the shaper counts bytes on the line",
            s.device,
            s.default_class.minor,
            self.framing.as_str()
        );
        for c in &s.classes {
            let _ = writeln!(
                out,
                "class htb {} dev {} parent {} prio {} rate {} ceil {} burst {}b cburst {}b quantum {}  # {}",
                c.classid,
                s.device,
                c.parent,
                c.prio,
                format_rate(c.rate_bps),
                format_rate(c.ceil_bps),
                c.burst,
                c.cburst,
                c.quantum,
                c.why
            );
        }
        for l in &s.leaves {
            let params = match l.kind {
                LeafKind::FqCodel {
                    target_us,
                    interval_us,
                } => format!(
                    "target {} interval {}",
                    micros(target_us),
                    micros(interval_us)
                ),
                LeafKind::Pfifo { limit } => format!("limit {limit}"),
                LeafKind::Bfifo { limit } => format!("limit {limit}b"),
            };
            let _ = writeln!(
                out,
                "qdisc {} {} dev {} parent {} {params}  # {}",
                l.kind.kind(),
                l.handle,
                s.device,
                l.parent,
                l.why
            );
        }
        for c in &s.classifiers {
            let head = format!(
                "filter dev {} parent {ROOT} pref {} protocol {}",
                s.device,
                c.pref,
                c.protocol.word()
            );
            for t in &c.tables {
                let _ = writeln!(
                    out,
                    "{head} handle {t:x}: u32 divisor {TABLE_BUCKETS}  # spec B3: a hash table of the download classifier"
                );
            }
            for n in &c.nodes {
                let place = if n.table == 0 {
                    String::new()
                } else {
                    format!(" ht {:x}:{:x}:", n.table, n.bucket)
                };
                let to = match n.target {
                    Target::Class(class) => format!(" flowid {class}"),
                    Target::Table { .. } => String::new(),
                };
                let handle = if n.table == 0 {
                    format!("::{:x}", n.id)
                } else {
                    format!("{:x}:{:x}:{:x}", n.table, n.bucket, n.id)
                };
                let _ = writeln!(
                    out,
                    "{head} handle {handle} u32{place} match {}{to}  # {}",
                    n.matches, n.why
                );
            }
        }
    }
}

/// `5ms`, `10.8ms`.
fn micros(us: u32) -> String {
    if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{}.{}ms", us / 1000, (us % 1000) / 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{checked, example};

    fn line(down: &str, up: &str, framing: Framing, calls: Option<u32>) -> Checked {
        let mut cfg = example();
        cfg.line.down = down.into();
        cfg.line.up = up.into();
        cfg.line.framing = framing;
        cfg.line.calls = calls;
        checked(cfg)
    }

    #[test]
    fn ports_feeding_a_shaper_below_a_gigabit_merge_no_more_than_one_packet() {
        fn limits(plan: &QosPlan) -> Vec<(&str, u32)> {
            plan.gro
                .iter()
                .map(|g| (g.ifname.as_str(), g.max_bytes))
                .collect()
        }
        // The example: WAN eth0, the data LAN on eth1 with the phones' VLAN on it.
        let adsl = qos(&line("5M", "2M", Framing::AdslPppoa, None));
        assert_eq!(limits(&adsl), [("eth0", 1500), ("eth1", 1500)]);
        assert!(adsl.gro[0].why.starts_with("wan.interface: spec B2"));
        assert!(adsl.gro[1].why.starts_with("lan.interface: spec B2"));
        // Shaped at 950 Mbit/s both ways: still below a gigabit.
        let gig = qos(&line("1000M", "1000M", Framing::Ethernet, None));
        assert_eq!(limits(&gig), [("eth0", 1500), ("eth1", 1500)]);
        // Each port follows the shaper it feeds: a fast download, a slow upload.
        let asym = qos(&line("2500M", "100M", Framing::Ethernet, None));
        assert_eq!(limits(&asym), [("eth0", GRO_DEFAULT_MAX), ("eth1", 1500)]);
        let fast = qos(&line("10000M", "10000M", Framing::Ethernet, None));
        assert_eq!(
            limits(&fast),
            [("eth0", GRO_DEFAULT_MAX), ("eth1", GRO_DEFAULT_MAX)]
        );
        // A port that is both (the phones on the WAN's port is refused by the
        // config, so build it by hand) keeps the smaller limit.
        let mut both = line("2500M", "100M", Framing::Ethernet, None);
        both.config.lan.interface = "eth0".into();
        let plan = qos(&both);
        assert_eq!(plan.gro[0].ifname, "eth0");
        assert_eq!(plan.gro[0].max_bytes, 1500, "{:?}", plan.gro);
        assert!(plan.render().contains(
            "link eth0 gro_max_size 1500 gro_ipv4_max_size 1500  # lan.interface: spec B2"
        ));
    }

    /// An IPv4 packet from `src`, transport `proto`, source port `sport`.
    fn packet(src: std::net::Ipv4Addr, proto: u8, sport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.octets());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p
    }

    #[test]
    fn thousands_of_provider_addresses_are_hashed_none_cut() {
        let mut c = line("5M", "2M", Framing::AdslPppoa, None);
        // 3000 separate /32s (every second address): 3 entries each.
        c.policy.provider_ranges = (0..3000u32)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(0xc612_0000 + 2 * i);
                IpNet::from(ipnet::Ipv4Net::new(a, 32).unwrap())
            })
            .collect();
        let plan = qos(&c);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let [v4] = plan.ingress.classifiers.as_slice() else {
            panic!("{:?}", plan.ingress.classifiers.len());
        };
        assert_eq!((v4.pref, v4.entries, v4.dropped), (10, 9005, 0));
        assert!(!v4.tables.is_empty());
        let mut worst = 0;
        for (i, proto, sport, voice) in [
            (0, 17, 10_000, true),
            (2, 6, 5060, true),
            (5998, 6, 5061, true),
            (5998, 6, 443, false),
            (5999, 17, 10_000, false),
            (6000, 17, 10_000, false),
        ] {
            let src = std::net::Ipv4Addr::from(0xc612_0000 + i);
            let (class, walked) = v4.classify(&packet(src, proto, sport));
            assert_eq!(class, voice.then_some(VOICE_CLASS), "{src} {proto} {sport}");
            worst = worst.max(walked);
        }
        // Wi-Fi calling's ePDG, in the same tree.
        let epdg = std::net::Ipv4Addr::new(195, 41, 220, 240);
        assert_eq!(v4.classify(&packet(epdg, 50, 0)).0, Some(VOICE_CLASS));
        // A download from elsewhere walks a link per level and one bucket.
        let (class, walked) =
            v4.classify(&packet(std::net::Ipv4Addr::new(93, 184, 216, 34), 6, 443));
        assert_eq!(class, None);
        worst = worst.max(walked);
        assert!(worst <= 12, "walked {worst} nodes");
        // The factory policy needs no table.
        let factory = qos(&line("5M", "2M", Framing::AdslPppoa, None));
        assert!(factory
            .ingress
            .classifiers
            .iter()
            .all(|c| c.tables.is_empty()));
    }

    #[test]
    fn adsl_five_two_holds_sixteen_calls_in_the_upload_shaper() {
        // 2 Mbit ADSL/PPPoA: shaper 1900k, 5% (95k) kept for bulk, so voice
        // has 1805k: 16 calls of 106k with 5% headroom each (111.3k, 1780.8k
        // in all); 17 would fill it to the last 3k. The line carries 18.
        let plan = qos(&line("5M", "2M", Framing::AdslPppoa, None));
        assert_eq!(plan.per_call_bps, 106_000);
        assert_eq!(plan.calls, 18);
        let up = &plan.egress;
        assert_eq!(up.shape_bps, 1_900_000);
        assert_eq!(up.voice_calls, 16);
        assert_eq!(up.voice_bps(), 1_780_800);
        // Everything but voice is guaranteed 5%, 95k: the download's
        // acknowledgements take all but bulk's 8k of it; the 24.2k left
        // over go to voice first.
        assert_eq!(up.class(BULK_CLASS).unwrap().rate_bps, 8_000);
        // A 5 Mbit download is slow: shaped at 80%, 4000k, bulk's 5%.
        let down = &plan.ingress;
        assert_eq!(down.shape_bps, 4_000_000);
        assert_eq!(down.voice_calls, 18);
        assert_eq!(down.voice_bps(), 2_003_400);
        assert_eq!(down.class(BULK_CLASS).unwrap().rate_bps, 200_000);
        // Unset calls: no warning, the render says what fits.
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        // What `routerctl capacity` prints is what the tree holds.
        let room = voice_room(Direction::Egress, 5_000_000, 2_000_000, Framing::AdslPppoa);
        assert_eq!(
            (room.shape_bps, room.bulk_bps, room.voice_bps, room.calls),
            (1_900_000, 95_000, 1_805_000, up.voice_calls)
        );
        let down_room = voice_room(Direction::Ingress, 5_000_000, 2_000_000, Framing::AdslPppoa);
        assert_eq!(down_room.calls, 34);
        // The download's acknowledgements: 4000k less 16 calls' 1696k is
        // 2304k of segments, 1696 bytes each on the line; 2 of 3 answered
        // by a 106-byte acknowledgement: 96k, more than the 87k the 5%
        // leaves beside bulk's 8k.
        let acks = up.class(ACK_CLASS).unwrap();
        assert_eq!(acks.rate_bps, 87_000);
        assert_eq!(
            acks.rate_bps,
            ack_room(Framing::AdslPppoa, 5_000_000, 1_900_000, 16).rate_bps
        );
        assert_eq!(
            (acks.prio, acks.parent, acks.ceil_bps),
            (1, LINE_CLASS, 1_900_000)
        );
        assert_eq!(up.class(BULK_CLASS).unwrap().prio, 2);
        assert!(
            acks.why.contains(
                "5% of the shaper less bulk's 8kbit (their load: 2 per 3 full-size segments of the 2304kbit the download shaper leaves 16 calls)"
            ),
            "{}",
            acks.why
        );
        // The download has no acknowledgement class.
        assert!(down.class(ACK_CLASS).is_none());
    }

    #[test]
    fn acknowledgements_are_guaranteed_their_load_out_of_what_voice_leaves_others() {
        // 2 of 3 full-size segments answered: on ATM a 52-byte
        // acknowledgement is 2 cells (106 bytes), a 1500-byte segment 32
        // (1696 bytes); on Ethernet 70 and 1518 bytes.
        assert_eq!(ack_load_bps(Framing::AdslPppoa, 1_696_000), 2 * 106_000 / 3);
        assert_eq!(ack_load_bps(Framing::Ethernet, 1_518_000), 2 * 70_000 / 3);
        // 40/10 VDSL with 20 calls: 34 Mbit/s of download less 1.872 of
        // sound would need 1158k; the upload's 5% holds 475k.
        let vdsl = qos(&line("40M", "10M", Framing::VdslPtm, Some(20)));
        let acks = vdsl.egress.class(ACK_CLASS).unwrap();
        assert_eq!(acks.rate_bps, 467_000);
        assert!(acks.why.contains("less bulk's 8kbit"), "{}", acks.why);
        // 16/1 ADSL: a 12.8 Mbit download less 8 calls' sound would need
        // 498k of acknowledgements; the 5% of 950k is 47.5k.
        let slow = qos(&line("16M", "1M", Framing::AdslPppoa, None));
        assert_eq!(slow.egress.voice_calls, 8);
        let acks = slow.egress.class(ACK_CLASS).unwrap();
        assert_eq!(acks.rate_bps, 39_504);
        assert_eq!(slow.egress.class(BULK_CLASS).unwrap().rate_bps, 8_000);
        // Symmetric fibre: the download holds fewer calls (881) than the
        // upload (985); the acknowledgements are sized for 881.
        let fibre = qos(&line("100M", "100M", Framing::Ethernet, None));
        assert_eq!(
            (fibre.egress.voice_calls, fibre.ingress.voice_calls),
            (985, 881)
        );
        assert_eq!(
            fibre.egress.class(ACK_CLASS).unwrap().rate_bps,
            ack_room(Framing::Ethernet, 100_000_000, 95_000_000, 881).rate_bps
        );
        // Their load fits the 5% (4.75M) here.
        let acks = fibre.egress.class(ACK_CLASS).unwrap();
        assert_eq!(acks.rate_bps, 251_368);
        assert!(acks.why.contains("their load: 2 per 3"), "{}", acks.why);
        assert_eq!(
            fibre.egress.class(BULK_CLASS).unwrap().rate_bps,
            4_750_000 - 251_368
        );
    }

    #[test]
    fn a_slow_download_keeps_a_wider_margin_and_drops_sooner() {
        // Below 20 Mbit the download is shaped at 80% and its bulk leaf's
        // CoDel judges over 20 ms; from 20 Mbit on, 85% and 100 ms.
        let percent = |bps| Direction::Ingress.shape_percent(bps);
        assert_eq!(percent(5_000_000), 80);
        assert_eq!(percent(19_999_999), 80);
        assert_eq!(percent(20_000_000), 85);
        assert_eq!(Direction::Egress.shape_percent(5_000_000), 95);
        let slow = qos(&line("5M", "2M", Framing::AdslPppoa, None)).ingress;
        // 1696 bytes at 4 Mbit take 3.39 ms: target 5.1 ms.
        assert_eq!(
            slow.leaves[1].kind,
            LeafKind::FqCodel {
                target_us: 5_100,
                interval_us: 20_100
            }
        );
        assert!(
            slow.leaves[1].why.contains("20 ms"),
            "{}",
            slow.leaves[1].why
        );
        // Voice does not slow down for drops: its leaf keeps 100 ms.
        assert_eq!(
            slow.leaves[0].kind,
            LeafKind::FqCodel {
                target_us: 5_100,
                interval_us: 100_100
            }
        );
        let fast = qos(&line("20M", "2M", Framing::AdslPppoa, None)).ingress;
        assert_eq!(fast.shape_bps, 17_000_000);
        assert_eq!(
            fast.leaves[1].kind,
            LeafKind::FqCodel {
                target_us: 5_000,
                interval_us: 100_000
            }
        );
        // The upload is never slow in this sense: it is shaped before the line.
        let up = qos(&line("5M", "2M", Framing::AdslPppoa, None)).egress;
        let handles: Vec<Handle> = up.leaves.iter().map(|l| l.handle).collect();
        assert_eq!(handles, [VOICE_LEAF, ACK_LEAF, BULK_LEAF]);
        assert!(up.leaves.iter().all(|l| l.kind == up.leaves[0].kind));
    }

    #[test]
    fn twenty_calls_on_adsl_five_two_warn_for_the_upload() {
        let plan = qos(&line("5M", "2M", Framing::AdslPppoa, Some(20)));
        assert_eq!(plan.egress.voice_calls, 16);
        assert_eq!(plan.ingress.voice_calls, 20);
        assert_eq!(plan.ingress.voice_bps(), 2_226_000);
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        let w = &plan.warnings[0];
        assert_eq!(w.path, "line.calls");
        assert!(w.message.contains("voice class holds 16 calls"), "{w}");
        assert!(w.message.contains("upload shaper (1900kbit"), "{w}");
    }

    #[test]
    fn symmetric_fibre_dedicates_voice_and_lends_the_rest_to_both() {
        // spec B3: 100/100 fibre, 100 calls of 87.2k and 5% headroom =
        // 9.156M for voice.
        let plan = qos(&line("100M", "100M", Framing::Ethernet, Some(100)));
        // Upload at 95%, download at 85%.
        for (s, shape) in [(&plan.egress, 95_000_000), (&plan.ingress, 85_000_000)] {
            assert_eq!(s.shape_bps, shape);
            assert_eq!(s.voice_calls, 100);
            assert_eq!(s.voice_bps(), 9_156_000);
            // Everything else 5%; on the upload the acknowledgements of
            // the 76.28M of download the calls leave take 2.345M of it.
            let bulk = s.class(BULK_CLASS).unwrap();
            let acks = s.class(ACK_CLASS).map_or(0, |c| c.rate_bps);
            assert_eq!(bulk.rate_bps + acks, shape / 20);
            assert_eq!(bulk.ceil_bps, shape);
            assert_eq!(s.class(VOICE_CLASS).unwrap().ceil_bps, shape);
            // 1 ms at 85-95 Mbit is more than one frame.
            assert_eq!(
                s.class(LINE_CLASS).unwrap().burst,
                u32::try_from(shape / 8_000).unwrap()
            );
        }
        assert_eq!(plan.egress.class(ACK_CLASS).unwrap().rate_bps, 2_345_008);
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn rates_are_whole_bytes_and_classes_add_up() {
        for framing in Framing::ALL {
            for (down, up) in [("5M", "2M"), ("1000001", "333333"), ("100M", "40M")] {
                let plan = qos(&line(down, up, framing, None));
                for s in plan.shapers() {
                    for c in &s.classes {
                        assert_eq!(c.rate_bps % 8, 0, "{c:?}");
                        assert_eq!(c.ceil_bps, s.shape_bps);
                        assert!(c.burst >= u32::try_from(framing.wire_bytes(1500)).unwrap());
                    }
                    // The guarantees add up to no more than the shaper;
                    // the acknowledgements and bulk share the 5%.
                    let voice = s.voice_bps();
                    let bulk = s.class(BULK_CLASS).unwrap().rate_bps;
                    let acks = s.class(ACK_CLASS).map_or(0, |c| c.rate_bps);
                    assert!(
                        voice + acks + bulk <= s.shape_bps,
                        "{framing:?} {down}/{up}"
                    );
                    assert!(bulk >= MIN_RATE_BPS && (acks == 0 || acks >= MIN_RATE_BPS));
                    assert_eq!(
                        s.class(ACK_CLASS).is_some(),
                        s.direction == Direction::Egress
                    );
                    let others = acks + bulk;
                    assert!(others * 100 >= s.shape_bps * BULK_MIN_PERCENT);
                    assert!(others * 100 < s.shape_bps * (BULK_MIN_PERCENT + 1));
                }
            }
        }
    }

    #[test]
    fn size_table_charges_what_the_line_model_says() {
        // The kernel sees the IP packet plus the 14-byte Ethernet header.
        for framing in Framing::ALL {
            let st = SizeTable::for_framing(framing);
            for ip in 20..=1500u64 {
                assert_eq!(
                    st.charged(ip + 14),
                    framing.wire_bytes(ip),
                    "{framing:?} at {ip} bytes"
                );
            }
        }
        let atm = SizeTable::for_framing(Framing::AdslPppoa);
        assert_eq!(atm.overhead, -4);
        assert_eq!(atm.tsize(), 2048);
        // One voice packet: 200 bytes IP + 10 = 210 -> 5 cells = 265 bytes.
        assert_eq!(atm.charged(214), 265);
        assert_eq!(SizeTable::for_framing(Framing::Ethernet).tsize(), 0);
        assert_eq!(SizeTable::for_framing(Framing::Ethernet).overhead, 4);
        assert_eq!(SizeTable::for_framing(Framing::VdslPtm).overhead, 16);
    }

    #[test]
    fn leaves_are_fq_codel_with_a_target_above_one_packet_time() {
        let plan = qos(&line("5M", "2M", Framing::AdslPppoa, None));
        // 1696 bytes at 1.9 Mbit take 7.14 ms: target 10.8 ms, interval 105.8 ms.
        assert_eq!(
            plan.egress.leaves[0].kind,
            LeafKind::FqCodel {
                target_us: 10_800,
                interval_us: 105_800
            }
        );
        let fibre = qos(&line("100M", "100M", Framing::Ethernet, None));
        assert_eq!(
            fibre.ingress.leaves[1].kind,
            LeafKind::FqCodel {
                target_us: 5_000,
                interval_us: 100_000
            }
        );
    }

    #[test]
    fn without_fq_codel_the_leaves_are_fifos_and_the_plan_warns() {
        let c = line("5M", "2M", Framing::AdslPppoa, None);
        let facts = HostFacts {
            fq_codel: false,
            ..HostFacts::assumed(["eth0".to_string(), "eth1".to_string()])
        };
        let plan = qos_for(&c, &facts);
        assert_eq!(plan.egress.leaves[0].kind, LeafKind::Pfifo { limit: 32 });
        // 87k of acknowledgements for 100 ms: 10 of 106 bytes, at least 16.
        assert_eq!(plan.egress.leaves[1].kind, LeafKind::Pfifo { limit: 16 });
        assert_eq!(
            plan.egress.leaves[2].kind,
            LeafKind::Bfifo { limit: 23_750 }
        );
        assert!(plan
            .warnings
            .iter()
            .any(|w| w.message.contains("no fq_codel")));
        assert!(plan
            .render()
            .contains("qdisc pfifo 10: dev eth0 parent 1:10 limit 32"));
        let with = qos_for(&c, &HostFacts::assumed(["eth0".to_string()]));
        assert_eq!(with, qos(&c));
    }

    #[test]
    fn download_classifiers_match_the_provider_and_the_epdgs() {
        let plan = qos(&line("5M", "2M", Framing::AdslPppoa, None));
        assert!(plan.egress.classifiers.is_empty());
        // IPv4 only: the factory policy has no IPv6 ranges.
        let [c] = plan.ingress.classifiers.as_slice() else {
            panic!("{:#?}", plan.ingress.classifiers);
        };
        assert_eq!((c.pref, c.protocol), (FIRST_FILTER_PREF, EtherType::Ip));
        let f = &c.nodes;
        // provider UDP, provider TCP 5060 and 5061, five ePDGs, in the root.
        assert_eq!(f.len(), 8, "{f:#?}");
        assert!(f.iter().all(|f| f.target == Target::Class(VOICE_CLASS)));
        let ids: Vec<(u16, u16)> = f.iter().map(|f| (f.table, f.id)).collect();
        assert_eq!(ids, (1..9).map(|i| (0, i)).collect::<Vec<_>>());
        assert_eq!(
            f[0].keys,
            vec![
                U32Key {
                    off: 12,
                    val: 0xb948_d000,
                    mask: 0xffff_fc00
                },
                U32Key {
                    off: 8,
                    val: 0x0011_0000,
                    mask: 0x00ff_0000
                },
            ]
        );
        assert_eq!(f[1].matches, "ip src 185.72.208.0/22 and tcp sport 5060");
        assert_eq!(f[1].keys[3].val, 5060 << 16);
        assert_eq!(f[3].matches, "ip src 195.41.220.240/32");
        assert_eq!(f[3].keys[0].mask, u32::MAX);
    }

    #[test]
    fn ipv6_ranges_get_their_own_preference() {
        let mut c = line("5M", "2M", Framing::AdslPppoa, None);
        c.policy
            .provider_ranges
            .push("2001:db8:40::/42".parse().unwrap());
        let plan = qos(&c);
        let prefs: Vec<(u16, EtherType)> = plan
            .ingress
            .classifiers
            .iter()
            .map(|c| (c.pref, c.protocol))
            .collect();
        assert_eq!(prefs, [(10, EtherType::Ip), (11, EtherType::Ipv6)]);
        assert_eq!(plan.ingress.classifiers[1].nodes.len(), 3);
    }

    #[test]
    fn ipv6_ranges_become_ipv6_keys() {
        let net: IpNet = "2001:db8:40::/42".parse().unwrap();
        let keys = source_keys(&net);
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].off, keys[0].val, keys[0].mask),
            (8, 0x2001_0db8, u32::MAX)
        );
        assert_eq!(
            (keys[1].off, keys[1].val, keys[1].mask),
            (12, 0x0040_0000, 0xffc0_0000)
        );
    }

    #[test]
    fn voice_ports_come_from_the_port_table() {
        let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
        let v = voice_ports(&policy);
        assert_eq!(v.sip_tcp(), vec![5060, 5061]);
        assert_eq!(
            v.rtp,
            vec![PortRange {
                first: 10000,
                last: 65000
            }]
        );
        assert!(v.sip.contains(&(Protocol::Udp, PortRange::single(5060))));
    }

    #[test]
    fn ifb_names_fit_the_kernel() {
        assert_eq!(ifb_name("eth0"), "ifb-eth0");
        assert_eq!(ifb_name("enp0s31f6.100"), "ifb-enp0s31f6.1");
        assert_eq!(Handle::new(1, 0x10).to_string(), "1:10");
        assert_eq!(INGRESS.to_string(), "ffff:");
        assert_eq!(VOICE_CLASS.as_u32(), 0x0001_0010);
    }
}
