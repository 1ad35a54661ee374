//! Sessions, export rate limits and byte caps through the real proxy, in memory and in a real
//! redis-server shared by two proxy processes.

use std::time::{Duration, Instant};

use http::{header, Method};
use http_body_util::BodyExt;
use serde_json::Value;
use vendorgate_certs::Alpn;
use vendorgate_mock::idp::{self, KeyKind};
use vendorgate_mock::MockBody;

use crate::support::*;

pub(crate) const MIB: u64 = 1024 * 1024;

/// acme on loopback may read (anything) and export (incremental); 3 exports a minute per agent,
/// 10 MiB out and 1 MiB in per agent per hour.
fn limits_policy(sessions: &str, state: &str) -> String {
    format!(
        r#"
[identity]
issuer = "https://idp.e2e.test"
audiences = ["vendorgate"]
jwks_file = "@JWKS@"

[sessions]
{sessions}

[state]
{state}

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8"]
classes = ["read", "export"]

[[routes]]
id = "incremental"
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
id = "everything-else"
path = "/**"
class = "read"

[[limits.rate]]
id = "export-per-agent"
per = "account"
requests = 3
period = "1m"

[[limits.egress]]
id = "hourly-per-agent"
per = "account"
max = "10MiB"
window = "1h"

[[limits.ingress]]
id = "uploads-per-agent"
per = "account"
max = "1MiB"
window = "1h"
"#
    )
}

pub(crate) fn token(pki: &Pki, account: &str) -> String {
    pki.token_with(KeyKind::Es256, "acme", account)
}

pub(crate) fn req(
    proxy: &Proxy,
    method: Method,
    path: &str,
    token: &str,
) -> http::Request<TestBody> {
    http::Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(empty())
        .unwrap()
}

pub(crate) async fn status_and_reason(
    client: &TestClient,
    r: http::Request<TestBody>,
) -> (u16, String, http::HeaderMap) {
    let (parts, bytes) = send(client, r).await;
    let reason = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (parts.status.as_u16(), reason, parts.headers)
}

/// Streams a download to its end or its failure; returns bytes received and whether it completed.
pub(crate) async fn download(client: &TestClient, r: http::Request<TestBody>) -> (u16, u64, bool) {
    let resp = client.request(r).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = 0u64;
    loop {
        match body.frame().await {
            None => return (status, got, true),
            Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len() as u64),
            Some(Err(_)) => return (status, got, false),
        }
    }
}

#[tokio::test]
async fn an_idle_session_is_refused_until_the_agent_signs_in_again() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("idle_timeout = \"1s\"", "")),
    );
    let client = client(&pki, Http::One);
    let first = token(&pki, "idler");
    assert_eq!(
        status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &first)
        )
        .await
        .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &first)
        )
        .await
        .0,
        200,
        "activity keeps it alive"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = upstream.request_count();
    for _ in 0..2 {
        let (status, reason, headers) = status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &first),
        )
        .await;
        assert_eq!((status, reason.as_str()), (401, "session_idle_expired"));
        assert!(headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }
    assert_eq!(upstream.request_count(), before);
    // Signing in again is a new session (a new sid).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = token(&pki, "idler");
    assert_ne!(fresh, first);
    assert_eq!(
        status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &fresh)
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn a_session_past_its_lifetime_is_refused() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("max_lifetime = \"1h\"", "")),
    );
    let now = idp::now();
    let mut claims = pki.idp.agent_claims(AUDIENCE, "veteran", "acme", now, 3600);
    claims["auth_time"] = (now - 2 * 3600).into();
    let old = pki.idp.mint(KeyKind::Es256, &claims);
    let (status, reason, _) = status_and_reason(
        &client(&pki, Http::One),
        req(&proxy, Method::GET, "/api/v2/tickets/1", &old),
    )
    .await;
    assert_eq!((status, reason.as_str()), (401, "session_lifetime_expired"));
}

