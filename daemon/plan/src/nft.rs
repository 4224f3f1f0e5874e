//! A small typed model of the nftables ruleset the router owns, and its
//! rendering to the script `nft -f` loads in one transaction.
//!
//! The owned table is replaced whole: `add table`, `delete table`, then the
//! full table (never read-modify-write). The DNS-filled sets live in a second
//! table that is created if missing and never deleted, so a replace does not
//! wipe what dnsmasq learned; only its marking chain is flushed and refilled,
//! in the same transaction.

use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The name of the table routerd owns and replaces.
pub const TABLE: &str = "routerd";
/// The table holding sets filled at run time from DNS.
pub const DNS_TABLE: &str = "routerd_dns";

/// The whole ruleset: the replaced table and the persistent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    /// A header comment (provider policy version, what generated it).
    pub header: Vec<String>,
    /// `inet routerd`, replaced whole.
    pub table: Table,
    /// `inet routerd_dns`, kept across replaces.
    pub dns_table: Table,
}

/// A table with its sets, ct timeout objects and chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Table name (family is always `inet`).
    pub name: String,
    /// Named sets.
    pub sets: Vec<Set>,
    /// Conntrack timeout policies.
    pub ct_timeouts: Vec<CtTimeout>,
    /// Chains, base chains first.
    pub chains: Vec<Chain>,
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// Element type, e.g. `ipv4_addr` or `inet_proto . inet_service`.
    pub kind: String,
    /// Whether elements are ranges/prefixes.
    pub interval: bool,
    /// Default element timeout in seconds (sets filled at run time).
    pub timeout: Option<u64>,
    /// Elements as nft writes them, sorted.
    pub elements: Vec<String>,
    /// The config path or policy field it comes from.
    pub comment: String,
}

/// An `nft ct timeout` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CtTimeout {
    /// Object name, referenced by `ct timeout set "name"`.
    pub name: String,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// `ip` or `ip6`.
    pub l3proto: String,
    /// (state, seconds), e.g. `("unreplied", 600)`.
    pub policy: Vec<(String, u64)>,
    /// The config path or spec line it implements.
    pub comment: String,
}

/// A chain; a base chain has a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Hook, for base chains.
    pub hook: Option<Hook>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// `filter` or `nat`.
    pub kind: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: String,
    /// Priority as nft writes it: `filter`, `dstnat`, `srcnat`, `filter - 10`.
    pub priority: String,
    /// `accept` or `drop`.
    pub policy: String,
}

/// One rule: its statement and the comment naming why it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule body as nft syntax, without the comment.
    pub body: String,
    /// The config path or spec line it implements.
    pub comment: String,
}

impl Rule {
    /// A rule with its reason.
    pub fn new(body: impl Into<String>, comment: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            comment: comment.into(),
        }
    }
}

impl Chain {
    /// A regular chain (a jump target).
    pub fn regular(name: &str) -> Self {
        Self {
            name: name.to_string(),
            hook: None,
            rules: Vec::new(),
        }
    }

    /// A base chain.
    pub fn base(name: &str, kind: &str, hook: &str, priority: &str, policy: &str) -> Self {
        Self {
            name: name.to_string(),
            hook: Some(Hook {
                kind: kind.into(),
                hook: hook.into(),
                priority: priority.into(),
                policy: policy.into(),
            }),
            rules: Vec::new(),
        }
    }

    /// Appends a rule.
    pub fn rule(&mut self, body: impl Into<String>, comment: impl Into<String>) -> &mut Self {
        self.rules.push(Rule::new(body, comment));
        self
    }
}

impl Table {
    /// An empty table.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            sets: Vec::new(),
            ct_timeouts: Vec::new(),
            chains: Vec::new(),
        }
    }

    /// Every rule in the table, with its chain's name.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c.name.as_str(), r)))
    }
}

/// Quotes a string for nft (comments, interface names). nft strings cannot
/// contain a double quote, so one is replaced.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "'"))
}

impl Ruleset {
    /// The script for `nft -f`: one transaction that replaces the owned table
    /// and refreshes the persistent one.
    ///
    /// The owned table carries the ruleset's [fingerprint](Self::fingerprint)
    /// as its comment, so a running routerd can tell that the kernel already
    /// holds exactly this ruleset and leave it (and its flows' ct timeout
    /// policies) alone.
    pub fn render(&self) -> String {
        self.render_with(Some(&self.fingerprint()))
    }

