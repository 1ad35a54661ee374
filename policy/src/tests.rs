//! The policy end to end, without I/O: a real config, real tokens signed with real keys, one row per
//! reason code.

use std::net::IpAddr;

use http::Method;
use serde_json::{json, Value};
use vendorgate_mock::idp::{DevIdp, KeyKind};

use crate::{
    Arrival, Check, Config, Controls, Grant, GrantRequest, KeySet, Lock, LockTarget, Policy,
    Presented, Reason, VerifyError,
};

pub(crate) const POLICY: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "server.pem"
tls_key = "server-key.pem"

[upstream]
url = "https://acme.zendesk.com"

[network]
trusted_proxies = ["127.0.0.10/32", "10.0.0.0/8"]

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
claim_values = ["globex", "globex-eu"]
ip_allow = ["127.0.0.3/32"]
classes = ["read", "export"]

[[routes]]
id = "ticket-show"
methods = ["GET"]
path = "/api/v2/tickets/{id}"
class = "read"

[[routes]]
id = "ticket-update"
methods = ["PUT"]
path = "/api/v2/tickets/{id}"
class = "write"

[[routes]]
id = "export"
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
id = "password"
path = "/api/v2/users/{id}/password"
deny = true

[[routes]]
id = "account-settings"
path = "/api/v2/account/**"
class = "admin"
"#;

const NOW: u64 = 1_800_000_000;

struct Fixture {
    policy: Policy,
    idp: DevIdp,
    keys: KeySet,
}

fn fixture() -> Fixture {
    let config = Config::from_toml(POLICY, "policy.toml").unwrap();
    let idp = DevIdp::new("https://idp.test");
    let keys = KeySet::from_jwks(&idp.jwks()).unwrap();
    Fixture {
        policy: config.policy,
        idp,
        keys,
    }
}

