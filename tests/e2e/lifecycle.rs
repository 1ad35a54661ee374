//! Connections over time: slow and silent clients, idle keep-alives, and draining on SIGTERM.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;

use crate::support::*;

/// Reads until the peer closes (or errors); returns what was read and when it closed.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<(Vec<u8>, Instant)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((buf, Instant::now())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_after_the_header_timeout() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("header_read_timeout = \"1s\""),
    );

    let mut tls = raw_tls(&pki, proxy.addr).await;
    let start = Instant::now();
    // Trickle a request one byte at a time; it would take ~20 s to finish.
    let request = b"GET /api/v2/tickets/1 HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n\r\n";
    let mut closed = false;
    for byte in request.iter() {
        if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    if !closed {
        let result = read_until_closed(&mut tls, Duration::from_secs(3)).await;
        assert!(
            result.is_some(),
            "connection still open after {:?}",
            start.elapsed()
        );
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "dropped too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "dropped too late: {elapsed:?}"
    );
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn a_client_that_never_finishes_tls_is_dropped() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("tls_handshake_timeout = \"1s\""),
    );
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let start = Instant::now();
    let closed = read_until_closed(&mut tcp, Duration::from_secs(4)).await;
    let (_, at) = closed.expect("silent connection was never closed");
    assert!(
        at - start >= Duration::from_millis(900),
        "closed after {:?}",
        at - start
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("idle_timeout = \"1s\""),
    );
    let mut tls = raw_tls(&pki, proxy.addr).await;
    let request = format!(
        "GET /api/v2/tickets/1.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        proxy.token
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let start = Instant::now();
    let (buf, at) = read_until_closed(&mut tls, Duration::from_secs(5))
        .await
        .expect("idle connection was never closed");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let idle_for = at - start;
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed after only {idle_for:?}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_until_the_idle_timeout() {
    // hyper alone times an idle HTTP/1.1 connection against the header timeout; the header
    // timer must start at a request's first byte, so the agent's connection lives for
    // idle_timeout.
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("header_read_timeout = \"1s\"\nidle_timeout = \"10s\""),
    );
    let mut tls = raw_tls(&pki, proxy.addr).await;
    let request = format!(
        "GET /api/v2/tickets/1.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        proxy.token
    );
    let mut seen = Vec::new();
    for round in 0..2 {
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut chunk = [0u8; 4096];
        while seen.windows(12).filter(|w| w == b"HTTP/1.1 200").count() <= round {
            let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk))
                .await
                .expect("response in time")
                .unwrap();
            assert!(n > 0, "closed after {} responses", round);
            seen.extend_from_slice(&chunk[..n]);
        }
        // Idle for twice the header timeout before the next request.
        tokio::time::sleep(Duration::from_millis(2200)).await;
    }
    assert_eq!(upstream.request_count(), 2);
}

