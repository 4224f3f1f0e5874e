//! The download classifier: u32 nodes in one filter preference per address
//! family, spread over hash tables keyed on the source address when there
//! are many.
//!
//! The kernel's u32 walks the nodes of a bucket one by one. With the nodes
//! in one list, a packet from outside the provider (every TCP
//! acknowledgement of a download) walks all of them; with 10,000 provider
//! addresses that cost 15 % of the forwarding throughput (docs/benchmarks.md).
//! Here a preference's root holds the nodes themselves while there are few
//! ([`SPLIT_ABOVE`]), else one node linking to a hash table of
//! [`TABLE_BUCKETS`] buckets, indexed by the 8 bits of the source address
//! that spread the entries best; a bucket still holding many entries links
//! to a table of its own on other bits. A packet walks a link per level and
//! the few nodes of its last bucket, whatever the number of entries.
//!
//! How the kernel follows a link (`net/sched/cls_u32.c`): the link node's
//! selector names a 32-bit word (`hoff`, from the network header) and a mask
//! (`hmask`); the bucket is `(word & hmask) >> s & (buckets - 1)`, `s` the
//! mask's lowest set bit. A packet that matches nothing in the linked bucket
//! continues after the link node. Nodes of a bucket are walked in the order
//! of their ids.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Serialize;

use crate::qos::{source_offset, words, EtherType, Handle, U32Key};

/// Buckets of every hash table: the kernel's most.
pub const TABLE_BUCKETS: u16 = 256;
/// The bits of the source address a table hashes on: log2 of [`TABLE_BUCKETS`].
const WINDOW_BITS: u32 = 8;
/// A bucket (or a preference's root) with more nodes than this is split
/// on further bits of the source address.
pub const SPLIT_ABOVE: usize = 16;
/// The highest table id the plan uses. The kernel numbers the root tables
/// of the preferences itself, from 0x800 up, so the plan's stay below.
pub const MAX_TABLE_ID: u16 = 0x7ff;
/// Node ids per bucket (12 bits).
pub const MAX_NODES_PER_BUCKET: usize = 0xfff;
/// Levels of tables below a root. The kernel follows up to 8 links
/// (`TC_U32_MAXDEPTH`); three levels address 2^24 buckets.
const MAX_DEPTH: usize = 3;

/// The key of a node that matches every packet.
pub const MATCH_ALL: U32Key = U32Key {
    off: 0,
    val: 0,
    mask: 0,
};

/// One thing the classifier recognises: a source network plus whatever
/// else the packet must carry (protocol, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The source network (already truncated to its prefix).
    pub net: IpNet,
    /// All keys, the source address's among them.
    pub keys: Vec<U32Key>,
    /// Where a matching packet goes.
    pub classid: Handle,
    /// The matches as tc would write them.
    pub matches: String,
    /// The config path or spec line it implements.
    pub why: String,
}

/// The bits a link hashes on: `(word at off & mask) >> lowest set bit of mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HashKey {
    /// Byte offset of the 32-bit word from the start of the IP header.
    pub off: i32,
    /// The 8 contiguous bits hashed.
    pub mask: u32,
}

impl HashKey {
    /// The bucket a packet whose word at `off` is `word` falls in.
    pub fn bucket(self, word: u32) -> u16 {
        let shift = self.mask.trailing_zeros();
        u16::try_from(((word & self.mask) >> shift) & u32::from(TABLE_BUCKETS - 1)).unwrap_or(0)
    }
}

/// What a matching node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Classifies the packet.
    Class(Handle),
    /// Looks the packet up in another table.
    Table {
        /// The table's id.
        id: u16,
        /// The bits that pick its bucket.
        hash: HashKey,
    },
}

/// One u32 node. Its kernel handle is `table:bucket:id`; table 0 is the
/// preference's root, whose id the kernel picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct U32Node {
    /// The table it sits in (0: the root).
    pub table: u16,
    /// Its bucket in that table.
    pub bucket: u16,
    /// Its id in the bucket, from 1: the order the kernel walks them.
    pub id: u16,
    /// The matches (all must hold).
    pub keys: Vec<U32Key>,
    /// What a match does.
    pub target: Target,
    /// The matches as tc would write them.
    pub matches: String,
    /// The config path or spec line it implements.
    pub why: String,
}

impl U32Node {
    /// The kernel handle, with the root written as table 0.
    pub fn handle(&self) -> u32 {
        handle(self.table, self.bucket, self.id)
    }
}

