//! The WAN shaper over rtnetlink: applies a [`QosPlan`] and reads it back.
//! No `tc` program runs: every qdisc, class and filter is a netlink message
//! built here. HTB and the size table have no typed form in
//! netlink-packet-route, so their attributes are written as raw bytes in the
//! kernel's layout (`tc_htb_glob`, `tc_htb_opt`, `tc_sizespec`) and decoded
//! the same way on read-back.
//!
//! What the router owns: on the WAN, the root qdisc (HTB `1:`), the ingress
//! qdisc and its filters; the IFB device (`ifb-<wan>`) with its root qdisc
//! and filters. Nothing else is touched. [`fq_codel_available`] answers the
//! host fact `fq_codel` on a temporary device of its own.
//!
//! Every call reads the kernel first and changes only what differs, so a
//! second [`apply`] with the same plan changes nothing. A changed plan is
//! applied in place, so calls keep flowing:
//! - rates, bursts, priorities: each HTB class is changed where it stands
//!   (its queue and its packets stay);
//! - the framing: the root's size table is swapped in place;
//! - a leaf's parameters: the leaf is changed in place; only a change of
//!   its kind (fq_codel <-> FIFO, when `facts.fq_codel` changes) deletes
//!   and recreates it, dropping what that one queue held;
//! - a download classifier: missing tables and nodes are added (a table's
//!   nodes before the node linking to it), a node that differs is deleted
//!   and added again (in between, what it matched is shaped as bulk, not
//!   dropped), then what the plan no longer has is removed;
//! - the root is replaced whole only when it is not the plan's HTB (first
//!   install, or someone replaced it), and the IFB is created once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, Nla, NlasIterator, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcHeader, TcMessage, TcMirror, TcMirrorActionType, TcOption,
    TcQdiscFqCodelOption, TcStats2, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use router_config::units::format_rate;
use router_plan::classifier::{Classifier, Target, U32Node, MATCH_ALL, TABLE_BUCKETS};
use router_plan::qos::{
    EtherType, GroLimit, Handle, HtbClass, Leaf, LeafKind, QosPlan, Redirect, Shaper, SizeTable,
    U32Key, INGRESS, ROOT,
};
use rtnetlink::{LinkIfb, LinkUnspec};

