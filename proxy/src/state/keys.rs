//! The keys state is kept under, in memory and in Redis: `prefix:kind:…`, scoped so that two
//! vendors' (or two IdP tenants') ids can never meet.

use std::sync::Arc;

use vendorgate_policy::config::Scope;
use vendorgate_policy::{ByteRule, Direction, RateRule, VerifiedToken};

/// The state key of a session: the token's `sid`, else its `jti`, else the token's hash; scoped to
/// the vendor so two IdP tenants' ids cannot collide.
pub fn session_key(prefix: &str, vendor: &str, token: &VerifiedToken, token_hash: u128) -> String {
    match (&token.sid, &token.jti) {
        (Some(sid), _) => key(&[prefix, "sess", vendor, "sid", sid]),
        (None, Some(jti)) => key(&[prefix, "sess", vendor, "jti", jti]),
        (None, None) => key(&[prefix, "sess", vendor, "tok", &format!("{token_hash:032x}")]),
    }
}

/// A state key: the parts joined by `:`. Built with one allocation of the right size; keys are
/// made several times a request, and `format!` cost more than the lookups they serve.
fn key(parts: &[&str]) -> String {
    parts.join(":")
}

/// The state key of `rule`'s limiter for this account (or its vendor, by the rule's scope).
pub fn rate_key(prefix: &str, rule: &RateRule, vendor: &str, account: &str) -> Arc<str> {
    scope_key(prefix, "rate", &rule.id, rule.per, vendor, account)
}

/// The state key of a byte counter (`ingress` or `egress`) for this account or its vendor, without
/// the window (see [`crate::state::Place::Key`]).
pub fn byte_key(
    prefix: &str,
    direction: Direction,
    rule: &ByteRule,
    vendor: &str,
    account: &str,
) -> Arc<str> {
    let kind = direction.as_str();
    scope_key(prefix, kind, &rule.id, rule.per, vendor, account)
}

fn scope_key(
    prefix: &str,
    kind: &str,
    id: &str,
    per: Scope,
    vendor: &str,
    account: &str,
) -> Arc<str> {
    Arc::from(match per {
        Scope::Account => key(&[prefix, kind, id, "a", vendor, account]),
        Scope::Vendor => key(&[prefix, kind, id, "v", vendor]),
    })
}