/// `table:bucket:id` as the kernel packs it.
pub fn handle(table: u16, bucket: u16, id: u16) -> u32 {
    (u32::from(table) << 20) | (u32::from(bucket & 0xff) << 12) | u32::from(id & 0xfff)
}

/// The classifier of one address family: one filter preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classifier {
    /// The filter preference.
    pub pref: u16,
    /// IPv4 or IPv6.
    pub protocol: EtherType,
    /// Hash tables, each [`TABLE_BUCKETS`] buckets, in the order they are
    /// created (a table before the tables it links to).
    pub tables: Vec<u16>,
    /// The nodes, each table's nodes before the node linking to it, so a
    /// link is only made once what it leads to is complete.
    pub nodes: Vec<U32Node>,
    /// Entries classified (before any bucket duplicates them).
    pub entries: usize,
    /// Entries left out: a bucket cannot hold more than
    /// [`MAX_NODES_PER_BUCKET`] nodes.
    pub dropped: usize,
}

impl Classifier {
    /// Builds the classifier of `entries` (one family) at `pref`; its tables
    /// are numbered from `*next_table`, which is advanced past them.
    pub fn build(pref: u16, protocol: EtherType, entries: &[Entry], next_table: &mut u16) -> Self {
        let mut b = Builder {
            next_table: *next_table,
            tables: Vec::new(),
            nodes: Vec::new(),
            dropped: 0,
            v6: protocol == EtherType::Ipv6,
        };
        let all: Vec<&Entry> = entries.iter().collect();
        b.place(0, 0, &all, 0);
        *next_table = b.next_table;
        Classifier {
            pref,
            protocol,
            tables: b.tables,
            nodes: b.nodes,
            entries: entries.len(),
            dropped: b.dropped,
        }
    }

    /// What the kernel does with an IP packet (header and transport bytes):
    /// the class it picks, and how many nodes it compared. For tests and
    /// the plan's own checks; it follows `u32_classify` for terminal nodes
    /// at fixed offsets, which is all the plan makes.
    pub fn classify(&self, packet: &[u8]) -> (Option<Handle>, usize) {
        let mut by_place: BTreeMap<(u16, u16), Vec<&U32Node>> = BTreeMap::new();
        for n in &self.nodes {
            by_place.entry((n.table, n.bucket)).or_default().push(n);
        }
        for nodes in by_place.values_mut() {
            nodes.sort_by_key(|n| n.id);
        }
        let mut walked = 0;
        let found = walk(&by_place, (0, 0), packet, &mut walked, 0);
        (found, walked)
    }
}

