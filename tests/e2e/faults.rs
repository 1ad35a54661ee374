//! Upstream faults, with a hand-made misbehaving SaaS over real TLS: one that answers garbage, one
//! that breaks off a body it promised, one that never answers. Each gets its status, its one
//! record, and leaves nothing held: after it the proxy has no client or upstream connection open,
//! no request in flight and no bytes leased, and serves the next request.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;

use crate::support::*;

/// What the misbehaving upstream does once it has sent its reply.
#[derive(Clone, Copy)]
enum Then {
    Close,
    /// Keeps the connection open and says nothing more.
    Hang,
}

/// A TLS server on loopback that reads a request head, answers `reply`, then does `then`.
async fn misbehaving(pki: &Pki, reply: &'static [u8], then: Then) -> std::net::SocketAddr {
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
                match then {
                    Then::Close => {
                        let _ = tls.shutdown().await;
                    }
                    Then::Hang => {
                        // Until the proxy lets go of the connection.
                        let _ = tls.read(&mut buf).await;
                    }
                }
            });
        }
    });
    addr
}

/// Waits until the proxy holds nothing: no client connection, no request in flight, no upstream
/// connection (the servers here close theirs or hang, so none may be pooled).
async fn settles_to_nothing_held(proxy: &Proxy) {
    let held = [
        "vendorgate_connections_open",
        "vendorgate_requests_in_flight",
        "vendorgate_upstream_connections_open",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    for series in held {
        while metric(proxy, series).await != 0.0 {
            assert!(Instant::now() < deadline, "{series} stayed above zero");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_a_502_protocol_error_with_its_record() {
    let pki = Pki::new();
    let addr = misbehaving(&pki, b"HELLO THERE, THIS IS NOT HTTP\r\n\r\n", Then::Close).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("https://127.0.0.1:{}", addr.port())).upstream("http2 = false"),
    );
    for version in [Http::One, Http::Two] {
        let (parts, body) = send_json(&client(&pki, version), proxy.get("/api/v2/tickets/1")).await;
        assert_eq!(parts.status, 502, "{body}");
        assert_eq!(body["error"], "upstream_protocol_error", "{body}");
    }
    settles_to_nothing_held(&proxy).await;
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
    let addr = misbehaving(&pki, SHORT, Then::Close).await;
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
    settles_to_nothing_held(&proxy).await;
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

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_and_its_connection_is_let_go() {
    let pki = Pki::new();
    let addr = misbehaving(&pki, b"", Then::Hang).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("https://127.0.0.1:{}", addr.port()))
            .upstream("http2 = false\nresponse_timeout = \"300ms\""),
    );
    for version in [Http::One, Http::Two] {
        let (parts, body) = send_json(&client(&pki, version), proxy.get("/api/v2/tickets/1")).await;
        assert_eq!(parts.status, 504, "{body}");
        assert_eq!(body["error"], "upstream_timeout", "{body}");
    }
    // A hung connection is never pooled for the next request: the proxy closes it.
    settles_to_nothing_held(&proxy).await;
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        assert_eq!(at(r, "vendorgate.reason"), "upstream_timeout");
        assert_eq!(at(r, "http.response.status_code"), 504);
    }
}

/// Bytes toward an egress cap shared in Redis are leased ahead of the body in chunks; a body the
/// upstream breaks off gives back what it did not use: the account is charged what reached it.
#[tokio::test]
async fn a_broken_off_body_gives_back_the_bytes_it_leased() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    static SHORT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789abcdef";
    let addr = misbehaving(&pki, SHORT, Then::Close).await;
    let viewer = "vga_lease-viewer-token";
    let policy = format!(
        "{OPEN_POLICY}\n[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n\
         [[limits.egress]]\nid = \"daily\"\nper = \"account\"\nmax = \"10MiB\"\nwindow = \"1d\"\n",
        redis.url()
    );
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to_url(format!("https://127.0.0.1:{}", addr.port()))
            .upstream("http2 = false")
            .policy(&policy)
            .admin(&admin_token("soc", "viewer", viewer)),
    );
    proxy.ready().await;
    let resp = client(&pki, Http::One)
        .request(proxy.get("/api/v2/tickets/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err());
    settles_to_nothing_held(&proxy).await;

    // What the replica leased and did not use goes back to Redis after its hold (two seconds):
    // until then the shared counter counts it as used.
    let mut usage = serde_json::Value::Null;
    for _ in 0..30 {
        let out = admin_cli(
            &proxy,
            viewer,
            &[
                "usage",
                "--vendor",
                "acme",
                "--account",
                "agent-1",
                "--json",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        usage = serde_json::from_slice(&out.stdout).unwrap();
        if usage["limits"][0]["used"].as_u64() < Some(1024) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let used = usage["limits"][0]["used"].as_u64().unwrap();
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(at(&recs[0], "vendorgate.completed"), false);
    assert_eq!(
        Some(used),
        at(&recs[0], "http.response.bytes").as_u64(),
        "{usage}"
    );
    assert!(used < 1024, "{usage}");
}
