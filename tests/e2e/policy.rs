//! The policy through the real proxy: real tokens signed with real keys, clients on chosen source
//! addresses, and an attack matrix in which every refusal has its status and reason and the upstream
//! sees nothing.

use std::time::Duration;

use base64::Engine;
use http::{header, HeaderValue, Method};
use serde_json::{json, Value};
use vendorgate_certs::Alpn;
use vendorgate_mock::idp::{self, KeyKind, SigningKey};
use vendorgate_mock::{MockOptions, MockUpstream};

use crate::support::*;

const UPSTREAM_TOKEN: &str = "zd-secret-api-token-9f8e7d";
const UPSTREAM_EMAIL: &str = "svc@acme.test";

fn expected_upstream_auth() -> String {
    let raw = format!("{UPSTREAM_EMAIL}/token:{UPSTREAM_TOKEN}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// acme works from 127.0.0.2 (and ::1) and may read and write; globex works from 127.0.0.3 and may
/// read and export. 127.0.0.10 is a trusted load balancer.
fn policy(key_source: &str) -> String {
    format!(
        r#"
[network]
trusted_proxies = ["127.0.0.10/32"]

[identity]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
{key_source}
max_auth_age = "12h"
jwks_min_refetch = "1s"

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.2/32", "::1/128"]
classes = ["read", "write"]

[[vendors]]
id = "globex"
ip_allow = ["127.0.0.3/32"]
classes = ["read", "export"]

[[routes]]
id = "ticket-show"
methods = ["GET"]
path = "/api/v2/tickets/{{id}}"
class = "read"

[[routes]]
id = "ticket-update"
methods = ["PUT"]
path = "/api/v2/tickets/{{id}}"
class = "write"

[[routes]]
id = "echo"
path = "/__mock/echo"
class = "read"

[[routes]]
id = "incremental"
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
id = "users-export"
methods = ["GET"]
path = "/api/v2/users/export"
class = "export"

[[routes]]
id = "password"
path = "/api/v2/users/{{id}}/password"
deny = true
"#
    )
}

struct Setup {
    pki: Pki,
    upstream: MockUpstream,
    proxy: Proxy,
}

async fn setup() -> Setup {
    setup_with(|pki| {
        ProxyConfig::to_url(String::new()).policy(&policy(&format!("jwks_file = {:?}", pki.jwks)))
    })
    .await
}

async fn setup_with(config: impl FnOnce(&Pki) -> ProxyConfig) -> Setup {
    setup_on(Pki::new(), config).await
}

async fn setup_on(pki: Pki, config: impl FnOnce(&Pki) -> ProxyConfig) -> Setup {
    let upstream = mock_with(
        &pki,
        Alpn::H2AndHttp11,
        MockOptions {
            require_authorization: Some(expected_upstream_auth()),
            ..MockOptions::default()
        },
    )
    .await;
    let config = with_credential(&pki, &upstream, config(&pki));
    let proxy = Proxy::start(&pki, config);
    Setup {
        pki,
        upstream,
        proxy,
    }
}

/// Points `config` at `upstream` with the upstream credential (written to a file) to inject.
fn with_credential(pki: &Pki, upstream: &MockUpstream, mut config: ProxyConfig) -> ProxyConfig {
    let secret = pki.dir.path().join("zendesk-token");
    std::fs::write(&secret, format!("{UPSTREAM_TOKEN}\n")).unwrap();
    config.upstream_url = format!("https://127.0.0.1:{}", upstream.addr().port());
    config.upstream(&format!(
        "credential = {{ type = \"zendesk_api_token\", email = \"{UPSTREAM_EMAIL}\", token_file = {:?} }}",
        secret
    ))
}

fn request(
    proxy: &Proxy,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> http::Request<TestBody> {
    let mut builder = http::Request::builder().method(method).uri(proxy.url(path));
    if let Some(t) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    builder.body(empty()).unwrap()
}

fn claims(pki: &Pki, vendor: &str) -> Value {
    pki.idp
        .agent_claims(AUDIENCE, "agent-7", vendor, idp::now(), 3600)
}

fn patched(pki: &Pki, patch: Value) -> String {
    let mut c = claims(pki, "acme");
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    pki.idp.mint(KeyKind::Es256, &c)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn an_allowed_request_carries_the_proxys_credential_and_the_agents_identity() {
    let s = setup().await;
    let client = client_from(&s.pki, Http::Two, Some("127.0.0.2"));
    for kind in KeyKind::ALL {
        let token = s.pki.token_with(kind, "acme", "agent-7");
        let mut req = request(&s.proxy, Method::GET, "/__mock/echo", Some(&token));
        // A spoofed identity header and forwarding headers from the agent are replaced.
        req.headers_mut()
            .insert("x-vendorgate-agent", HeaderValue::from_static("globex/ceo"));
        req.headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("127.0.0.3"));
        let (parts, echo) = send_json(&client, req).await;
        assert_eq!(parts.status, 200, "{kind:?}: {echo}");
        let seen = &echo["headers"];
        assert_eq!(
            seen["authorization"],
            json!([expected_upstream_auth()]),
            "{kind:?}"
        );
        assert_eq!(seen["x-vendorgate-agent"], json!(["acme/agent-7"]));
        assert_eq!(seen["x-forwarded-for"], json!(["127.0.0.2"]));
        assert!(
            !echo.to_string().contains(&token),
            "the agent's token reached the upstream"
        );
    }
    // And a real Zendesk endpoint that insists on the credential.
    let token = s.pki.token_with(KeyKind::Rs256, "acme", "agent-7");
    let (parts, body) = send_json(
        &client,
        request(
            &s.proxy,
            Method::GET,
            "/api/v2/tickets/3.json",
            Some(&token),
        ),
    )
    .await;
    assert_eq!(
        (parts.status.as_u16(), body["ticket"]["id"].as_u64()),
        (200, Some(3))
    );
}

#[tokio::test]
async fn the_attack_matrix_is_refused_precisely_and_never_reaches_the_upstream() {
    let s = setup().await;
    let pki = &s.pki;
    let good = pki.token_with(KeyKind::Es256, "acme", "agent-7");
    let c = claims(pki, "acme");
    let rsa = pki.idp.key(KeyKind::Rs256);
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(rsa.kid.clone());
    let hs256_with_public_key = jsonwebtoken::encode(
        &hs,
        &c,
        &jsonwebtoken::EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    let stranger = SigningKey::generate(KeyKind::Es256, "not-published").sign(&c);
    let now = idp::now();
    let oversized = format!(
        "{}.{}.sig",
        b64(&json!({"alg": "ES256"})),
        "A".repeat(20 * 1024)
    );

    struct Case {
        name: &'static str,
        source: &'static str,
        method: Method,
        path: String,
        token: Option<String>,
        xff: Option<&'static str>,
        status: u16,
        reason: &'static str,
    }
    let case =
        |name, source, method: Method, path: &str, token: Option<String>, status, reason| Case {
            name,
            source,
            method,
            path: path.to_string(),
            token,
            xff: None,
            status,
            reason,
        };
    let t = |s: &String| Some(s.clone());
    let a = "127.0.0.2";
    let read = "/api/v2/tickets/1";
    let mut cases = vec![
        case("no token", a, Method::GET, read, None, 401, "token_missing"),
        case(
            "token only in the query string",
            a,
            Method::GET,
            &format!("{read}?access_token={good}"),
            None,
            401,
            "token_missing",
        ),
        case(
            "alg none",
            a,
            Method::GET,
            read,
            Some(alg_none),
            401,
            "token_invalid",
        ),
        case(
            "HS256 signed with the RSA public key",
            a,
            Method::GET,
            read,
            Some(hs256_with_public_key),
            401,
            "token_invalid",
        ),
        case(
            "expired",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"exp": now - 3600}))),
            401,
            "token_expired",
        ),
        case(
            "nbf in the future",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"nbf": now + 3600}))),
            401,
            "token_not_yet_valid",
        ),
        case(
            "wrong iss",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"iss": "https://evil.test"}))),
            401,
            "issuer_mismatch",
        ),
        case(
            "wrong aud",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"aud": "another-app"}))),
            401,
            "audience_mismatch",
        ),
        case(
            "no amr",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"amr": null}))),
            401,
            "mfa_missing",
        ),
        case(
            "password only",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"amr": ["pwd"]}))),
            401,
            "mfa_missing",
        ),
        case(
            "sign-in too old",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"auth_time": now - 13 * 3600}))),
            401,
            "auth_too_old",
        ),
        case(
            "unknown kid",
            a,
            Method::GET,
            read,
            Some(stranger),
            401,
            "token_invalid",
        ),
        case(
            "malformed base64",
            a,
            Method::GET,
            read,
            Some("eyJhbGciOiJFUzI1NiJ9.***.###".into()),
            401,
            "token_invalid",
        ),
        case(
            "oversized token (20 KiB)",
            a,
            Method::GET,
            read,
            Some(oversized),
            401,
            "token_invalid",
        ),
        case(
            "unknown vendor",
            a,
            Method::GET,
            read,
            Some(patched(pki, json!({"vendor": "initech"}))),
            403,
            "vendor_unknown",
        ),
        case(
            "address of no vendor",
            "127.0.0.9",
            Method::GET,
            read,
            t(&good),
            403,
            "ip_not_allowed",
        ),
        case(
            "address of another vendor",
            "127.0.0.3",
            Method::GET,
            read,
            t(&good),
            403,
            "ip_not_allowed",
        ),
        case(
            "route explicitly denied",
            a,
            Method::POST,
            "/api/v2/users/5/password",
            t(&good),
            403,
            "route_denied",
        ),
        case(
            "route unknown",
            a,
            Method::GET,
            "/api/v2/webhooks",
            t(&good),
            403,
            "route_unknown",
        ),
        case(
            "method not routed",
            a,
            Method::DELETE,
            read,
            t(&good),
            403,
            "route_unknown",
        ),
        case(
            "class not permitted",
            a,
            Method::GET,
            "/api/v2/incremental/tickets/cursor?start_time=0",
            t(&good),
            403,
            "class_not_permitted",
        ),
        case(
            "dot-segments to an export",
            a,
            Method::GET,
            "/api/v2/tickets/../users/export",
            t(&good),
            403,
            "class_not_permitted",
        ),
        case(
            "encoded dot-segments",
            a,
            Method::GET,
            "/api/v2/tickets/%2e%2e/users/export",
            t(&good),
            403,
            "class_not_permitted",
        ),
        case(
            "upper-case encoded dots",
            a,
            Method::GET,
            "/api/v2/tickets/%2E%2E/users/export",
            t(&good),
            403,
            "class_not_permitted",
        ),
        case(
            "mixed dots",
            a,
            Method::GET,
            "/api/v2/tickets/.%2e/users/export",
            t(&good),
            403,
            "class_not_permitted",
        ),
        case(
            "duplicate slashes",
            a,
            Method::GET,
            "//api//v2/tickets/..//users/export",
            t(&good),
            403,
            "class_not_permitted",
        ),
        case(
            "encoded slash",
            a,
            Method::GET,
            "/api/v2/tickets%2f..%2fusers/export",
            t(&good),
            400,
            "path_ambiguous",
        ),
        case(
            "encoded backslash",
            a,
            Method::GET,
            "/api/v2/tickets/..%5cusers/export",
            t(&good),
            400,
            "path_ambiguous",
        ),
        case(
            "encoded NUL",
            a,
            Method::GET,
            "/api/v2/tickets/1%00",
            t(&good),
            400,
            "path_ambiguous",
        ),
        case(
            "climbing above the root",
            a,
            Method::GET,
            "/api/../../etc/passwd",
            t(&good),
            400,
            "path_ambiguous",
        ),
    ];
    cases.push(Case {
        xff: Some("127.0.0.2"),
        ..case(
            "forged X-Forwarded-For from an untrusted peer",
            "127.0.0.9",
            Method::GET,
            read,
            t(&good),
            403,
            "ip_not_allowed",
        )
    });

    let before = s.upstream.request_count();
    for c in cases {
        let client = client_from(pki, Http::One, Some(c.source));
        let mut req = request(&s.proxy, c.method.clone(), &c.path, c.token.as_deref());
        if let Some(xff) = c.xff {
            req.headers_mut()
                .insert("x-forwarded-for", HeaderValue::from_static(xff));
        }
        let (parts, bytes) = send(&client, req).await;
        let text = String::from_utf8_lossy(&bytes);
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{}: not JSON: {text}", c.name));
        assert_eq!(
            (parts.status.as_u16(), body["error"].as_str().unwrap_or("")),
            (c.status, c.reason),
            "{}",
            c.name
        );
        assert_eq!(
            body["request_id"],
            parts.headers["x-request-id"].to_str().unwrap(),
            "{}",
            c.name
        );
        if let Some(token) = &c.token {
            assert!(
                !text.contains(token.as_str())
                    && !format!("{:?}", parts.headers).contains(token.as_str()),
                "{}: token echoed",
                c.name
            );
        }
        let challenge = parts
            .headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        match c.status {
            401 if c.reason == "token_missing" => assert_eq!(
                challenge.as_deref(),
                Some("Bearer realm=\"vendorgate\""),
                "{}",
                c.name
            ),
            401 if c.reason == "mfa_missing" || c.reason == "auth_too_old" => {
                assert!(
                    challenge
                        .unwrap()
                        .contains("insufficient_user_authentication"),
                    "{}",
                    c.name
                )
            }
            401 => assert!(
                challenge.unwrap().contains("error=\"invalid_token\""),
                "{}",
                c.name
            ),
            _ => assert!(challenge.is_none(), "{}", c.name),
        }
    }
    assert_eq!(
        s.upstream.request_count(),
        before,
        "a refused request reached the upstream"
    );

    // A 64 KiB token does not fit the 32 KiB header limit: refused by the HTTP layer itself with
    // 431. The header is larger than a socket buffer, so the proxy may answer and close while the
    // client is still writing it; the client then sees the connection fail instead. Either way
    // the request is refused and nothing reaches the upstream.
    let huge = format!(
        "{}.{}.sig",
        b64(&json!({"alg": "ES256"})),
        "A".repeat(64 * 1024)
    );
    match client_from(pki, Http::One, Some(a))
        .request(request(&s.proxy, Method::GET, read, Some(&huge)))
        .await
    {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(
            format!("{e:?}").contains("BodyWrite")
                || format!("{e:?}").contains("Broken pipe")
                || format!("{e:?}").contains("reset"),
            "{e:?}"
        ),
    }
    assert_eq!(s.upstream.request_count(), before);

    // The positive controls: the same token from the right address, directly and via the trusted
    // load balancer.
    let (parts, _) = send(
        &client_from(pki, Http::One, Some(a)),
        request(&s.proxy, Method::GET, read, Some(&good)),
    )
    .await;
    assert_eq!(parts.status, 200);
    let mut req = request(&s.proxy, Method::GET, read, Some(&good));
    req.headers_mut().insert(
        "x-forwarded-for",
        HeaderValue::from_static("198.51.100.7, 127.0.0.2"),
    );
    let (parts, _) = send(&client_from(pki, Http::One, Some("127.0.0.10")), req).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn ipv6_clients_are_matched_against_ipv6_networks() {
    let s = setup().await;
    // The same policy on an IPv6 listener: acme's ::1/128 admits it, globex has no IPv6 network.
    let config = ProxyConfig::to_url(String::new())
        .policy(&policy(&format!("jwks_file = {:?}", s.pki.jwks)));
    let text = with_credential(&s.pki, &s.upstream, config)
        .render(&s.pki)
        .replace(
            "listen = \"127.0.0.1:0\"\ntls_cert",
            "listen = \"[::1]:0\"\ntls_cert",
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let line = first_line(&mut child, Duration::from_secs(20)).expect("no announcement");
    let port: u16 = line
        .split("proxy=[::1]:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let client = client(&s.pki, Http::One);
    let url = format!("https://[::1]:{port}/api/v2/tickets/1");
    let (parts, body) = send(
        &client,
        bearer_get(&url, &s.pki.token_with(KeyKind::EdDsa, "acme", "a")),
    )
    .await;
    let globex = send_json(
        &client,
        bearer_get(&url, &s.pki.token_with(KeyKind::EdDsa, "globex", "g")),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (globex.0.status.as_u16(), globex.1["error"].as_str()),
        (403, Some("ip_not_allowed"))
    );
}

/// An IdP (the mock) publishing a JWKS over HTTPS, found by OIDC discovery.
async fn idp_server(pki: &Pki, jwks: Option<String>) -> MockUpstream {
    mock_with(
        pki,
        Alpn::Http11,
        MockOptions {
            jwks,
            ..MockOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn keys_by_discovery_survive_rotation_and_an_idp_outage() {
    let pki = Pki::new();
    let rotated = SigningKey::generate(KeyKind::Es256, "es256-2");
    let idp_srv = idp_server(&pki, Some(pki.idp.jwks())).await;
    let discovery = format!(
        "discovery_url = \"https://127.0.0.1:{}\"\nca_bundle = {:?}",
        idp_srv.addr().port(),
        pki.files.ca_cert
    );
    let s = setup_on(pki, |_| {
        ProxyConfig::to_url(String::new()).policy(&policy(&discovery))
    })
    .await;
    let pki = &s.pki;
    let client = client_from(pki, Http::One, Some("127.0.0.2"));
    let read = |token: &str| request(&s.proxy, Method::GET, "/api/v2/tickets/1", Some(token));
    let first = pki.idp.mint(KeyKind::Es256, &claims(pki, "acme"));

    // Keys arrive from the background fetch shortly after startup.
    let mut status = 0;
    for _ in 0..50 {
        status = send(&client, read(&first)).await.0.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "{}", s.proxy.log());

    // The IdP rotates: a token signed with the new key makes the proxy fetch again.
    let second = rotated.sign(&claims(pki, "acme"));
    let mut both: Value = serde_json::from_str(&pki.idp.jwks()).unwrap();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(rotated.jwk.clone());
    idp_srv.set_jwks(Some(both.to_string()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (parts, body) = send(&client, read(&second)).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));

    // The IdP goes down: the keys already held keep working (fresh tokens, not cached ones).
    idp_srv.set_jwks(None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = SigningKey::generate(KeyKind::Es256, "es256-3").sign(&claims(pki, "acme"));
    let (parts, body) = send_json(&client, read(&stranger)).await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (401, Some("token_invalid"))
    );
    let fresh = rotated.sign(
        &pki.idp
            .agent_claims(AUDIENCE, "agent-8", "acme", idp::now(), 600),
    );
    assert_eq!(send(&client, read(&fresh)).await.0.status, 200);
    assert!(
        s.proxy.log().contains("IdP key set fetch failed"),
        "{}",
        s.proxy.log()
    );
}

#[tokio::test]
async fn without_any_key_set_every_request_is_refused() {
    let jwks_url = format!(
        "jwks_url = \"https://127.0.0.1:{}/jwks.json\"",
        closed_port()
    );
    let s = setup_with(|_| ProxyConfig::to_url(String::new()).policy(&policy(&jwks_url))).await;
    let pki = &s.pki;
    let before = s.upstream.request_count();
    let token = pki.token_with(KeyKind::Es256, "acme", "a");
    let (parts, body) = send_json(
        &client_from(pki, Http::One, Some("127.0.0.2")),
        request(&s.proxy, Method::GET, "/api/v2/tickets/1", Some(&token)),
    )
    .await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (503, Some("identity_keys_unavailable"))
    );
    assert_eq!(s.upstream.request_count(), before);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s.proxy.log();
    assert!(
        log.contains("IdP key set fetch failed") && log.contains("identity_keys_unavailable"),
        "{log}"
    );
}

#[tokio::test]
async fn sighup_swaps_the_policy_and_a_broken_one_is_refused() {
    let s = setup().await;
    let client = client_from(&s.pki, Http::One, Some("127.0.0.2"));
    let token = s.pki.token_with(KeyKind::Es256, "acme", "agent-7");
    let read = || request(&s.proxy, Method::GET, "/api/v2/tickets/1", Some(&token));
    assert_eq!(send(&client, read()).await.0.status, 200);

    // Take "read" away from acme.
    let path = s.proxy.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        original.replace("classes = [\"read\", \"write\"]", "classes = [\"write\"]"),
    )
    .unwrap();
    s.proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (parts, body) = send_json(&client, read()).await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (403, Some("class_not_permitted")),
        "{}",
        s.proxy.log()
    );

    // A broken file: refused, and the policy in force stays.
    std::fs::write(
        &path,
        original.replace("classes = [\"read\", \"write\"]", "classes = [\"raed\"]"),
    )
    .unwrap();
    s.proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (parts, _) = send_json(&client, read()).await;
    assert_eq!(parts.status, 403);
    let log = s.proxy.log();
    assert!(
        log.contains("policy reload failed")
            && log.contains("class \"raed\" is not used by any route"),
        "{log}"
    );
}
