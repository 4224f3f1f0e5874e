//! The kernel's IPv4 connection tracking table over netfilter netlink:
//! list flows, delete one, and flush the stale ones.
//!
//! Stale flows are what keep phones from registering after a change: a flow
//! from a phone network that outlived a firewall or address change keeps its
//! old verdict and NAT binding, and a NAT binding to a WAN address the router
//! no longer has sends replies nowhere (SIP over UDP keeps such a flow alive
//! for as long as the phone keeps sending). Which flows are stale is decided
//! by the pure [`stale`]; [`flush_stale`] lists, selects and deletes.
//!
//! Calls are synchronous (one short request each) and act on the calling
//! thread's network namespace; from async code, run them on a blocking
//! thread.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// A conntrack operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netfilter netlink socket could not be opened.
    #[error("cannot open a netfilter netlink socket for conntrack")]
    Open(#[source] io::Error),
    /// Sending a request or receiving its answer failed.
    #[error("cannot {what}")]
    Io {
        /// The operation (`send`/`receive` and what for).
        what: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("cannot decode the kernel's answer to {what}")]
    Decode {
        /// The request answered.
        what: String,
        /// The decoder's error.
        #[source]
        source: netlink_packet_core::DecodeError,
    },
    /// The kernel refused a request.
    #[error("the kernel refused to {what}")]
    Kernel {
        /// The request refused.
        what: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// One IPv4 conntrack entry: its original and reply tuples. Ports are 0 for
/// protocols without ports (ICMP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    /// Source of the first packet.
    pub orig_src: Ipv4Addr,
    /// Destination of the first packet.
    pub orig_dst: Ipv4Addr,
    /// Source port of the first packet.
    pub orig_sport: u16,
    /// Destination port of the first packet.
    pub orig_dport: u16,
    /// Source of replies.
    pub reply_src: Ipv4Addr,
    /// Destination of replies: after source NAT, the address the flow was
    /// translated to.
    pub reply_dst: Ipv4Addr,
    /// Source port of replies.
    pub reply_sport: u16,
    /// Destination port of replies.
    pub reply_dport: u16,
    /// Seconds until the entry expires, if the kernel said.
    pub timeout_secs: Option<u32>,
    /// The kernel's own original tuple, sent back on delete so that flows
    /// of any protocol (ICMP with its id, type and code too) can be deleted.
    /// Empty for flows built by hand: delete then sends the fields above.
    tuple: Vec<Tuple>,
}

impl Flow {
    /// Whether the flow's source was translated: replies go to another
    /// address than the one the flow came from.
    pub fn is_nated(&self) -> bool {
        self.reply_dst != self.orig_src
    }

    fn protocol_name(&self) -> String {
        match Protocol::from(self.proto) {
            Protocol::Tcp => "tcp".into(),
            Protocol::Udp => "udp".into(),
            Protocol::Icmp => "icmp".into(),
            _ => format!("proto {}", self.proto),
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{} (reply {}:{} -> {}:{})",
            self.protocol_name(),
            self.orig_src,
            self.orig_sport,
            self.orig_dst,
            self.orig_dport,
            self.reply_src,
            self.reply_sport,
            self.reply_dst,
            self.reply_dport
        )
    }
}

/// The flows that must go after a change: (a) every flow whose original
/// source is inside a phone network, and (b) every source-NATed flow whose
/// reply destination is not the current WAN address (every NATed flow when
/// there is none). Pure: no I/O.
pub fn stale<'a>(
    flows: &'a [Flow],
    phone_nets: &[Ipv4Net],
    wan_address: Option<Ipv4Addr>,
) -> Vec<&'a Flow> {
    flows
        .iter()
        .filter(|f| {
            let from_phone = phone_nets.iter().any(|n| n.contains(&f.orig_src));
            let stale_nat = f.is_nated() && Some(f.reply_dst) != wan_address;
            from_phone || stale_nat
        })
        .collect()
}

/// Every IPv4 flow in the kernel's table.
pub fn list() -> Result<Vec<Flow>, ConntrackError> {
    let what = "list conntrack entries";
    let answers = request(
        ConntrackMessage::Get(Vec::new()),
        NLM_F_REQUEST | NLM_F_DUMP,
        what,
    )?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            ConntrackMessage::New(attributes) | ConntrackMessage::Get(attributes) => {
                flow_of(&attributes)
            }
            _ => None,
        })
        .collect())
}