const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_STAB_BASE: u16 = 1;
const TCA_STAB_DATA: u16 = 2;
/// `tc_htb_glob.version`: the kernel refuses anything but 3.
const HTB_VERSION: u32 = 3;
/// `rate2quantum`: unused, every class carries its quantum.
const HTB_R2Q: u32 = 10;
/// `TC_LINKLAYER_ETHERNET`: with a link layer set, HTB needs no rate tables.
const LINKLAYER_ETHERNET: u8 = 1;
/// Nanoseconds per psched tick (`PSCHED_SHIFT` 6): HTB's burst unit.
const NS_PER_TICK: u64 = 64;
/// `TC_H_ROOT`.
const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_INGRESS`: where the ingress qdisc hangs.
const TC_H_INGRESS: u32 = 0xffff_fff1;

/// A failed traffic-control operation. The message names the interface and
/// the object; the kernel's answer is the source.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// An interface the shaper needs does not exist.
    #[error("interface {ifname} does not exist")]
    NoSuchLink {
        /// The missing interface.
        ifname: String,
    },
    /// The IFB's name is taken by another kind of device.
    #[error("{ifname} exists but is not an IFB device ({kind}); the download shaper needs it")]
    NotIfb {
        /// The device.
        ifname: String,
        /// What it is.
        kind: String,
    },
    /// Reading links, qdiscs, classes or filters failed.
    #[error("cannot read the {what} of {ifname}")]
    Read {
        /// The interface.
        ifname: String,
        /// What was being read.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The kernel refused a change.
    #[error("cannot {op} on {ifname}")]
    Write {
        /// The interface.
        ifname: String,
        /// The operation, e.g. `create class 1:10`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

/// What [`apply`] or [`remove`] did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcChange {
    /// The interface.
    pub device: String,
    /// The object, e.g. `class 1:10` or `filter pref 10`.
    pub object: String,
    /// What happened to it.
    pub action: ChangeKind,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// It did not exist and was created.
    Created,
    /// It was changed in place.
    Changed,
    /// It was deleted and created again, or another took its place.
    Replaced,
    /// It was not in the plan and was removed.
    Removed,
}

impl fmt::Display for TcChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            ChangeKind::Created => "created",
            ChangeKind::Changed => "changed",
            ChangeKind::Replaced => "replaced",
            ChangeKind::Removed => "removed",
        };
        write!(f, "{action} {} on {}", self.object, self.device)
    }
}

/// The counters of one class, as the kernel reports them. Bytes are counted
/// after the size table: bytes on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassStats {
    /// The class.
    pub classid: Handle,
    /// Bytes sent.
    pub bytes: u64,
    /// Packets sent.
    pub packets: u64,
    /// Packets dropped.
    pub drops: u64,
}

/// Makes the kernel hold `plan`: the IFB (created and up), the download
/// tree on it, the upload tree on the WAN, then the WAN's ingress redirect
/// (last, so download packets only reach the IFB once its tree is ready).
/// Returns what changed; empty when the kernel already held the plan.
pub async fn apply(handle: &rtnetlink::Handle, plan: &QosPlan) -> Result<Vec<TcChange>, TcError> {
    let mut changes = Vec::new();
    let wan = device(handle, &plan.wan).await?;
    let ifb = ensure_ifb(handle, &plan.ifb, &mut changes).await?;
    apply_shaper(handle, &ifb, &plan.ingress, &mut changes).await?;
    apply_shaper(handle, &wan, &plan.egress, &mut changes).await?;
    apply_redirect(handle, &wan, &ifb, &plan.redirect, &mut changes).await?;
    apply_gro(handle, &plan.gro, &mut changes).await?;
    Ok(changes)
}

/// Sets each port's GRO limit (IPv6 and IPv4) where it differs from the plan.
async fn apply_gro(
    handle: &rtnetlink::Handle,
    limits: &[GroLimit],
    changes: &mut Vec<TcChange>,
) -> Result<(), TcError> {
    for g in limits {
        let dev = device(handle, &g.ifname).await?;
        if dev.gro == (Some(g.max_bytes), Some(g.max_bytes)) {
            continue;
        }
        let msg = LinkUnspec::new_with_index(dev.index)
            .append_extra_attribute(LinkAttribute::GroMaxSize(g.max_bytes))
            .append_extra_attribute(LinkAttribute::GroIpv4MaxSize(g.max_bytes))
            .build();
        let object = format!("gro_max_size {}", g.max_bytes);
        handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| write_error(&dev, format!("set {object}"), e))?;
        changes.push(change(&dev, object, ChangeKind::Changed));
    }
    Ok(())
}

/// The differences between the ports' GRO limits and the plan's.
async fn diff_gro(handle: &rtnetlink::Handle, limits: &[GroLimit]) -> Result<Vec<String>, TcError> {
    let mut out = Vec::new();
    for g in limits {
        match find_link(handle, &g.ifname).await? {
            None => out.push(format!("link {} is missing", g.ifname)),
            Some(dev) => {
                let want = Some(g.max_bytes);
                for (name, have) in [
                    ("gro_max_size", dev.gro.0),
                    ("gro_ipv4_max_size", dev.gro.1),
                ] {
                    if have != want {
                        let have =
                            have.map_or_else(|| "not reported".to_string(), |n| n.to_string());
                        out.push(format!(
                            "{}: {name} is {have}, the plan has {}",
                            g.ifname, g.max_bytes
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Reads the kernel's state back and returns one line per difference from
/// `plan` (a missing or different qdisc, class, leaf or filter, a missing
/// IFB or redirect). Empty when the kernel matches.
pub async fn verify(handle: &rtnetlink::Handle, plan: &QosPlan) -> Result<Vec<String>, TcError> {
    let mut out = Vec::new();
    let Some(wan) = find_link(handle, &plan.wan).await? else {
        return Ok(vec![format!("link {} is missing", plan.wan)]);
    };
    match find_link(handle, &plan.ifb).await? {
        None => out.push(format!("link {} is missing", plan.ifb)),
        Some(ifb) => {
            if ifb.kind.as_deref() != Some("ifb") {
                out.push(format!("{} is not an IFB device", plan.ifb));
            }
            if !ifb.up {
                out.push(format!("link {} is down", plan.ifb));
            }
            let state = DevState::read(handle, &ifb).await?;
            out.extend(
                diff_shaper(&state, &plan.ingress)
                    .iter()
                    .map(|s| s.describe(&ifb.name)),
            );
            let state = DevState::read_ingress(handle, &wan).await?;
            out.extend(
                diff_redirect(&state, &plan.redirect, ifb.index)
                    .iter()
                    .map(|s| s.describe(&wan.name)),
            );
        }
    }
    let state = DevState::read(handle, &wan).await?;
    out.extend(
        diff_shaper(&state, &plan.egress)
            .iter()
            .map(|s| s.describe(&wan.name)),
    );
    out.extend(diff_gro(handle, &plan.gro).await?);
    Ok(out)
}

/// Removes the shaper from `wan` (its HTB root and ingress qdisc, with their
/// filters) and deletes the IFB `ifb`; for when the WAN moves to another
/// interface. Only what the shaper owns is removed; a missing device or
/// qdisc is not an error.
pub async fn remove(
    handle: &rtnetlink::Handle,
    wan: &str,
    ifb: &str,
) -> Result<Vec<TcChange>, TcError> {
    let mut changes = Vec::new();
    if let Some(dev) = find_link(handle, wan).await? {
        let qdiscs = read_qdiscs(handle, &dev).await?;
        for q in &qdiscs {
            let ours_root = q.parent == TC_H_ROOT && q.kind == "htb" && q.handle == ROOT;
            let ours_ingress = q.parent == TC_H_INGRESS && q.kind == "ingress";
            if ours_root || ours_ingress {
                let object = format!("qdisc {} {}", q.kind, q.handle);
                let msg = TcMessage::from_parts(header(&dev, q.handle, q.parent), Vec::new());
                send(handle, RouteNetlinkMessage::DelQueueDiscipline(msg), 0)
                    .await
                    .map_err(|e| write_error(&dev, format!("remove {object}"), e))?;
                changes.push(change(&dev, object, ChangeKind::Removed));
            }
        }
    }
    if let Some(dev) = find_link(handle, ifb).await? {
        if dev.kind.as_deref() == Some("ifb") {
            handle
                .link()
                .del(dev.index)
                .execute()
                .await
                .map_err(|e| write_error(&dev, "delete the IFB device".into(), e))?;
            changes.push(change(&dev, "link".into(), ChangeKind::Removed));
        }
    }
    Ok(changes)
}

/// The counters of every class on `ifname` (the WAN for upload, the IFB for
/// download), sorted by class id.
pub async fn class_stats(
    handle: &rtnetlink::Handle,
    ifname: &str,
) -> Result<Vec<ClassStats>, TcError> {
    let dev = device(handle, ifname).await?;
    let mut out: Vec<ClassStats> = read_classes(handle, &dev)
        .await?
        .into_iter()
        .map(|c| ClassStats {
            classid: c.classid,
            bytes: c.bytes,
            packets: c.packets,
            drops: c.drops,
        })
        .collect();
    out.sort_by_key(|c| c.classid);
    Ok(out)
}

/// The temporary device [`fq_codel_available`] tries fq_codel on.
const PROBE_DEVICE: &str = "rd-probe-fqc";

/// Whether this kernel can make fq_codel queues: the host fact `fq_codel`.
/// Tries one on a temporary IFB device (created and deleted here), so no
/// interface in use is touched. A kernel without fq_codel answers "unknown
/// qdisc kind" (ENOENT) or "not supported"; any other refusal is an error.
pub async fn fq_codel_available(handle: &rtnetlink::Handle) -> Result<bool, TcError> {
    if let Some(stale) = find_link(handle, PROBE_DEVICE).await? {
        handle
            .link()
            .del(stale.index)
            .execute()
            .await
            .map_err(|e| write_error(&stale, "delete the probe device".into(), e))?;
    }
    handle
        .link()
        .add(LinkIfb::new(PROBE_DEVICE).build())
        .execute()
        .await
        .map_err(|e| TcError::Write {
            ifname: PROBE_DEVICE.into(),
            op: "create the probe device".into(),
            source: Box::new(e),
        })?;
    let dev = device(handle, PROBE_DEVICE).await?;
    let leaf = Leaf {
        parent: Handle::new(0xffff, 0xffff),
        handle: Handle::new(0xfff0, 0),
        kind: LeafKind::FqCodel {
            target_us: 5_000,
            interval_us: 100_000,
        },
        why: String::new(),
    };
    let tried = send(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(leaf_message(&dev, &leaf)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await;
    let deleted = handle.link().del(dev.index).execute().await;
    let available = match tried {
        Ok(()) => true,
        Err(e) if errno_of(&e).is_some_and(|n| [Errno::ENOENT, Errno::EOPNOTSUPP].contains(&n)) => {
            false
        }
        Err(e) => return Err(write_error(&dev, "try an fq_codel queue".into(), e)),
    };
    deleted.map_err(|e| write_error(&dev, "delete the probe device".into(), e))?;
    Ok(available)
}

// ---------------------------------------------------------------- devices

/// A link as this module needs it.
#[derive(Debug, Clone)]
struct Dev {
    name: String,
    index: u32,
    up: bool,
    kind: Option<String>,
    /// `IFLA_GRO_MAX_SIZE` and `IFLA_GRO_IPV4_MAX_SIZE`, when the kernel reports them.
    gro: (Option<u32>, Option<u32>),
}

fn change(dev: &Dev, object: String, action: ChangeKind) -> TcChange {
    TcChange {
        device: dev.name.clone(),
        object,
        action,
    }
}

fn read_error(dev: &Dev, what: &'static str, e: rtnetlink::Error) -> TcError {
    TcError::Read {
        ifname: dev.name.clone(),
        what,
        source: Box::new(e),
    }
}

fn write_error(dev: &Dev, op: String, e: rtnetlink::Error) -> TcError {
    TcError::Write {
        ifname: dev.name.clone(),
        op,
        source: Box::new(e),
    }
}

async fn find_link(handle: &rtnetlink::Handle, name: &str) -> Result<Option<Dev>, TcError> {
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await.map_err(|e| TcError::Read {
        ifname: name.to_string(),
        what: "links",
        source: Box::new(e),
    })? {
        let mut ifname = None;
        let mut kind = None;
        let mut gro = (None, None);
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => ifname = Some(n.clone()),
                LinkAttribute::GroMaxSize(n) => gro.0 = Some(*n),
                LinkAttribute::GroIpv4MaxSize(n) => gro.1 = Some(*n),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = Some(match k {
                                InfoKind::Ifb => "ifb".to_string(),
                                other => format!("{other:?}").to_lowercase(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if ifname.as_deref() == Some(name) {
            return Ok(Some(Dev {
                name: name.to_string(),
                index: msg.header.index,
                up: msg.header.flags.contains(LinkFlags::Up),
                kind,
                gro,
            }));
        }
    }
    Ok(None)
}

async fn device(handle: &rtnetlink::Handle, name: &str) -> Result<Dev, TcError> {
    find_link(handle, name)
        .await?
        .ok_or_else(|| TcError::NoSuchLink {
            ifname: name.to_string(),
        })
}

async fn ensure_ifb(
    handle: &rtnetlink::Handle,
    name: &str,
    changes: &mut Vec<TcChange>,
) -> Result<Dev, TcError> {
    match find_link(handle, name).await? {
        None => {
            handle
                .link()
                .add(LinkIfb::new(name).up().build())
                .execute()
                .await
                .map_err(|e| TcError::Write {
                    ifname: name.to_string(),
                    op: "create the IFB device".into(),
                    source: Box::new(e),
                })?;
            let dev = device(handle, name).await?;
            changes.push(change(&dev, "link".into(), ChangeKind::Created));
            Ok(dev)
        }
        Some(dev) if dev.kind.as_deref() != Some("ifb") => Err(TcError::NotIfb {
            ifname: name.to_string(),
            kind: dev.kind.unwrap_or_else(|| "no kind".into()),
        }),
        Some(mut dev) => {
            if !dev.up {
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(dev.index).up().build())
                    .execute()
                    .await
                    .map_err(|e| write_error(&dev, "set the IFB up".into(), e))?;
                dev.up = true;
                changes.push(change(&dev, "link up".into(), ChangeKind::Changed));
            }
            Ok(dev)
        }
    }
}

// ------------------------------------------------------------ netlink I/O

async fn send(
    handle: &rtnetlink::Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut response = handle.clone().request(req)?;
    while let Some(msg) = response.next().await {
        if let NetlinkPayload::Error(e) = msg.payload {
            if e.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
    }
    Ok(())
}

async fn dump(
    handle: &rtnetlink::Handle,
    message: RouteNetlinkMessage,
) -> Result<Vec<TcMessage>, rtnetlink::Error> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut response = handle.clone().request(req)?;
    let mut out = Vec::new();
    while let Some(msg) = response.next().await {
        match msg.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewQueueDiscipline(m)
                | RouteNetlinkMessage::NewTrafficClass(m)
                | RouteNetlinkMessage::NewTrafficFilter(m),
            ) => out.push(m),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(rtnetlink::Error::NetlinkError(e))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn tc_handle(h: Handle) -> TcHandle {
    TcHandle {
        major: h.major,
        minor: h.minor,
    }
}

fn plan_handle(h: TcHandle) -> Handle {
    Handle::new(h.major, h.minor)
}

fn header(dev: &Dev, handle: Handle, parent: u32) -> TcHeader {
    TcHeader {
        index: i32::try_from(dev.index).unwrap_or(i32::MAX),
        handle: tc_handle(handle),
        parent: TcHandle::from(parent),
        ..TcHeader::default()
    }
}

/// The value bytes of an attribute kept raw by netlink-packet-route.
fn raw_value<T: Nla>(nla: &T) -> Vec<u8> {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// Nested attributes as (kind, value) pairs; malformed tails are ignored.
fn nested(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    NlasIterator::new(bytes)
        .filter_map(Result::ok)
        .map(|nla| (nla.kind() & 0x3fff, nla.value().to_vec()))
        .collect()
}

fn emit_nested(nlas: &[DefaultNla]) -> Vec<u8> {
    let mut buf = vec![0; nlas.buffer_len()];
    nlas.emit(&mut buf);
    buf
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

// ------------------------------------------------------- message builders

/// `tc_sizespec` and, with a table, its data, as the kernel's `TCA_STAB`.
fn stab_attribute(st: &SizeTable) -> TcAttribute {
    let spec = SizeSpec::planned(st);
    let mut nlas = vec![DefaultNla::new(TCA_STAB_BASE, spec.bytes())];
    if st.tsize() > 0 {
        let data: Vec<u8> = st.data().iter().flat_map(|v| v.to_ne_bytes()).collect();
        nlas.push(DefaultNla::new(TCA_STAB_DATA, data));
    }
    TcAttribute::Stab(emit_nested(&nlas))
}

/// The root HTB of a shaper (`tc qdisc replace dev D root handle 1: stab ... htb default 20`).
fn htb_root_message(dev: &Dev, s: &Shaper) -> TcMessage {
    let mut glob = Vec::with_capacity(20);
    for v in [
        HTB_VERSION,
        HTB_R2Q,
        u32::from(s.default_class.minor),
        0, // debug
        0, // direct_pkts (out only)
    ] {
        glob.extend_from_slice(&v.to_ne_bytes());
    }
    TcMessage::from_parts(
        header(dev, ROOT, TC_H_ROOT),
        vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(vec![TcOption::Other(DefaultNla::new(TCA_HTB_INIT, glob))]),
            stab_attribute(&s.size_table),
        ],
    )
}

/// Only the size table of the root, for a change in place.
fn stab_change_message(dev: &Dev, s: &Shaper) -> TcMessage {
    TcMessage::from_parts(
        header(dev, ROOT, TC_H_ROOT),
        vec![
            TcAttribute::Kind("htb".into()),
            stab_attribute(&s.size_table),
        ],
    )
}

/// HTB's burst as the kernel stores it: psched ticks to send `bytes` at
/// `bps`, rounded up so the class may send at least `bytes` at once.
fn ticks(bytes: u32, bps: u64) -> u32 {
    let bytes_per_s = (bps / 8).max(1);
    let t = (u64::from(bytes) * (1_000_000_000 / NS_PER_TICK)).div_ceil(bytes_per_s);
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// A `tc_ratespec`: Ethernet link layer (the size table did the framing),
/// the rate in bytes/s (all ones when it needs the 64-bit attribute).
fn ratespec(bps: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = LINKLAYER_ETHERNET;
    let rate = u32::try_from(bps / 8).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&rate.to_ne_bytes());
    b
}

/// The kernel's view of an HTB class, planned or read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HtbParms {
    /// Bytes/s.
    rate: u64,
    /// Bytes/s.
    ceil: u64,
    buffer: u32,
    cbuffer: u32,
    quantum: u32,
    prio: u32,
}

impl HtbParms {
    fn planned(c: &HtbClass) -> Self {
        Self {
            rate: c.rate_bps / 8,
            ceil: c.ceil_bps / 8,
            buffer: ticks(c.burst, c.rate_bps),
            cbuffer: ticks(c.cburst, c.ceil_bps),
            quantum: c.quantum,
            prio: c.prio,
        }
    }

    /// Decodes `TCA_OPTIONS` of an HTB class (`TCA_HTB_PARMS`, `RATE64`, `CEIL64`).
    fn decode(options: &[u8]) -> Option<Self> {
        let attrs = nested(options);
        let parms = attrs.iter().find(|(k, _)| *k == TCA_HTB_PARMS)?.1.clone();
        if parms.len() < 44 {
            return None;
        }
        let wide = |kind| {
            attrs
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, v)| u64_at(v, 0))
        };
        Some(Self {
            rate: wide(TCA_HTB_RATE64).unwrap_or(u64::from(u32_at(&parms, 8))),
            ceil: wide(TCA_HTB_CEIL64).unwrap_or(u64::from(u32_at(&parms, 20))),
            buffer: u32_at(&parms, 24),
            cbuffer: u32_at(&parms, 28),
            quantum: u32_at(&parms, 32),
            prio: u32_at(&parms, 40),
        })
    }
}

impl fmt::Display for HtbParms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate {} ceil {} buffer {} cbuffer {} quantum {} prio {}",
            format_rate(self.rate * 8),
            format_rate(self.ceil * 8),
            self.buffer,
            self.cbuffer,
            self.quantum,
            self.prio
        )
    }
}

/// An HTB class (`tc class add/change dev D parent P classid C htb rate ...`).
fn htb_class_message(dev: &Dev, c: &HtbClass) -> TcMessage {
    let p = HtbParms::planned(c);
    let mut opt = Vec::with_capacity(44);
    opt.extend_from_slice(&ratespec(c.rate_bps));
    opt.extend_from_slice(&ratespec(c.ceil_bps));
    for v in [p.buffer, p.cbuffer, p.quantum, 0, p.prio] {
        opt.extend_from_slice(&v.to_ne_bytes());
    }
    let mut options = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, opt))];
    if p.rate > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_RATE64,
            p.rate.to_ne_bytes().to_vec(),
        )));
    }
    if p.ceil > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_CEIL64,
            p.ceil.to_ne_bytes().to_vec(),
        )));
    }
    TcMessage::from_parts(
        header(dev, c.classid, c.parent.as_u32()),
        vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(options),
        ],
    )
}

/// A leaf queue (`tc qdisc add dev D parent 1:10 handle 10: fq_codel ...`).
fn leaf_message(dev: &Dev, l: &Leaf) -> TcMessage {
    let options = match l.kind {
        LeafKind::FqCodel {
            target_us,
            interval_us,
        } => TcAttribute::Options(vec![
            TcOption::FqCodel(TcQdiscFqCodelOption::Target(target_us)),
            TcOption::FqCodel(TcQdiscFqCodelOption::Interval(interval_us)),
        ]),
        // `tc_fifo_qopt` is a bare struct, not nested attributes.
        LeafKind::Pfifo { limit } | LeafKind::Bfifo { limit } => {
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, limit.to_ne_bytes().to_vec()))
        }
    };
    TcMessage::from_parts(
        header(dev, l.handle, l.parent.as_u32()),
        vec![TcAttribute::Kind(l.kind.kind().into()), options],
    )
}

/// `info` of a filter: preference in the upper half, protocol (network
/// byte order) in the lower.
fn filter_info(pref: u16, protocol: u16) -> u32 {
    (u32::from(pref) << 16) | u32::from(protocol.to_be())
}

fn u32_selector(keys: &[U32Key], terminal: bool) -> TcU32Selector {
    let mut sel = TcU32Selector::default();
    if terminal {
        sel.flags = TcU32SelectorFlags::Terminal;
    }
    sel.nkeys = u8::try_from(keys.len()).unwrap_or(u8::MAX);
    sel.keys = keys
        .iter()
        .map(|k| {
            let mut key = TcU32Key::default();
            key.off = k.off;
            key.val = k.val;
            key.mask = k.mask;
            key
        })
        .collect();
    sel
}

fn u32_filter_message(
    dev: &Dev,
    parent: Handle,
    pref: u16,
    protocol: u16,
    handle: u32,
    options: Vec<TcOption>,
) -> TcMessage {
    let mut h = header(dev, Handle::new(0, 0), parent.as_u32());
    h.handle = TcHandle::from(handle);
    h.info = filter_info(pref, protocol);
    TcMessage::from_parts(
        h,
        vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(options),
        ],
    )
}

/// A hash table of `TABLE_BUCKETS` buckets in preference `c.pref`.
fn table_message(dev: &Dev, c: &Classifier, id: u16) -> TcMessage {
    u32_filter_message(
        dev,
        ROOT,
        c.pref,
        c.protocol.value(),
        u32::from(id) << 20,
        vec![TcOption::U32(TcFilterU32Option::Divisor(u32::from(
            TABLE_BUCKETS,
        )))],
    )
}

/// One node of a download classifier. A root node is sent with its id
/// alone: the kernel puts it in the preference's root, whatever its number.
fn node_message(dev: &Dev, c: &Classifier, n: &U32Node) -> TcMessage {
    let mut options = Vec::new();
    let mut sel = u32_selector(&n.keys, matches!(n.target, Target::Class(_)));
    match n.target {
        Target::Class(class) => {
            options.push(TcOption::U32(TcFilterU32Option::ClassId(tc_handle(class))));
        }
        Target::Table { id, hash } => {
            options.push(TcOption::U32(TcFilterU32Option::Link(u32::from(id) << 20)));
            sel.hoff = i16::try_from(hash.off).unwrap_or(0);
            sel.hmask = hash.mask;
        }
    }
    if n.table != 0 {
        options.push(TcOption::U32(TcFilterU32Option::Hash(n.handle() & !0xfff)));
    }
    options.push(TcOption::U32(TcFilterU32Option::Selector(sel)));
    u32_filter_message(dev, ROOT, c.pref, c.protocol.value(), n.handle(), options)
}

/// A u32 filter: one node with `keys`, terminal, to `classid` or through `action`.
fn u32_message(
    dev: &Dev,
    parent: Handle,
    pref: u16,
    protocol: u16,
    keys: &[U32Key],
    classid: Option<Handle>,
    action: Option<TcAction>,
) -> TcMessage {
    let mut options = Vec::new();
    if let Some(c) = classid {
        options.push(TcOption::U32(TcFilterU32Option::ClassId(tc_handle(c))));
    }
    options.push(TcOption::U32(TcFilterU32Option::Selector(u32_selector(
        keys, true,
    ))));
    if let Some(a) = action {
        options.push(TcOption::U32(TcFilterU32Option::Action(vec![a])));
    }
    u32_filter_message(dev, parent, pref, protocol, 0, options)
}

/// `tc filter add dev WAN parent ffff: pref 1 protocol all u32 match u32 0 0
/// action mirred egress redirect dev IFB`.
fn redirect_message(dev: &Dev, r: &Redirect, ifb_index: u32) -> TcMessage {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = ifb_index;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    u32_message(
        dev,
        INGRESS,
        r.pref,
        EtherType::All.value(),
        &[MATCH_ALL],
        None,
        Some(action),
    )
}

