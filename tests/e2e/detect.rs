//! Detect, end to end: access windows refuse outside a vendor's hours through the real proxy, with
//! the reason on the wire, in the trail and in `vendorgate explain`; and the ManoMano thief, a bulk
//! export at full speed on an account with six weeks of (simulated) history, is locked by the
//! baselines mid-pull, recorded, counted and posted to the webhook.

use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use vendorgate_certs::Alpn;
use vendorgate_mock::idp::KeyKind;

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
        r#"{IDENTITY}
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

/// `vendorgate ARGS…`, which must succeed; its stdout.
fn vendorgate_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// lisbon-bpo's agents read; export (a 2.5 MiB page per request here) is theirs too. The webhook
/// is the mock's echo (it records what it gets).
fn detect_policy(pki: &Pki, upstream: &vendorgate_mock::MockUpstream) -> String {
    format!(
        r#"{IDENTITY}
[[vendors]]
id = "lisbon-bpo"
ip_allow = ["127.0.0.0/8", "::1/128"]
classes = ["read", "export"]

[[routes]]
id = "bulk"
methods = ["GET"]
path = "/__mock/stream"
class = "export"

[[routes]]
id = "everything"
path = "/**"
class = "read"

[detect]
webhook = {{ url = "https://127.0.0.1:{}/__mock/echo", ca_bundle = {:?} }}
"#,
        upstream.addr().port(),
        pki.files.ca_cert
    )
}

#[tokio::test]
async fn the_bulk_thief_is_locked_mid_pull_on_an_account_with_six_weeks_of_history() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let config = ProxyConfig::to(&upstream).policy(&detect_policy(&pki, &upstream));
    // Six weeks of the simulated world's history beside the trail, then the proxy (re)started
    // on it, as after a restart in production.
    let proxy = Proxy::start(&pki, config);
    let baselines = proxy.dir.path().join("baselines.json");
    vendorgate_ok(&[
        "simulate".as_ref(),
        "--baselines".as_ref(),
        baselines.as_os_str(),
    ]);
    let mut proxy = proxy.restart(&pki);

    // A Lisbon agent who reads tickets and never exports: its token, stolen.
    let stolen = pki.token_with(KeyKind::Es256, "lisbon-bpo", "lisbon-bpo-agent-3");
    let client = client(&pki, Http::One);
    let page = 2_621_440u64;
    let (mut taken, mut pages, mut refused) = (0u64, 0u64, None);
    for _ in 0..40 {
        let url = proxy.url(&format!("/__mock/stream?bytes={page}"));
        // A connection the lock cut short may be the one the client picks next: try again.
        let Ok(resp) = client.request(bearer_get(&url, &stolen)).await else {
            continue;
        };
        let status = resp.status();
        let body = resp.into_body().collect().await;
        if status != 200 {
            let body = body.map(|b| b.to_bytes()).unwrap_or_default();
            refused = Some((status, String::from_utf8_lossy(&body).to_string()));
            break;
        }
        // A page cut short by the lock counts for what arrived.
        taken += body.map(|b| b.to_bytes().len() as u64).unwrap_or(page / 2);
        pages += 1;
    }
    let (status, body) = refused.expect("the thief was never stopped");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"locked\""), "{body}");
    // Locked at the eighth export of the hour (the dispatcher may let one or two more through).
    assert!(pages <= 12, "{pages} pages before the lock");
    assert!(taken < 50 << 20, "{taken} bytes taken");

    // Counted, and posted to the webhook (retried until it lands).
    let metrics = admin_text(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("vendorgate_anomalies_total{detector=\"volume\",action=\"lock\"} 1"),
        "{metrics}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !upstream
        .recent()
        .iter()
        .any(|r| r.method == "POST" && r.path_and_query == "/__mock/echo")
    {
        assert!(std::time::Instant::now() < deadline, "no webhook delivery");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let anomaly = recs
        .iter()
        .find(|r| at(r, "event.kind") == "alert" && at(r, "vendorgate.anomaly.action") == "lock")
        .expect("no anomaly record");
    assert_eq!(at(anomaly, "vendorgate.anomaly.detector"), "volume.exports");
    assert_eq!(at(anomaly, "user.id"), "lisbon-bpo-agent-3");
    let lock_id = at(anomaly, "vendorgate.anomaly.lock");
    let lock = recs
        .iter()
        .find(|r| at(r, "event.action") == "lock")
        .expect("no lock record");
    assert_eq!(at(lock, "vendorgate.admin.lock.id"), lock_id);
    assert_eq!(at(lock, "user.name"), "detector:volume.exports");
    assert!(audit_intact(proxy.dir.path()).contains("intact"));
    // The reviewers' summary and report list the anomaly and the lock beside the requests.
    let trail = proxy.dir.path().join("decisions.jsonl");
    let summary = vendorgate_ok(&["audit".as_ref(), "summary".as_ref(), trail.as_os_str()]);
    assert!(
        summary.contains("anomalies, locks and grants")
            && summary.contains("volume.exports lock")
            && summary.contains("account lisbon-bpo-agent-3"),
        "{summary}"
    );
    let html = proxy.dir.path().join("report.html");
    vendorgate_ok(&[
        "audit".as_ref(),
        "report".as_ref(),
        trail.as_os_str(),
        "--html".as_ref(),
        html.as_os_str(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<tr class=\"alert\">") && page.contains("<tr class=\"lock\">"));
    // The histories were saved again at shutdown, the thief's hour in them.
    let saved = std::fs::read_to_string(&baselines).unwrap();
    assert!(saved.contains("lisbon-bpo-agent-3"));
}

/// Two replicas sharing Redis: the simulated history, imported by one, serves both; the thief's
/// pages alternate between them, and the lock comes at the eighth export of the two together (each
/// alone would wait for its own eighth, the sixteenth in all).
#[tokio::test]
async fn a_thief_spread_over_two_replicas_is_judged_on_the_whole() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let policy = format!(
        "{}\n[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        detect_policy(&pki, &upstream),
        redis.url()
    );
    let config = || ProxyConfig::to(&upstream).policy(&policy);
    let a = Proxy::start(&pki, config());
    let baselines = a.dir.path().join("baselines.json");
    vendorgate_ok(&[
        "simulate".as_ref(),
        "--baselines".as_ref(),
        baselines.as_os_str(),
    ]);
    let a = a.restart(&pki);
    let b = Proxy::start(&pki, config());
    // A second for the import and the locks' first confirmation.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let stolen = pki.token_with(KeyKind::Es256, "lisbon-bpo", "lisbon-bpo-agent-3");
    let client = client(&pki, Http::One);
    let mut pages = 0u64;
    let mut refused = None;
    for i in 0..30 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        let url = proxy.url("/__mock/stream?bytes=1048576");
        let Ok(resp) = client.request(bearer_get(&url, &stolen)).await else {
            continue;
        };
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status == 403 {
            refused = Some(i);
            break;
        }
        assert_eq!(status, 200);
        pages += 1;
        // Slower than the replicas share their counts (each second).
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    assert!(refused.is_some(), "never locked");
    assert!(pages <= 12, "{pages} pages before the lock");
    // Both replicas' hours are in Redis, under the account.
    let out = std::process::Command::new("redis-cli")
        .args([
            "-u",
            &redis.url(),
            "HLEN",
            "vendorgate:usage:lisbon-bpo:lisbon-bpo-agent-3",
        ])
        .output()
        .unwrap();
    let fields: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(fields > 100, "{fields} fields");
}