fn claims(f: &Fixture, vendor: &str) -> Value {
    f.idp
        .agent_claims("vendorgate", "agent-7", vendor, NOW - 60, 3600)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs the whole decision as the proxy does: verify the token (an empty one is none), then
/// [`Policy::evaluate`]. The trace must end in the refusal, or show every step passed.
fn decide(
    f: &Fixture,
    peer: &str,
    xff: Option<&str>,
    method: Method,
    path: &str,
    token: &str,
) -> Result<(), Reason> {
    decide_with(f, peer, xff, method, path, token, &Controls::default())
}

fn decide_with(
    f: &Fixture,
    peer: &str,
    xff: Option<&str>,
    method: Method,
    path: &str,
    token: &str,
    locks: &Controls,
) -> Result<(), Reason> {
    let verified = (!token.is_empty()).then(|| {
        f.policy
            .verify_token(token, &f.keys, NOW)
            .map(|t| (f.policy.standing(&t), t))
            .map_err(VerifyError::denial)
    });
    let presented = match &verified {
        None => Presented::Missing,
        Some(Ok((standing, token))) => Presented::Verified(standing, token),
        Some(Err(denial)) => Presented::Unverified(denial),
    };
    let arrival = Arrival {
        peer: ip(peer),
        forwarded_for: xff,
        path,
    };
    let decision = f.policy.evaluate(&arrival, &method, presented, locks, NOW);
    let refusals: Vec<_> = decision.trace.iter().filter_map(|s| s.refused).collect();
    match &decision.outcome {
        Ok(_) => assert!(refusals.is_empty(), "{:?}", decision.trace),
        Err(d) => {
            assert_eq!(refusals, [d.reason], "{:?}", decision.trace);
            assert_eq!(decision.trace.last().unwrap().refused, Some(d.reason));
        }
    }
    decision.outcome.map(|_| ()).map_err(|d| d.reason)
}

#[test]
fn every_reason_code_from_a_real_request() {
    let f = fixture();
    let good = f.idp.mint(KeyKind::Es256, &claims(&f, "acme"));
    let with = |patch: Value| {
        let mut c = claims(&f, "acme");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        f.idp.mint(KeyKind::Es256, &c)
    };
    let get = Method::GET;
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Method,
        &'a str,
        String,
        Result<(), Reason>,
    );
    let rows: Vec<Row> = vec![
        (
            "allowed read",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1.json",
            good.clone(),
            Ok(()),
        ),
        (
            "allowed write",
            "127.0.0.2",
            None,
            Method::PUT,
            "/api/v2/tickets/1",
            good.clone(),
            Ok(()),
        ),
        (
            "ipv6 vendor net",
            "2001:db8::7",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Ok(()),
        ),
        (
            "path_ambiguous",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets%2f1",
            good.clone(),
            Err(Reason::PathAmbiguous),
        ),
        (
            "forwarded_for_invalid",
            "127.0.0.10",
            Some("not-an-ip"),
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Err(Reason::ForwardedForInvalid),
        ),
        (
            "ip of no vendor",
            "127.0.0.9",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Err(Reason::IpNotAllowed),
        ),
        (
            "ip of another vendor",
            "127.0.0.3",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Err(Reason::IpNotAllowed),
        ),
        (
            "forged xff from untrusted peer",
            "127.0.0.9",
            Some("127.0.0.2"),
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Err(Reason::IpNotAllowed),
        ),
        (
            "xff from trusted proxy",
            "127.0.0.10",
            Some("198.51.100.1, 127.0.0.2"),
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Ok(()),
        ),
        (
            "xff chain of trusted proxies",
            "127.0.0.10",
            Some("127.0.0.2, 10.1.2.3"),
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Ok(()),
        ),
        (
            "xff rightmost untrusted wins",
            "127.0.0.10",
            Some("127.0.0.2, 198.51.100.1"),
            get.clone(),
            "/api/v2/tickets/1",
            good.clone(),
            Err(Reason::IpNotAllowed),
        ),
        (
            "token_invalid garbage",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            "not.a.jwt".into(),
            Err(Reason::TokenInvalid),
        ),
        (
            "token_expired",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"exp": NOW - 3600})),
            Err(Reason::TokenExpired),
        ),
        (
            "expired within leeway",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"exp": NOW - 10})),
            Ok(()),
        ),
        (
            "token_not_yet_valid",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"nbf": NOW + 600})),
            Err(Reason::TokenNotYetValid),
        ),
        (
            "no exp",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"exp": null})),
            Err(Reason::TokenInvalid),
        ),
        (
            "issuer_mismatch",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"iss": "https://evil.test"})),
            Err(Reason::IssuerMismatch),
        ),
        (
            "audience_mismatch",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"aud": "other-app"})),
            Err(Reason::AudienceMismatch),
        ),
        (
            "audience in a list",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"aud": ["x", "vendorgate"]})),
            Ok(()),
        ),
        (
            "no account claim",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"sub": null})),
            Err(Reason::TokenInvalid),
        ),
        (
            "vendor_unknown",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"vendor": "initech"})),
            Err(Reason::VendorUnknown),
        ),
        (
            "mfa_missing (no amr)",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"amr": null})),
            Err(Reason::MfaMissing),
        ),
        (
            "mfa_missing (pwd only)",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"amr": ["pwd"]})),
            Err(Reason::MfaMissing),
        ),
        (
            "hardware key counts",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"amr": ["hwk"]})),
            Ok(()),
        ),
        (
            "auth_too_old",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"auth_time": NOW - 13 * 3600})),
            Err(Reason::AuthTooOld),
        ),
        (
            "auth_time absent",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            with(json!({"auth_time": null})),
            Err(Reason::AuthTooOld),
        ),
        (
            "token_missing",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/1",
            String::new(),
            Err(Reason::TokenMissing),
        ),
        (
            "route_denied",
            "127.0.0.2",
            None,
            Method::POST,
            "/api/v2/users/5/password",
            good.clone(),
            Err(Reason::RouteDenied),
        ),
        (
            "route_unknown",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/webhooks",
            good.clone(),
            Err(Reason::RouteUnknown),
        ),
        (
            "route_unknown by method",
            "127.0.0.2",
            None,
            Method::DELETE,
            "/api/v2/tickets/1",
            good.clone(),
            Err(Reason::RouteUnknown),
        ),
        (
            "class_not_permitted",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/incremental/tickets/cursor",
            good.clone(),
            Err(Reason::ClassNotPermitted),
        ),
        (
            "dot-segment to export",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/../incremental/users",
            good.clone(),
            Err(Reason::ClassNotPermitted),
        ),
        (
            "encoded dot-segment to export",
            "127.0.0.2",
            None,
            get.clone(),
            "/api/v2/tickets/%2e%2e/incremental/users",
            good.clone(),
            Err(Reason::ClassNotPermitted),
        ),
        (
            "admin class for no vendor",
            "127.0.0.2",
            None,
            Method::PUT,
            "/api/v2/account/settings",
            good.clone(),
            Err(Reason::ClassNotPermitted),
        ),
    ];
    for (name, peer, xff, method, path, token, want) in rows {
        assert_eq!(decide(&f, peer, xff, method, path, &token), want, "{name}");
    }
    // A vendor known by a second claim value, on its own network, with its own classes.
    let globex = f.idp.mint(KeyKind::EdDsa, &claims(&f, "globex-eu"));
    assert_eq!(
        decide(
            &f,
            "127.0.0.3",
            None,
            get.clone(),
            "/api/v2/incremental/tickets/cursor",
            &globex
        ),
        Ok(())
    );
    assert_eq!(
        decide(
            &f,
            "127.0.0.3",
            None,
            Method::PUT,
            "/api/v2/tickets/1",
            &globex
        ),
        Err(Reason::ClassNotPermitted)
    );
}

