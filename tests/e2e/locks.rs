//! The kill switch, end to end: `vendorgate admin lock` against the running proxy cuts the target's
//! download in flight within a second (HTTP/1.1 and HTTP/2), its next request is refused with
//! `locked`, the lock survives a restart, expires on its own when it has a TTL, and the admin API
//! refuses a missing or wrong token and a viewer's lock. Every act is in the trail.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use vendorgate_certs::Alpn;

use crate::support::*;

const OPERATOR: &str = "vga_operator-token-for-the-e2e-tests";
const VIEWER: &str = "vga_viewer-token-for-the-e2e-tests";

fn tokens() -> String {
    admin_token("soc", "operator", OPERATOR) + &admin_token("auditor", "viewer", VIEWER)
}

async fn admin(proxy: &Proxy, token: &str, args: &[&str]) -> std::process::Output {
    admin_cli(proxy, token, args).await
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lock_file(dir: &Path) -> PathBuf {
    dir.join("controls.json")
}

#[tokio::test]
async fn a_lock_cuts_downloads_in_flight_refuses_what_follows_and_survives_a_restart() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).admin(&tokens()));
    let gib = "/__mock/stream?bytes=1073741824&chunked=1";

    // A 1 GiB download on each protocol, under way.
    let mut bodies = Vec::new();
    for version in [Http::One, Http::Two] {
        let client = client(&pki, version);
        let resp = client.request(proxy.get(gib)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = 0u64;
        while got < 1 << 20 {
            got += body
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .map_or(0, |d| d.len() as u64);
        }
        bodies.push((version, body, got));
    }

    // The lock, as an operator makes it.
    let out = admin(
        &proxy,
        OPERATOR,
        &[
            "lock",
            "--account",
            "agent-1",
            "--message",
            "laptop stolen, INC-4711",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stdout(&out));
    let locked_at = Instant::now();
    assert!(stdout(&out).contains("streams cut: 2"), "{}", stdout(&out));

    // Each download ends short, well within a second of the lock.
    for (version, mut body, mut got) in bodies {
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
                Err(_) => panic!("{version:?}: the stream was not cut"),
                Ok(Some(Ok(frame))) => got += frame.into_data().map_or(0, |d| d.len() as u64),
                Ok(Some(Err(_))) | Ok(None) => break locked_at.elapsed(),
            }
        };
        assert!(
            ended < Duration::from_secs(1),
            "{version:?}: cut after {ended:?}"
        );
        assert!(got < 1 << 30, "{version:?}: the whole GiB went out");
    }

    // The next request: refused, saying why, before the upstream.
    let client = client(&pki, Http::One);
    let (parts, body) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 403);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "locked");
    // Another account of the same vendor is not locked.
    let other = pki.token_with(vendorgate_mock::idp::KeyKind::Es256, "acme", "agent-2");
    let (parts, _) = send(&client, bearer_get(&proxy.url("/api/v2/tickets/1"), &other)).await;
    assert_eq!(parts.status, 200);

    // The lock is in the locks list and on disk, and survives a crash and restart.
    let out = admin(&proxy, VIEWER, &["locks", "--json"]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = listed["locks"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed["locks"][0]["created_by"], "soc");
    assert!(std::fs::read_to_string(lock_file(proxy.dir.path()))
        .unwrap()
        .contains(&id));
    let proxy = proxy.restart(&pki);
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 403, "the lock did not survive the restart");

    // Unlocked: allowed again.
    let out = admin(&proxy, OPERATOR, &["unlock", &id]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 200);

    // The trail tells it: the lock and who made it, the two streams cut by it, the refusal, the
    // unlock.
    let mut proxy = proxy;
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let action = |r: &serde_json::Value| at(r, "event.action");
    let lock = recs
        .iter()
        .find(|r| action(r) == "lock")
        .expect("no lock record");
    assert_eq!(at(lock, "user.name"), "soc");
    assert_eq!(at(lock, "vendorgate.admin.lock.id"), id.as_str());
    let cut: Vec<_> = recs
        .iter()
        .filter(|r| at(r, "vendorgate.cut_off") == true && at(r, "vendorgate.reason") == "locked")
        .collect();
    assert_eq!(cut.len(), 2, "{recs:#?}");
    for r in cut {
        assert!(at(r, "vendorgate.rule").as_str().unwrap().contains(&id));
    }
    assert!(recs.iter().any(
        |r| at(r, "vendorgate.reason") == "locked" && at(r, "http.response.status_code") == 403
    ));
    assert!(recs.iter().any(|r| action(r) == "unlock"));
    assert!(
        audit_intact(proxy.dir.path()).contains("intact"),
        "chain broken"
    );
}

