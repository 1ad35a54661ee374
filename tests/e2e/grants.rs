//! Just-in-time grants, end to end through `vendorgate admin` and the real proxy: a requester asks
//! (a ticket that does not match is refused), the requester cannot approve and an operator cannot
//! approve their own, another operator approves, the account can then export and each such
//! decision names the grant; revoking cuts its download in flight; a pending grant lapses and an
//! approved one expires on their own. Every change is in the trail. With Redis, a grant asked for
//! on one replica is approved on another and used on both.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::Value;
use vendorgate_certs::Alpn;

use crate::support::*;

const LEAD: &str = "vga_requester-token-of-the-vendor-lead";
const SOC: &str = "vga_operator-token-of-the-first-analyst";
const SOC2: &str = "vga_operator-token-of-the-second-analyst";

fn tokens() -> String {
    admin_token("lead", "requester", LEAD)
        + &admin_token("soc", "operator", SOC)
        + &admin_token("soc2", "operator", SOC2)
}

/// acme reads; export (the incremental API, and a big stream to cut) is for grants only.
fn policy(extra: &str) -> String {
    format!(
        r#"{IDENTITY}
[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8", "::1/128"]
classes = ["read"]

[[routes]]
id = "incremental"
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
id = "bulk"
methods = ["GET"]
path = "/__mock/stream"
class = "export"

[[routes]]
id = "everything"
path = "/**"
class = "read"

[grants]
max_duration = "4h"
pending_ttl = "2s"
ticket_pattern = "INC-[0-9]+"
{extra}
"#
    )
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `vendorgate admin --json …`, which must succeed; its JSON.
async fn admin_ok(proxy: &Proxy, token: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = admin_cli(proxy, token, &all).await;
    assert!(out.status.success(), "{args:?}: {}", output(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `vendorgate admin …`, which must fail; what it said.
async fn admin_refused(proxy: &Proxy, token: &str, args: &[&str]) -> String {
    let out = admin_cli(proxy, token, args).await;
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        output(&out)
    );
    output(&out)
}

/// `grant` for an export by agent-1 of acme.
fn grant_args<'a>(duration: &'a str, reason: &'a str, ticket: &'a str) -> Vec<&'a str> {
    vec![
        "grant",
        "--vendor",
        "acme",
        "--account",
        "agent-1",
        "--class",
        "export",
        "--duration",
        duration,
        "--reason",
        reason,
        "--ticket",
        ticket,
    ]
}

/// Asks for an export grant for agent-1 as the lead; its id.
async fn ask(proxy: &Proxy, duration: &str) -> String {
    let v = admin_ok(
        proxy,
        LEAD,
        &grant_args(duration, "month-end churn report", "INC-4711"),
    )
    .await;
    assert_eq!(v["grant"]["state"], "pending", "{v}");
    v["grant"]["id"].as_str().unwrap().to_string()
}

async fn status(client: &TestClient, proxy: &Proxy, path: &str) -> u16 {
    send(client, proxy.get(path)).await.0.status.as_u16()
}

const EXPORT: &str = "/api/v2/incremental/tickets/cursor.json?start_time=0";

#[tokio::test]
async fn a_grant_is_asked_approved_by_another_used_named_revoked_and_runs_out() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let config = ProxyConfig::to(&upstream)
        .policy(&policy(""))
        .admin(&tokens());
    let mut proxy = Proxy::start(&pki, config);
    let client = client(&pki, Http::One);
    assert_eq!(status(&client, &proxy, EXPORT).await, 403);

    // What [grants] refuses, with its code.
    let bad_ticket = admin_refused(&proxy, LEAD, &grant_args("1h", "report", "JIRA-1")).await;
    assert!(bad_ticket.contains("ticket_invalid"), "{bad_ticket}");
    let too_long = admin_refused(&proxy, LEAD, &grant_args("5h", "report", "INC-1")).await;
    assert!(too_long.contains("duration_too_long"), "{too_long}");

    let id = ask(&proxy, "1h").await;
    // Pending opens nothing.
    assert_eq!(status(&client, &proxy, EXPORT).await, 403);
    // The requester may not approve; an operator may not approve their own request.
    let by_lead = admin_refused(&proxy, LEAD, &["approve", &id]).await;
    assert!(by_lead.contains("admin_role_insufficient"), "{by_lead}");
    let own = admin_ok(&proxy, SOC, &grant_args("1h", "mine", "INC-5")).await;
    let own_id = own["grant"]["id"].as_str().unwrap().to_string();
    let self_approved = admin_refused(&proxy, SOC, &["approve", &own_id]).await;
    assert!(self_approved.contains("self_approval"), "{self_approved}");
    let denied = admin_ok(&proxy, SOC2, &["deny", &own_id, "--message", "no"]).await;
    assert_eq!(denied["grant"]["id"], own_id.as_str());

    // Approved by someone else: export works, and the record names the grant.
    let approved = admin_ok(&proxy, SOC, &["approve", &id]).await;
    assert_eq!(approved["grant"]["state"], "active", "{approved}");
    assert_eq!(approved["grant"]["approved_by"], "soc");
    assert_eq!(status(&client, &proxy, EXPORT).await, 200);
    let listed = admin_ok(&proxy, SOC2, &["grants", "--account", "agent-1"]).await;
    assert_eq!(listed["grants"].as_array().unwrap().len(), 1, "{listed}");

    // A bulk download under the grant, cut when the grant is revoked.
    let resp = client
        .request(proxy.get("/__mock/stream?bytes=1073741824&chunked=1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    admin_ok(
        &proxy,
        SOC2,
        &["revoke-grant", &id, "--message", "report done early"],
    )
    .await;
    let revoked_at = Instant::now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Err(_) => panic!("the grant's stream was not cut"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => break revoked_at.elapsed(),
        }
    };
    assert!(ended < Duration::from_secs(1), "cut after {ended:?}");
    assert_eq!(status(&client, &proxy, EXPORT).await, 403);
    assert_eq!(status(&client, &proxy, "/api/v2/tickets/1").await, 200);

    // Left pending, a request lapses; approved for 2 s, a grant expires.
    let lapsing = ask(&proxy, "1h").await;
    let short = ask(&proxy, "2s").await;
    admin_ok(&proxy, SOC, &["approve", &short]).await;
    assert_eq!(status(&client, &proxy, EXPORT).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = admin_ok(&proxy, SOC, &["grants"]).await;
        if listed["grants"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never ran out: {listed}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status(&client, &proxy, EXPORT).await, 403);
    let late = admin_refused(&proxy, SOC, &["approve", &lapsing]).await;
    assert!(late.contains("grant_unknown"), "{late}");

    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let event = |action: &str, grant: &str| {
        recs.iter()
            .find(|r| {
                at(r, "event.action") == action && at(r, "vendorgate.admin.grant.id") == grant
            })
            .unwrap_or_else(|| panic!("no {action} record for {grant}: {recs:#?}"))
            .clone()
    };
    let requested = event("grant_requested", &id);
    assert_eq!(at(&requested, "user.name"), "lead");
    assert_eq!(at(&requested, "vendorgate.admin.grant.ticket"), "INC-4711");
    assert_eq!(at(&event("grant_approved", &id), "user.name"), "soc");
    let revoked = event("grant_revoked", &id);
    assert_eq!(at(&revoked, "user.name"), "soc2");
    assert_eq!(
        at(&revoked, "vendorgate.admin.message"),
        "report done early"
    );
    assert_eq!(at(&event("grant_denied", &own_id), "user.name"), "soc2");
    event("grant_lapsed", &lapsing);
    event("grant_expired", &short);
    assert!(recs.iter().any(|r| at(r, "event.action") == "admin_refused"
        && at(r, "vendorgate.admin.error") == "self_approval"));
    // The decisions the grant enabled name it; the cut download says so.
    let exports: Vec<_> = recs
        .iter()
        .filter(|r| at(r, "vendorgate.grant") == id.as_str())
        .collect();
    assert!(exports.len() >= 2, "{recs:#?}");
    assert!(exports.iter().any(|r| at(r, "vendorgate.cut_off") == true
        && at(r, "vendorgate.reason") == "class_not_permitted"));
    assert!(recs
        .iter()
        .any(|r| at(r, "vendorgate.grant") == short.as_str()));
    // Refused exports name no grant.
    assert!(recs
        .iter()
        .any(|r| at(r, "vendorgate.reason") == "class_not_permitted"
            && at(r, "vendorgate.grant").is_null()
            && at(r, "http.response.status_code") == 403));
    assert!(audit_intact(proxy.dir.path()).contains("intact"));
}

#[tokio::test]
async fn a_grant_asked_on_one_replica_is_approved_on_another_and_opens_both() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::Http11).await;
    let policy = policy(&format!(
        "[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    ));
    let config = || ProxyConfig::to(&upstream).policy(&policy).admin(&tokens());
    let (a, b) = (Proxy::start(&pki, config()), Proxy::start(&pki, config()));
    let client = client(&pki, Http::One);
    let id = ask(&a, "1h").await;
    let approved = admin_ok(&b, SOC, &["approve", &id]).await;
    assert_eq!(approved["grant"]["state"], "active", "{approved}");
    // Both replicas see it within a second or so.
    for proxy in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(&client, proxy, EXPORT).await != 200 {
            assert!(
                Instant::now() < deadline,
                "the grant never reached a replica"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Approving the same grant again on the other replica is refused: it is already active.
    let again = admin_refused(&a, SOC2, &["approve", &id]).await;
    assert!(again.contains("grant_already_active"), "{again}");
}