fn word_at(packet: &[u8], off: i32) -> Option<u32> {
    let at = usize::try_from(off).ok()?;
    let b = packet.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn walk(
    by_place: &BTreeMap<(u16, u16), Vec<&U32Node>>,
    place: (u16, u16),
    packet: &[u8],
    walked: &mut usize,
    depth: usize,
) -> Option<Handle> {
    for n in by_place.get(&place).map_or(&[][..], Vec::as_slice) {
        *walked += 1;
        let hit = n
            .keys
            .iter()
            .all(|k| word_at(packet, k.off).is_some_and(|w| w & k.mask == k.val));
        if !hit {
            continue;
        }
        match n.target {
            Target::Class(c) => return Some(c),
            Target::Table { id, hash } if depth < 8 => {
                let bucket = word_at(packet, hash.off).map_or(0, |w| hash.bucket(w));
                if let Some(c) = walk(by_place, (id, bucket), packet, walked, depth + 1) {
                    return Some(c);
                }
            }
            Target::Table { .. } => {}
        }
    }
    None
}

struct Builder {
    next_table: u16,
    tables: Vec<u16>,
    nodes: Vec<U32Node>,
    dropped: usize,
    v6: bool,
}

impl Builder {
    /// Puts `entries`, all of which reach (`table`, `bucket`), there: as
    /// nodes, or behind a link to a new table when that spreads them.
    fn place(&mut self, table: u16, bucket: u16, entries: &[&Entry], depth: usize) {
        if entries.len() > SPLIT_ABOVE && depth < MAX_DEPTH && self.next_table <= MAX_TABLE_ID {
            if let Some(hash) = best_hash(entries, self.v6) {
                let id = self.next_table;
                self.next_table += 1;
                self.tables.push(id);
                let mut buckets: BTreeMap<u16, Vec<&Entry>> = BTreeMap::new();
                for e in entries {
                    for b in buckets_of(e, hash) {
                        buckets.entry(b).or_default().push(e);
                    }
                }
                for (b, es) in &buckets {
                    self.place(id, *b, es, depth + 1);
                }
                let family = if self.v6 { "ip6" } else { "ip" };
                self.nodes.push(U32Node {
                    table,
                    bucket,
                    id: 1,
                    keys: vec![MATCH_ALL],
                    target: Target::Table { id, hash },
                    matches: format!(
                        "u32 0 0 link {id:x}: hashkey mask 0x{:08x} at {}",
                        hash.mask, hash.off
                    ),
                    why: format!(
                        "spec B3: {} download voice entries, looked up by {} {}",
                        entries.len(),
                        family,
                        window_words(hash, self.v6),
                    ),
                });
                return;
            }
        }
        for (i, e) in entries.iter().enumerate() {
            if i >= MAX_NODES_PER_BUCKET {
                self.dropped += entries.len() - i;
                break;
            }
            self.nodes.push(U32Node {
                table,
                bucket,
                id: u16::try_from(i + 1).unwrap_or(u16::MAX),
                keys: e.keys.clone(),
                target: Target::Class(e.classid),
                matches: e.matches.clone(),
                why: e.why.clone(),
            });
        }
    }
}

/// `src bits 9-16` for the reader of a plan: which bits of the source
/// address a table hashes on, counted from 1 at the address's first bit.
fn window_words(hash: HashKey, v6: bool) -> String {
    let base = source_offset(v6);
    let word = u32::try_from((hash.off - base) / 4).unwrap_or(0);
    let low = hash.mask.trailing_zeros();
    let first = word * 32 + (32 - low - WINDOW_BITS) + 1;
    format!("src bits {first}-{}", first + WINDOW_BITS - 1)
}

/// The source address's 32-bit words that are fixed by the prefix: for
/// word `i`, the network's word and how many of its leading bits are fixed.
fn word_of(net: &IpNet, i: usize) -> (u32, u32) {
    let bits = u32::from(net.prefix_len())
        .saturating_sub(32 * u32::try_from(i).unwrap_or(0))
        .min(32);
    (words(net).get(i).copied().unwrap_or(0), bits)
}

/// The buckets an entry falls in under `hash`: one when the prefix fixes
/// all 8 hashed bits, more when it leaves some of them open.
fn buckets_of(e: &Entry, hash: HashKey) -> std::ops::Range<u16> {
    let base = source_offset(matches!(e.net, IpNet::V6(_)));
    let i = usize::try_from((hash.off - base) / 4).unwrap_or(0);
    let (word, fixed) = word_of(&e.net, i);
    let shift = hash.mask.trailing_zeros();
    // Bits below position 32 - fixed are open; those in the window are its low ones.
    let open = (32 - fixed).saturating_sub(shift).min(WINDOW_BITS);
    let first = hash.bucket(word) & !((1u16 << open) - 1);
    first..first + (1u16 << open)
}

/// The hash that spreads `entries` best: the fewest entries in the fullest
/// bucket, then the fewest nodes in all; `None` when no hash puts fewer in
/// a bucket than there are entries.
fn best_hash(entries: &[&Entry], v6: bool) -> Option<HashKey> {
    let words = if v6 { 4 } else { 1 };
    let offsets = (0..words).map(|i| source_offset(v6) + 4 * i);
    let mut best: Option<((usize, usize), HashKey)> = None;
    for off in offsets {
        for shift in (0..=32 - WINDOW_BITS).rev() {
            let hash = HashKey {
                off,
                mask: 0xff << shift,
            };
            let mut load = [0usize; TABLE_BUCKETS as usize];
            let mut total = 0;
            for e in entries {
                for b in buckets_of(e, hash) {
                    load[usize::from(b)] += 1;
                    total += 1;
                }
            }
            let fullest = load.iter().copied().max().unwrap_or(0);
            let score = (fullest, total);
            if fullest < entries.len() && best.map_or(true, |(s, _)| score < s) {
                best = Some((score, hash));
            }
        }
    }
    best.map(|(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const VOICE: Handle = Handle::new(1, 0x10);

    fn entry(net: &str) -> Entry {
        let net: IpNet = net.parse().unwrap();
        let (word, fixed) = word_of(&net, 0);
        let mask = !u32::MAX.checked_shr(fixed).unwrap_or(0);
        Entry {
            net,
            keys: vec![U32Key {
                off: 12,
                val: word & mask,
                mask,
            }],
            classid: VOICE,
            matches: format!("ip src {net}"),
            why: "test".into(),
        }
    }

    fn packet_from(src: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&src.octets());
        p
    }

    /// 10,000 /32s, every second address from 198.18.0.0 (the benchmark's set).
    fn spread() -> Vec<Entry> {
        (0..10_000u32)
            .map(|i| entry(&format!("{}/32", Ipv4Addr::from(0xc612_0000 + 2 * i))))
            .collect()
    }

    #[test]
    fn few_entries_stay_in_the_root_in_order() {
        let es: Vec<Entry> = ["185.72.208.0/22", "195.41.220.240/32"]
            .iter()
            .map(|n| entry(n))
            .collect();
        let mut next = 1;
        let c = Classifier::build(10, EtherType::Ip, &es, &mut next);
        assert!(c.tables.is_empty());
        assert_eq!(next, 1);
        let ids: Vec<(u16, u16, u16)> = c.nodes.iter().map(|n| (n.table, n.bucket, n.id)).collect();
        assert_eq!(ids, [(0, 0, 1), (0, 0, 2)]);
    }

    #[test]
    fn many_addresses_are_found_in_a_few_steps_and_others_too() {
        let es = spread();
        let mut next = 1;
        let c = Classifier::build(10, EtherType::Ip, &es, &mut next);
        assert_eq!(c.dropped, 0);
        assert!(
            c.tables.len() > 1 && c.tables.len() < 300,
            "{}",
            c.tables.len()
        );
        assert_eq!(next, 1 + u16::try_from(c.tables.len()).unwrap());
        // Every table is created before anything links to it, and each
        // link comes after the nodes of its table.
        let mut linked = Vec::new();
        for (i, n) in c.nodes.iter().enumerate() {
            if let Target::Table { id, .. } = n.target {
                assert!(c.tables.contains(&id));
                assert!(
                    c.nodes[..i].iter().any(|m| m.table == id),
                    "table {id} filled before its link"
                );
                assert!(!c.nodes[i..].iter().any(|m| m.table == id));
                linked.push(id);
            }
        }
        linked.sort_unstable();
        let mut tables = c.tables.clone();
        tables.sort_unstable();
        assert_eq!(linked, tables);
        let mut worst = 0;
        for i in [
            0u32, 1, 2, 3, 4999, 5000, 9998, 9999, 10_000, 10_001, 65_535,
        ] {
            let addr = Ipv4Addr::from(0xc612_0000 + i);
            let member = i % 2 == 0 && i < 20_000;
            let (class, walked) = c.classify(&packet_from(addr));
            assert_eq!(class, member.then_some(VOICE), "{addr}");
            worst = worst.max(walked);
        }
        let (class, walked) = c.classify(&packet_from(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(class, None);
        worst = worst.max(walked);
        assert!(worst <= 2 + SPLIT_ABOVE, "walked {worst} nodes");
    }

    #[test]
    fn a_short_prefix_is_found_in_every_bucket_it_covers() {
        let mut es = spread();
        es.truncate(100);
        es.push(entry("10.0.0.0/8"));
        es.push(entry("0.0.0.0/0"));
        let mut next = 5;
        let c = Classifier::build(10, EtherType::Ip, &es, &mut next);
        assert_eq!(c.tables.first(), Some(&5));
        for addr in [
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(10, 255, 255, 255),
            Ipv4Addr::new(8, 8, 8, 8),
        ] {
            assert_eq!(c.classify(&packet_from(addr)).0, Some(VOICE), "{addr}");
        }
    }

    #[test]
    fn buckets_of_a_prefix_follow_the_open_bits() {
        let hash = HashKey {
            off: 12,
            mask: 0x0000_ff00,
        };
        assert_eq!(buckets_of(&entry("185.72.208.0/22"), hash), 208..212);
        assert_eq!(buckets_of(&entry("185.72.208.10/32"), hash), 208..209);
        assert_eq!(buckets_of(&entry("185.72.0.0/16"), hash), 0..256);
        assert_eq!(hash.bucket(0xb948_d10a), 209);
        assert_eq!(
            window_words(
                HashKey {
                    off: 12,
                    mask: 0x0000_01fe
                },
                false
            ),
            "src bits 24-31"
        );
    }
}
