//! What an agent and the upstream see of a proxied exchange.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;
use vendorgate_mock::{MockBody, MockOptions};

use crate::support::*;

fn header_list<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn http1_request_reaches_the_upstream_rewritten_and_traceable() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);

    let mut req = proxy.get("/__mock/echo?q=a%20b&page%5Bsize%5D=2");
    req.headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
    req.headers_mut()
        .insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
    let (parts, echo) = send_json(&client, req).await;

    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, Version::HTTP_11);
    let request_id = parts.headers["x-request-id"].to_str().unwrap();
    assert_eq!(request_id.len(), 32, "{request_id}");
    // The query passes through byte for byte, encoded as it came.
    assert_eq!(echo["query"], "q=a%20b&page%5Bsize%5D=2");
    assert_eq!(echo["path"], "/__mock/echo");
    // Authority rewritten to the upstream's; forwarding headers are the proxy's, not the client's.
    let up = format!("127.0.0.1:{}", upstream.addr().port());
    let host = header_list(&echo, "host");
    let authority_ok = host == [up.as_str()] || (host.is_empty() && echo["version"] == "HTTP/2.0");
    assert!(authority_ok, "host seen upstream: {host:?}");
    assert_eq!(header_list(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_list(&echo, "x-forwarded-proto"), ["https"]);
    // The name the agent typed is not passed on, nor one it made up.
    assert!(header_list(&echo, "x-forwarded-host").is_empty());
    assert_eq!(header_list(&echo, "x-request-id"), [request_id]);
    // The upstream's own request id is kept under another name rather than lost or confused.
    assert!(parts.headers["x-upstream-request-id"]
        .to_str()
        .unwrap()
        .starts_with("zd-"));
}

#[tokio::test]
async fn http2_end_to_end_and_http2_to_http1_translation() {
    let pki = Pki::new();
    let h2_upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let h1_upstream = mock(&pki, Alpn::Http11).await;
    let client = client(&pki, Http::Two);

    let proxy = Proxy::start(&pki, ProxyConfig::to(&h2_upstream));
    let (parts, echo) = send_json(&client, proxy.get("/__mock/echo")).await;
    assert_eq!(parts.version, Version::HTTP_2);
    assert_eq!(
        echo["version"], "HTTP/2.0",
        "the upstream offered h2, so the pool should use it"
    );

    let proxy = Proxy::start(&pki, ProxyConfig::to(&h1_upstream));
    let (parts, echo) = send_json(&client, proxy.get("/__mock/echo")).await;
    assert_eq!(parts.version, Version::HTTP_2);
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        header_list(&echo, "host"),
        [format!("127.0.0.1:{}", h1_upstream.addr().port())]
    );

    // Turning HTTP/2 off upstream is honoured even when the upstream offers it.
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&h2_upstream).upstream("http2 = false"),
    );
    let (_, echo) = send_json(&client, proxy.get("/__mock/echo")).await;
    assert_eq!(echo["version"], "HTTP/1.1");
}

#[tokio::test]
async fn a_well_formed_client_request_id_is_kept() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);
    let mut req = proxy.get("/__mock/echo");
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("agent-trace-42"));
    let (parts, echo) = send_json(&client, req).await;
    assert_eq!(parts.headers["x-request-id"], "agent-trace-42");
    assert_eq!(header_list(&echo, "x-request-id"), ["agent-trace-42"]);
}