#[tokio::test]
async fn a_lock_with_a_ttl_expires_and_the_api_refuses_who_may_not_act() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).admin(&tokens()));
    let client = client(&pki, Http::One);

    // No token, a wrong one, a viewer's: refused, with their codes, and recorded.
    let no_token = admin_response(proxy.admin, "/v1/locks").await;
    assert!(
        no_token.starts_with("HTTP/1.1 401") && no_token.contains("admin_token_missing"),
        "{no_token}"
    );
    let out = admin(&proxy, "vga_wrong", &["locks"]).await;
    assert!(
        !out.status.success() && stdout(&out).contains("401 admin_token_invalid"),
        "{}",
        stdout(&out)
    );
    let out = admin(
        &proxy,
        VIEWER,
        &["lock", "--vendor", "acme", "--message", "x"],
    )
    .await;
    assert!(
        !out.status.success() && stdout(&out).contains("403 admin_role_insufficient"),
        "{}",
        stdout(&out)
    );
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 200, "a refused lock took effect");

    // A network lock for two seconds: in force, then gone by itself.
    let out = admin(
        &proxy,
        OPERATOR,
        &[
            "lock",
            "--network",
            "127.0.0.0/8",
            "--message",
            "scan from the vendor's NAT",
            "--ttl",
            "2s",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stdout(&out));
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 403);
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
        if parts.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it leaves the list (its expiry recorded first).
    loop {
        let out = admin(&proxy, VIEWER, &["locks", "--json"]).await;
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if listed["locks"].as_array().is_some_and(|l| l.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the lock stayed listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let actions: Vec<String> = recs
        .iter()
        .filter(|r| at(r, "event.category") == serde_json::json!(["iam"]))
        .map(|r| at(r, "event.action").as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions,
        ["admin_refused", "lock", "lock_expired"],
        "{recs:#?}"
    );
    let refused = recs
        .iter()
        .find(|r| at(r, "event.action") == "admin_refused")
        .unwrap();
    assert_eq!(at(refused, "user.name"), "auditor");
    assert_eq!(
        at(refused, "vendorgate.admin.error"),
        "admin_role_insufficient"
    );
}

/// Two replicas on one redis-server: a lock made through one cuts a download on the other within
/// a second, and an unlock through the other lets the account back in on both.
#[tokio::test]
async fn a_lock_made_on_one_replica_cuts_a_stream_on_another() {
    let redis = RedisServer::start();
    lock_across_replicas(&format!("redis_url = \"{}\"", redis.url())).await;
}

/// The same on a Redis Cluster: the locks, the grants and their version share one hash tag, so
/// the script that changes them runs in one slot; the change reaches the other replica through
/// the channel (published to the whole cluster) or its check of the version.
#[tokio::test]
async fn a_lock_made_on_one_replica_cuts_a_stream_on_another_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    lock_across_replicas(&format!("redis_cluster = {}", cluster.urls())).await;
}