fn ingress_message(dev: &Dev) -> TcMessage {
    TcMessage::from_parts(
        header(dev, INGRESS, TC_H_INGRESS),
        vec![TcAttribute::Kind("ingress".into())],
    )
}

// ------------------------------------------------------------- read-back

/// `tc_sizespec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeSpec {
    cell_log: u8,
    size_log: u8,
    cell_align: i16,
    overhead: i32,
    linklayer: u32,
    mpu: u32,
    mtu: u32,
    tsize: u32,
}

impl SizeSpec {
    fn planned(st: &SizeTable) -> Self {
        let tsize = st.tsize();
        Self {
            cell_log: 0,
            size_log: 0,
            cell_align: st.cell_align(),
            overhead: st.overhead,
            linklayer: st.kernel_linklayer(),
            mpu: 0,
            mtu: if tsize == 0 { 0 } else { SizeTable::MTU },
            tsize,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![self.cell_log, self.size_log];
        b.extend_from_slice(&self.cell_align.to_ne_bytes());
        b.extend_from_slice(&self.overhead.to_ne_bytes());
        for v in [self.linklayer, self.mpu, self.mtu, self.tsize] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Decodes the `TCA_STAB` the kernel dumps (its base, not the table).
    fn decode(stab: &[u8]) -> Option<Self> {
        let base = nested(stab)
            .into_iter()
            .find(|(k, _)| *k == TCA_STAB_BASE)?
            .1;
        if base.len() < 24 {
            return None;
        }
        Some(Self {
            cell_log: base[0],
            size_log: base[1],
            cell_align: i16::from_ne_bytes([base[2], base[3]]),
            overhead: i32::from_ne_bytes([base[4], base[5], base[6], base[7]]),
            linklayer: u32_at(&base, 8),
            mpu: u32_at(&base, 12),
            mtu: u32_at(&base, 16),
            tsize: u32_at(&base, 20),
        })
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overhead {} linklayer {} tsize {} mtu {} cell_align {}",
            self.overhead, self.linklayer, self.tsize, self.mtu, self.cell_align
        )
    }
}

/// A leaf's parameters as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeafParams {
    FqCodel { target_us: u32, interval_us: u32 },
    Fifo { limit: u32 },
    Unknown,
}

