//! A reader for the classic pcap files `tcpdump -w` writes: a 24-byte global
//! header, then records of a 16-byte header and the frame. Only what the lab
//! captures is decoded: Ethernet frames carrying IPv4 with TCP, UDP or ICMP.

use std::net::Ipv4Addr;

/// One IPv4 packet from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// IPv4 source address.
    pub src: Ipv4Addr,
    /// IPv4 destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number (1 ICMP, 6 TCP, 17 UDP).
    pub proto: u8,
    /// TCP or UDP source port; for ICMP the type.
    pub sport: u16,
    /// TCP or UDP destination port; for ICMP the code.
    pub dport: u16,
    /// TCP flags (SYN is 0x02, RST 0x04, ACK 0x10); 0 for other protocols.
    pub tcp_flags: u8,
    /// The TCP or UDP payload; for ICMP the bytes after the 8-byte header.
    pub payload: Vec<u8>,
}

/// IP protocol number of ICMP.
pub const ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const TCP: u8 = 6;
/// IP protocol number of UDP.
pub const UDP: u8 = 17;
/// The TCP SYN flag.
pub const SYN: u8 = 0x02;
/// The TCP ACK flag.
pub const ACK: u8 = 0x10;

impl Packet {
    /// A TCP SYN without ACK: the first packet of a new connection.
    pub fn is_syn(&self) -> bool {
        self.proto == TCP && self.tcp_flags & (SYN | ACK) == SYN
    }
}

/// Why a capture could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct PcapError(pub String);

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Link type of Ethernet (`DLT_EN10MB`), what tcpdump records on a veth.
const LINKTYPE_ETHERNET: u32 = 1;
const ETHERTYPE_IPV4: u16 = 0x0800;

/// Every IPv4 packet of a pcap file, in capture order. Frames that are not
/// IPv4 (ARP, IPv6) are skipped; a truncated or foreign file is an error.
pub fn ipv4_packets(file: &[u8]) -> Result<Vec<Packet>, PcapError> {
    let err = |m: String| PcapError(m);
    if file.len() < 24 {
        return Err(err(format!(
            "{} bytes: shorter than the 24-byte global header",
            file.len()
        )));
    }
    let magic = u32::from_le_bytes([file[0], file[1], file[2], file[3]]);
    // Microsecond or nanosecond timestamps; little- or big-endian writer.
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => return Err(err(format!("magic {other:#010x} is not a pcap file"))),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(file, 20) & 0x0fff_ffff;
    if linktype != LINKTYPE_ETHERNET {
        return Err(err(format!("link type {linktype}, not Ethernet (1)")));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < file.len() {
        if file.len() - at < 16 {
            return Err(err(format!("record header at byte {at} is truncated")));
        }
        let incl = u32_at(file, at + 8) as usize;
        let start = at + 16;
        let frame = file.get(start..start + incl).ok_or_else(|| {
            err(format!(
                "record at byte {at} claims {incl} bytes past the end"
            ))
        })?;
        if let Some(p) = decode_ethernet(frame) {
            out.push(p);
        }
        at = start + incl;
    }
    Ok(out)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn decode_ethernet(frame: &[u8]) -> Option<Packet> {
    if be16(frame, 12)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(14..)?;
    if ip.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)?);
    // Ethernet pads short frames: the IP total length says where the packet ends.
    let ip = ip.get(..total.min(ip.len()))?;
    let proto = *ip.get(9)?;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(*ip.get(16)?, ip[17], ip[18], ip[19]);
    let l4 = ip.get(ihl..)?;
    let (sport, dport, tcp_flags, payload) = match proto {
        TCP => {
            let offset = usize::from(l4.get(12)? >> 4) * 4;
            (
                be16(l4, 0)?,
                be16(l4, 2)?,
                *l4.get(13)?,
                l4.get(offset..)?.to_vec(),
            )
        }
        UDP => (be16(l4, 0)?, be16(l4, 2)?, 0, l4.get(8..)?.to_vec()),
        ICMP => (
            u16::from(*l4.first()?),
            u16::from(*l4.get(1)?),
            0,
            l4.get(8..).unwrap_or_default().to_vec(),
        ),
        _ => (0, 0, 0, l4.to_vec()),
    };
    Some(Packet {
        src,
        dst,
        proto,
        sport,
        dport,
        tcp_flags,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-record little-endian capture of an Ethernet/IPv4/UDP frame,
    /// padded to Ethernet's 60-byte minimum.
    fn udp_capture(payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, UDP, 0, 0];
        ip.extend([10, 20, 0, 100, 185, 72, 208, 10]);
        let udp_len = 8 + payload.len();
        ip.extend(5060u16.to_be_bytes());
        ip.extend(5060u16.to_be_bytes());
        ip.extend((udp_len as u16).to_be_bytes());
        ip.extend([0, 0]);
        ip.extend(payload);
        let total = ip.len() as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend(ETHERTYPE_IPV4.to_be_bytes());
        frame.extend(ip);
        frame.resize(frame.len().max(60), 0);
        let mut file = Vec::new();
        file.extend(0xa1b2_c3d4u32.to_le_bytes());
        file.extend(2u16.to_le_bytes());
        file.extend(4u16.to_le_bytes());
        file.extend([0u8; 8]);
        file.extend(262_144u32.to_le_bytes());
        file.extend(LINKTYPE_ETHERNET.to_le_bytes());
        file.extend([0u8; 8]);
        file.extend((frame.len() as u32).to_le_bytes());
        file.extend((frame.len() as u32).to_le_bytes());
        file.extend(frame);
        file
    }

    #[test]
    fn reads_udp_and_strips_ethernet_padding() {
        let packets = ipv4_packets(&udp_capture(b"hi")).unwrap();
        assert_eq!(packets.len(), 1);
        let p = &packets[0];
        assert_eq!(p.src, Ipv4Addr::new(10, 20, 0, 100));
        assert_eq!(p.dst, Ipv4Addr::new(185, 72, 208, 10));
        assert_eq!((p.proto, p.sport, p.dport), (UDP, 5060, 5060));
        assert_eq!(p.payload, b"hi");
    }

    #[test]
    fn refuses_truncated_and_foreign_files() {
        let whole = udp_capture(b"hello");
        let cut = &whole[..whole.len() - 3];
        assert!(ipv4_packets(cut).unwrap_err().0.contains("past the end"));
        assert!(ipv4_packets(b"not a capture at all....")
            .unwrap_err()
            .0
            .contains("magic"));
        assert!(ipv4_packets(&whole[..10]).is_err());
    }
}
