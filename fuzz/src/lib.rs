//! What the fuzz targets share: a real policy (the example one) and a real key set.

use std::sync::OnceLock;

use vendorgate_policy::{Config, KeySet, Policy};

/// The commented example policy (two vendors, 40 real Zendesk endpoints), with a trusted load
/// balancer at 127.0.0.10 so the X-Forwarded-For target has a proxy to trust.
fn policy_text() -> String {
    include_str!("../../examples/policies/zendesk.toml")
        .replace("trusted_proxies = []", "trusted_proxies = [\"127.0.0.10/32\", \"10.0.0.0/8\"]")
}

pub fn policy() -> &'static Policy {
    static POLICY_: OnceLock<Policy> = OnceLock::new();
    POLICY_.get_or_init(|| Config::from_toml(&policy_text(), "fuzz.toml").unwrap().policy)
}

pub fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let idp = vendorgate_mock::idp::DevIdp::new("https://login.acme.example/");
        KeySet::from_jwks(&idp.jwks()).unwrap()
    })
}
