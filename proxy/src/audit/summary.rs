//! `vendorgate audit summary`: per vendor and account, what they did and from where.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::read::{client_address, network_of};
use crate::trail::schema::{number, text, Field};

#[derive(Debug, Default, Clone)]
pub struct AccountSummary {
    pub requests: u64,
    pub denials: BTreeMap<String, u64>,
    pub egress_bytes: u64,
    pub routes: HashMap<String, u64>,
    pub networks: HashMap<String, u64>,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Default)]
pub struct Summary {
    /// (vendor, account) → summary; unauthenticated requests under ("", "").
    pub accounts: BTreeMap<(String, String), AccountSummary>,
}

impl Summary {
    pub fn add(&mut self, r: &Value) {
        if text(r, Field::Action) != "http_request" {
            return;
        }
        let key = (
            text(r, Field::Vendor).to_string(),
            text(r, Field::Account).to_string(),
        );
        let s = self.accounts.entry(key).or_default();
        s.requests += 1;
        if text(r, Field::Decision) == "deny" {
            *s.denials
                .entry(text(r, Field::Reason).to_string())
                .or_default() += 1;
        } else {
            s.egress_bytes += number(r, Field::BytesOut);
        }
        let route = match text(r, Field::Route) {
            "" => text(r, Field::Path),
            route => route,
        };
        *s.routes.entry(route.to_string()).or_default() += 1;
        *s.networks.entry(network_of(client_address(r))).or_default() += 1;
        let t = text(r, Field::Timestamp).to_string();
        if s.first_seen.is_empty() || t < s.first_seen {
            s.first_seen = t.clone();
        }
        if t > s.last_seen {
            s.last_seen = t;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((vendor, account), s) in &self.accounts {
            let who = if vendor.is_empty() && account.is_empty() {
                "(unauthenticated)".to_string()
            } else {
                format!("{vendor} / {account}")
            };
            let top = |m: &HashMap<String, u64>| {
                let mut v: Vec<_> = m.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                v.iter()
                    .take(3)
                    .map(|(k, n)| format!("{k} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let denials = if s.denials.is_empty() {
                "none".to_string()
            } else {
                s.denials
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "{who}\n  requests   {}\n  denials    {denials}\n  egress     {}\n  top routes {}\n  networks   {}\n  seen       {} … {}\n\n",
                s.requests,
                human_bytes(s.egress_bytes),
                top(&s.routes),
                top(&s.networks),
                s.first_seen,
                s.last_seen
            ));
        }
        out
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
