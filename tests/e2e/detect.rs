//! Detect, end to end: access windows refuse outside a vendor's hours through the real proxy, with
//! the reason on the wire, in the trail and in `vendorgate explain`.

use std::time::{SystemTime, UNIX_EPOCH};

use vendorgate_certs::Alpn;

use crate::support::*;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Today's weekday (Monday = 0) in UTC.
fn weekday_utc() -> usize {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // 1970-01-01 was a Thursday.
    ((days + 3) % 7) as usize
}

/// acme may read at any hour; it may export only on a weekday three days from today, so never
/// now, whatever the hour (in UTC, the zone the windows are read in).
fn policy() -> String {
    let closed = DAYS[(weekday_utc() + 3) % 7];
    format!(
        r#"
[identity]
issuer = "https://idp.e2e.test"
audiences = ["vendorgate"]
jwks_file = "@JWKS@"

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8", "::1/128"]
classes = ["read", "export"]
access = {{ time_zone = "UTC", windows = [
  {{ days = "mon-sun", hours = "00:00-24:00" }},
  {{ days = "{closed}", hours = "00:00-24:00", classes = ["export"] }},
] }}

[[routes]]
id = "incremental"
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
id = "everything"
path = "/**"
class = "read"
"#
    )
}

#[tokio::test]
async fn outside_its_window_a_class_is_refused_on_the_wire_in_the_trail_and_in_explain() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&policy()));
    let client = client(&pki, Http::One);

    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 200);
    let seen = upstream.request_count();

    let (parts, body) = send_json(&client, proxy.get("/api/v2/incremental/tickets/cursor")).await;
    assert_eq!(parts.status, 403);
    assert_eq!(body["error"], "outside_access_window", "{body}");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        upstream.request_count(),
        seen,
        "a refusal reached the upstream"
    );

    // explain gives the same answer, naming the window.
    let token_file = proxy.dir.path().join("token");
    std::fs::write(&token_file, &proxy.token).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["explain", "--config"])
        .arg(proxy.config_path())
        .args(["--path", "/api/v2/incremental/tickets/cursor", "--token"])
        .arg(&token_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("DENY outside_access_window") && text.contains("00:00-24:00 (UTC)"),
        "{text}"
    );

    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let refused = recs
        .iter()
        .find(|r| at(r, "vendorgate.reason") == "outside_access_window")
        .expect("no record of the refusal");
    assert_eq!(at(refused, "http.response.status_code"), 403);
    assert!(
        at(refused, "vendorgate.rule")
            .as_str()
            .unwrap()
            .starts_with("vendors[acme].access: "),
        "{refused}"
    );
}
