//! The keys state is kept under, in memory and in Redis: `prefix:kind:…`, scoped so that two
//! vendors' (or two IdP tenants') ids can never meet.
//!
//! In a Redis Cluster every key names its vendor as a hash tag (`prefix:kind:…:{vendor}:…`): a
//! script touches several counters at once (an account's and its vendor's), and Cluster runs a
//! script only when all its keys are in one slot. The trade-off: one vendor's limits live on one
//! master (with leases, a few calls a second per busy account); vendors spread over the masters.
//! Per-account tags would spread one vendor wider but split every lease into two calls, and lose
//! its atomicity across the account's and the vendor's caps. One server keeps the untagged names
//! it always had, so an upgrade finds its counters where they were.

use std::sync::Arc;

use vendorgate_policy::config::Scope;
use vendorgate_policy::{ByteRule, Direction, RateRule, VerifiedToken};

/// The keys' prefix (`state.key_prefix`), and whether vendors are written as hash tags.
#[derive(Debug, Clone)]
pub struct KeyPrefix {
    text: String,
    tagged: bool,
}

impl KeyPrefix {
    pub fn new(text: &str, cluster: bool) -> Self {
        KeyPrefix {
            text: text.to_string(),
            tagged: cluster,
        }
    }

    /// The vendor as a key segment: `{vendor}` in a cluster.
    fn vendor(&self, vendor: &str) -> String {
        if self.tagged {
            ["{", vendor, "}"].concat()
        } else {
            vendor.to_string()
        }
    }

    /// The prefix of keys that are not a vendor's (the locks, the grants): one tag for all of
    /// them in a cluster, so that one script can change a hash and the version together.
    pub fn shared(&self) -> String {
        if self.tagged {
            ["{", &self.text, "}"].concat()
        } else {
            self.text.clone()
        }
    }
}

/// The state key of a session: the token's `sid`, else its `jti`, else the token's hash; scoped to
/// the vendor so two IdP tenants' ids cannot collide.
pub fn session_key(
    prefix: &KeyPrefix,
    vendor: &str,
    token: &VerifiedToken,
    token_hash: u128,
) -> String {
    let (p, v) = (prefix.text.as_str(), &prefix.vendor(vendor));
    match (&token.sid, &token.jti) {
        (Some(sid), _) => key(&[p, "sess", v, "sid", sid]),
        (None, Some(jti)) => key(&[p, "sess", v, "jti", jti]),
        (None, None) => key(&[p, "sess", v, "tok", &format!("{token_hash:032x}")]),
    }
}

/// A state key: the parts joined by `:`. Built with one allocation of the right size; keys are
/// made several times a request, and `format!` cost more than the lookups they serve.
fn key(parts: &[&str]) -> String {
    parts.join(":")
}

/// The state key of `rule`'s limiter for this account (or its vendor, by the rule's scope).
pub fn rate_key(prefix: &KeyPrefix, rule: &RateRule, vendor: &str, account: &str) -> Arc<str> {
    scope_key(prefix, "rate", &rule.id, rule.per, vendor, account)
}

/// The state key of a byte counter (`ingress` or `egress`) for this account or its vendor, without
/// the window (see [`crate::state::Place::Key`]).
pub fn byte_key(
    prefix: &KeyPrefix,
    direction: Direction,
    rule: &ByteRule,
    vendor: &str,
    account: &str,
) -> Arc<str> {
    let kind = direction.as_str();
    scope_key(prefix, kind, &rule.id, rule.per, vendor, account)
}

fn scope_key(
    prefix: &KeyPrefix,
    kind: &str,
    id: &str,
    per: Scope,
    vendor: &str,
    account: &str,
) -> Arc<str> {
    let (p, v) = (prefix.text.as_str(), &prefix.vendor(vendor));
    Arc::from(match per {
        Scope::Account => key(&[p, kind, id, "a", v, account]),
        Scope::Vendor => key(&[p, kind, id, "v", v]),
    })
}
