//! Loading the planned ruleset with `nft` and reading it back.
//!
//! The script replaces the owned table whole in one nft transaction (add,
//! delete, add), so a refused script leaves the running ruleset exactly as it
//! was. After loading, `verify` lists both tables as JSON and compares them
//! with the plan: chains, hooks and policies, every rule (by the comment that
//! names its origin, in order), every set's elements, every ct timeout policy.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use router_plan::nft::{Ruleset, Table};
use serde_json::Value;

/// What went wrong talking to nft.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// nft could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// nft refused the input; the running ruleset is unchanged.
    #[error("nft refused the ruleset (the running ruleset is unchanged):\n{stderr}")]
    Rejected {
        /// nft's own explanation.
        stderr: String,
    },
    /// nft's JSON listing could not be read.
    #[error("cannot read `nft -j list table inet {table}`: {reason}")]
    Listing {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
}

/// The loaded ruleset differs from the plan.
#[derive(Debug, thiserror::Error)]
#[error("the loaded ruleset differs from the plan:\n  {}", .0.join("\n  "))]
pub struct Drift(pub Vec<String>);

/// How to run nft: the program and any arguments before nft's own (for
/// example `chroot /root nft`).
#[derive(Debug, Clone)]
pub struct Nft {
    argv: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            argv: vec!["nft".into()],
        }
    }
}