/// Reads from `stream` until `done` holds for what has been read; panics if it closes first.
async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    seen: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) {
    let mut chunk = [0u8; 4096];
    while !done(seen) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap_or(0);
        assert!(
            n > 0,
            "closed early; read so far: {}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_loses_nothing_between_requests() {
    // An idle HTTP/1.1 connection gives up its HTTP state between requests and picks it up again
    // at the next byte: requests that arrive whole, pipelined, or in pieces with pauses (each
    // pause long enough for the connection to go idle) are all answered on the one connection.
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let auth = format!("Authorization: Bearer {}\r\n", proxy.token);
    let get = format!("GET /api/v2/tickets/1.json HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
    // Longer than the quiet time after which a connection parks (250 ms).
    let pause = || tokio::time::sleep(Duration::from_millis(600));
    let gauge = |name: &'static str| async move {
        let metrics = admin_text(proxy.admin, "/metrics").await;
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
    };
    let mut tls = raw_tls(&pki, proxy.addr).await;
    let mut seen = Vec::new();

    // Two requests in one write.
    tls.write_all(format!("{get}{get}").as_bytes())
        .await
        .unwrap();
    read_until(&mut tls, &mut seen, |s| count(s, b"HTTP/1.1 200") == 2).await;

    // After a pause, the connection is parked: it holds no HTTP state until its next bytes.
    pause().await;
    assert_eq!(gauge("vendorgate_connections_open").await, Some(1));
    assert_eq!(gauge("vendorgate_connections_parked").await, Some(1));

    // A body sent in two parts with a pause between them.
    tls.write_all(
        format!(
            "POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 10\r\n\r\n0123"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    pause().await;
    tls.write_all(b"456789").await.unwrap();
    read_until(&mut tls, &mut seen, |s| {
        count(s, br#""body_bytes":10"#) == 1
    })
    .await;

    // After a pause, a request head split in two with a pause between the parts.
    pause().await;
    let (first, second) = get.split_at(20);
    tls.write_all(first.as_bytes()).await.unwrap();
    pause().await;
    // Half a head: awake, and waiting for the rest under the header timer.
    assert_eq!(gauge("vendorgate_connections_parked").await, Some(0));
    tls.write_all(second.as_bytes()).await.unwrap();
    read_until(&mut tls, &mut seen, |s| count(s, b"HTTP/1.1 200") == 4).await;

    assert_eq!(upstream.request_count(), 4);
}

#[tokio::test]
async fn a_client_without_alpn_gets_http2_by_prior_knowledge() {
    // Clients that offer no ALPN get HTTP/1.1 unless their first bytes are the HTTP/2 preface.
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let mut config = pki.client_tls(Alpn::Http11);
    config.alpn_protocols.clear();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);

    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = proxy.get("/api/v2/tickets/1.json");
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("shutdown_grace = \"10s\""),
    );
    let client = client(&pki, Http::One);
    let admin = format!("http://{}/readyz", proxy.admin);

    let req = proxy.get("/__mock/slow?ms=1500");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { send_json(&client, req).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // While draining: not ready, and no new connections.
    let ready = admin_get(&admin).await;
    assert!(
        ready.contains("503") && ready.contains("draining"),
        "{ready}"
    );
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting"
    );

    let (parts, body) = in_flight.await.unwrap();
    assert_eq!(parts.status, 200, "{body}");
    assert_eq!(body["slept_ms"], 1500);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy did not exit");
    assert!(status.success(), "{status:?}\n{}", proxy.log());
}

#[tokio::test]
async fn sigterm_grace_period_bounds_the_drain() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("shutdown_grace = \"500ms\""),
    );
    let client = client(&pki, Http::One);
    let req = proxy.get("/__mock/slow?ms=20000");
    let in_flight = tokio::spawn(async move { client.request(req).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy did not exit");
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut request cannot have completed"
    );
    assert!(
        proxy.log().contains("shutdown grace period over"),
        "{}",
        proxy.log()
    );
}

/// Idle agents must not hold a restart for the grace period, and an agent sending on its
/// keep-alive connection just as the proxy stops must not lose that request (HTTP/1.1 cannot say
/// "no more" but by closing, and a close racing the client's write is a dropped request). Each
/// idle connection, parked or just gone quiet, gets `shutdown_idle_wait` for one last request,
/// answered with `Connection: close`; one that sends nothing is closed cleanly (close_notify) when
/// the wait is over, well before the grace period.
#[tokio::test]
async fn sigterm_gives_idle_connections_a_last_request_then_closes_them_cleanly() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("shutdown_grace = \"20s\"\nshutdown_idle_wait = \"1s\""),
    );
    let get = format!(
        "GET /api/v2/tickets/1.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        proxy.token
    );
    let answered = |seen: &[u8], n| count(seen, b"HTTP/1.1 200") == n;
    let served_once = || async {
        let mut tls = raw_tls(&pki, proxy.addr).await;
        let mut seen = Vec::new();
        tls.write_all(get.as_bytes()).await.unwrap();
        read_until(&mut tls, &mut seen, |s| answered(s, 1)).await;
        (tls, seen)
    };
    // Two parked (quiet for longer than the proxy keeps a connection's HTTP state), then two
    // just gone quiet (their HTTP state still held).
    let mut conns = vec![served_once().await, served_once().await];
    tokio::time::sleep(Duration::from_millis(600)).await;
    conns.extend([served_once().await, served_once().await]);

    let start = Instant::now();
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One of each sends again as the proxy stops: answered, with the connection closed after.
    for (i, (tls, seen)) in conns.iter_mut().enumerate() {
        if i % 2 == 0 {
            tls.write_all(get.as_bytes()).await.unwrap();
            read_until(tls, seen, |s| answered(s, 2)).await;
            let last = String::from_utf8_lossy(seen);
            let last = &last[last.rfind("HTTP/1.1 200").unwrap()..];
            assert!(
                last.to_ascii_lowercase().contains("connection: close"),
                "connection {i}: {last}"
            );
        }
    }
    for (i, (tls, _)) in conns.iter_mut().enumerate() {
        let mut rest = [0u8; 256];
        let end = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut rest)).await;
        assert!(
            matches!(end, Ok(Ok(0))),
            "connection {i}: expected a clean TLS close, got {end:?}"
        );
    }
    let status = proxy
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("proxy did not exit");
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "idle connections held shutdown for {:?}",
        start.elapsed()
    );
    assert_eq!(upstream.request_count(), 6);
    assert_eq!(records(proxy.dir.path()).len(), 6);
}

#[tokio::test]
async fn health_and_readiness() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let health = admin_get(&format!("http://{}/healthz", proxy.admin)).await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#"{"status":"ok"}"#),
        "{health}"
    );
    let ready = admin_get(&format!("http://{}/readyz", proxy.admin)).await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains(r#"{"status":"ready"}"#),
        "{ready}"
    );
    let missing = admin_get(&format!("http://{}/nope", proxy.admin)).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_is_refused() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let fingerprint = || async {
        let tls = raw_tls(&pki, proxy.addr).await;
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let original = fingerprint().await;

    // A broken file: the old certificate keeps serving.
    std::fs::write(&pki.files.server_cert, "garbage").unwrap();
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fingerprint().await, original);
    assert!(proxy.log().contains("reload failed"), "{}", proxy.log());

    // A new certificate from the same CA: picked up without a restart.
    let fresh =
        vendorgate_certs::dev::DevPki::generate(vendorgate_certs::dev::LOCAL_NAMES).unwrap();
    let (cert, key) = (fresh_leaf(&pki, &fresh), fresh.server_key_pem.clone());
    std::fs::write(&pki.files.server_key, key).unwrap();
    std::fs::write(&pki.files.server_cert, cert).unwrap();
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new pair is signed by a different CA, so a client trusting the old CA refuses it: that
    // refusal is the proof that the new certificate is what the proxy now presents.
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(pki.client_tls(Alpn::Http11)));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
}

fn fresh_leaf(_pki: &Pki, fresh: &vendorgate_certs::dev::DevPki) -> String {
    fresh.server_cert_pem.clone()
}

/// A GET to an admin URL; the raw response.
async fn admin_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    admin_response(addr, &format!("/{path}")).await
}