#[tokio::test]
async fn the_export_limit_refuses_the_fourth_request_with_retry_after() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("", "")),
    );
    let client = client(&pki, Http::Two);
    let agent = token(&pki, "exporter");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";
    for remaining in [2, 1, 0] {
        let (status, _, headers) =
            status_and_reason(&client, req(&proxy, Method::GET, export, &agent)).await;
        assert_eq!(status, 200);
        assert_eq!(headers["ratelimit-policy"], "\"export-per-agent\";q=3;w=60");
        let state = headers["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"export-per-agent\";r={remaining};t=")),
            "{state}"
        );
    }
    let before = upstream.request_count();
    let (status, reason, headers) =
        status_and_reason(&client, req(&proxy, Method::GET, export, &agent)).await;
    assert_eq!((status, reason.as_str()), (429, "export_rate_limited"));
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (18..=20).contains(&retry),
        "one export every 20 s: Retry-After {retry}"
    );
    assert!(headers["ratelimit"].to_str().unwrap().contains("r=0"));
    assert_eq!(
        upstream.request_count(),
        before,
        "a refused export reached the upstream"
    );
    // Reads are another class; another agent has their own allowance.
    assert_eq!(
        status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &agent)
        )
        .await
        .0,
        200
    );
    let other = token(&pki, "colleague");
    assert_eq!(
        status_and_reason(&client, req(&proxy, Method::GET, export, &other))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn an_egress_cap_cuts_a_download_mid_stream_and_refuses_what_follows() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("", "")),
    );
    let fifty_mib = format!("/__mock/stream?bytes={}&chunked=1", 50 * MIB);

    for (version, account) in [(Http::One, "mallory-h1"), (Http::Two, "mallory-h2")] {
        let client = client(&pki, version);
        let agent = token(&pki, account);
        let (status, got, complete) =
            download(&client, req(&proxy, Method::GET, &fifty_mib, &agent)).await;
        assert_eq!(status, 200);
        assert!(
            !complete,
            "{version:?}: a cut transfer must not look complete"
        );
        assert!(
            got <= 10 * MIB + 64 * 1024,
            "{version:?}: received {got} bytes past a 10 MiB cap"
        );
        // HTTP/2 drops DATA frames still queued when the stream is reset, so a little less may
        // arrive than was let through; the cap is an upper bound, never exceeded.
        assert!(got >= 9 * MIB, "{version:?}: cut early at {got} bytes");
        // Over the cap: refused before the upstream is contacted, with when to come back.
        let before = upstream.request_count();
        let (status, reason, headers) = status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &agent),
        )
        .await;
        assert_eq!(
            (status, reason.as_str()),
            (429, "egress_cap_exceeded"),
            "{version:?}"
        );
        let retry: u64 = headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry));
        // Signing in again gives a new token, not a new budget: the cap is the account's.
        let again = token(&pki, account);
        assert_ne!(again, agent);
        let (status, reason, _) = status_and_reason(
            &client,
            req(&proxy, Method::GET, "/api/v2/tickets/1", &again),
        )
        .await;
        assert_eq!(
            (status, reason.as_str()),
            (429, "egress_cap_exceeded"),
            "{version:?}: a new token of the same account"
        );
        assert_eq!(upstream.request_count(), before);
    }

    // Another agent is untouched; a declared length over what is left is refused up front.
    let client = client(&pki, Http::One);
    let bob = token(&pki, "bob");
    let (status, got, complete) = download(
        &client,
        req(
            &proxy,
            Method::GET,
            &format!("/__mock/stream?bytes={}", 6 * MIB),
            &bob,
        ),
    )
    .await;
    assert_eq!((status, got, complete), (200, 6 * MIB, true));
    let (status, reason, _) = status_and_reason(
        &client,
        req(
            &proxy,
            Method::GET,
            &format!("/__mock/stream?bytes={}", 6 * MIB),
            &bob,
        ),
    )
    .await;
    assert_eq!((status, reason.as_str()), (429, "egress_cap_exceeded"));
    // What still fits goes through.
    let (status, got, complete) = download(
        &client,
        req(
            &proxy,
            Method::GET,
            &format!("/__mock/stream?bytes={}", 3 * MIB),
            &bob,
        ),
    )
    .await;
    assert_eq!((status, got, complete), (200, 3 * MIB, true));
}

#[tokio::test]
async fn an_ingress_cap_refuses_oversized_uploads() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("", "")),
    );
    let client = client(&pki, Http::Two);
    let agent = token(&pki, "uploader");
    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let upload = |total: u64, sized: bool| {
        http::Request::post(proxy.url("/__mock/echo"))
            .header(header::AUTHORIZATION, format!("Bearer {agent}"))
            .body(MockBody::repeat(chunk.clone(), total, sized).boxed())
            .unwrap()
    };
    let (status, reason, _) = status_and_reason(&client, upload(2 * MIB, true)).await;
    assert_eq!(
        (status, reason.as_str()),
        (429, "ingress_cap_exceeded"),
        "declared"
    );
    let (status, reason, _) = status_and_reason(&client, upload(2 * MIB, false)).await;
    assert_eq!(
        (status, reason.as_str()),
        (429, "ingress_cap_exceeded"),
        "streamed: {}",
        proxy.log()
    );
    // The budget is spent now: even a small upload is refused before reaching the upstream.
    let before = upstream.request_count();
    let (status, reason, _) = status_and_reason(&client, upload(64 * 1024, true)).await;
    assert_eq!(
        (status, reason.as_str()),
        (429, "ingress_cap_exceeded"),
        "after"
    );
    assert_eq!(upstream.request_count(), before);
}