/// Deletes one flow by its original tuple. Returns `false` when the kernel
/// no longer had it (it expired or was deleted meanwhile).
pub fn delete(flow: &Flow) -> Result<bool, ConntrackError> {
    let tuple = if flow.tuple.is_empty() {
        tuple_of(flow)
    } else {
        flow.tuple.clone()
    };
    let message = ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]);
    match request(
        message,
        NLM_F_REQUEST | NLM_F_ACK,
        &format!("delete conntrack entry {flow}"),
    ) {
        Ok(_) => Ok(true),
        Err(ConntrackError::Kernel { source, .. })
            if source.raw_os_error() == Some(nix::libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Lists the table, selects the [`stale`] flows and deletes them. Returns
/// how many the kernel deleted (a flow that expired meanwhile is not
/// counted).
pub fn flush_stale(
    phone_nets: &[Ipv4Net],
    wan_address: Option<Ipv4Addr>,
) -> Result<usize, ConntrackError> {
    let flows = list()?;
    let mut deleted = 0;
    for flow in stale(&flows, phone_nets, wan_address) {
        if delete(flow)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Sends one request and collects the conntrack messages of its answer, up
/// to the end of a dump or the acknowledgement.
fn request(
    message: ConntrackMessage,
    flags: u16,
    what: &str,
) -> Result<Vec<ConntrackMessage>, ConntrackError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Open)?;
    socket.bind_auto().map_err(ConntrackError::Open)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(ConntrackError::Open)?;

    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            message,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|source| ConntrackError::Io {
        what: format!("send the request to {what}"),
        source,
    })?;

    let mut out = Vec::new();
    loop {
        let (datagram, _) = socket
            .recv_from_full()
            .map_err(|source| ConntrackError::Io {
                what: format!("receive the answer to {what}"),
                source,
            })?;
        let mut offset = 0;
        while offset < datagram.len() {
            let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&datagram[offset..])
                .map_err(|source| ConntrackError::Decode {
                    what: what.to_string(),
                    source,
                })?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => match e.code {
                    // An error message without a code is the acknowledgement.
                    None => return Ok(out),
                    Some(_) => {
                        return Err(ConntrackError::Kernel {
                            what: what.to_string(),
                            source: e.to_io(),
                        })
                    }
                },
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(m),
                    ..
                }) => out.push(m),
                _ => {}
            }
            if length == 0 {
                break;
            }
            // Netlink messages are 4-byte aligned within a datagram.
            offset += (length + 3) & !3;
        }
        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
            return Ok(out);
        }
    }
}

/// The addresses and ports of one conntrack tuple.
#[derive(Debug, Default)]
struct Ends {
    proto: Option<u8>,
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    sport: u16,
    dport: u16,
}