async fn lock_across_replicas(shared: &str) {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let policy = format!("{OPEN_POLICY}\n[state]\nbackend = \"redis\"\n{shared}\n");
    let config = || ProxyConfig::to(&upstream).policy(&policy).admin(&tokens());
    let (a, b) = (Proxy::start(&pki, config()), Proxy::start(&pki, config()));
    let client = client(&pki, Http::Two);
    // Strict: each refuses until Redis has confirmed the (empty) list.
    until(&client, &a, 200).await;
    until(&client, &b, 200).await;

    let resp = client
        .request(b.get("/__mock/stream?bytes=1073741824&chunked=1"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();

    let out = admin(
        &a,
        OPERATOR,
        &["lock", "--vendor", "acme", "--message", "vendor breach"],
    )
    .await;
    assert!(out.status.success(), "{}", stdout(&out));
    let locked_at = Instant::now();
    let mut got = 0u64;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Err(_) => panic!("the stream on the other replica was not cut"),
            Ok(Some(Ok(frame))) => got += frame.into_data().map_or(0, |d| d.len() as u64),
            Ok(Some(Err(_))) | Ok(None) => break locked_at.elapsed(),
        }
    };
    assert!(ended < Duration::from_secs(1), "cut after {ended:?}");
    assert!(got < 1 << 30);
    let (parts, _) = send(&client, b.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 403);

    // Listed on the other replica, and removed through it.
    let out = admin(&b, VIEWER, &["locks", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = listed["locks"][0]["id"]
        .as_str()
        .expect("b does not list the lock")
        .to_string();
    let out = admin(&b, OPERATOR, &["unlock", &id]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let unlocked_at = Instant::now();
    let allowed_at = until(&client, &a, 200).await;
    assert!(allowed_at - unlocked_at < Duration::from_secs(1));
}

/// Asks until `proxy` answers `want`; when it did.
async fn until(client: &TestClient, proxy: &Proxy, want: u16) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (parts, _) = send(client, proxy.get("/api/v2/tickets/1")).await;
        if parts.status == want {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "never {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis down: `strict` refuses everyone (the lock list cannot be confirmed), `last_known` keeps
/// deciding with the locks it last saw, the lock still holding.
#[tokio::test]
async fn while_redis_is_down_strict_refuses_everyone_and_last_known_keeps_the_locks() {
    let mut redis = RedisServer::start();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    // Sessions and limits fall back to memory, so what refuses is the locks' rule alone.
    let config = |mode: &str| {
        let policy = format!(
            "{OPEN_POLICY}\n[state]\nbackend = \"redis\"\nredis_url = \"{}\"\non_state_error = \"local\"\n\n[locks]\non_state_error = \"{mode}\"\n",
            redis.url()
        );
        ProxyConfig::to(&upstream).policy(&policy).admin(&tokens())
    };
    let strict = Proxy::start(&pki, config("strict"));
    let last_known = Proxy::start(&pki, config("last_known"));
    let client = client(&pki, Http::One);
    until(&client, &strict, 200).await;
    until(&client, &last_known, 200).await;
    let agent2 = pki.token_with(vendorgate_mock::idp::KeyKind::Es256, "acme", "agent-2");
    let out = admin(
        &strict,
        OPERATOR,
        &["lock", "--account", "agent-2", "--message", "m"],
    )
    .await;
    assert!(out.status.success(), "{}", stdout(&out));
    let agent2_status = |proxy: &Proxy| bearer_get(&proxy.url("/api/v2/tickets/1"), &agent2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A request in flight when the lock lands is cut (the lock's purpose): not an answer.
        match client.request(agent2_status(&last_known)).await {
            Ok(resp) if resp.status() == 403 => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the lock never reached the other replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    redis.stop();
    let (parts, body) = {
        until(&client, &strict, 503).await;
        send_json(&client, strict.get("/api/v2/tickets/1")).await
    };
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (503, Some("state_unavailable"))
    );
    assert!(
        strict.log().contains("cannot be confirmed"),
        "{}",
        strict.log()
    );
    // last_known: still deciding, the lock still holding.
    tokio::time::sleep(STALE).await;
    assert_eq!(
        send(&client, last_known.get("/api/v2/tickets/1"))
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        send(&client, agent2_status(&last_known)).await.0.status,
        403
    );
}

/// Longer than the proxy's staleness bound (3 s): by then strict has given up on the list.
const STALE: Duration = Duration::from_secs(4);

/// An operator lists the live sessions, then revokes one: its download is cut, its next request
/// is 401 `session_revoked`, and the same account signing in again (a new session) gets through.
#[tokio::test]
async fn sessions_are_listed_and_a_revoked_one_must_sign_in_again() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).admin(&tokens()));
    let client = client(&pki, Http::Two);
    for _ in 0..3 {
        assert_eq!(
            send(&client, proxy.get("/api/v2/tickets/1")).await.0.status,
            200
        );
    }
    let resp = client
        .request(proxy.get("/__mock/stream?bytes=1073741824&chunked=1"))
        .await
        .unwrap();
    let mut download = resp.into_body();
    download.frame().await.unwrap().unwrap();

    let out = admin(
        &proxy,
        VIEWER,
        &["sessions", "--account", "agent-1", "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", stdout(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{listed}");
    let s = &sessions[0];
    assert_eq!(
        (s["vendor"].as_str(), s["account"].as_str()),
        (Some("acme"), Some("agent-1"))
    );
    assert_eq!(s["requests"], 4);
    assert_eq!(s["addresses"], serde_json::json!(["127.0.0.1"]));
    assert!(s["bytes_out"].as_u64().unwrap() > 0);
    let sid = s["session"].as_str().unwrap().to_string();
    assert!(sid.starts_with("sid-agent-1-"), "{sid}");

    let out = admin(
        &proxy,
        OPERATOR,
        &["revoke", &sid, "--message", "INC-9 phished"],
    )
    .await;
    assert!(
        out.status.success() && stdout(&out).contains("streams cut: 1"),
        "{}",
        stdout(&out)
    );
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = download.frame().await {}
    })
    .await;
    assert!(ended.is_ok(), "the revoked session's download went on");

    let resp = client
        .request(proxy.get("/api/v2/tickets/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("session_revoked"));

    // Signed in again: a new session, let through.
    let mut claims = pki.idp.agent_claims(
        AUDIENCE,
        "agent-1",
        "acme",
        vendorgate_mock::idp::now(),
        3600,
    );
    claims["sid"] = serde_json::json!("sid-fresh-sign-in");
    let fresh = pki.idp.mint(vendorgate_mock::idp::KeyKind::Es256, &claims);
    let (parts, _) = send(&client, bearer_get(&proxy.url("/api/v2/tickets/1"), &fresh)).await;
    assert_eq!(parts.status, 200);
}
