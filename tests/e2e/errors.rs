//! Failures an agent can meet, each with a precise status and a JSON body naming the reason.

use http::{header, HeaderValue};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;
use vendorgate_mock::MockBody;

use crate::support::*;

fn assert_error_body(
    parts: &http::response::Parts,
    body: &serde_json::Value,
    status: u16,
    code: &str,
) {
    assert_eq!(parts.status, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let id = parts.headers["x-request-id"].to_str().unwrap();
    assert_eq!(body["request_id"], id);
    assert_eq!(parts.headers[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn upstream_down_is_a_502_with_a_reason() {
    let pki = Pki::new();
    let url = format!("https://127.0.0.1:{}", closed_port());
    let proxy = Proxy::start(&pki, ProxyConfig::to_url(url));
    for version in [Http::One, Http::Two] {
        let (parts, body) = send_json(&client(&pki, version), proxy.get("/api/v2/tickets/1")).await;
        assert_error_body(&parts, &body, 502, "upstream_unreachable");
    }
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).upstream("response_timeout = \"300ms\""),
    );
    let (parts, body) =
        send_json(&client(&pki, Http::One), proxy.get("/__mock/slow?ms=3000")).await;
    assert_error_body(&parts, &body, 504, "upstream_timeout");
    // A fast request on the same proxy still works.
    let (parts, _) = send_json(&client(&pki, Http::One), proxy.get("/__mock/slow?ms=10")).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502_tls_error() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    // Without the dev CA the proxy trusts only the web PKI, which never signed the mock's certificate.
    let mut config = ProxyConfig::to(&upstream);
    config.trust_dev_ca = false;
    let proxy = Proxy::start(&pki, config);
    let before = upstream.request_count();
    let (parts, body) = send_json(&client(&pki, Http::One), proxy.get("/api/v2/tickets/1")).await;
    assert_error_body(&parts, &body, 502, "upstream_tls_error");
    assert_eq!(
        upstream.request_count(),
        before,
        "no request may cross an unverified connection"
    );
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused_declared_or_streamed() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("max_request_body = \"1MiB\""),
    );
    let chunk = bytes::Bytes::from(vec![b'a'; 65536]);

    // Declared too large, sent the way curl sends big uploads (Expect: 100-continue): refused before
    // the client sends a byte of body and before anything goes upstream.
    let before = upstream.request_count();
    let mut tls = raw_tls(&pki, proxy.addr).await;
    tls.write_all(b"POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2097152\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0u8; 4096];
    let n = tls.read(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains(r#""error":"request_body_too_large""#),
        "{text}"
    );
    assert_eq!(upstream.request_count(), before);

    // Streamed with no length over HTTP/2: cut off once it passes the limit, answered with 413.
    let req = http::Request::post(proxy.url("/__mock/echo"))
        .header("authorization", format!("Bearer {}", proxy.token))
        .body(MockBody::repeat(chunk.clone(), 2 << 20, false).boxed())
        .unwrap();
    let (parts, body) = send_json(&client(&pki, Http::Two), req).await;
    assert_error_body(&parts, &body, 413, "request_body_too_large");

    // At the limit exactly: fine.
    let req = http::Request::post(proxy.url("/__mock/echo"))
        .header("authorization", format!("Bearer {}", proxy.token))
        .body(MockBody::repeat(chunk, 1 << 20, false).boxed())
        .unwrap();
    let (parts, echo) = send_json(&client(&pki, Http::One), req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(echo["body_bytes"], 1 << 20);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("max_header_size = \"16KiB\""),
    );
    let before = upstream.request_count();

    let mut req = proxy.get("/__mock/echo");
    let big = HeaderValue::from_str(&"x".repeat(32 * 1024)).unwrap();
    req.headers_mut().insert("x-big", big.clone());
    // 431, unless the proxy closed while the client was still writing (then the write fails).
    match client(&pki, Http::One).request(req).await {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(
            format!("{e:?}").contains("BodyWrite") || format!("{e:?}").contains("Broken pipe"),
            "{e:?}"
        ),
    }

    let mut req = proxy.get("/__mock/echo");
    req.headers_mut().insert("x-big", big);
    // HTTP/2 refuses the stream (or answers 431); either way nothing reaches the upstream.
    if let Ok(resp) = client(&pki, Http::Two).request(req).await {
        assert_eq!(resp.status(), 431);
    }
    assert_eq!(upstream.request_count(), before);

    let mut req = proxy.get("/__mock/echo");
    req.headers_mut().insert(
        "x-small",
        HeaderValue::from_str(&"x".repeat(4 * 1024)).unwrap(),
    );
    let (parts, _) = send(&client(&pki, Http::One), req).await;
    assert_eq!(parts.status, 200);
}