impl LeafParams {
    /// Whether what the kernel reads back is what was planned. The kernel
    /// keeps codel times in units of 1024 ns, so a planned 5000 us reads
    /// back as 4999 us: a difference of up to 2 us is the same time.
    fn matches(&self, planned: &LeafParams) -> bool {
        match (self, planned) {
            (
                LeafParams::FqCodel {
                    target_us: t,
                    interval_us: i,
                },
                LeafParams::FqCodel {
                    target_us: pt,
                    interval_us: pi,
                },
            ) => t.abs_diff(*pt) <= 2 && i.abs_diff(*pi) <= 2,
            (a, b) => a == b,
        }
    }

    fn planned(kind: &LeafKind) -> Self {
        match *kind {
            LeafKind::FqCodel {
                target_us,
                interval_us,
            } => LeafParams::FqCodel {
                target_us,
                interval_us,
            },
            LeafKind::Pfifo { limit } | LeafKind::Bfifo { limit } => LeafParams::Fifo { limit },
        }
    }
}

impl fmt::Display for LeafParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafParams::FqCodel {
                target_us,
                interval_us,
            } => write!(f, "target {target_us}us interval {interval_us}us"),
            LeafParams::Fifo { limit } => write!(f, "limit {limit}"),
            LeafParams::Unknown => f.write_str("(parameters not read)"),
        }
    }
}

/// A qdisc as read back.
#[derive(Debug, Clone)]
struct Qdisc {
    handle: Handle,
    parent: u32,
    kind: String,
    htb_default: Option<u32>,
    stab: Option<SizeSpec>,
    params: LeafParams,
}

/// A class as read back.
#[derive(Debug, Clone)]
struct Class {
    classid: Handle,
    parent: Handle,
    kind: String,
    htb: Option<HtbParms>,
    level: u32,
    bytes: u64,
    packets: u64,
    drops: u64,
}

/// One u32 node as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    /// The kernel handle, `table:bucket:id`.
    handle: u32,
    classid: Option<Handle>,
    keys: Vec<U32Key>,
    mirred: Option<u32>,
    /// The table it links to (its id), with the hashed word's offset and mask.
    link: Option<(u16, i16, u32)>,
}

/// All nodes and hash tables of one filter preference, as read back.
#[derive(Debug, Clone, Default)]
struct Filter {
    protocol: u16,
    kind: String,
    /// Hash tables: id -> buckets. The root is among them, numbered by the
    /// kernel from [`FIRST_KERNEL_TABLE`].
    tables: BTreeMap<u16, u32>,
    nodes: Vec<Node>,
}

/// The kernel numbers the tables it makes itself (a preference's root)
/// from here; the plan's stay below.
const FIRST_KERNEL_TABLE: u16 = 0x800;

/// The table id of a u32 handle.
fn table_of(handle: u32) -> u16 {
    u16::try_from(handle >> 20).unwrap_or(0)
}

/// A handle as the plan writes it: the root's table as 0.
fn plan_form(handle: u32) -> u32 {
    if table_of(handle) >= FIRST_KERNEL_TABLE {
        handle & 0xf_ffff
    } else {
        handle
    }
}

impl Filter {
    /// The preference's root table.
    fn root(&self) -> Option<u16> {
        self.tables
            .keys()
            .copied()
            .find(|t| *t >= FIRST_KERNEL_TABLE)
    }

    /// How to remove the preference without leaving its tables behind.
    fn teardown(&self) -> Teardown {
        let root = self.root();
        let root_nodes = self
            .nodes
            .iter()
            .filter(|n| Some(table_of(n.handle)) == root)
            .map(|n| n.handle)
            .collect();
        Teardown {
            root_nodes,
            tables: self.top_down(root),
        }
    }

    /// The preference's own tables (not the root), each after the tables
    /// linking to it; tables nothing links to last.
    fn top_down(&self, root: Option<u16>) -> Vec<u16> {
        let mut order: Vec<u16> = Vec::new();
        let mut level: Vec<u16> = root.into_iter().collect();
        let mut seen: BTreeSet<u16> = level.iter().copied().collect();
        while !level.is_empty() {
            let mut next = Vec::new();
            for n in &self.nodes {
                if let Some((to, _, _)) = n.link {
                    if level.contains(&table_of(n.handle)) && seen.insert(to) {
                        next.push(to);
                    }
                }
            }
            next.sort_unstable();
            order.extend(next.iter().copied().filter(|t| self.tables.contains_key(t)));
            level = next;
        }
        for t in self.tables.keys() {
            if *t < FIRST_KERNEL_TABLE && !order.contains(t) {
                order.push(*t);
            }
        }
        order
    }
}

/// What removing a u32 preference takes. The kernel keeps a preference's
/// hash tables after the preference itself is gone (invisible, and in the
/// way of a table with the same id), and refuses to delete a table a node
/// still links to: so first the root's nodes, then the tables from the top.
#[derive(Debug, Clone, Default)]
struct Teardown {
    root_nodes: Vec<u32>,
    tables: Vec<u16>,
}

fn kind_of(attrs: &[TcAttribute]) -> String {
    attrs
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The raw `TCA_OPTIONS` payload of an object whose kind netlink-packet-route
/// does not decode.
fn raw_options(attrs: &[TcAttribute]) -> Option<Vec<u8>> {
    attrs.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::Other(nla) => Some(raw_value(nla)),
            _ => None,
        }),
        _ => None,
    })
}

fn decode_qdisc(m: &TcMessage) -> Qdisc {
    let kind = kind_of(&m.attributes);
    let mut q = Qdisc {
        handle: plan_handle(m.header.handle),
        parent: u32::from(m.header.parent),
        kind: kind.clone(),
        htb_default: None,
        stab: None,
        params: LeafParams::Unknown,
    };
    for a in &m.attributes {
        if let TcAttribute::Stab(b) = a {
            q.stab = SizeSpec::decode(b);
        }
    }
    match kind.as_str() {
        "htb" => {
            q.htb_default = raw_options(&m.attributes).and_then(|o| {
                nested(&o)
                    .into_iter()
                    .find(|(k, _)| *k == TCA_HTB_INIT)
                    .map(|(_, v)| u32_at(&v, 8))
            });
        }
        "pfifo" | "bfifo" => {
            if let Some(o) = raw_options(&m.attributes) {
                q.params = LeafParams::Fifo {
                    limit: u32_at(&o, 0),
                };
            }
        }
        "fq_codel" => {
            let (mut target_us, mut interval_us) = (0, 0);
            for a in &m.attributes {
                if let TcAttribute::Options(opts) = a {
                    for o in opts {
                        match o {
                            TcOption::FqCodel(TcQdiscFqCodelOption::Target(t)) => target_us = *t,
                            TcOption::FqCodel(TcQdiscFqCodelOption::Interval(i)) => {
                                interval_us = *i
                            }
                            _ => {}
                        }
                    }
                }
            }
            q.params = LeafParams::FqCodel {
                target_us,
                interval_us,
            };
        }
        _ => {}
    }
    q
}

fn decode_class(m: &TcMessage) -> Class {
    let kind = kind_of(&m.attributes);
    let raw = raw_options(&m.attributes);
    let htb = if kind == "htb" {
        raw.as_deref().and_then(HtbParms::decode)
    } else {
        None
    };
    let level = raw
        .as_deref()
        .map(nested)
        .and_then(|a| a.into_iter().find(|(k, _)| *k == TCA_HTB_PARMS))
        .map_or(0, |(_, v)| u32_at(&v, 36));
    let classid = plan_handle(m.header.handle);
    // The kernel names a root class's parent TC_H_ROOT; the plan names the qdisc.
    let parent = if u32::from(m.header.parent) == TC_H_ROOT {
        Handle::new(classid.major, 0)
    } else {
        plan_handle(m.header.parent)
    };
    let mut c = Class {
        classid,
        parent,
        kind,
        htb,
        level,
        bytes: 0,
        packets: 0,
        drops: 0,
    };
    for a in &m.attributes {
        if let TcAttribute::Stats2(stats) = a {
            for s in stats {
                match s {
                    TcStats2::Basic(b) => {
                        c.bytes = b.bytes;
                        c.packets = u64::from(b.packets);
                    }
                    TcStats2::Queue(q) => c.drops = u64::from(q.drops),
                    _ => {}
                }
            }
        }
    }
    c
}

/// Groups a filter dump by preference (chain 0 only; the router uses no other).
fn decode_filters(msgs: &[TcMessage]) -> BTreeMap<u16, Filter> {
    let mut out: BTreeMap<u16, Filter> = BTreeMap::new();
    for m in msgs {
        let chain = m.attributes.iter().find_map(|a| match a {
            TcAttribute::Chain(c) => Some(*c),
            _ => None,
        });
        if chain.unwrap_or(0) != 0 {
            continue;
        }
        let pref = u16::try_from(m.header.info >> 16).unwrap_or(0);
        let protocol = u16::from_be(u16::try_from(m.header.info & 0xffff).unwrap_or(0));
        let entry = out.entry(pref).or_insert_with(|| Filter {
            protocol,
            kind: kind_of(&m.attributes),
            ..Filter::default()
        });
        let handle = u32::from(m.header.handle);
        let mut node = Node {
            handle,
            classid: None,
            keys: Vec::new(),
            mirred: None,
            link: None,
        };
        let mut selector = None;
        let mut link = None;
        for a in &m.attributes {
            let TcAttribute::Options(opts) = a else {
                continue;
            };
            for o in opts {
                match o {
                    TcOption::U32(TcFilterU32Option::ClassId(c)) => {
                        node.classid = Some(plan_handle(*c))
                    }
                    TcOption::U32(TcFilterU32Option::Divisor(d)) => {
                        entry.tables.insert(table_of(handle), *d);
                    }
                    TcOption::U32(TcFilterU32Option::Link(l)) => link = Some(table_of(*l)),
                    TcOption::U32(TcFilterU32Option::Selector(sel)) => {
                        node.keys = sel
                            .keys
                            .iter()
                            .map(|k| U32Key {
                                off: k.off,
                                val: k.val,
                                mask: k.mask,
                            })
                            .collect();
                        selector = Some((sel.hoff, sel.hmask));
                    }
                    TcOption::U32(TcFilterU32Option::Action(actions)) => {
                        node.mirred = actions.iter().find_map(mirred_target);
                    }
                    _ => {}
                }
            }
        }
        if let Some((hoff, hmask)) = selector {
            node.link = link.map(|t| (t, hoff, hmask));
            entry.nodes.push(node);
        }
    }
    out
}