fn redis_state(redis: &RedisServer, on_error: &str) -> String {
    format!("backend = \"redis\"\nredis_url = \"{}\"\non_state_error = \"{on_error}\"\ntimeout = \"300ms\"", redis.url())
}

#[tokio::test]
async fn two_proxies_sharing_redis_enforce_one_rate_limit_and_one_cap() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let config =
        || ProxyConfig::to(&upstream).policy(&limits_policy("", &redis_state(&redis, "deny")));
    let (a, b) = (Proxy::start(&pki, config()), Proxy::start(&pki, config()));
    // Until a replica has reached Redis, `deny` refuses everything: wait as a balancer would.
    a.ready().await;
    b.ready().await;
    let client = client(&pki, Http::One);
    let agent = token(&pki, "shared-agent");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";

    // Three exports a minute in all, whichever replica they reach.
    let mut statuses = vec![];
    for proxy in [&a, &b, &a, &b] {
        statuses.push(
            status_and_reason(&client, req(proxy, Method::GET, export, &agent))
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // 10 MiB in all: 6 through A, then B refuses 6 more up front and cuts a stream at the rest.
    let sized = |n: u64| format!("/__mock/stream?bytes={}", n * MIB);
    assert_eq!(
        download(&client, req(&a, Method::GET, &sized(6), &agent)).await,
        (200, 6 * MIB, true)
    );
    assert_eq!(
        status_and_reason(&client, req(&b, Method::GET, &sized(6), &agent))
            .await
            .1,
        "egress_cap_exceeded"
    );
    let (status, got, complete) = download(
        &client,
        req(
            &b,
            Method::GET,
            &format!("/__mock/stream?bytes={}&chunked=1", 6 * MIB),
            &agent,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !complete && (3 * MIB..=4 * MIB + 64 * 1024).contains(&got),
        "got {got}"
    );
    // A still holds what it leased beyond its download (a slice: a 32nd of the cap): it streams
    // that and no more, and then refuses up front as well. Never more than the cap in all.
    let (status, held, complete) = download(
        &client,
        req(
            &a,
            Method::GET,
            "/__mock/stream?bytes=1048576&chunked=1",
            &agent,
        ),
    )
    .await;
    assert!(
        status == 200 && !complete && held <= 10 * MIB / 32,
        "{status} {held}"
    );
    assert!(6 * MIB + got + held <= 10 * MIB, "{got} + {held}");
    let (status, reason, _) =
        status_and_reason(&client, req(&a, Method::GET, "/api/v2/tickets/1", &agent)).await;
    assert_eq!((status, reason.as_str()), (429, "egress_cap_exceeded"));
}

#[tokio::test]
async fn when_redis_dies_requests_are_refused_by_default_and_served_again_when_it_returns() {
    let mut redis = RedisServer::start();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let deny = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("", &redis_state(&redis, "deny"))),
    );
    let local = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy("", &redis_state(&redis, "local"))),
    );
    let client = client(&pki, Http::One);
    let agent = token(&pki, "steady");
    let read = |p: &Proxy| req(p, Method::GET, "/api/v2/tickets/1", &agent);
    let mut ok = false;
    for _ in 0..50 {
        if status_and_reason(&client, read(&deny)).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "never served with redis up: {}", deny.log());

    redis.stop();
    // A replica notices within a heartbeat (250 ms) that Redis is gone; until then it decides
    // from what it holds of the limits (its leases), never past them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = upstream.request_count();
    let started = Instant::now();
    let (status, reason, _) = status_and_reason(&client, read(&deny)).await;
    assert_eq!((status, reason.as_str()), (503, "state_unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusal took {:?}",
        started.elapsed()
    );
    assert_eq!(
        upstream.request_count(),
        before,
        "nothing may pass unmetered"
    );
    assert_eq!(
        status_and_reason(&client, read(&local)).await.0,
        200,
        "local fallback"
    );

    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if status_and_reason(&client, read(&deny)).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "still refusing after redis returned: {}",
        deny.log()
    );
    assert!(deny.log().contains("shared state failed"), "{}", deny.log());
    assert!(
        local.log().contains("shared state failed"),
        "{}",
        local.log()
    );
}

