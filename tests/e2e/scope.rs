//! Record scoping through the proxy (`[[vendors.scope]]`, `routes.parent`): a vendor scoped to two
//! groups fetches a ticket outside them and is refused though the upstream returned it; asks for
//! that ticket's comments or updates it and the request never reaches the upstream (the parent is
//! judged first, from a side request, then from the cache); inside the scope everything works.
//! The lists are covered by the real clients' walks (`clients.rs`).

use http::Method;

use crate::support::*;

const POLICY: &str = r#"
[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8", "::1/128"]
classes = ["read", "write"]

[[vendors.scope]]
group_id = [360004, 360005]

[[routes]]
id = "ticket-comments"
methods = ["GET"]
path = "/api/v2/tickets/{id}/comments"
class = "read"
parent = "tickets"

[[routes]]
id = "ticket-update"
methods = ["PUT"]
path = "/api/v2/tickets/{id}"
class = "write"
parent = "tickets"

[[routes]]
id = "everything"
methods = ["GET"]
path = "/**"
class = "read"
"#;

#[tokio::test]
async fn a_ticket_outside_the_scope_its_comments_and_its_update_are_refused() {
    let pki = Pki::new();
    let upstream = mock(&pki, vendorgate_certs::Alpn::H2AndHttp11).await;
    let policy = format!("{IDENTITY}{POLICY}");
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&policy));
    let client = client(&pki, Http::One);
    let outside = (1..).find(|&id| !in_scope(id)).unwrap();
    let inside = (1..).find(|&id| in_scope(id)).unwrap();

    // The ticket itself: the upstream returns it, the agent gets nothing of it.
    let (parts, body) = send(
        &client,
        proxy.get(&format!("/api/v2/tickets/{outside}.json")),
    )
    .await;
    assert_eq!(parts.status, 403);
    let text = String::from_utf8_lossy(&body).into_owned();
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"], "out_of_scope", "{text}");
    assert!(
        !text.contains("subject") && !text.contains("group_id"),
        "{text}"
    );
    let (parts, ticket) = send_json(
        &client,
        proxy.get(&format!("/api/v2/tickets/{inside}.json")),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(ticket["ticket"]["id"], inside);

    // A page of an incremental export keeps only the scope's tickets, and its `count` (Zendesk's
    // per-page count) says how many it holds; the search's total drops by what its page withheld.
    let (parts, page) = send_json(
        &client,
        proxy.get("/api/v2/incremental/tickets.json?start_time=1700000000"),
    )
    .await;
    assert_eq!(parts.status, 200);
    let tickets = page["tickets"].as_array().unwrap();
    assert!(!tickets.is_empty());
    assert!(tickets
        .iter()
        .all(|t| IN_SCOPE.contains(&t["group_id"].as_u64().unwrap())));
    assert_eq!(page["count"], tickets.len());
    let (_, search) = send_json(&client, proxy.get("/api/v2/search.json?query=x")).await;
    let kept = search["results"].as_array().unwrap().len();
    let withheld = (1..=100).filter(|&id| !in_scope(id)).count();
    assert_eq!(
        (kept, search["count"].as_u64()),
        (100 - withheld, Some(250 - withheld as u64))
    );

    // Its comments and its update: judged by the parent before anything is forwarded.
    let comments = |id: u64| proxy.get(&format!("/api/v2/tickets/{id}/comments.json"));
    let (parts, error) = send_json(&client, comments(outside)).await;
    assert_eq!(
        (parts.status.as_u16(), &error["error"]),
        (403, &"out_of_scope".into())
    );
    let update = proxy.request(
        Method::PUT,
        &format!("/api/v2/tickets/{outside}.json"),
        full(r#"{"ticket":{"status":"solved"}}"#),
    );
    let (parts, error) = send_json(&client, update).await;
    assert_eq!(
        (parts.status.as_u16(), &error["error"]),
        (403, &"out_of_scope".into())
    );
    for _ in 0..2 {
        let (parts, page) = send_json(&client, comments(inside)).await;
        assert_eq!(parts.status, 200);
        assert!(!page["comments"].as_array().unwrap().is_empty());
    }
    // The parents were read once each from the upstream (the outside one's answer served the
    // update too), then from the cache.
    assert_eq!(
        metric(
            &proxy,
            "vendorgate_scope_parent_lookups_total{source=\"upstream\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &proxy,
            "vendorgate_scope_parent_lookups_total{source=\"cache\"}"
        )
        .await,
        2.0
    );

    let seen: Vec<_> = upstream.recent().into_iter().collect();
    assert!(
        !seen.iter().any(|r| r.method == "PUT"
            || r.path_and_query
                .starts_with(&format!("/api/v2/tickets/{outside}/comments"))),
        "an out-of-scope ticket's comments or update reached the upstream"
    );
    // The side request carried the proxy's credential, never the agent's token.
    let side: Vec<_> = seen
        .iter()
        .filter(|r| r.path_and_query == format!("/api/v2/tickets/{outside}.json"))
        .collect();
    assert_eq!(side.len(), 2, "the agent's fetch and the parent's lookup");
    for r in &seen {
        assert!(r.headers.iter().all(|(_, v)| !v.contains(&proxy.token)));
    }

    // explain shows the scope on a route, and the parent a path names.
    let token_file = proxy.dir.path().join("token");
    std::fs::write(&token_file, &proxy.token).unwrap();
    let path = format!("/api/v2/tickets/{outside}/comments.json");
    let out = std::process::Command::new(BIN)
        .args(["explain", "--config"])
        .arg(proxy.config_path())
        .args(["--path", &path, "--token"])
        .arg(&token_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vendors.scope: tickets where group_id in [360004, 360005]")
            && text.contains(&format!(
                "routes.parent: tickets/{outside} judged before forwarding"
            )),
        "{text}"
    );

    stop(&mut proxy).await;
    let records = records(proxy.dir.path());
    let refused: Vec<_> = records
        .iter()
        .filter(|r| at(r, "vendorgate.reason") == "out_of_scope")
        .collect();
    assert_eq!(refused.len(), 3);
    // The ticket: forwarded, returned, withheld.
    let single = refused
        .iter()
        .find(|r| at(r, "http.request.method") == "GET" && at(r, "vendorgate.scope.withheld") == 1)
        .unwrap();
    assert_eq!(at(single, "vendorgate.upstream_status"), 200, "{single}");
    assert!(at(single, "vendorgate.rule")
        .as_str()
        .unwrap()
        .contains("group_id"));
    // The comments and the update: the parent judged, nothing forwarded.
    for r in refused
        .iter()
        .filter(|r| at(r, "vendorgate.scope.parent") != serde_json::Value::Null)
    {
        assert_eq!(
            at(r, "vendorgate.scope.parent"),
            format!("tickets/{outside}"),
            "{r}"
        );
        assert_eq!(at(r, "vendorgate.scope.inside"), false);
        assert!(at(r, "vendorgate.upstream_status").is_null(), "{r}");
    }
    let lookups: Vec<_> = records
        .iter()
        .filter_map(|r| {
            at(r, "vendorgate.scope.lookup")
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(lookups, ["upstream", "cache", "upstream", "cache"]);
    audit_intact(proxy.dir.path());
}