    /// The first 16 hex digits of the SHA-256 of the script without its
    /// fingerprint: changes whenever any rule, set or object changes.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.render_with(None).as_bytes());
        digest.iter().take(8).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The table comment that carries `fingerprint`.
    pub fn table_comment(fingerprint: &str) -> String {
        format!("routerd plan {fingerprint}")
    }

    fn render_with(&self, fingerprint: Option<&str>) -> String {
        let mut out = String::new();
        for h in &self.header {
            let _ = writeln!(out, "# {h}");
        }
        let t = &self.table.name;
        let _ = writeln!(out, "add table inet {t}");
        let _ = writeln!(out, "delete table inet {t}");
        render_table(&mut out, &self.table, fingerprint);
        render_persistent(&mut out, &self.dns_table);
        out
    }
}

fn render_set_body(set: &Set, sep: &str) -> String {
    let mut parts = vec![format!("type {}", set.kind)];
    let mut flags = Vec::new();
    if set.interval {
        flags.push("interval");
    }
    if set.timeout.is_some() {
        flags.push("timeout");
    }
    if !flags.is_empty() {
        parts.push(format!("flags {}", flags.join(", ")));
    }
    if let Some(t) = set.timeout {
        parts.push(format!("timeout {t}s"));
    }
    if !set.elements.is_empty() {
        parts.push(format!("elements = {{ {} }}", set.elements.join(", ")));
    }
    parts.push(format!("comment {}", quote(&set.comment)));
    parts.join(sep)
}

fn render_table(out: &mut String, table: &Table, fingerprint: Option<&str>) {
    let _ = writeln!(out, "table inet {} {{", table.name);
    if let Some(fp) = fingerprint {
        let _ = writeln!(out, "\tcomment {}\n", quote(&Ruleset::table_comment(fp)));
    }
    for ct in &table.ct_timeouts {
        let policy: Vec<String> = ct
            .policy
            .iter()
            .map(|(s, v)| format!("{s} : {v}"))
            .collect();
        let _ = writeln!(out, "\t# {}", ct.comment);
        let _ = writeln!(out, "\tct timeout {} {{", ct.name);
        let _ = writeln!(out, "\t\tprotocol {}", ct.protocol);
        let _ = writeln!(out, "\t\tl3proto {}", ct.l3proto);
        let _ = writeln!(out, "\t\tpolicy = {{ {} }}", policy.join(", "));
        let _ = writeln!(out, "\t}}\n");
    }
    for set in &table.sets {
        let _ = writeln!(out, "\tset {} {{", set.name);
        let _ = writeln!(out, "\t\t{}", render_set_body(set, "\n\t\t"));
        let _ = writeln!(out, "\t}}\n");
    }
    for (i, chain) in table.chains.iter().enumerate() {
        let _ = writeln!(out, "\tchain {} {{", chain.name);
        if let Some(h) = &chain.hook {
            let _ = writeln!(
                out,
                "\t\ttype {} hook {} priority {}; policy {};",
                h.kind, h.hook, h.priority, h.policy
            );
        }
        for r in &chain.rules {
            let _ = writeln!(out, "\t\t{} comment {}", r.body, quote(&r.comment));
        }
        let _ = writeln!(out, "\t}}");
        if i + 1 < table.chains.len() {
            out.push('\n');
        }
    }
    let _ = writeln!(out, "}}");
}

/// The persistent table: created if missing, sets added if missing (elements
/// kept), chains flushed and refilled.
fn render_persistent(out: &mut String, table: &Table) {
    let t = &table.name;
    let _ = writeln!(
        out,
        "\n# Sets filled at run time from DNS: kept across replaces."
    );
    let _ = writeln!(out, "add table inet {t}");
    for set in &table.sets {
        let _ = writeln!(
            out,
            "add set inet {t} {} {{ {}; }}",
            set.name,
            render_set_body(set, "; ")
        );
    }
    for chain in &table.chains {
        match &chain.hook {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "add chain inet {t} {} {{ type {} hook {} priority {}; policy {}; }}",
                    chain.name, h.kind, h.hook, h.priority, h.policy
                );
            }
            None => {
                let _ = writeln!(out, "add chain inet {t} {}", chain.name);
            }
        }
        let _ = writeln!(out, "flush chain inet {t} {}", chain.name);
        for r in &chain.rules {
            let _ = writeln!(
                out,
                "add rule inet {t} {} {} comment {}",
                chain.name,
                r.body,
                quote(&r.comment)
            );
        }
    }
}