/// With `on_state_error = "local"`, what a replica admits from its own memory while Redis is away
/// is carried into Redis once it answers again. Redis (with its data on disk) is killed and
/// started again: afterwards the export limit counts the exports from both sides of the outage,
/// the egress cap the bytes, and the session its local touches (otherwise an agent who worked
/// through an outage longer than the idle timeout would be found idle on Redis's return).
#[tokio::test]
async fn what_local_admits_while_redis_is_away_is_carried_into_it() {
    let mut redis = RedisServer::start_durable();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&limits_policy(
            "idle_timeout = \"3s\"",
            // The lock list, in the same Redis, is kept as last known rather than refusing all.
            &format!(
                "{}\n[locks]\non_state_error = \"last_known\"",
                redis_state(&redis, "local")
            ),
        )),
    );
    proxy.ready().await;
    let client = client(&pki, Http::One);
    let agent = token(&pki, "through-the-outage");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";
    let get = |path: &str| req(&proxy, Method::GET, path, &agent);
    let three_mib = "/__mock/stream?bytes=3145728";
    assert_eq!(status_and_reason(&client, get(export)).await.0, 200);
    assert_eq!(
        download(&client, get(three_mib)).await,
        (200, 3 << 20, true)
    );

    redis.stop();
    // On its own memory the replica starts from nothing: three exports (its whole burst) and
    // 3 MiB more, and the agent keeps working for longer than the idle timeout.
    for _ in 0..3 {
        assert_eq!(status_and_reason(&client, get(export)).await.0, 200);
    }
    assert_eq!(
        download(&client, get(three_mib)).await,
        (200, 3 << 20, true)
    );
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            status_and_reason(&client, get("/api/v2/tickets/1")).await.0,
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    redis.restart();
    let mut carried = false;
    for _ in 0..50 {
        if proxy.log().contains("carried into redis") {
            carried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(carried, "{}", proxy.log());

    // The session goes on: its last touch in Redis is the outage's last request, not the one
    // before it (4 s and more ago, past the 3 s idle timeout).
    let (status, reason, _) = status_and_reason(&client, get("/api/v2/tickets/1")).await;
    assert_eq!((status, reason.as_str()), (200, ""));
    // Four exports in the minute: one past the burst of three.
    let (status, reason, _) = status_and_reason(&client, get(export)).await;
    assert_eq!((status, reason.as_str()), (429, "export_rate_limited"));
    // 6 MiB and the reads' bytes of 10 MiB spent: a 5 MiB download no longer fits (without the
    // carry Redis would count 3 MiB, and it would).
    let (status, reason, _) = status_and_reason(&client, get("/__mock/stream?bytes=5242880")).await;
    assert_eq!((status, reason.as_str()), (429, "egress_cap_exceeded"));
    assert!(proxy.log().contains("shared state failed"));
}

/// `vendorgate admin usage` reads an account's standing without spending any of it: requests left
/// in each rate limit, bytes used and left in each cap, and when each is whole again.
#[tokio::test]
async fn usage_shows_an_accounts_standing_against_every_limit() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let viewer = "vga_usage-viewer-token";
    let admin = admin_token("soc", "viewer", viewer);
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream)
            .policy(&limits_policy("", ""))
            .admin(&admin),
    );
    let client = client(&pki, Http::One);
    let agent = token(&pki, "agent-u");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";
    assert_eq!(
        status_and_reason(&client, req(&proxy, Method::GET, export, &agent))
            .await
            .0,
        200
    );
    let (_, got, done) = download(
        &client,
        req(&proxy, Method::GET, "/__mock/stream?bytes=1048576", &agent),
    )
    .await;
    assert!(done && got == 1 << 20);

    let usage = |account: &'static str| {
        let args = ["usage", "--vendor", "acme", "--account", account, "--json"];
        let proxy = &proxy;
        async move { admin_cli(proxy, viewer, &args).await }
    };
    for _ in 0..2 {
        // Asking twice changes nothing: reading spends nothing.
        let out = usage("agent-u").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let limits = v["limits"].as_array().unwrap();
        let rate = limits.iter().find(|l| l["kind"] == "rate").unwrap();
        assert_eq!(
            (
                rate["id"].as_str(),
                rate["burst"].as_u64(),
                rate["remaining"].as_u64()
            ),
            (Some("export-per-agent"), Some(3), Some(2))
        );
        assert!(
            (1..=20).contains(&rate["full_in_secs"].as_u64().unwrap()),
            "{rate}"
        );
        let egress = limits
            .iter()
            .find(|l| l["kind"] == "bytes" && l["direction"] == "egress")
            .unwrap();
        let used = egress["used"].as_u64().unwrap();
        assert!(used >= 1 << 20, "{egress}");
        assert_eq!(used + egress["remaining"].as_u64().unwrap(), 10 << 20);
        assert!(egress["resets_in_secs"].as_u64().unwrap() <= 3600);
    }
    // An account that has done nothing stands at every limit's full.
    let out = usage("agent-idle").await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rate = v["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "rate")
        .unwrap()
        .clone();
    assert_eq!(rate["remaining"], 3);
}
