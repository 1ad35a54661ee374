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
    /// Anomalies, locks and grants, in the order recorded.
    pub events: Vec<Event>,
}

/// A record that is not a request: a detector's finding, a lock, a grant's change.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: String,
    /// `anomaly`, `lock`, `unlock`, `lock_expired`, `revoke`, `grant_requested`, …
    pub kind: String,
    /// Whom it concerns: `vendor / account`, or a lock's target.
    pub who: String,
    /// What, for people.
    pub what: String,
}

impl Event {
    /// The event a record is, if it is one of those a reviewer looks for beside the requests.
    pub fn of(r: &Value) -> Option<Event> {
        let kind = text(r, Field::Action);
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        let (who, what) = if kind == "anomaly" {
            let a = &r["vendorgate"]["anomaly"];
            (
                format!("{} / {}", s(&a["vendor"]), s(&a["account"])),
                format!(
                    "{} {}: {}",
                    s(&a["detector"]),
                    s(&a["action"]),
                    s(&a["detail"])
                ),
            )
        } else if let Some(lock) = r["vendorgate"]["admin"].get("lock") {
            if !matches!(kind, "lock" | "unlock" | "lock_expired" | "revoke") {
                return None;
            }
            (
                format!(
                    "{} {}",
                    s(&lock["target"]["kind"]),
                    s(&lock["target"]["value"])
                ),
                format!(
                    "{} by {}: {}",
                    s(&lock["id"]),
                    s(&lock["created_by"]),
                    s(&lock["message"])
                ),
            )
        } else if let Some(g) = r["vendorgate"]["admin"].get("grant") {
            let classes: Vec<String> = g["classes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            (
                format!("{} / {}", s(&g["vendor"]), s(&g["account"])),
                format!(
                    "{} {} by {} ({}, ticket {})",
                    s(&g["id"]),
                    classes.join(","),
                    s(&r["user"]["name"]),
                    s(&g["reason"]),
                    s(&g["ticket"])
                ),
            )
        } else {
            return None;
        };
        Some(Event {
            at: text(r, Field::Timestamp).to_string(),
            kind: kind.to_string(),
            who,
            what,
        })
    }
}

impl Summary {
    pub fn add(&mut self, r: &Value) {
        if text(r, Field::Action) != "http_request" {
            self.events.extend(Event::of(r));
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
        if !self.events.is_empty() {
            out.push_str("anomalies, locks and grants\n");
            for e in &self.events {
                out.push_str(&format!(
                    "  {} {:<16} {:<32} {}\n",
                    e.at, e.kind, e.who, e.what
                ));
            }
        }
        out
    }
}

pub use vendorgate_policy::detect::human_bytes;
