//! Upstream faults, with a hand-made misbehaving SaaS over real TLS: one that answers garbage, and
//! one that breaks off a body it promised. Each gets its status, its one record, and leaves nothing
//! held: after it, the proxy has no connection open and serves the next request.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;

use crate::support::*;

/// A TLS server on loopback that reads a request head and answers `reply` (then closes).
async fn misbehaving(pki: &Pki, reply: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_tls(Alpn::Http11));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(reply).await;
                let _ = tls.flush().await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// The proxy's open client connections, from its metrics.
async fn connections_open(proxy: &Proxy) -> u64 {
    let text = admin_text(proxy.admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("vendorgate_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .expect("no vendorgate_connections_open")
}

async fn settles_to_no_connection(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections_open(proxy).await != 0 {
        assert!(Instant::now() < deadline, "a connection stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_a_502_protocol_error_with_its_record() {
    let pki = Pki::new();
    let addr = misbehaving(&pki, b"HELLO THERE, THIS IS NOT HTTP\r\n\r\n").await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("https://127.0.0.1:{}", addr.port())).upstream("http2 = false"),
    );
    for version in [Http::One, Http::Two] {
        let (parts, body) = send_json(&client(&pki, version), proxy.get("/api/v2/tickets/1")).await;
        assert_eq!(parts.status, 502, "{body}");
        assert_eq!(body["error"], "upstream_protocol_error", "{body}");
    }
    settles_to_no_connection(&proxy).await;
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let failed: Vec<_> = recs
        .iter()
        .filter(|r| at(r, "vendorgate.reason") == "upstream_protocol_error")
        .collect();
    assert_eq!(failed.len(), 2, "{recs:#?}");
    for r in failed {
        assert_eq!(at(r, "http.response.status_code"), 502);
        assert_eq!(at(r, "vendorgate.forwarded"), true);
    }
}

#[tokio::test]
async fn a_body_the_upstream_breaks_off_is_broken_off_for_the_agent_too_and_recorded() {
    let pki = Pki::new();
    // A million bytes promised, 190 sent, then the connection closed.
    static SHORT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";
    let addr = misbehaving(&pki, SHORT).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("https://127.0.0.1:{}", addr.port())).upstream("http2 = false"),
    );
    for version in [Http::One, Http::Two] {
        let resp = client(&pki, version)
            .request(proxy.get("/api/v2/tickets/1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The agent never gets a body that looks complete.
        assert!(resp.into_body().collect().await.is_err(), "{version:?}");
    }
    settles_to_no_connection(&proxy).await;
    // The next request is served (by the same broken upstream: its head again).
    let resp = client(&pki, Http::One)
        .request(proxy.get("/api/v2/tickets/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let broken: Vec<_> = recs
        .iter()
        .filter(|r| {
            at(r, "http.response.status_code") == 200 && at(r, "vendorgate.completed") == false
        })
        .collect();
    assert!(broken.len() >= 2, "{recs:#?}");
    for r in &broken {
        let bytes = at(r, "http.response.bytes").as_u64().unwrap();
        assert!(bytes < 1_000_000, "{r}");
        assert_eq!(at(r, "event.outcome"), "failure");
    }
    assert!(audit_intact(proxy.dir.path()).contains("intact"));
}