#[tokio::test]
async fn zendesk_api_through_the_proxy_including_a_full_incremental_export() {
    let pki = Pki::new();
    let options = MockOptions {
        export_total: 250,
        ..MockOptions::default()
    };
    let upstream = mock_with(&pki, Alpn::H2AndHttp11, options).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::Two);

    let (parts, body) = send_json(&client, proxy.get("/api/v2/tickets/7.json")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body["ticket"]["id"], 7);
    assert_eq!(
        parts.headers[header::CONTENT_TYPE],
        "application/json; charset=utf-8"
    );

    let (parts, body) = send_json(&client, proxy.get("/api/v2/tickets/999999.json")).await;
    assert_eq!(parts.status, 404);
    assert_eq!(body["error"], "RecordNotFound");

    let update = http::Request::put(proxy.url("/api/v2/tickets/7.json"))
        .header("authorization", format!("Bearer {}", proxy.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(
            r#"{"ticket":{"status":"pending","comment":{"body":"On it","public":false}}}"#,
        ))
        .unwrap();
    let (parts, body) = send_json(&client, update).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body["ticket"]["status"], "pending");
    assert_eq!(body["audit"]["events"][0]["body"], "On it");

    // Walk the export by cursor, through the proxy, to its end.
    let mut url = proxy.url("/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=100");
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let (parts, page) = send_json(&client, bearer_get(&url, &proxy.token)).await;
        assert_eq!(parts.status, 200);
        seen += page["tickets"].as_array().unwrap().len();
        pages += 1;
        if page["end_of_stream"] == true {
            break;
        }
        let cursor = page["after_cursor"].as_str().unwrap();
        url = proxy.url(&format!(
            "/api/v2/incremental/tickets/cursor.json?cursor={cursor}&per_page=100"
        ));
    }
    assert_eq!((seen, pages), (250, 3));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let pki = Pki::new();
    // An HTTP/1.1 upstream: HTTP/2 would drop connection headers on its own and prove nothing.
    let upstream = mock(&pki, Alpn::Http11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);

    let mut req = proxy.get("/__mock/echo?hop=1");
    let h = req.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("x-client-hop"));
    h.insert("x-client-hop", HeaderValue::from_static("should-not-pass"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=99"));
    h.insert(
        header::PROXY_AUTHORIZATION,
        HeaderValue::from_static("Basic cHJveHk6c2VjcmV0"),
    );
    h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("x-end-to-end", HeaderValue::from_static("kept"));
    let (parts, echo) = send_json(&client, req).await;

    for gone in [
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            header_list(&echo, gone).is_empty(),
            "{gone} reached the upstream: {echo}"
        );
    }
    assert_eq!(header_list(&echo, "x-end-to-end"), ["kept"]);
    assert!(
        header_list(&echo, "connection")
            .iter()
            .all(|v| !v.contains("x-client-hop")),
        "{echo}"
    );

    for gone in ["x-mock-hop", "keep-alive", "proxy-authenticate"] {
        assert!(
            !parts.headers.contains_key(gone),
            "{gone} reached the client: {:?}",
            parts.headers
        );
    }
    assert_eq!(parts.headers["x-mock-end-to-end"], "kept");
}

/// A 64 KiB pattern whose byte sum is easy to know, for checking uploads arrive whole.
fn pattern() -> Bytes {
    Bytes::from((0..64 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[tokio::test]
async fn a_large_upload_streams_through_whole() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("max_request_body = \"100MiB\""),
    );
    let chunk = pattern();
    let chunk_sum: u64 = chunk.iter().map(|b| u64::from(*b)).sum();
    let total: u64 = 64 * 1024 * 1024;

    for version in [Http::One, Http::Two] {
        let client = client(&pki, version);
        // Unsized: HTTP/1.1 sends it chunked, so nothing can have been sized or buffered up front.
        let req = http::Request::post(proxy.url("/__mock/echo"))
            .header("authorization", format!("Bearer {}", proxy.token))
            .body(MockBody::repeat(chunk.clone(), total, false).boxed())
            .unwrap();
        let (parts, echo) = send_json(&client, req).await;
        assert_eq!(parts.status, 200, "{version:?}");
        assert_eq!(echo["body_bytes"], total, "{version:?}");
        assert_eq!(
            echo["body_sum"],
            chunk_sum * (total / chunk.len() as u64),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn a_1_gib_download_streams_with_flat_proxy_memory() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);

    // Warm up (TLS, pools, allocator) so the baseline is the steady state.
    let (parts, _) = send(&client, proxy.get("/__mock/stream?bytes=1048576")).await;
    assert_eq!(parts.status, 200);
    let baseline = proxy.peak_rss_kib();

    let total: u64 = 1 << 30;
    let resp = client
        .request(proxy.get(&format!("/__mock/stream?bytes={total}")))
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], total.to_string());
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, total);
    let peak = proxy.peak_rss_kib();
    println!("proxy peak RSS: {baseline} KiB before, {peak} KiB after a 1 GiB download");
    // Flat: the download adds at most a few MiB of buffers, nowhere near the body's size.
    assert!(
        peak < baseline + 16 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
}

/// Waits up to `limit` for `cond`, polling; false if it never held.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}