/// The device a mirred action redirects to egress, if it is one.
fn mirred_target(a: &TcAction) -> Option<u32> {
    a.attributes.iter().find_map(|attr| match attr {
        TcActionAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcActionOption::Mirror(TcActionMirrorOption::Parms(m))
                if m.eaction == TcMirrorActionType::EgressRedir =>
            {
                Some(m.ifindex)
            }
            _ => None,
        }),
        _ => None,
    })
}

async fn read_qdiscs(handle: &rtnetlink::Handle, dev: &Dev) -> Result<Vec<Qdisc>, TcError> {
    let msgs = dump(
        handle,
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
    )
    .await
    .map_err(|e| read_error(dev, "qdiscs", e))?;
    Ok(msgs
        .iter()
        .filter(|m| u32::try_from(m.header.index).ok() == Some(dev.index))
        .map(decode_qdisc)
        .collect())
}

async fn read_classes(handle: &rtnetlink::Handle, dev: &Dev) -> Result<Vec<Class>, TcError> {
    let msg = TcMessage::from_parts(header(dev, Handle::new(0, 0), 0), Vec::new());
    let msgs = dump(handle, RouteNetlinkMessage::GetTrafficClass(msg))
        .await
        .map_err(|e| read_error(dev, "classes", e))?;
    Ok(msgs
        .iter()
        .filter(|m| u32::try_from(m.header.index).ok() == Some(dev.index))
        .map(decode_class)
        .collect())
}

async fn read_filters(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    parent: Handle,
) -> Result<BTreeMap<u16, Filter>, TcError> {
    let msg = TcMessage::from_parts(header(dev, Handle::new(0, 0), parent.as_u32()), Vec::new());
    let msgs = dump(handle, RouteNetlinkMessage::GetTrafficFilter(msg))
        .await
        .map_err(|e| read_error(dev, "filters", e))?;
    let mine: Vec<TcMessage> = msgs
        .into_iter()
        .filter(|m| u32::try_from(m.header.index).ok() == Some(dev.index))
        .collect();
    Ok(decode_filters(&mine))
}

/// What one device holds of a shaper.
struct DevState {
    qdiscs: Vec<Qdisc>,
    classes: Vec<Class>,
    filters: BTreeMap<u16, Filter>,
}

impl DevState {
    /// The root tree: qdiscs, HTB `1:` classes, filters on `1:`.
    async fn read(handle: &rtnetlink::Handle, dev: &Dev) -> Result<Self, TcError> {
        let qdiscs = read_qdiscs(handle, dev).await?;
        let root_is_htb = qdiscs
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.handle == ROOT && q.kind == "htb");
        let (classes, filters) = if root_is_htb {
            (
                read_classes(handle, dev)
                    .await?
                    .into_iter()
                    .filter(|c| c.classid.major == ROOT.major)
                    .collect(),
                read_filters(handle, dev, ROOT).await?,
            )
        } else {
            (Vec::new(), BTreeMap::new())
        };
        Ok(Self {
            qdiscs,
            classes,
            filters,
        })
    }

    /// The ingress side: qdiscs and the filters on `ffff:`.
    async fn read_ingress(handle: &rtnetlink::Handle, dev: &Dev) -> Result<Self, TcError> {
        let qdiscs = read_qdiscs(handle, dev).await?;
        let has_ingress = qdiscs
            .iter()
            .any(|q| q.parent == TC_H_INGRESS && q.kind == "ingress");
        let filters = if has_ingress {
            read_filters(handle, dev, INGRESS).await?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            qdiscs,
            classes: Vec::new(),
            filters,
        })
    }

    fn root(&self) -> Option<&Qdisc> {
        self.qdiscs.iter().find(|q| q.parent == TC_H_ROOT)
    }

    fn class(&self, id: Handle) -> Option<&Class> {
        self.classes.iter().find(|c| c.classid == id)
    }

    fn under(&self, class: Handle) -> Option<&Qdisc> {
        self.qdiscs.iter().find(|q| q.parent == class.as_u32())
    }
}

// ------------------------------------------------------------------ diff

/// One difference between the kernel and the plan, and what fixes it.
#[derive(Debug)]
enum Step<'a> {
    /// The root is not the plan's HTB: replace the whole tree. `default`:
    /// what is there is the kernel's default qdisc (nothing of anyone's).
    ReplaceRoot {
        found: String,
        default: bool,
    },
    /// The root's size table differs: swap it in place.
    ChangeStab {
        found: String,
        planned: String,
    },
    CreateClass(&'a HtbClass),
    ChangeClass {
        class: &'a HtbClass,
        found: String,
    },
    RemoveClass {
        classid: Handle,
    },
    CreateLeaf(&'a Leaf),
    ChangeLeaf {
        leaf: &'a Leaf,
        found: String,
    },
    /// Another kind of queue holds the leaf's handle: delete it, create the leaf.
    RecreateLeaf {
        leaf: &'a Leaf,
        found: String,
    },
    /// Another queue sits in the leaf's class: graft the leaf in its place.
    GraftLeaf {
        leaf: &'a Leaf,
        found: String,
    },
    /// A download classifier differs: what makes it the plan's.
    Classifier(ClassifierWork<'a>),
    /// A preference the plan does not have.
    RemoveFilter {
        pref: u16,
        protocol: u16,
        teardown: Teardown,
    },
    AddIngress,
    ReplaceIngress {
        found: Qdisc,
    },
    AddRedirect,
    ReplaceRedirect {
        protocol: u16,
    },
}

impl Step<'_> {
    /// The drift line [`verify`] reports.
    fn describe(&self, dev: &str) -> String {
        match self {
            Step::ReplaceRoot { found, .. } => {
                format!("{dev}: root qdisc is {found}, planned htb {ROOT} (default class 1:20)")
            }
            Step::ChangeStab { found, planned } => {
                format!("{dev}: size table is {found}, planned {planned}")
            }
            Step::CreateClass(c) => format!("{dev}: class {} is missing", c.classid),
            Step::ChangeClass { class, found } => format!(
                "{dev}: class {} has {found}, planned {}",
                class.classid,
                HtbParms::planned(class)
            ),
            Step::RemoveClass { classid } => {
                format!("{dev}: class {classid} is not in the plan")
            }
            Step::CreateLeaf(l) => format!(
                "{dev}: queue {} {} of class {} is missing",
                l.kind.kind(),
                l.handle,
                l.parent
            ),
            Step::ChangeLeaf { leaf, found } | Step::RecreateLeaf { leaf, found } => format!(
                "{dev}: queue of class {} is {found}, planned {} {} {}",
                leaf.parent,
                leaf.kind.kind(),
                leaf.handle,
                LeafParams::planned(&leaf.kind)
            ),
            Step::GraftLeaf { leaf, found } => format!(
                "{dev}: queue of class {} is {found}, planned {} {}",
                leaf.parent,
                leaf.kind.kind(),
                leaf.handle
            ),
            Step::Classifier(w) => w.describe(dev),
            Step::RemoveFilter { pref, .. } => {
                format!("{dev}: filter pref {pref} is not in the plan")
            }
            Step::AddIngress => format!("{dev}: the ingress qdisc is missing"),
            Step::ReplaceIngress { found } => {
                format!(
                    "{dev}: the ingress hook holds {}, planned ingress",
                    found.kind
                )
            }
            Step::AddRedirect => {
                format!("{dev}: the redirect of the download to its IFB is missing")
            }
            Step::ReplaceRedirect { .. } => {
                format!("{dev}: the redirect of the download to its IFB differs from the plan")
            }
        }
    }
}

fn describe_qdisc(q: &Qdisc) -> String {
    format!("{} {}", q.kind, q.handle)
}

fn diff_shaper<'a>(state: &DevState, s: &'a Shaper) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let root = state.root();
    let ours = root.is_some_and(|q| {
        q.kind == "htb"
            && q.handle == ROOT
            && q.htb_default == Some(u32::from(s.default_class.minor))
    });
    let parents_right = s.classes.iter().all(|c| {
        state
            .class(c.classid)
            .map_or(true, |k| k.parent == c.parent && k.kind == "htb")
    });
    if !ours || !parents_right {
        let default = root.map_or(true, |q| q.handle.major == 0);
        let found = match root {
            None => "missing".to_string(),
            Some(q) if default => format!("the kernel's default ({})", q.kind),
            Some(q) if !ours => describe_qdisc(q),
            Some(_) => "htb 1: with a class under the wrong parent".to_string(),
        };
        steps.push(Step::ReplaceRoot { found, default });
        return steps;
    }
    let planned = SizeSpec::planned(&s.size_table);
    let found = root.and_then(|q| q.stab);
    if found != Some(planned) {
        steps.push(Step::ChangeStab {
            found: found.map_or_else(|| "none".to_string(), |f| f.to_string()),
            planned: planned.to_string(),
        });
    }
    for c in &s.classes {
        // HTB keeps quantum and prio only for leaf classes: an inner class
        // shows what it had when it was created, whatever is sent later.
        let inner = s.classes.iter().any(|child| child.parent == c.classid);
        let same = |k: &HtbParms| {
            let p = HtbParms::planned(c);
            if inner {
                (k.rate, k.ceil, k.buffer, k.cbuffer) == (p.rate, p.ceil, p.buffer, p.cbuffer)
            } else {
                *k == p
            }
        };
        match state.class(c.classid) {
            None => steps.push(Step::CreateClass(c)),
            Some(k) if !k.htb.as_ref().is_some_and(same) => steps.push(Step::ChangeClass {
                class: c,
                found: k
                    .htb
                    .map_or_else(|| "no HTB parameters".into(), |p| p.to_string()),
            }),
            Some(_) => {}
        }
    }
    for l in &s.leaves {
        match state.under(l.parent) {
            None => steps.push(Step::CreateLeaf(l)),
            Some(q) if q.handle == l.handle && q.kind == l.kind.kind() => {
                if !q.params.matches(&LeafParams::planned(&l.kind)) {
                    steps.push(Step::ChangeLeaf {
                        leaf: l,
                        found: format!("{} {}", describe_qdisc(q), q.params),
                    });
                }
            }
            Some(q) if q.handle == l.handle => steps.push(Step::RecreateLeaf {
                leaf: l,
                found: describe_qdisc(q),
            }),
            Some(q) => steps.push(Step::GraftLeaf {
                leaf: l,
                found: describe_qdisc(q),
            }),
        }
    }
    for c in &s.classifiers {
        if let Some(w) = diff_classifier(state.filters.get(&c.pref), c) {
            steps.push(Step::Classifier(w));
        }
    }
    for (pref, k) in &state.filters {
        if !s.classifiers.iter().any(|c| c.pref == *pref) {
            steps.push(Step::RemoveFilter {
                pref: *pref,
                protocol: k.protocol,
                teardown: k.teardown(),
            });
        }
    }
    let mut extra: Vec<&Class> = state
        .classes
        .iter()
        .filter(|k| s.class(k.classid).is_none())
        .collect();
    // Leaves before the classes holding them.
    extra.sort_by_key(|k| (k.level, k.classid));
    for k in extra {
        steps.push(Step::RemoveClass { classid: k.classid });
    }
    steps
}