impl Nft {
    /// nft run as `argv[0] argv[1..] <nft arguments>`.
    pub fn new(argv: Vec<String>) -> Self {
        if argv.is_empty() {
            Self::default()
        } else {
            Self { argv }
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let program = self.argv.join(" ");
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NftError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as nft's failure below; keep its stderr.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| NftError::Spawn { program, source })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NftError::Rejected {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Checks a script without loading it (`nft -c`).
    pub fn check(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-c", "-f", "-"], Some(script)).map(drop)
    }

    /// Loads a script in one transaction.
    pub fn apply(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(script)).map(drop)
    }

    /// The JSON listing of one inet table; `None` when it does not exist.
    pub fn list(&self, table: &str) -> Result<Option<Vec<Value>>, NftError> {
        let out = match self.run(&["-j", "list", "table", "inet", table], None) {
            Ok(out) => out,
            Err(NftError::Rejected { stderr }) if stderr.contains("No such file") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let listing = |reason: String| NftError::Listing {
            table: table.to_string(),
            reason,
        };
        let json: Value = serde_json::from_str(&out).map_err(|e| listing(e.to_string()))?;
        match json.get("nftables") {
            Some(Value::Array(items)) => Ok(Some(items.clone())),
            _ => Err(listing("no `nftables` array".into())),
        }
    }

    /// The fingerprint the loaded owned table carries in its comment (see
    /// `Ruleset::fingerprint`); `None` when the table is missing, has no
    /// such comment, or this nft does not list table comments (1.0.6).
    pub fn running_fingerprint(&self, table: &str) -> Result<Option<String>, NftError> {
        let Some(items) = self.list(table)? else {
            return Ok(None);
        };
        let prefix = Ruleset::table_comment("");
        Ok(items.iter().find_map(|item| {
            let comment = item.get("table")?.get("comment")?.as_str()?;
            comment.strip_prefix(&prefix).map(str::to_string)
        }))
    }

    /// Compares what is loaded with the plan.
    pub fn verify(&self, ruleset: &Ruleset) -> Result<Result<(), Drift>, NftError> {
        let mut drift = Vec::new();
        for (table, runtime_sets) in [(&ruleset.table, false), (&ruleset.dns_table, true)] {
            match self.list(&table.name)? {
                Some(items) => drift.extend(compare(table, &items, runtime_sets)),
                None => drift.push(format!("table inet {} is missing", table.name)),
            }
        }
        Ok(if drift.is_empty() {
            Ok(())
        } else {
            Err(Drift(drift))
        })
    }
}

/// What one table looks like, reduced to what the plan decides.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    /// chain -> "hook/policy" for base chains, "" for regular ones.
    chains: BTreeMap<String, String>,
    /// chain -> rule comments in order.
    rules: BTreeMap<String, Vec<String>>,
    /// set -> sorted elements (None: elements filled at run time, not compared).
    sets: BTreeMap<String, Option<Vec<String>>>,
    /// ct timeout name -> "l3proto protocol state=secs,...".
    ct_timeouts: BTreeMap<String, String>,
}

fn planned(table: &Table, runtime_sets: bool) -> Shape {
    let mut s = Shape::default();
    for c in &table.chains {
        let hook = c
            .hook
            .as_ref()
            .map(|h| format!("{}/{}", h.hook, h.policy))
            .unwrap_or_default();
        s.chains.insert(c.name.clone(), hook);
        s.rules.insert(
            c.name.clone(),
            c.rules.iter().map(|r| r.comment.clone()).collect(),
        );
    }
    for set in &table.sets {
        let elems = (!runtime_sets).then(|| {
            let mut e: Vec<String> = set.elements.iter().map(|e| normalize_planned(e)).collect();
            e.sort();
            e
        });
        s.sets.insert(set.name.clone(), elems);
    }
    for ct in &table.ct_timeouts {
        let mut policy: Vec<String> = ct.policy.iter().map(|(k, v)| format!("{k}={v}")).collect();
        policy.sort();
        s.ct_timeouts.insert(
            ct.name.clone(),
            format!(
                "{} {} {}",
                ct.l3proto,
                proto_number(&ct.protocol),
                policy.join(",")
            ),
        );
    }
    s
}

fn loaded(items: &[Value], runtime_sets: bool) -> Shape {
    let mut s = Shape::default();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    for item in items {
        if let Some(c) = item.get("chain") {
            let name = text(c.get("name"));
            let hook = match c.get("hook") {
                Some(h) => format!(
                    "{}/{}",
                    h.as_str().unwrap_or_default(),
                    text(c.get("policy"))
                ),
                None => String::new(),
            };
            s.rules.entry(name.clone()).or_default();
            s.chains.insert(name, hook);
        } else if let Some(r) = item.get("rule") {
            s.rules
                .entry(text(r.get("chain")))
                .or_default()
                .push(text(r.get("comment")));
        } else if let Some(set) = item.get("set") {
            let elems = (!runtime_sets).then(|| {
                let mut e: Vec<String> = match set.get("elem") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|e| normalize_planned(&element(e)))
                        .collect(),
                    _ => Vec::new(),
                };
                e.sort();
                e
            });
            s.sets.insert(text(set.get("name")), elems);
        } else if let Some(ct) = item.get("ct timeout") {
            let mut policy: Vec<String> = match ct.get("policy") {
                Some(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                _ => Vec::new(),
            };
            policy.sort();
            let protocol = match ct.get("protocol") {
                Some(Value::String(p)) => proto_number(p),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            s.ct_timeouts.insert(
                text(ct.get("name")),
                format!(
                    "{} {protocol} {}",
                    text(ct.get("l3proto")),
                    policy.join(",")
                ),
            );
        }
    }
    s
}

/// Protocol names as numbers, the way nft lists them inside concatenations.
fn proto_number(p: &str) -> String {
    match p {
        "tcp" => "6".into(),
        "udp" => "17".into(),
        other => other.into(),
    }
}

/// An element with protocol names as numbers (`tcp . 80` -> `6 . 80`): nft
/// 1.0.6 lists concatenated protocols by name, 1.1.3 by number.
fn normalize_planned(e: &str) -> String {
    e.split(" . ")
        .map(|part| proto_number(part.trim()))
        .collect::<Vec<_>>()
        .join(" . ")
}

/// A listed set element as text: `185.72.208.0/22`, `6 . 80`, `17 . 10000-65000`.
fn element(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) => {
            if let Some(p) = m.get("prefix") {
                format!("{}/{}", element(&p["addr"]), element(&p["len"]))
            } else if let Some(Value::Array(r)) = m.get("range") {
                r.iter().map(element).collect::<Vec<_>>().join("-")
            } else if let Some(Value::Array(c)) = m.get("concat") {
                c.iter().map(element).collect::<Vec<_>>().join(" . ")
            } else if let Some(e) = m.get("elem") {
                element(&e["val"])
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn compare(table: &Table, items: &[Value], runtime_sets: bool) -> Vec<String> {
    let want = planned(table, runtime_sets);
    let have = loaded(items, runtime_sets);
    let t = &table.name;
    let mut out = Vec::new();
    diff_maps(&mut out, t, "chain", &want.chains, &have.chains);
    diff_maps(&mut out, t, "rules of chain", &want.rules, &have.rules);
    diff_maps(&mut out, t, "set", &want.sets, &have.sets);
    diff_maps(
        &mut out,
        t,
        "ct timeout",
        &want.ct_timeouts,
        &have.ct_timeouts,
    );
    out
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    out: &mut Vec<String>,
    table: &str,
    what: &str,
    want: &BTreeMap<String, V>,
    have: &BTreeMap<String, V>,
) {
    for (k, w) in want {
        match have.get(k) {
            None => out.push(format!("{table}: {what} {k} is missing")),
            Some(h) if h != w => {
                out.push(format!("{table}: {what} {k}: planned {w:?}, loaded {h:?}"))
            }
            Some(_) => {}
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("{table}: {what} {k} is not in the plan"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elements_normalize_to_the_planned_form() {
        assert_eq!(element(&json!("195.41.220.240")), "195.41.220.240");
        assert_eq!(
            element(&json!({"prefix": {"addr": "185.72.208.0", "len": 22}})),
            "185.72.208.0/22"
        );
        assert_eq!(
            element(&json!({"concat": [17, {"range": [10000, 65000]}]})),
            "17 . 10000-65000"
        );
        assert_eq!(normalize_planned("udp . 10000-65000"), "17 . 10000-65000");
        assert_eq!(normalize_planned("185.72.208.0/22"), "185.72.208.0/22");
    }

    #[test]
    fn a_missing_or_reordered_rule_is_drift() {
        let mut table = Table::new("t");
        let mut c = router_plan::nft::Chain::regular("c");
        c.rule("accept", "spec F5");
        c.rule("drop", "spec F6");
        table.chains.push(c);
        let listed = vec![
            json!({"chain": {"name": "c"}}),
            json!({"rule": {"chain": "c", "comment": "spec F6"}}),
            json!({"rule": {"chain": "c", "comment": "spec F5"}}),
        ];
        let drift = compare(&table, &listed, false);
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(drift[0].contains("rules of chain c"));
        let extra = vec![
            json!({"chain": {"name": "c"}}),
            json!({"chain": {"name": "intruder"}}),
            json!({"rule": {"chain": "c", "comment": "spec F5"}}),
            json!({"rule": {"chain": "c", "comment": "spec F6"}}),
        ];
        let drift = compare(&table, &extra, false);
        assert!(
            drift
                .iter()
                .any(|d| d.contains("intruder is not in the plan")),
            "{drift:?}"
        );
    }
}