#[tokio::test]
async fn upstream_connections_are_reused_then_closed_after_idling() {
    let pki = Pki::new();
    for (alpn, version) in [(Alpn::Http11, "HTTP/1.1"), (Alpn::H2AndHttp11, "HTTP/2.0")] {
        let upstream = mock(&pki, alpn).await;
        let proxy = Proxy::start(
            &pki,
            ProxyConfig::to(&upstream)
                .server("workers = 1")
                .upstream(r#"pool_idle_timeout = "400ms""#),
        );
        let client = client(&pki, Http::One);
        for _ in 0..5 {
            let (parts, echo) = send_json(&client, proxy.get("/__mock/echo")).await;
            assert_eq!(parts.status, 200);
            assert_eq!(echo["version"], version);
        }
        assert_eq!(
            upstream.connections_accepted(),
            1,
            "{version}: one pooled connection carries sequential requests"
        );

        // Left idle past pool_idle_timeout, the proxy closes it rather than holding it open.
        assert!(
            eventually(Duration::from_secs(5), || upstream.connections_open() == 0).await,
            "{version}: the idle upstream connection was still open"
        );
        let (parts, _) = send_json(&client, proxy.get("/__mock/echo")).await;
        assert_eq!(parts.status, 200);
        assert_eq!(upstream.connections_accepted(), 2, "{version}");
    }
}

/// Reads from `tcp` into `buf` until `marker` has arrived, and takes everything up to and including
/// it out of `buf` (what follows stays for the next call). `None` when the peer closes first.
async fn take_through(
    tcp: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    marker: &[u8],
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(marker.len()).position(|w| w == marker) {
            return Some(buf.drain(..i + marker.len()).collect());
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A plain-HTTP upstream that answers one request per connection and then hangs up without
/// saying so (no `Connection: close`), as an upstream whose keep-alive timeout is shorter than the
/// proxy's does. Returns its port and the number of connections it accepted.
async fn one_shot_upstream() -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if take_through(&mut tcp, &mut Vec::new(), b"\r\n\r\n")
                    .await
                    .is_none()
                {
                    return;
                }
                let body = br#"{"ok":true}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
                let _ = tcp.write_all(body).await;
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_dropped_is_not_used() {
    let pki = Pki::new();
    let (port, accepted) = one_shot_upstream().await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("http://127.0.0.1:{port}")).server("workers = 1"),
    );
    let client = client(&pki, Http::One);
    for i in 0..5 {
        let (parts, body) = send(&client, proxy.get("/anything")).await;
        assert_eq!(
            parts.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(&body[..], br#"{"ok":true}"#);
        // Long enough for the upstream's FIN to reach the idle pooled connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn the_upstream_gets_the_normalized_path_with_the_query_as_sent() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);
    for (sent, path, query) in [
        ("/__mock/./%65cho?a=%2F&b", "/__mock/echo", "a=%2F&b"),
        ("//__mock//echo?x=%20y", "/__mock/echo", "x=%20y"),
        ("/__mock/x/../echo", "/__mock/echo", ""),
        ("/__mock/echo?q=1", "/__mock/echo", "q=1"),
    ] {
        let (parts, echo) = send_json(&client, proxy.get(sent)).await;
        assert_eq!(parts.status, 200, "{sent}");
        assert_eq!(echo["path"], path, "{sent}");
        assert_eq!(echo["query"].as_str().unwrap_or(""), query, "{sent}");
    }
}

/// A body that sends one chunk, then nothing until `go` fires, then ends.
struct StalledUpload {
    first: Option<Bytes>,
    go: tokio::sync::oneshot::Receiver<()>,
}

impl http_body::Body for StalledUpload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        std::pin::Pin::new(&mut self.go).poll(cx).map(|_| None)
    }
}

/// A plain-HTTP upstream that answers every request at once, before reading its body (as an API
/// that rejects an upload early does), then reads the body to its end and serves the next request
/// on the same connection. Returns its port and the number of chunked bodies it received whole.
async fn early_answering_upstream() -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let whole = Arc::new(AtomicU64::new(0));
    let count = whole.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = take_through(&mut tcp, &mut buf, b"\r\n\r\n").await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let resp = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if tcp.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    if head.contains("transfer-encoding: chunked") {
                        if take_through(&mut tcp, &mut buf, b"0\r\n\r\n")
                            .await
                            .is_none()
                        {
                            return;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (port, whole)
}

#[tokio::test]
async fn a_request_does_not_wait_behind_another_agents_unfinished_upload() {
    let pki = Pki::new();
    let (port, uploads) = early_answering_upstream().await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("http://127.0.0.1:{port}"))
            .server("workers = 1")
            .upstream(r#"response_timeout = "2s""#),
    );
    // Agent A starts an upload; the upstream answers before the body is done.
    let (go, stalled) = tokio::sync::oneshot::channel();
    let upload = http::Request::post(proxy.url("/uploads"))
        .header("authorization", format!("Bearer {}", proxy.token))
        .body(
            StalledUpload {
                first: Some(Bytes::from_static(b"first part")),
                go: stalled,
            }
            .boxed(),
        )
        .unwrap();
    let a = client(&pki, Http::One);
    let resp = a.request(upload).await.unwrap();
    assert_eq!(resp.status(), 200);

    // Agent B's request must not queue behind A's upload on the connection A's exchange used
    // (it would get 504 once response_timeout passed).
    let b = client(&pki, Http::One);
    let (parts, body) = send(&b, proxy.get("/tickets.json")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));

    // A's upload, resumed after a pause longer than a quiet connection waits before parking,
    // still reaches the upstream whole.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = go.send(());
    let _ = resp.into_body().collect().await;
    assert!(
        eventually(Duration::from_secs(5), || uploads.load(Ordering::Relaxed)
            == 1)
        .await,
        "the upload was cut short"
    );
}

/// A vendor's redaction (`**.email`, `**.description`, `**.phone`) and record scope (two groups)
/// on an incremental export of 1 GiB of tickets: every byte streams through the scanner, none of
/// the fields' values and no ticket of another group reaches the client, the body still parses as
/// it ends with its `count` saying how many tickets it kept, and the proxy's memory stays flat (the
/// scanner holds the path, one member and one record, never the body). A body labelled JSON that is not JSON from its
/// first bytes is refused before its headers, 502, nothing of it sent.
#[tokio::test]
async fn a_1_gib_export_being_redacted_and_scoped_streams_with_flat_proxy_memory() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let policy = format!(
        "{OPEN_POLICY}\n[[vendors.redact]]\nfields = [\"**.email\", \"**.description\", \"**.phone\"]\n\
         [[vendors.scope]]\ngroup_id = [360004, 360005]\n"
    );
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&policy));
    let client = client(&pki, Http::One);

    let (parts, body) = send(&client, proxy.get("/__mock/export?bytes=1048576")).await;
    assert_eq!(parts.status, 200);
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tickets = page["tickets"].as_array().unwrap();
    assert!(tickets.len() > 100);
    assert!(tickets.iter().all(|t| t["description"] == "[redacted]"));
    let baseline = proxy.peak_rss_kib();

    let total: u64 = 1 << 30;
    let resp = client
        .request(proxy.get(&format!("/__mock/export?bytes={total}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
    let mut body = resp.into_body();
    let (mut received, mut tail) = (0u64, Vec::new());
    let mut descriptions = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
            // Across frame boundaries too: the last bytes of the frame before, then this one.
            tail.extend_from_slice(&data);
            let text = String::from_utf8_lossy(&tail);
            assert!(
                !text.contains("Hello, I placed order"),
                "a description passed"
            );
            assert!(!text.contains("@example.com\""), "an email passed");
            for group in ["360000", "360001", "360002", "360003"] {
                let field = format!("\"group_id\":{group}");
                assert!(!text.contains(&field), "a ticket of group {group} passed");
            }
            descriptions += text.matches("\"description\":\"[redacted]\"").count() as u64;
            tail.drain(..tail.len().saturating_sub(64));
            descriptions -= String::from_utf8_lossy(&tail)
                .matches("\"description\":\"[redacted]\"")
                .count() as u64;
        }
    }
    // The list's end, as the upstream wrote it: `…],"end_of_stream":true,"count":N}`.
    let text = String::from_utf8_lossy(&tail).into_owned();
    let (_, rest) = text.rsplit_once("],").unwrap();
    let end: serde_json::Value = serde_json::from_str(&format!("{{{rest}")).unwrap();
    let count = end["count"].as_u64().unwrap();
    assert!(end["end_of_stream"].as_bool().unwrap());
    assert_eq!(descriptions, count);
    assert!(received > total / 5, "{received}");
    let peak = proxy.peak_rss_kib();
    println!("proxy peak RSS: {baseline} KiB before, {peak} KiB after redacting and scoping a 1 GiB export");
    assert!(
        peak < baseline + 16 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );

    let (parts, body) = send(&client, proxy.get("/__mock/export?bytes=4096&broken=1")).await;
    assert_eq!(parts.status, 502, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "upstream_protocol_error", "{body}");
}