fn ends_of(tuple: &[Tuple]) -> Ends {
    let mut ends = Ends::default();
    for t in tuple {
        match t {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(IpAddr::V4(a)) => ends.src = Some(*a),
                        IPTuple::DestinationAddress(IpAddr::V4(a)) => ends.dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(proto) => ends.proto = Some(u8::from(*proto)),
                        ProtoTuple::SourcePort(port) => ends.sport = *port,
                        ProtoTuple::DestinationPort(port) => ends.dport = *port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    ends
}

/// A flow from a conntrack message's attributes; `None` for anything that
/// is not a complete IPv4 entry.
fn flow_of(attributes: &[ConntrackAttribute]) -> Option<Flow> {
    let mut orig = None;
    let mut reply = None;
    let mut timeout_secs = None;
    for a in attributes {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = Some(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(t),
            ConntrackAttribute::CtaTimeout(t) => timeout_secs = Some(*t),
            _ => {}
        }
    }
    let tuple = orig?.clone();
    let o = ends_of(&tuple);
    let r = ends_of(reply?);
    Some(Flow {
        proto: o.proto?,
        orig_src: o.src?,
        orig_dst: o.dst?,
        orig_sport: o.sport,
        orig_dport: o.dport,
        reply_src: r.src?,
        reply_dst: r.dst?,
        reply_sport: r.sport,
        reply_dport: r.dport,
        timeout_secs,
        tuple,
    })
}

/// The original tuple of a flow built from its fields (ports only for the
/// protocols that have them).
fn tuple_of(flow: &Flow) -> Vec<Tuple> {
    let mut proto = vec![ProtoTuple::Protocol(Protocol::from(flow.proto))];
    if flow.orig_sport != 0 || flow.orig_dport != 0 {
        proto.push(ProtoTuple::SourcePort(flow.orig_sport));
        proto.push(ProtoTuple::DestinationPort(flow.orig_dport));
    }
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(IpAddr::V4(flow.orig_src)),
            IPTuple::DestinationAddress(IpAddr::V4(flow.orig_dst)),
        ]),
        Tuple::Proto(proto),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: u8 = 17;
    const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const OLD_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const PROVIDER: Ipv4Addr = Ipv4Addr::new(185, 72, 208, 10);

    /// A UDP flow from `src:sport` to the provider on 5060, translated to
    /// `nat` (or not translated when `nat` is `src`).
    fn udp(src: [u8; 4], sport: u16, nat: Ipv4Addr) -> Flow {
        let src = Ipv4Addr::from(src);
        Flow {
            proto: UDP,
            orig_src: src,
            orig_dst: PROVIDER,
            orig_sport: sport,
            orig_dport: 5060,
            reply_src: PROVIDER,
            reply_dst: nat,
            reply_sport: 5060,
            reply_dport: sport,
            timeout_secs: Some(600),
            tuple: Vec::new(),
        }
    }

    fn phones() -> Vec<Ipv4Net> {
        vec!["10.20.0.0/24".parse().expect("net")]
    }

    #[test]
    fn every_flow_from_a_phone_network_is_stale() {
        let phone_natted = udp([10, 20, 0, 5], 5060, WAN);
        let phone_to_router = udp([10, 20, 0, 6], 5060, Ipv4Addr::new(10, 20, 0, 6));
        let pc = udp([192, 168, 1, 5], 40000, WAN);
        let flows = [phone_natted.clone(), pc, phone_to_router.clone()];
        assert_eq!(
            stale(&flows, &phones(), Some(WAN)),
            [&phone_natted, &phone_to_router]
        );
    }

    #[test]
    fn nat_to_an_address_the_wan_no_longer_has_is_stale() {
        let old = udp([192, 168, 1, 5], 40000, OLD_WAN);
        let current = udp([192, 168, 1, 6], 40001, WAN);
        let flows = [old.clone(), current];
        assert_eq!(stale(&flows, &phones(), Some(WAN)), [&old]);
    }

    #[test]
    fn without_a_wan_address_every_nated_flow_is_stale() {
        let a = udp([192, 168, 1, 5], 40000, OLD_WAN);
        let b = udp([192, 168, 1, 6], 40001, WAN);
        let flows = [a.clone(), b.clone()];
        assert_eq!(stale(&flows, &[], None), [&a, &b]);
    }

    #[test]
    fn flows_that_were_not_translated_stay() {
        // The router's own flow from its WAN address, and a PC talking to
        // the router: neither is translated, so neither is stale.
        let own = udp([203, 0, 113, 1], 5060, WAN);
        let pc_to_router = Flow {
            orig_dst: Ipv4Addr::new(192, 168, 1, 1),
            reply_src: Ipv4Addr::new(192, 168, 1, 1),
            ..udp([192, 168, 1, 5], 53000, Ipv4Addr::new(192, 168, 1, 5))
        };
        assert!(!own.is_nated());
        assert!(!pc_to_router.is_nated());
        let flows = [own, pc_to_router];
        assert!(stale(&flows, &phones(), Some(OLD_WAN)).is_empty());
        assert!(stale(&flows, &phones(), None).is_empty());
    }

    #[test]
    fn a_flow_reads_back_from_its_attributes_and_names_itself() {
        let by_hand = udp([10, 20, 0, 5], 5062, WAN);
        let reply = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(IpAddr::V4(PROVIDER)),
                IPTuple::DestinationAddress(IpAddr::V4(WAN)),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Udp),
                ProtoTuple::SourcePort(5060),
                ProtoTuple::DestinationPort(5062),
            ]),
        ];
        let attributes = [
            ConntrackAttribute::CtaTupleOrig(tuple_of(&by_hand)),
            ConntrackAttribute::CtaTupleReply(reply),
            ConntrackAttribute::CtaTimeout(600),
        ];
        let read = flow_of(&attributes).expect("a complete flow");
        assert_eq!(
            read,
            Flow {
                tuple: tuple_of(&by_hand),
                ..by_hand
            }
        );
        assert_eq!(
            read.to_string(),
            "udp 10.20.0.5:5062 -> 185.72.208.10:5060 (reply 185.72.208.10:5060 -> 203.0.113.1:5062)"
        );
        assert_eq!(flow_of(&attributes[..1]), None, "no reply tuple");
    }
}