#[test]
fn every_key_type_verifies_and_forgeries_do_not() {
    let f = fixture();
    let c = claims(&f, "acme");
    for kind in KeyKind::ALL {
        let token = f.idp.mint(kind, &c);
        let v = f.policy.verify_token(&token, &f.keys, NOW).unwrap();
        assert_eq!((v.account.as_str(), v.vendor), ("agent-7", 0), "{kind:?}");
        assert_eq!(v.amr, ["pwd", "mfa"]);
    }
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = b64(&c);
    let rsa = f.idp.key(KeyKind::Rs256);
    let invalid = |token: &str, what: &str| match f.policy.verify_token(token, &f.keys, NOW) {
        Err(VerifyError::Denied(d)) => assert_eq!(d.reason, Reason::TokenInvalid, "{what}: {d:?}"),
        other => panic!("{what}: {other:?}"),
    };
    // alg none, with and without a kid.
    invalid(
        &format!("{}.{payload}.", b64(&json!({"alg": "none"}))),
        "alg none",
    );
    invalid(
        &format!(
            "{}.{payload}.",
            b64(&json!({"alg": "none", "kid": rsa.kid}))
        ),
        "alg none + kid",
    );
    // HS256 "signed" with the RSA public key as the secret (classic key confusion).
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(rsa.kid.clone());
    let confused = jsonwebtoken::encode(
        &header,
        &c,
        &jsonwebtoken::EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    invalid(&confused, "HS256 with the RSA public key");
    // ES256 header on the RSA key's kid: the key type does not fit the alg.
    let es = f.idp.mint(KeyKind::Es256, &c);
    let mut parts: Vec<&str> = es.split('.').collect();
    let forged_header = b64(&json!({"alg": "ES256", "kid": rsa.kid}));
    parts[0] = &forged_header;
    invalid(&parts.join("."), "ES256 claimed on an RSA key");
    // A valid signature over different claims.
    let other = f.idp.mint(KeyKind::Es256, &claims(&f, "globex"));
    let swapped = format!(
        "{}.{}.{}",
        es.split('.').next().unwrap(),
        other.split('.').nth(1).unwrap(),
        es.split('.').nth(2).unwrap()
    );
    invalid(&swapped, "payload swapped under a valid signature");
    // Validly signed, but the claims are not a JSON object.
    invalid(
        &f.idp.mint(KeyKind::Es256, &json!(["acme"])),
        "signed claims that are not an object",
    );
    // A signature with a character outside base64url, and one whose last character carries bits
    // a 64-byte signature cannot have (it ends in A, Q, g or w; replacing it with a fixed letter
    // was a no-op one time in four).
    invalid(
        &format!("{}*", &es[..es.len() - 1]),
        "signature not base64url",
    );
    invalid(
        &format!("{}B", &es[..es.len() - 1]),
        "signature with stray trailing bits",
    );
    invalid(&format!("{es}A"), "signature one character too long");
    invalid("eyJhbGciOiJFUzI1NiJ9.!!!.###", "malformed base64");
    invalid(&"a".repeat(20_000), "oversized");
    // A key the set does not hold is reported as unknown (the proxy refetches), not as invalid.
    let stranger = vendorgate_mock::idp::SigningKey::generate(KeyKind::Es256, "rotated-2");
    assert!(matches!(
        f.policy.verify_token(&stranger.sign(&c), &f.keys, NOW),
        Err(VerifyError::UnknownKey { kid: Some(k) }) if k == "rotated-2"
    ));
}

#[test]
fn config_errors_in_the_policy_sections_are_located() {
    let cases = [
        (
            "\"HS256\"",
            POLICY.replace(
                "audiences = [\"vendorgate\"]",
                "audiences = [\"vendorgate\"]\nalgorithms = [\"HS256\"]",
            ),
            "HMAC",
        ),
        (
            "class typo",
            POLICY.replace(
                "classes = [\"read\", \"write\"]",
                "classes = [\"read\", \"wrtie\"]",
            ),
            "class \"wrtie\" is not used by any route",
        ),
        (
            "bad cidr",
            POLICY.replace("127.0.0.2/32", "127.0.0.300/32"),
            "invalid",
        ),
        (
            "bad pattern",
            POLICY.replace("/api/v2/incremental/**", "/api/v2/**/x"),
            "'**' may only be the last segment",
        ),
        (
            "no class",
            POLICY.replace("deny = true", ""),
            "route needs a class",
        ),
        (
            "two key sources",
            POLICY.replace(
                "jwks_file = \"jwks.json\"",
                "jwks_file = \"a\"\njwks_url = \"https://x\"",
            ),
            "exactly one of",
        ),
        (
            "no mfa",
            POLICY.replace("max_auth_age = \"12h\"", "amr_any = []"),
            "MFA",
        ),
        (
            "lower-case method",
            POLICY.replace("methods = [\"PUT\"]", "methods = [\"put\"]"),
            "not an HTTP method",
        ),
        (
            "duplicate claim",
            POLICY.replace(
                "claim_values = [\"globex\", \"globex-eu\"]",
                "claim_values = [\"acme\"]",
            ),
            "two vendors",
        ),
    ];
    for (what, text, words) in cases {
        let errors = Config::from_toml(&text, "p.toml").unwrap_err();
        let e = errors.first();
        assert!(e.message.contains(words), "{what}: {e}");
        assert!(e.line > 1, "{what}: {e}");
    }
}

/// The trace names every rule in the order the decision consults it: what `explain` prints.
#[test]
fn the_trace_lists_each_rule_in_order() {
    let f = fixture();
    let token = f.idp.mint(KeyKind::Es256, &claims(&f, "acme"));
    let verified = f.policy.verify_token(&token, &f.keys, NOW).unwrap();
    let standing = f.policy.standing(&verified);
    let arrival = Arrival {
        peer: ip("127.0.0.10"),
        forwarded_for: Some("127.0.0.2"),
        path: "/api/v2/tickets/./1",
    };
    let decision = f.policy.evaluate(
        &arrival,
        &Method::GET,
        Presented::Verified(&standing, &verified),
        &Controls::default(),
        NOW,
    );
    assert!(decision.outcome.is_ok());
    let checks: Vec<Check> = decision.trace.iter().map(|s| s.check).collect();
    assert_eq!(
        checks,
        [
            Check::Path,
            Check::ClientAddress,
            Check::Network,
            Check::Expiry,
            Check::Vendor,
            Check::VendorNetwork,
            Check::Mfa,
            Check::AuthAge,
            Check::Route,
            Check::Class,
            Check::SessionLifetime,
        ]
    );
    assert_eq!(
        decision.trace[0].detail,
        "/api/v2/tickets/./1 → /api/v2/tickets/1"
    );
    assert!(decision.trace[8]
        .detail
        .contains("ticket-show → class read"));

    // Past its lifetime, with the route and everything before it passed.
    let old = crate::Standing {
        session_start: Some(NOW - 13 * 3600),
        ..standing
    };
    let decision = f.policy.evaluate(
        &arrival,
        &Method::GET,
        Presented::Verified(&old, &verified),
        &Controls::default(),
        NOW,
    );
    assert_eq!(
        decision.outcome.unwrap_err().reason,
        Reason::SessionLifetimeExpired
    );
    assert_eq!(decision.trace.last().unwrap().check, Check::SessionLifetime);
}

/// A lock is one more rule of the decision: first, so a locked account learns nothing else, and
/// only for what it targets.
#[test]
fn a_lock_refuses_its_target_first_and_nothing_else() {
    let f = fixture();
    let token = f.idp.mint(KeyKind::Es256, &claims(&f, "acme"));
    let lock = |target: LockTarget, expires_at| Controls {
        locks: vec![Lock {
            id: "lk_0123456789abcdef".into(),
            target,
            message: "stolen laptop".into(),
            created_by: "soc".into(),
            created_at: NOW - 10,
            expires_at,
            revocation: false,
        }],
        ..Controls::default()
    };
    let get = |locks: &Controls, peer: &str, token: &str| {
        decide_with(
            &f,
            peer,
            None,
            Method::GET,
            "/api/v2/tickets/1",
            token,
            locks,
        )
    };
    let account = lock(LockTarget::Account("agent-7".into()), None);
    assert_eq!(get(&account, "127.0.0.2", &token), Err(Reason::Locked));
    let other = f.idp.mint(
        KeyKind::Es256,
        &f.idp
            .agent_claims("vendorgate", "agent-8", "acme", NOW - 60, 3600),
    );
    assert_eq!(get(&account, "127.0.0.2", &other), Ok(()));
    let vendor = lock(LockTarget::Vendor("acme".into()), None);
    assert_eq!(get(&vendor, "127.0.0.2", &other), Err(Reason::Locked));
    let sid = format!("sid-agent-7-{}", NOW - 60);
    let session = lock(LockTarget::Session(sid), None);
    assert_eq!(get(&session, "127.0.0.2", &token), Err(Reason::Locked));
    assert_eq!(get(&session, "127.0.0.2", &other), Ok(()));
    // A network lock needs no token: it refuses before the token is looked at.
    let network = lock(LockTarget::Network("127.0.0.0/30".parse().unwrap()), None);
    assert_eq!(get(&network, "127.0.0.2", ""), Err(Reason::Locked));
    // Expired: no effect.
    let expired = lock(LockTarget::Account("agent-7".into()), Some(NOW));
    assert_eq!(get(&expired, "127.0.0.2", &token), Ok(()));
    // A revocation of the session: 401, sign in again.
    let mut revoked = lock(
        LockTarget::Session(format!("sid-agent-7-{}", NOW - 60)),
        None,
    );
    revoked.locks[0].revocation = true;
    assert_eq!(
        get(&revoked, "127.0.0.2", &token),
        Err(Reason::SessionRevoked)
    );
    // A list that cannot be confirmed (strict): nobody passes.
    let unknown = Controls {
        unknown: true,
        ..Controls::default()
    };
    assert_eq!(
        get(&unknown, "127.0.0.2", &token),
        Err(Reason::StateUnavailable)
    );
}

/// An access window is one more rule, after the class (a window can be set per class) and before
/// the session: refused outside, 403 `outside_access_window`, and `explain`'s trace says where the
/// vendor's clock stood.
#[test]
fn access_windows_refuse_outside_the_vendors_hours() {
    // NOW is Friday 2027-01-15 08:00 UTC: 09:00 in Paris (CET), 10:00 in Athens (EET).
    let with_access = |access: &str| {
        let text = POLICY.replacen(
            "classes = [\"read\", \"write\"]\n",
            &format!("classes = [\"read\", \"write\"]\naccess = {access}\n"),
            1,
        );
        let mut f = fixture();
        f.policy = Config::from_toml(&text, "policy.toml").unwrap().policy;
        f
    };
    let request = |f: &Fixture, method: Method| {
        let token = f.idp.mint(KeyKind::Es256, &claims(f, "acme"));
        decide(f, "127.0.0.2", None, method, "/api/v2/tickets/1", &token)
    };
    let open = with_access(
        r#"{ time_zone = "Europe/Paris", windows = [{ days = "mon-fri", hours = "09:00-17:00" }] }"#,
    );
    assert_eq!(request(&open, Method::GET), Ok(()));
    let not_yet = with_access(
        r#"{ time_zone = "Europe/Paris", windows = [{ days = "mon-fri", hours = "09:01-17:00" }] }"#,
    );
    assert_eq!(
        request(&not_yet, Method::GET),
        Err(Reason::OutsideAccessWindow)
    );
    // The same hours in another zone: 10:00 in Athens is past a 09:00-10:00 window.
    let athens = with_access(
        r#"{ time_zone = "Europe/Athens", windows = [{ days = "fri", hours = "09:00-10:00" }] }"#,
    );
    assert_eq!(
        request(&athens, Method::GET),
        Err(Reason::OutsideAccessWindow)
    );
    // Writes only on weekends: reads keep the general window.
    let split = with_access(
        r#"{ time_zone = "UTC", windows = [{ days = "mon-sun", hours = "00:00-24:00" }, { days = "sat,sun", hours = "00:00-24:00", classes = ["write"] }] }"#,
    );
    assert_eq!(request(&split, Method::GET), Ok(()));
    assert_eq!(
        request(&split, Method::PUT),
        Err(Reason::OutsideAccessWindow)
    );
    // The trace names the rule, the vendor's local time and its windows, after the class.
    let token = not_yet.idp.mint(KeyKind::Es256, &claims(&not_yet, "acme"));
    let standing_token = not_yet
        .policy
        .verify_token(&token, &not_yet.keys, NOW)
        .unwrap();
    let standing = not_yet.policy.standing(&standing_token);
    let decision = not_yet.policy.evaluate(
        &Arrival {
            peer: ip("127.0.0.2"),
            forwarded_for: None,
            path: "/api/v2/tickets/1",
        },
        &Method::GET,
        Presented::Verified(&standing, &standing_token),
        &Controls::default(),
        NOW,
    );
    let checks: Vec<Check> = decision.trace.iter().map(|s| s.check).collect();
    assert_eq!(
        &checks[checks.len() - 2..],
        [Check::Class, Check::AccessWindow]
    );
    assert_eq!(
        decision.outcome.unwrap_err().rule,
        "vendors[acme].access: fri 09:00 is outside mon-fri 09:01-17:00 (Europe/Paris)"
    );
}

/// A just-in-time grant opens a class the vendor does not hold, to its one account, while active
/// and unlocked; the decision names it. Requests are checked against `[grants]`.
#[test]
fn a_grant_opens_a_class_for_its_account_while_active_and_unlocked() {
    let text = format!(
        "{POLICY}\n[grants]\nmax_duration = \"4h\"\nticket_pattern = \"INC-[0-9]+\"\nclasses = [\"export\", \"admin\"]\n"
    );
    let mut f = fixture();
    f.policy = Config::from_toml(&text, "policy.toml").unwrap().policy;
    let export = |controls: &Controls, account: &str| {
        let claims = f
            .idp
            .agent_claims("vendorgate", account, "acme", NOW - 60, 3600);
        let token = f
            .policy
            .verify_token(&f.idp.mint(KeyKind::Es256, &claims), &f.keys, NOW);
        let token = token.unwrap();
        let standing = f.policy.standing(&token);
        let arrival = Arrival {
            peer: ip("127.0.0.2"),
            forwarded_for: None,
            path: "/api/v2/incremental/tickets.json",
        };
        let d = f.policy.evaluate(
            &arrival,
            &Method::GET,
            Presented::Verified(&standing, &token),
            controls,
            NOW,
        );
        d.outcome.map(|allow| allow.grant).map_err(|d| d.reason)
    };
    assert_eq!(
        export(&Controls::default(), "agent-7"),
        Err(Reason::ClassNotPermitted)
    );

    let classes = ["export".to_string()];
    let ask = GrantRequest {
        vendor: "acme",
        account: "agent-7",
        classes: &classes,
        duration: std::time::Duration::from_secs(3600),
        reason: "quarterly churn report",
        ticket: Some("INC-4711"),
    };
    let pending = f
        .policy
        .request_grant(&ask, "gr_1".into(), "lead", NOW - 100)
        .unwrap();
    assert_eq!(pending.pending_until, NOW - 100 + 3600);
    let with = |grant: &Grant| Controls {
        grants: vec![grant.clone()],
        ..Controls::default()
    };
    // Pending opens nothing.
    assert_eq!(
        export(&with(&pending), "agent-7"),
        Err(Reason::ClassNotPermitted)
    );
    let active = pending.approved("soc", NOW - 10).unwrap();
    assert_eq!(export(&with(&active), "agent-7"), Ok(Some("gr_1".into())));
    // Only for its account.
    assert_eq!(
        export(&with(&active), "agent-8"),
        Err(Reason::ClassNotPermitted)
    );
    // Expired: closed again.
    let expired = pending.approved("soc", NOW - 3600).unwrap();
    assert_eq!(
        export(&with(&expired), "agent-7"),
        Err(Reason::ClassNotPermitted)
    );
    // A lock on the grant closes it, naming the lock.
    let mut locked = with(&active);
    locked.locks.push(Lock {
        id: "lk_1".into(),
        target: LockTarget::Grant("gr_1".into()),
        message: "revoked".into(),
        created_by: "soc".into(),
        created_at: NOW - 5,
        expires_at: active.expires_at,
        revocation: false,
    });
    assert_eq!(export(&locked, "agent-7"), Err(Reason::Locked));
    // A held class reads as before, grant or not.
    assert_eq!(
        decide(
            &f,
            "127.0.0.2",
            None,
            Method::GET,
            "/api/v2/tickets/1",
            &f.idp.mint(KeyKind::Es256, &claims(&f, "acme"))
        ),
        Ok(())
    );

    // What [grants] refuses, with its code.
    let refused = |ask: GrantRequest| {
        f.policy
            .request_grant(&ask, "gr_2".into(), "lead", NOW)
            .unwrap_err()
            .code()
    };
    let read = ["read".to_string()];
    let write = ["write".to_string()];
    let nothing: [String; 0] = [];
    let cases = [
        (
            GrantRequest {
                ticket: None,
                ..ask.clone()
            },
            "ticket_required",
        ),
        (
            GrantRequest {
                ticket: Some("JIRA-1"),
                ..ask.clone()
            },
            "ticket_invalid",
        ),
        // The pattern is anchored: a matching prefix is not enough.
        (
            GrantRequest {
                ticket: Some("INC-1 or anything"),
                ..ask.clone()
            },
            "ticket_invalid",
        ),
        (
            GrantRequest {
                duration: std::time::Duration::from_secs(5 * 3600),
                ..ask.clone()
            },
            "duration_too_long",
        ),
        (
            GrantRequest {
                classes: &read,
                ..ask.clone()
            },
            "class_already_held",
        ),
        (
            GrantRequest {
                classes: &write,
                ..ask.clone()
            },
            "class_already_held",
        ),
        (
            GrantRequest {
                vendor: "initech",
                ..ask.clone()
            },
            "vendor_unknown",
        ),
        (
            GrantRequest {
                reason: " ",
                ..ask.clone()
            },
            "invalid_request",
        ),
        (
            GrantRequest {
                classes: &nothing,
                ..ask.clone()
            },
            "invalid_request",
        ),
    ];
    for (ask, code) in cases {
        assert_eq!(refused(ask.clone()), code, "{ask:?}");
    }
    // Globex holds export; admin is grantable, write is not.
    let admin = ["admin".to_string()];
    let ok = GrantRequest {
        vendor: "globex",
        classes: &admin,
        ..ask.clone()
    };
    assert!(f
        .policy
        .request_grant(&ok, "gr_3".into(), "lead", NOW)
        .is_ok());
    let text = text.replace(
        "classes = [\"export\", \"admin\"]",
        "classes = [\"export\"]",
    );
    let strict = Config::from_toml(&text, "policy.toml").unwrap().policy;
    assert_eq!(
        strict
            .request_grant(&ok, "gr_4".into(), "lead", NOW)
            .unwrap_err()
            .code(),
        "class_not_grantable"
    );
}
