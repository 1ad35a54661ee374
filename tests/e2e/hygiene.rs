//! Header hygiene: names with underscores (look-alikes of headers the proxy sets or strips, once a
//! back end folds `_` into `-`), client-typed address headers, and a refused oversized head that
//! the client gets to read.

use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;

use crate::support::*;

const LOOK_ALIKES: [&str; 3] = ["x_vendorgate_agent", "transfer_encoding", "x-forwarded_for"];

fn with_look_alikes(mut req: http::Request<TestBody>) -> http::Request<TestBody> {
    for name in LOOK_ALIKES {
        req.headers_mut()
            .insert(name, HeaderValue::from_static("spoofed"));
    }
    req
}

#[tokio::test]
async fn underscored_headers_are_dropped_refused_or_allowed_as_configured() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;

    // Default: dropped, and counted.
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);
    let (_, echo) = send_json(&client, with_look_alikes(proxy.get("/__mock/echo"))).await;
    let seen = echo["headers"].to_string();
    for name in LOOK_ALIKES {
        assert!(!seen.contains(name), "{name} reached the upstream: {seen}");
    }
    assert!(!seen.contains("spoofed"), "{seen}");
    let metrics = admin_text(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("vendorgate_underscore_headers_dropped_total 3"),
        "{metrics}"
    );
    drop(proxy);

    // Refused, with its code, before the upstream.
    let before = upstream.request_count();
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("underscore_headers = \"refuse\""),
    );
    let (parts, body) = send_json(&client, with_look_alikes(proxy.get("/__mock/echo"))).await;
    assert_eq!(
        (parts.status.as_u16(), &body["error"]),
        (400, &"header_name_invalid".into())
    );
    assert_eq!(upstream.request_count(), before);
    drop(proxy);

    // Allowed through, for a back end that needs them.
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("underscore_headers = \"allow\""),
    );
    let (_, echo) = send_json(&client, with_look_alikes(proxy.get("/__mock/echo"))).await;
    assert!(echo["headers"].to_string().contains("x_vendorgate_agent"));
}

#[tokio::test]
async fn client_typed_address_headers_never_reach_the_upstream() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let claims = [
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-originating-ip",
        "forwarded",
    ];
    for version in [Http::One, Http::Two] {
        let client = client(&pki, version);
        let mut req = proxy.get("/__mock/echo");
        for name in claims {
            req.headers_mut()
                .insert(name, HeaderValue::from_static("203.0.113.66"));
        }
        let (_, echo) = send_json(&client, req).await;
        let seen = echo["headers"].to_string();
        assert!(!seen.contains("203.0.113.66"), "{version:?}: {seen}");
        assert!(seen.contains("\"x-forwarded-for\""), "{seen}");
    }
}

/// hyper answers 431 to a head over `max_header_size` and closes. Closed at once with the rest of
/// the head unread, the kernel sends a reset, which can destroy a 431 still on its way and makes
/// the client's further writes fail. The proxy drains instead (lingering close): the client reads
/// its 431, may go on sending for a moment without an error, and sees a clean end.
#[tokio::test]
async fn an_oversized_head_gets_its_431_and_a_clean_close() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let mut head = b"GET /api/v2/users.json HTTP/1.1\r\nHost: localhost\r\nX-Fill: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40 * 1024));
    for attempt in 0..10 {
        let mut tls = raw_tls(&pki, proxy.addr).await;
        tls.write_all(&head).await.unwrap();
        tls.flush().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "attempt {attempt}: closed before an answer");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 431"),
            "attempt {attempt}: {text:?}"
        );
        // The rest of the oversized head keeps coming: no reset for it.
        for _ in 0..5 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let more = tls.write_all(&[b'a'; 16 * 1024]).await;
            let flushed = tls.flush().await;
            assert!(
                more.is_ok() && flushed.is_ok(),
                "attempt {attempt}: {more:?} {flushed:?}"
            );
        }
        let mut rest = Vec::new();
        let end = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tls.read_to_end(&mut rest),
        )
        .await
        .expect("the proxy closes within its lingering time");
        assert!(end.is_ok(), "attempt {attempt}: a clean close, not {end:?}");
    }
    assert_eq!(upstream.request_count(), 0);
}

/// Request smuggling shapes, each on a connection of its own. Whatever the parser makes of them,
/// the upstream only ever receives requests the proxy framed itself: each has an allow record,
/// and none carries a second request hidden in its body.
#[tokio::test]
async fn smuggling_shapes_are_refused_or_reframed_never_passed_through() {
    let pki = Pki::new();
    let upstream = mock_with(
        &pki,
        Alpn::H2AndHttp11,
        vendorgate_mock::MockOptions {
            keep_request_ids: true,
            ..vendorgate_mock::MockOptions::default()
        },
    )
    .await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let auth = format!("Authorization: Bearer {}\r\n", proxy.token);
    let smuggled = "GET /api/v2/users/1.json HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            // hyper reads it as chunked (Transfer-Encoding wins, RFC 9112 §6.3), drops the
            // Content-Length and closes the connection after: the hidden GET is never read.
            "CL and TE both",
            format!("POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            &[200],
        ),
        (
            "two different Content-Lengths",
            format!("POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd{smuggled}"),
            &[400],
        ),
        (
            "a space before the colon",
            format!("POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\nabcd"),
            &[400],
        ),
        (
            "an unknown transfer coding",
            format!("POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            &[400, 501],
        ),
        (
            "chunked not last",
            format!("POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
            &[400, 501],
        ),
        (
            "a signed Content-Length",
            format!("POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: +4\r\n\r\nabcd"),
            &[400],
        ),
        (
            "a bare LF line ending",
            format!(
                "GET /__mock/echo HTTP/1.1\nHost: localhost\nConnection: close\n{}\n\n",
                auth.trim_end()
            ),
            &[400, 200],
        ),
        (
            "an absolute-form target naming another host",
            format!("GET https://evil.example/__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n"),
            &[400],
        ),
    ];
    for (what, raw, allowed) in &cases {
        let mut tls = raw_tls(&pki, proxy.addr).await;
        let _ = tls.write_all(raw.as_bytes()).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), tls.read_to_end(&mut out))
            .await;
        let text = String::from_utf8_lossy(&out);
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(allowed.contains(&status), "{what}: {text:?}");
    }
    stop(&mut proxy).await;

    let recs = records(proxy.dir.path());
    for seen in upstream.recent() {
        assert_ne!(
            seen.path_and_query, "/api/v2/users/1.json",
            "smuggled through"
        );
    }
    for id in upstream.request_ids() {
        let found: Vec<_> = recs
            .iter()
            .filter(|r| at(r, "http.request.id") == id.as_str())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "the upstream got {id:?}, which the proxy did not record"
        );
        assert_eq!(at(found[0], "vendorgate.decision"), "allow");
    }
}
