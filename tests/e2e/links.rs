//! Transparent to real clients: the upstream's absolute links come back on the proxy's origin
//! (in JSON bodies as they stream, and in `Location`), and nothing lets an agent act as someone
//! else or keep a SaaS session.

use std::process::Command;

use http::{HeaderValue, Method};
use vendorgate_certs::Alpn;

use crate::support::*;

#[tokio::test]
async fn curl_gets_a_link_split_across_the_upstreams_chunks_rewritten() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("public_url = \"https://zendesk-gw.acme.example\""),
    );
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail-with-body", "-D", "-", "--cacert"])
        .arg(&pki.files.ca_cert)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", proxy.token))
        .arg(proxy.url("/__mock/split"));
    // Off the test's runtime: the mock upstream answers on it.
    let out = tokio::task::spawn_blocking(move || curl.output().expect("curl must be installed"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        body,
        "{\"next_page\":\"https://zendesk-gw.acme.example/api/v2/tickets.json?page=2\",\"count\":1}"
    );
    // The upstream declared its length; the rewritten body has another, so none is claimed.
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
}

#[tokio::test]
async fn pages_and_locations_point_back_at_the_proxy_over_both_protocols() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let up = format!("127.0.0.1:{}", upstream.addr().port());
    let ours = format!("https://127.0.0.1:{}", proxy.addr.port());
    for version in [Http::One, Http::Two] {
        let client = client(&pki, version);
        // Offset pagination, followed to its end the way zenpy does: verbatim.
        let mut next = Some(format!("{ours}/api/v2/tickets.json?page=1&per_page=100"));
        let mut pages = 0;
        while let Some(url) = next.take() {
            let (parts, page) = send_json(&client, bearer_get(&url, &proxy.token)).await;
            assert_eq!(parts.status, 200, "{url}");
            assert!(
                !page.to_string().contains(&up),
                "the upstream's host leaked: {page}"
            );
            assert!(page["tickets"][0]["url"]
                .as_str()
                .unwrap()
                .starts_with(&ours));
            next = page["next_page"].as_str().map(str::to_owned);
            if let Some(n) = &next {
                assert!(n.starts_with(&ours), "{n}");
            }
            pages += 1;
        }
        assert_eq!(pages, 12, "1,186 tickets, 100 a page");
        // Cursor pagination and the incremental export: links.next and after_url.
        let (_, cursor) = send_json(
            &client,
            proxy.get("/api/v2/tickets.json?page%5Bsize%5D=100"),
        )
        .await;
        assert!(cursor["links"]["next"].as_str().unwrap().starts_with(&ours));
        let (_, export) = send_json(
            &client,
            proxy.get("/api/v2/incremental/tickets/cursor.json?start_time=0"),
        )
        .await;
        assert!(export["after_url"].as_str().unwrap().starts_with(&ours));

        // A 201's Location.
        let create = proxy.request(
            Method::POST,
            "/api/v2/tickets.json",
            full(r#"{"ticket":{"subject":"hi","comment":{"body":"x"}}}"#),
        );
        let (created, _) = send(&client, create).await;
        assert_eq!(created.status, 201);
        let location = created.headers["location"].to_str().unwrap();
        assert!(
            location.starts_with(&format!("{ours}/api/v2/tickets/")),
            "{location}"
        );
    }
}

#[tokio::test]
async fn a_configured_public_url_is_what_links_point_at() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("public_url = \"https://zendesk-gw.acme.example\""),
    );
    let client = client(&pki, Http::One);
    let (_, page) = send_json(&client, proxy.get("/api/v2/users.json?per_page=10")).await;
    assert_eq!(
        page["next_page"],
        "https://zendesk-gw.acme.example/api/v2/users.json?page=2&per_page=10"
    );
}

#[tokio::test]
async fn no_impersonation_and_no_saas_session_in_either_direction() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream)
            .upstream("strip_request_headers = [\"X-Debug-Impersonate\"]")
            .upstream("strip_response_headers = [\"X-Zendesk-Origin-Server\"]"),
    );
    let client = client(&pki, Http::One);
    let mut req = proxy.get("/__mock/echo");
    let h = req.headers_mut();
    h.insert(
        "x-on-behalf-of",
        HeaderValue::from_static("admin@acme.example"),
    );
    h.insert(
        "cookie",
        HeaderValue::from_static("_zendesk_shared_session=stolen"),
    );
    h.insert("x-debug-impersonate", HeaderValue::from_static("1"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    let (_, echo) = send_json(&client, req).await;
    let seen = echo["headers"].to_string().to_ascii_lowercase();
    for name in [
        "x-on-behalf-of",
        "cookie",
        "x-debug-impersonate",
        "accept-encoding",
    ] {
        assert!(
            !seen.contains(&format!("\"{name}\"")),
            "{name} reached the upstream: {seen}"
        );
    }
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1.json")).await;
    assert_eq!(parts.status, 200);
    assert!(
        !parts.headers.contains_key("set-cookie"),
        "{:?}",
        parts.headers
    );
}