fn diff_redirect<'a>(state: &DevState, r: &Redirect, ifb_index: u32) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    match state.qdiscs.iter().find(|q| q.parent == TC_H_INGRESS) {
        None => {
            steps.push(Step::AddIngress);
            steps.push(Step::AddRedirect);
            return steps;
        }
        Some(q) if q.kind != "ingress" => {
            steps.push(Step::ReplaceIngress { found: q.clone() });
            steps.push(Step::AddRedirect);
            return steps;
        }
        Some(_) => {}
    }
    let is_redirect = |n: &Node| {
        n.classid.is_none()
            && n.keys == [MATCH_ALL]
            && n.mirred == Some(ifb_index)
            && n.link.is_none()
    };
    match state.filters.get(&r.pref) {
        None => steps.push(Step::AddRedirect),
        Some(k)
            if k.kind == "u32"
                && k.protocol == EtherType::All.value()
                && k.nodes.len() == 1
                && is_redirect(&k.nodes[0]) => {}
        Some(k) => steps.push(Step::ReplaceRedirect {
            protocol: k.protocol,
        }),
    }
    for (pref, k) in &state.filters {
        if *pref != r.pref {
            steps.push(Step::RemoveFilter {
                pref: *pref,
                protocol: k.protocol,
                teardown: k.teardown(),
            });
        }
    }
    steps
}

// ------------------------------------------------------- the classifiers

/// What makes the kernel's preference `c.pref` hold the classifier `c`.
#[derive(Debug)]
struct ClassifierWork<'a> {
    c: &'a Classifier,
    /// The preference holds another kind of filter or protocol, or a table
    /// of another size: remove it first (then build the plan's from nothing).
    teardown: Option<(u16, String, Teardown)>,
    /// Whether the preference existed (and stays).
    found: bool,
    create_tables: Vec<u16>,
    /// Nodes to add, each with the kernel handle of the node it replaces.
    put: Vec<(&'a U32Node, Option<u32>)>,
    /// Kernel handles of nodes the plan does not have, outside the tables
    /// that go.
    remove_nodes: Vec<u32>,
    /// Tables the plan does not have, from the top.
    remove_tables: Vec<u16>,
}

/// Whether the node read back is the plan's node.
fn node_matches(found: &Node, n: &U32Node) -> bool {
    let (classid, link) = match n.target {
        Target::Class(c) => (Some(c), None),
        Target::Table { id, hash } => (
            None,
            Some((id, i16::try_from(hash.off).unwrap_or(0), hash.mask)),
        ),
    };
    found.classid == classid && found.link == link && found.keys == n.keys && found.mirred.is_none()
}

fn diff_classifier<'a>(found: Option<&Filter>, c: &'a Classifier) -> Option<ClassifierWork<'a>> {
    let mut teardown = None;
    let found = found.filter(|k| {
        let wrong_table = c.tables.iter().any(|t| {
            k.tables
                .get(t)
                .is_some_and(|d| *d != u32::from(TABLE_BUCKETS))
        });
        if k.kind == "u32" && k.protocol == c.protocol.value() && !wrong_table {
            return true;
        }
        let what = if wrong_table {
            format!("a hash table that is not {TABLE_BUCKETS} buckets")
        } else {
            format!("a {} filter for protocol {:#06x}", k.kind, k.protocol)
        };
        teardown = Some((k.protocol, what, k.teardown()));
        false
    });
    let empty = Filter::default();
    let k = found.unwrap_or(&empty);
    let create_tables: Vec<u16> = c
        .tables
        .iter()
        .copied()
        .filter(|t| !k.tables.contains_key(t))
        .collect();
    let have: BTreeMap<u32, &Node> = k.nodes.iter().map(|n| (plan_form(n.handle), n)).collect();
    let mut put = Vec::new();
    for n in &c.nodes {
        match have.get(&n.handle()) {
            None => put.push((n, None)),
            Some(h) if node_matches(h, n) => {}
            Some(h) => put.push((n, Some(h.handle))),
        }
    }
    let remove_tables: Vec<u16> = k
        .top_down(k.root())
        .into_iter()
        .filter(|t| !c.tables.contains(t))
        .collect();
    let planned: BTreeSet<u32> = c.nodes.iter().map(U32Node::handle).collect();
    // Links first, so the tables they lead to can go.
    let mut remove_nodes: Vec<u32> = k
        .nodes
        .iter()
        .map(|n| n.handle)
        .filter(|h| !planned.contains(&plan_form(*h)) && !remove_tables.contains(&table_of(*h)))
        .collect();
    remove_nodes.sort_by_key(|h| (table_of(*h) < FIRST_KERNEL_TABLE, *h));
    let w = ClassifierWork {
        c,
        teardown,
        found: found.is_some(),
        create_tables,
        put,
        remove_nodes,
        remove_tables,
    };
    let nothing = w.teardown.is_none()
        && w.create_tables.is_empty()
        && w.put.is_empty()
        && w.remove_nodes.is_empty()
        && w.remove_tables.is_empty();
    (!nothing).then_some(w)
}

impl ClassifierWork<'_> {
    /// The drift line [`verify`] reports: counts, and the first node missing
    /// or different by name.
    fn describe(&self, dev: &str) -> String {
        let c = self.c;
        let head = format!(
            "{dev}: download classifier pref {} ({})",
            c.pref,
            c.protocol.word()
        );
        if let Some((_, what, _)) = &self.teardown {
            return format!("{head}: the preference holds {what}");
        }
        if !self.found {
            return format!(
                "{head} is missing ({} nodes, {} hash tables)",
                c.nodes.len(),
                c.tables.len()
            );
        }
        let mut parts = Vec::new();
        let missing = self.put.iter().filter(|(_, old)| old.is_none()).count();
        let differ = self.put.len() - missing;
        if let Some((n, _)) = self.put.first() {
            parts.push(format!(
                "{missing} of {} nodes missing and {differ} different (first: {} {})",
                c.nodes.len(),
                node_name(n),
                n.matches
            ));
        }
        if !self.create_tables.is_empty() {
            parts.push(format!(
                "{} of {} hash tables missing",
                self.create_tables.len(),
                c.tables.len()
            ));
        }
        if !self.remove_nodes.is_empty() || !self.remove_tables.is_empty() {
            parts.push(format!(
                "{} and {} not in the plan",
                count(self.remove_nodes.len(), "node"),
                count(self.remove_tables.len(), "hash table")
            ));
        }
        format!("{head} differs from the plan: {}", parts.join("; "))
    }
}

/// `1 node`, `2 nodes`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `::1` for a root node, `1:2a:1` in a table, as tc writes them.
fn node_name(n: &U32Node) -> String {
    if n.table == 0 {
        format!("::{:x}", n.id)
    } else {
        format!("{:x}:{:x}:{:x}", n.table, n.bucket, n.id)
    }
}

