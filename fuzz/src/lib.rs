//! What the fuzz targets share: a real policy (the e2e tests' shape: two vendors, trusted proxies,
//! routes with parameters and `**`) and a real key set.

use std::sync::OnceLock;

use vendorgate_policy::{Config, KeySet, Policy};

pub const POLICY: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "server.pem"
tls_key = "server-key.pem"

[upstream]
url = "https://acme.zendesk.com"

[network]
trusted_proxies = ["127.0.0.10/32", "10.0.0.0/8", "2001:db8:ffff::/48"]

[identity]
issuer = "https://idp.test"
audiences = ["vendorgate"]
jwks_file = "jwks.json"
max_auth_age = "12h"

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.2/32", "2001:db8::/32"]
classes = ["read", "write"]

[[vendors]]
id = "globex"
ip_allow = ["127.0.0.3/32"]
classes = ["read", "export"]

[[routes]]
methods = ["GET"]
path = "/api/v2/tickets/{id}"
class = "read"

[[routes]]
methods = ["PUT"]
path = "/api/v2/tickets/{id}"
class = "write"

[[routes]]
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
path = "/api/v2/users/{id}/password"
deny = true
"#;

pub fn policy() -> &'static Policy {
    static POLICY_: OnceLock<Policy> = OnceLock::new();
    POLICY_.get_or_init(|| Config::from_toml(POLICY, "fuzz.toml").unwrap().policy)
}

pub fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let idp = vendorgate_mock::idp::DevIdp::new("https://idp.test");
        KeySet::from_jwks(&idp.jwks()).unwrap()
    })
}
