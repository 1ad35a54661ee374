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