async fn run_classifier(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    w: &ClassifierWork<'_>,
    changes: &mut Vec<TcChange>,
) -> Result<(), TcError> {
    let c = w.c;
    let proto = c.protocol.value();
    if let Some((protocol, _, t)) = &w.teardown {
        remove_pref(handle, dev, ROOT, c.pref, *protocol, t).await?;
    }
    for t in &w.create_tables {
        send(
            handle,
            RouteNetlinkMessage::NewTrafficFilter(table_message(dev, c, *t)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map_err(|e| {
            write_error(
                dev,
                format!("create hash table {t:x}: in pref {}", c.pref),
                e,
            )
        })?;
    }
    for (n, old) in &w.put {
        if let Some(old) = old {
            delete_node(handle, dev, ROOT, c.pref, proto, *old).await?;
        }
        send(
            handle,
            RouteNetlinkMessage::NewTrafficFilter(node_message(dev, c, n)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map_err(|e| {
            write_error(
                dev,
                format!(
                    "create node {} ({}) in pref {}",
                    node_name(n),
                    n.matches,
                    c.pref
                ),
                e,
            )
        })?;
    }
    for h in &w.remove_nodes {
        delete_node(handle, dev, ROOT, c.pref, proto, *h).await?;
    }
    for t in &w.remove_tables {
        delete_table(handle, dev, ROOT, c.pref, proto, *t).await?;
    }
    let replaced = w.put.iter().filter(|(_, old)| old.is_some()).count();
    let (action, what) = if !w.found {
        (
            if w.teardown.is_some() {
                ChangeKind::Replaced
            } else {
                ChangeKind::Created
            },
            format!("{} nodes, {} hash tables", c.nodes.len(), c.tables.len()),
        )
    } else {
        (
            ChangeKind::Changed,
            format!(
                "{} nodes added, {replaced} replaced, {} removed; {} hash tables added, {} removed",
                w.put.len() - replaced,
                w.remove_nodes.len(),
                w.create_tables.len(),
                w.remove_tables.len()
            ),
        )
    };
    changes.push(change(
        dev,
        format!("download classifier pref {} ({what})", c.pref),
        action,
    ));
    Ok(())
}

fn errno_of(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

/// Deletes one u32 node by its kernel handle.
async fn delete_node(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    parent: Handle,
    pref: u16,
    protocol: u16,
    node: u32,
) -> Result<(), TcError> {
    let msg = u32_filter_message(dev, parent, pref, protocol, node, Vec::new());
    send(handle, RouteNetlinkMessage::DelTrafficFilter(msg), 0)
        .await
        .map_err(|e| write_error(dev, format!("delete u32 node {node:08x} in pref {pref}"), e))
}

/// How long [`delete_table`] waits for the kernel to let go of a table.
const TABLE_RELEASE: Duration = Duration::from_secs(3);

/// Deletes a hash table. The kernel counts a deleted link against its table
/// only after an RCU grace period, so "in use" right after the links went
/// is retried for up to [`TABLE_RELEASE`]. A table whose preference is
/// already gone (the kernel drops an emptied one) is no error.
async fn delete_table(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    parent: Handle,
    pref: u16,
    protocol: u16,
    table: u16,
) -> Result<(), TcError> {
    let started = tokio::time::Instant::now();
    loop {
        let msg = u32_filter_message(
            dev,
            parent,
            pref,
            protocol,
            u32::from(table) << 20,
            Vec::new(),
        );
        match send(handle, RouteNetlinkMessage::DelTrafficFilter(msg), 0).await {
            Ok(()) => return Ok(()),
            Err(e) if errno_of(&e) == Some(Errno::ENOENT) => return Ok(()),
            Err(e) if errno_of(&e) == Some(Errno::EBUSY) && started.elapsed() < TABLE_RELEASE => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                return Err(write_error(
                    dev,
                    format!("delete hash table {table:x}: in pref {pref}"),
                    e,
                ))
            }
        }
    }
}

/// Removes preference `pref` whole: its root's nodes, its tables from the
/// top, then the preference (if the kernel has not dropped it already).
async fn remove_pref(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    parent: Handle,
    pref: u16,
    protocol: u16,
    t: &Teardown,
) -> Result<(), TcError> {
    for n in &t.root_nodes {
        delete_node(handle, dev, parent, pref, protocol, *n).await?;
    }
    for table in &t.tables {
        delete_table(handle, dev, parent, pref, protocol, *table).await?;
    }
    match delete_filter(handle, dev, parent, pref, protocol).await {
        Err(TcError::Write { source, .. }) if errno_of(&source) == Some(Errno::ENOENT) => Ok(()),
        other => other,
    }
}

// ----------------------------------------------------------------- apply

async fn apply_shaper(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    s: &Shaper,
    changes: &mut Vec<TcChange>,
) -> Result<(), TcError> {
    let mut state = DevState::read(handle, dev).await?;
    let mut steps = diff_shaper(&state, s);
    if let Some(Step::ReplaceRoot { default, .. }) = steps.first() {
        let action = if *default {
            ChangeKind::Created
        } else {
            ChangeKind::Replaced
        };
        let object = format!("root qdisc htb {ROOT}");
        send(
            handle,
            RouteNetlinkMessage::NewQueueDiscipline(htb_root_message(dev, s)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| write_error(dev, format!("replace the {object}"), e))?;
        changes.push(change(dev, object, action));
        state = DevState::read(handle, dev).await?;
        steps = diff_shaper(&state, s);
    }
    for step in &steps {
        run_step(handle, dev, s, step, changes).await?;
    }
    Ok(())
}

async fn run_step(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    s: &Shaper,
    step: &Step<'_>,
    changes: &mut Vec<TcChange>,
) -> Result<(), TcError> {
    let new_qdisc = RouteNetlinkMessage::NewQueueDiscipline;
    let (message, flags, object, action) = match step {
        Step::ReplaceRoot { .. } => {
            // Handled by the caller; a second one means the kernel did not take it.
            return Err(TcError::Write {
                ifname: dev.name.clone(),
                op: format!("install the root qdisc htb {ROOT}"),
                source: Box::new(rtnetlink::Error::RequestFailed),
            });
        }
        Step::ChangeStab { .. } => (
            new_qdisc(stab_change_message(dev, s)),
            0,
            "size table".to_string(),
            ChangeKind::Changed,
        ),
        Step::CreateClass(c) => (
            RouteNetlinkMessage::NewTrafficClass(htb_class_message(dev, c)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("class {}", c.classid),
            ChangeKind::Created,
        ),
        Step::ChangeClass { class, .. } => (
            RouteNetlinkMessage::NewTrafficClass(htb_class_message(dev, class)),
            0,
            format!("class {}", class.classid),
            ChangeKind::Changed,
        ),
        Step::RemoveClass { classid } => (
            RouteNetlinkMessage::DelTrafficClass(TcMessage::from_parts(
                header(dev, *classid, 0),
                Vec::new(),
            )),
            0,
            format!("class {classid}"),
            ChangeKind::Removed,
        ),
        Step::CreateLeaf(l) | Step::GraftLeaf { leaf: l, .. } => (
            new_qdisc(leaf_message(dev, l)),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("qdisc {} {}", l.kind.kind(), l.handle),
            if matches!(step, Step::CreateLeaf(_)) {
                ChangeKind::Created
            } else {
                ChangeKind::Replaced
            },
        ),
        Step::ChangeLeaf { leaf, .. } => (
            new_qdisc(leaf_message(dev, leaf)),
            0,
            format!("qdisc {} {}", leaf.kind.kind(), leaf.handle),
            ChangeKind::Changed,
        ),
        Step::RecreateLeaf { leaf, .. } => {
            let del =
                TcMessage::from_parts(header(dev, leaf.handle, leaf.parent.as_u32()), Vec::new());
            send(handle, RouteNetlinkMessage::DelQueueDiscipline(del), 0)
                .await
                .map_err(|e| write_error(dev, format!("delete qdisc {}", leaf.handle), e))?;
            (
                new_qdisc(leaf_message(dev, leaf)),
                NLM_F_CREATE | NLM_F_EXCL,
                format!("qdisc {} {}", leaf.kind.kind(), leaf.handle),
                ChangeKind::Replaced,
            )
        }
        Step::Classifier(w) => return run_classifier(handle, dev, w, changes).await,
        Step::RemoveFilter {
            pref,
            protocol,
            teardown,
        } => {
            remove_pref(handle, dev, ROOT, *pref, *protocol, teardown).await?;
            changes.push(change(
                dev,
                format!("filter pref {pref}"),
                ChangeKind::Removed,
            ));
            return Ok(());
        }
        Step::AddIngress
        | Step::ReplaceIngress { .. }
        | Step::AddRedirect
        | Step::ReplaceRedirect { .. } => return Ok(()),
    };
    let op = match action {
        ChangeKind::Created => format!("create {object}"),
        ChangeKind::Changed => format!("change {object}"),
        ChangeKind::Replaced => format!("replace {object}"),
        ChangeKind::Removed => format!("remove {object}"),
    };
    send(handle, message, flags)
        .await
        .map_err(|e| write_error(dev, op, e))?;
    changes.push(change(dev, object, action));
    Ok(())
}

/// Deletes every filter of preference `pref` (never 0: that would flush
/// the whole block).
async fn delete_filter(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    parent: Handle,
    pref: u16,
    protocol: u16,
) -> Result<(), TcError> {
    if pref == 0 {
        return Ok(());
    }
    let mut h = header(dev, Handle::new(0, 0), parent.as_u32());
    h.info = filter_info(pref, protocol);
    let msg = TcMessage::from_parts(h, Vec::new());
    send(handle, RouteNetlinkMessage::DelTrafficFilter(msg), 0)
        .await
        .map_err(|e| write_error(dev, format!("delete filter pref {pref}"), e))
}

async fn apply_redirect(
    handle: &rtnetlink::Handle,
    wan: &Dev,
    ifb: &Dev,
    r: &Redirect,
    changes: &mut Vec<TcChange>,
) -> Result<(), TcError> {
    let state = DevState::read_ingress(handle, wan).await?;
    for step in diff_redirect(&state, r, ifb.index) {
        match step {
            Step::ReplaceIngress { found } => {
                let del =
                    TcMessage::from_parts(header(wan, found.handle, found.parent), Vec::new());
                send(handle, RouteNetlinkMessage::DelQueueDiscipline(del), 0)
                    .await
                    .map_err(|e| write_error(wan, format!("remove qdisc {}", found.kind), e))?;
                add_ingress(handle, wan).await?;
                changes.push(change(wan, "qdisc ingress".into(), ChangeKind::Replaced));
            }
            Step::AddIngress => {
                add_ingress(handle, wan).await?;
                changes.push(change(wan, "qdisc ingress".into(), ChangeKind::Created));
            }
            Step::AddRedirect | Step::ReplaceRedirect { .. } => {
                let action = if let Step::ReplaceRedirect { protocol } = step {
                    delete_filter(handle, wan, INGRESS, r.pref, protocol).await?;
                    ChangeKind::Replaced
                } else {
                    ChangeKind::Created
                };
                let object = format!("filter pref {} (redirect to {})", r.pref, ifb.name);
                send(
                    handle,
                    RouteNetlinkMessage::NewTrafficFilter(redirect_message(wan, r, ifb.index)),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
                .await
                .map_err(|e| write_error(wan, format!("create {object}"), e))?;
                changes.push(change(wan, object, action));
            }
            Step::RemoveFilter {
                pref,
                protocol,
                teardown,
            } => {
                remove_pref(handle, wan, INGRESS, pref, protocol, &teardown).await?;
                changes.push(change(
                    wan,
                    format!("ingress filter pref {pref}"),
                    ChangeKind::Removed,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn add_ingress(handle: &rtnetlink::Handle, wan: &Dev) -> Result<(), TcError> {
    send(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(ingress_message(wan)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|e| write_error(wan, "create the ingress qdisc".into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Parseable;
    use router_config::model::Framing;

    #[test]
    fn codel_times_read_back_rounded_by_the_kernel_still_match() {
        // The router's 6.12 kernel keeps codel times in 1024 ns units.
        let planned = LeafParams::FqCodel {
            target_us: 5_000,
            interval_us: 100_000,
        };
        let read = LeafParams::FqCodel {
            target_us: 4_999,
            interval_us: 99_999,
        };
        assert!(read.matches(&planned));
        let other = LeafParams::FqCodel {
            target_us: 10_800,
            interval_us: 99_999,
        };
        assert!(!other.matches(&planned));
        assert!(!LeafParams::Fifo { limit: 10 }.matches(&LeafParams::Fifo { limit: 11 }));
    }

    fn dev() -> Dev {
        Dev {
            name: "eth0".into(),
            index: 7,
            up: true,
            kind: None,
            gro: (None, None),
        }
    }

    fn plan() -> QosPlan {
        let text = include_str!("../../../docs/examples/router.toml");
        let (cfg, _) = router_config::parse_config(text);
        let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
        let checked = router_config::check(cfg.unwrap(), policy).unwrap();
        router_plan::qos::qos(&checked)
    }

    /// Emits and parses a message the way it travels to the kernel and back.
    fn round_trip(m: &TcMessage) -> TcMessage {
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        TcMessage::parse(buf.as_slice()).unwrap()
    }

    #[test]
    fn htb_class_parameters_survive_encoding() {
        let plan = plan();
        for c in &plan.egress.classes {
            let m = round_trip(&htb_class_message(&dev(), c));
            let k = decode_class(&m);
            assert_eq!(k.htb, Some(HtbParms::planned(c)), "{}", c.classid);
            assert_eq!(k.classid, c.classid);
            assert_eq!(k.parent, c.parent);
        }
        // 1696 bytes at 1.9 Mbit is 7.14 ms: 111579 ticks of 64 ns (rounded up).
        let line = &plan.egress.classes[0];
        assert_eq!(HtbParms::planned(line).buffer, 111_579);
        assert_eq!(HtbParms::planned(line).rate, 237_500);
    }

    #[test]
    fn rates_above_four_gigabytes_per_second_use_the_wide_attribute() {
        let mut c = plan().egress.classes[0].clone();
        c.rate_bps = 40_000_000_000;
        c.ceil_bps = 40_000_000_000;
        let k = decode_class(&round_trip(&htb_class_message(&dev(), &c)));
        assert_eq!(k.htb.unwrap().rate, 5_000_000_000);
        assert_eq!(k.htb.unwrap().ceil, 5_000_000_000);
    }

    #[test]
    fn root_carries_default_class_and_size_table() {
        let plan = plan();
        let q = decode_qdisc(&round_trip(&htb_root_message(&dev(), &plan.egress)));
        assert_eq!(q.kind, "htb");
        assert_eq!(q.htb_default, Some(0x20));
        let stab = q.stab.unwrap();
        assert_eq!(stab, SizeSpec::planned(&plan.egress.size_table));
        assert_eq!((stab.overhead, stab.linklayer, stab.tsize), (-4, 2, 2048));
        // The table itself travels too: 4096 bytes after the 24-byte base.
        let TcAttribute::Stab(raw) = &htb_root_message(&dev(), &plan.egress).attributes[2] else {
            panic!("no size table");
        };
        let parts = nested(raw);
        assert_eq!(parts[1].1.len(), 4096);
        let eth = SizeTable::for_framing(Framing::Ethernet);
        let TcAttribute::Stab(raw) = stab_attribute(&eth) else {
            panic!()
        };
        assert_eq!(nested(&raw).len(), 1, "no table for Ethernet");
    }

    #[test]
    fn leaves_and_filters_survive_encoding() {
        let plan = plan();
        for l in &plan.ingress.leaves {
            let q = decode_qdisc(&round_trip(&leaf_message(&dev(), l)));
            assert_eq!(q.kind, l.kind.kind());
            assert_eq!(q.params, LeafParams::planned(&l.kind));
        }
        let fifo = Leaf {
            kind: LeafKind::Bfifo { limit: 23_750 },
            ..plan.ingress.leaves[1].clone()
        };
        let q = decode_qdisc(&round_trip(&leaf_message(&dev(), &fifo)));
        assert_eq!(q.params, LeafParams::Fifo { limit: 23_750 });
        let c = &plan.ingress.classifiers[0];
        let msgs: Vec<TcMessage> = c
            .nodes
            .iter()
            .map(|n| round_trip(&node_message(&dev(), c, n)))
            .collect();
        let filters = decode_filters(&msgs);
        assert_eq!(filters.len(), 1);
        let f = &filters[&10];
        assert_eq!(f.protocol, 0x0800);
        assert_eq!(f.nodes.len(), c.nodes.len());
        assert_eq!(f.nodes[0].keys, c.nodes[0].keys);
        assert_eq!(f.nodes[0].classid, Some(router_plan::qos::VOICE_CLASS));
        assert_eq!(
            f.nodes[1].handle, 2,
            "a root node travels with its id alone"
        );
        let r = decode_filters(&[round_trip(&redirect_message(&dev(), &plan.redirect, 9))]);
        assert_eq!(r[&1].nodes[0].mirred, Some(9));
        assert_eq!(r[&1].protocol, 0x0003);
        // The protocol travels in network byte order.
        assert_eq!(filter_info(10, 0x0800) & 0xffff, 0x0008);
    }

    /// The plan with `n` provider addresses (every second from 198.18.0.0).
    fn plan_with_addresses(n: u32) -> QosPlan {
        let text = include_str!("../../../docs/examples/router.toml");
        let (cfg, _) = router_config::parse_config(text);
        let mut policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
        policy.provider_ranges = (0..n)
            .map(|i| {
                format!("{}/32", std::net::Ipv4Addr::from(0xc612_0000 + 2 * i))
                    .parse()
                    .unwrap()
            })
            .collect();
        let checked = router_config::check(cfg.unwrap(), policy).unwrap();
        router_plan::qos::qos(&checked)
    }

    /// What the kernel would dump after `c` was created: its root as table
    /// 0x800, its tables, its nodes.
    fn as_read_back(c: &Classifier) -> Filter {
        let mut msgs: Vec<TcMessage> = c
            .tables
            .iter()
            .map(|t| round_trip(&table_message(&dev(), c, *t)))
            .collect();
        let mut root = round_trip(&table_message(&dev(), c, 0x800));
        root.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![TcOption::U32(TcFilterU32Option::Divisor(1))]),
        ];
        msgs.push(root);
        for n in &c.nodes {
            let mut m = round_trip(&node_message(&dev(), c, n));
            if n.table == 0 {
                m.header.handle = TcHandle::from(0x800 << 20 | n.handle());
            }
            msgs.push(m);
        }
        decode_filters(&msgs).remove(&c.pref).unwrap()
    }

    #[test]
    fn a_hashed_classifier_reads_back_as_planned_and_comes_apart_from_the_top() {
        let plan = plan_with_addresses(3000);
        let c = &plan.ingress.classifiers[0];
        assert!(c.tables.len() > 1, "{}", c.tables.len());
        let found = as_read_back(c);
        assert_eq!(found.root(), Some(0x800));
        assert!(diff_classifier(Some(&found), c).is_none());
        // Teardown: the root's one link, then the tables, the top one first.
        let t = found.teardown();
        assert_eq!(t.root_nodes, [0x800 << 20 | 1]);
        assert_eq!(t.tables.len(), c.tables.len());
        assert_eq!(t.tables[0], c.tables[0]);
        // Fewer addresses: the plan's nodes are kept or replaced, the rest
        // removed, tables included.
        let smaller = plan_with_addresses(10);
        let s = &smaller.ingress.classifiers[0];
        let w = diff_classifier(Some(&found), s).unwrap();
        assert!(w.teardown.is_none() && w.found);
        // 10 addresses still need one table, the one the kernel has.
        assert_eq!(s.tables, [1]);
        assert!(w.create_tables.is_empty());
        assert_eq!(w.remove_tables.len(), c.tables.len() - 1);
        assert!(!w.remove_tables.contains(&1));
        // Nodes inside the tables that go go with them.
        assert!(!w.remove_nodes.is_empty());
        assert!(w
            .remove_nodes
            .iter()
            .all(|h| !w.remove_tables.contains(&table_of(*h))));
        assert!(w
            .describe("ifb-eth0")
            .starts_with("ifb-eth0: download classifier pref 10 (ip) differs from the plan: "));
        // A preference holding another protocol is rebuilt.
        let mut other = found.clone();
        other.protocol = 0x86dd;
        let w = diff_classifier(Some(&other), c).unwrap();
        assert!(w.teardown.is_some() && !w.found);
        assert_eq!(w.put.len(), c.nodes.len());
    }

    #[test]
    fn a_matching_kernel_needs_no_step_and_a_changed_rate_one() {
        let plan = plan();
        let s = &plan.egress;
        let d = dev();
        let mut state = DevState {
            qdiscs: std::iter::once(htb_root_message(&d, s))
                .chain(s.leaves.iter().map(|l| leaf_message(&d, l)))
                .map(|m| {
                    let mut q = decode_qdisc(&round_trip(&m));
                    q.parent = u32::from(m.header.parent);
                    q
                })
                .collect(),
            classes: s
                .classes
                .iter()
                .map(|c| decode_class(&round_trip(&htb_class_message(&d, c))))
                .collect(),
            filters: BTreeMap::new(),
        };
        assert!(diff_shaper(&state, s).is_empty());
        state.classes[1].htb.as_mut().unwrap().rate = 1000;
        let steps = diff_shaper(&state, s);
        assert_eq!(steps.len(), 1);
        assert!(
            steps[0]
                .describe("eth0")
                .starts_with("eth0: class 1:10 has rate 8kbit"),
            "{}",
            steps[0].describe("eth0")
        );
        state.qdiscs[0].kind = "pfifo_fast".into();
        let steps = diff_shaper(&state, s);
        assert!(matches!(steps[..], [Step::ReplaceRoot { .. }]));
    }
}
