//! Every decision on the record, whatever the client does: a request that got as far as the
//! pipeline has exactly one record in every ending (completed, refused, upstream failure, the
//! client gone before or after the upstream answered, a stream reset, a connection closed
//! mid-upload, shutdown), and refusals before the pipeline are recorded without a flood drowning
//! the trail.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;
use vendorgate_mock::MockOptions;

use crate::support::*;

/// The upstream takes this long to answer `/__mock/slow`: the client leaves well before.
const SLOW: &str = "/__mock/slow?ms=400";

/// The dev PKI, an upstream that keeps every request id, and the proxy in front of it, configured
/// by `tune` beyond the open policy.
async fn setup(
    tune: impl FnOnce(ProxyConfig) -> ProxyConfig,
) -> (Pki, vendorgate_mock::MockUpstream, Proxy) {
    let pki = Pki::new();
    let upstream = mock_with(
        &pki,
        Alpn::H2AndHttp11,
        MockOptions {
            keep_request_ids: true,
            ..MockOptions::default()
        },
    )
    .await;
    let proxy = Proxy::start(&pki, tune(ProxyConfig::to(&upstream)));
    (pki, upstream, proxy)
}

/// Waits until the upstream has received `n` requests in all.
async fn upstream_received(upstream: &vendorgate_mock::MockUpstream, n: u64) {
    for _ in 0..500 {
        if upstream.request_count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the upstream never received request {n}");
}

/// Closes a TCP connection with a reset (SO_LINGER 0) rather than a FIN: the client vanishes.
fn reset(tcp: &tokio::net::TcpStream) {
    socket2::SockRef::from(tcp)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

fn by_request_id(recs: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for r in recs {
        if let Some(id) = at(r, "http.request.id").as_str() {
            out.entry(id.to_string()).or_default().push(r.clone());
        }
    }
    out
}

/// Every request the upstream received has exactly one record, an allow naming it.
fn every_upstream_request_is_recorded(upstream: &vendorgate_mock::MockUpstream, recs: &[Value]) {
    let by_id = by_request_id(recs);
    for id in upstream.request_ids() {
        let found = by_id.get(&id).map_or(&[][..], Vec::as_slice);
        assert_eq!(found.len(), 1, "request {id:?}: {found:#?}");
        assert_eq!(at(&found[0], "vendorgate.decision"), "allow");
        assert_eq!(at(&found[0], "vendorgate.forwarded"), true);
    }
}

/// The trail holds exactly `n` records, one for each request the upstream received, each saying
/// its client left before the answer (499).
fn each_abandoned_by_its_client(
    proxy: &Proxy,
    upstream: &vendorgate_mock::MockUpstream,
    n: u64,
) -> Vec<Value> {
    let recs = records(proxy.dir.path());
    assert_eq!(recs.len() as u64, n, "{recs:#?}");
    every_upstream_request_is_recorded(upstream, &recs);
    for r in &recs {
        assert_eq!(at(r, "vendorgate.abandoned"), "client", "{r:#}");
        assert_eq!(at(r, "http.response.status_code"), 499);
    }
    recs
}

#[tokio::test]
async fn http1_requests_abandoned_with_a_reset_before_the_answer_are_each_recorded() {
    let (pki, upstream, mut proxy) = setup(|c| c).await;
    const N: u64 = 50;
    for i in 0..N {
        let mut tls = raw_tls(&pki, proxy.addr).await;
        let head = format!(
            "GET {SLOW} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nX-Request-Id: abandon-h1-{i}\r\n\r\n",
            proxy.token
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        // Gone once the SaaS has it, a varying few milliseconds later.
        upstream_received(&upstream, i + 1).await;
        tokio::time::sleep(Duration::from_millis(i % 7)).await;
        reset(tls.get_ref().0);
        drop(tls);
    }
    // Let the upstream's answers come back to nobody, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&mut proxy).await;

    let recs = each_abandoned_by_its_client(&proxy, &upstream, N);
    for r in &recs {
        assert!(at(r, "http.request.id")
            .as_str()
            .unwrap()
            .starts_with("abandon-h1-"));
        assert_eq!(at(r, "vendorgate.completed"), false);
        assert_eq!(at(r, "vendorgate.reason"), "allowed");
        assert_eq!(at(r, "event.outcome"), "failure");
    }
    assert!(audit_intact(proxy.dir.path()).starts_with(&format!("intact: {N} records")));
    assert!(!proxy.log().contains("dropped unfinished"));
}

#[tokio::test]
async fn http2_streams_cancelled_before_the_answer_are_each_recorded() {
    let (pki, upstream, mut proxy) = setup(|c| c).await;
    let client = client(&pki, Http::Two);
    const N: u64 = 50;
    for i in 0..N {
        let mut req = proxy.get(SLOW);
        req.headers_mut()
            .insert("x-request-id", format!("abandon-h2-{i}").parse().unwrap());
        // Dropping the response future resets the stream (RST_STREAM CANCEL).
        let pending = tokio::spawn(client.request(req));
        upstream_received(&upstream, i + 1).await;
        tokio::time::sleep(Duration::from_millis(i % 7)).await;
        pending.abort();
        let _ = pending.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The connection is still open: the records must not wait for it.
    stop(&mut proxy).await;

    for r in &each_abandoned_by_its_client(&proxy, &upstream, N) {
        assert_eq!(at(r, "http.version"), "2");
    }
    audit_intact(proxy.dir.path());
}

/// One request per ending, over one protocol; returns what to expect of each record by request id.
async fn every_ending(version: Http) {
    let (pki, upstream, mut proxy) = setup(|c| {
        c.upstream("response_timeout = \"1s\"")
            .server("shutdown_grace = \"300ms\"")
    })
    .await;
    let client = client(&pki, version);
    let tag = if version == Http::One { "h1" } else { "h2" };
    let with_id = |mut req: http::Request<TestBody>, id: &str| {
        req.headers_mut()
            .insert("x-request-id", format!("{tag}-{id}").parse().unwrap());
        req
    };

    // Completed.
    let (ok, _) = send(
        &client,
        with_id(proxy.get("/api/v2/tickets/1.json"), "completed"),
    )
    .await;
    assert_eq!(ok.status, 200);
    // Refused by the policy.
    let (refused, _) = send(
        &client,
        with_id(get(&proxy.url("/api/v2/tickets/1.json")), "refused"),
    )
    .await;
    assert_eq!(refused.status, 401);
    // The upstream did not answer in time.
    let (timeout, _) = send(
        &client,
        with_id(proxy.get("/__mock/slow?ms=2000"), "timeout"),
    )
    .await;
    assert_eq!(timeout.status, 504);
    // The client leaves after the upstream answered, mid-body.
    let resp = client
        .request(with_id(
            proxy.get("/__mock/stream?bytes=50000000&chunked=1"),
            "mid-body",
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    // An upload that stops halfway, the client gone with it.
    let mut tls = raw_tls(&pki, proxy.addr).await;
    let head = format!(
        "POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nX-Request-Id: {tag}-upload\r\nContent-Length: 1000000\r\n\r\n",
        proxy.token
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b'x'; 4096]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    reset(tls.get_ref().0);
    drop(tls);
    // In flight when the shutdown grace runs out.
    let before = upstream.request_count();
    let cut = tokio::spawn(client.request(with_id(proxy.get("/__mock/slow?ms=5000"), "shutdown")));
    upstream_received(&upstream, before + 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(&mut proxy).await;
    let _ = cut.await;

    let recs = records(proxy.dir.path());
    let by_id = by_request_id(&recs);
    let one = |id: &str| -> Value {
        let found = by_id
            .get(&format!("{tag}-{id}"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(found.len(), 1, "{tag}-{id}: {recs:#?}");
        found[0].clone()
    };
    let expect = |id: &str, fields: &[(&str, Value)]| {
        let r = one(id);
        for (path, want) in fields {
            assert_eq!(&at(&r, path), want, "{tag}-{id} {path}: {r:#}");
        }
    };
    use serde_json::json;
    expect(
        "completed",
        &[
            ("vendorgate.completed", json!(true)),
            ("vendorgate.forwarded", json!(true)),
            ("vendorgate.abandoned", Value::Null),
            ("event.outcome", json!("success")),
        ],
    );
    expect(
        "refused",
        &[
            ("vendorgate.reason", json!("token_missing")),
            ("vendorgate.forwarded", json!(false)),
            ("vendorgate.abandoned", Value::Null),
        ],
    );
    expect(
        "timeout",
        &[
            ("vendorgate.reason", json!("upstream_timeout")),
            ("http.response.status_code", json!(504)),
            ("vendorgate.forwarded", json!(true)),
        ],
    );
    expect(
        "mid-body",
        &[
            ("http.response.status_code", json!(200)),
            ("vendorgate.upstream_status", json!(200)),
            ("vendorgate.abandoned", json!("client")),
            ("vendorgate.completed", json!(false)),
        ],
    );
    let mid = one("mid-body");
    let sent = at(&mid, "http.response.bytes").as_u64().unwrap();
    assert!(sent > 0 && sent < 50_000_000, "{mid:#}");
    expect(
        "upload",
        &[
            ("vendorgate.reason", json!("request_body_incomplete")),
            ("vendorgate.abandoned", json!("client")),
            ("vendorgate.forwarded", json!(true)),
            ("vendorgate.completed", json!(false)),
        ],
    );
    expect(
        "shutdown",
        &[
            ("vendorgate.abandoned", json!("shutdown")),
            ("http.response.status_code", json!(503)),
            ("vendorgate.forwarded", json!(true)),
        ],
    );
    assert_eq!(recs.len(), 6, "{recs:#?}");
    every_upstream_request_is_recorded(&upstream, &recs);
    audit_intact(proxy.dir.path());
}

#[tokio::test]
async fn every_ending_has_exactly_one_record_over_http1() {
    every_ending(Http::One).await;
}

#[tokio::test]
async fn every_ending_has_exactly_one_record_over_http2() {
    every_ending(Http::Two).await;
}

#[tokio::test]
async fn parser_refusals_are_recorded_with_the_request_line() {
    let (pki, upstream, mut proxy) = setup(|c| c).await;
    let exchange = |raw: Vec<u8>| {
        let pki = &pki;
        let addr = proxy.addr;
        async move {
            let mut tls = raw_tls(pki, addr).await;
            // The proxy may refuse and close before a long head is all written: the write then
            // fails with a reset, which is not what is under test (the record is).
            let _ = tls.write_all(&raw).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    // A smuggling shape hyper refuses: a Content-Length that is not a number.
    let smuggle = exchange(
        b"POST /api/v2/tickets.json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1, 2\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert!(smuggle.starts_with("HTTP/1.1 400"), "{smuggle}");
    // A head over the limit (64 KiB of header).
    let mut huge = b"GET /api/v2/users.json HTTP/1.1\r\nHost: localhost\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let too_large = exchange(huge).await;
    assert!(
        too_large.is_empty() || too_large.starts_with("HTTP/1.1 431"),
        "{too_large}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(&mut proxy).await;

    assert_eq!(upstream.request_count(), 0);
    let recs = records(proxy.dir.path());
    assert_eq!(recs.len(), 1, "one window for the address: {recs:#?}");
    let r = &recs[0];
    assert_eq!(at(r, "event.action"), "http_refused");
    assert_eq!(at(r, "vendorgate.reason"), "request_malformed");
    assert_eq!(at(r, "vendorgate.count"), 2);
    assert_eq!(at(r, "vendorgate.refusals.request_malformed"), 1);
    assert_eq!(at(r, "vendorgate.refusals.request_head_too_large"), 1);
    assert_eq!(
        at(r, "vendorgate.request_line"),
        "POST /api/v2/tickets.json HTTP/1.1"
    );
    assert_eq!(at(r, "source.ip"), "127.0.0.1");
    assert_eq!(at(r, "http.version"), "1.1");
    audit_intact(proxy.dir.path());
}

#[tokio::test]
async fn a_handshake_flood_writes_one_record_and_an_honest_client_is_served_meanwhile() {
    let (pki, _upstream, mut proxy) = setup(|c| c).await;
    const FLOOD: usize = 2000;
    let addr = proxy.addr;
    let flood = tokio::spawn(async move {
        let mut done = 0;
        while done < FLOOD {
            let batch: Vec<_> = (0..50)
                .map(|_| {
                    tokio::spawn(async move {
                        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                        // Not a TLS ClientHello: the handshake fails at once.
                        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                        let mut sink = [0u8; 64];
                        let _ = tcp.read(&mut sink).await;
                    })
                })
                .collect();
            for t in batch {
                t.await.unwrap();
            }
            done += 50;
        }
    });
    // Honest traffic from another address, while the flood runs.
    let honest = client_from(&pki, Http::One, Some("127.0.0.2"));
    let mut served = 0;
    while !flood.is_finished() {
        let mut req = proxy.get("/api/v2/tickets/1.json");
        req.headers_mut()
            .insert("x-request-id", format!("honest-{served}").parse().unwrap());
        let (resp, _) = send(&honest, req).await;
        assert_eq!(resp.status, 200);
        served += 1;
    }
    flood.await.unwrap();
    let metrics = admin_text(proxy.admin, "/metrics").await;
    stop(&mut proxy).await;

    assert!(
        metrics.contains(&format!(
            "vendorgate_connection_refusals_total{{kind=\"tls_handshake_failed\"}} {FLOOD}"
        )),
        "{metrics}"
    );
    let recs = records(proxy.dir.path());
    let tls: Vec<_> = recs
        .iter()
        .filter(|r| at(r, "event.action") == "tls_handshake")
        .collect();
    // The default interval is a minute, longer than the flood: one record, written at shutdown.
    assert_eq!(tls.len(), 1, "{tls:#?}");
    assert_eq!(at(tls[0], "vendorgate.count"), FLOOD as u64);
    assert_eq!(at(tls[0], "source.ip"), "127.0.0.1");
    assert!(served > 0);
    assert_eq!(
        recs.len(),
        tls.len() + served,
        "one record per honest request"
    );
    audit_intact(proxy.dir.path());
}

/// 10,000 requests over both protocols, a random third abandoned at a random moment (before
/// sending, mid-decision, waiting for the upstream, mid-body): each request the proxy took has
/// exactly one record, and nothing else is recorded.
#[tokio::test]
async fn ten_thousand_requests_a_third_abandoned_at_random_make_exactly_one_record_each() {
    let (pki, upstream, mut proxy) = setup(|c| c).await;
    const N: usize = 10_000;
    const WORKERS: usize = 16;
    let h1 = client(&pki, Http::One);
    let h2 = client(&pki, Http::Two);
    // A small deterministic generator: the run is reproducible, the moments still spread out.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let plan: Vec<(usize, u64, u64)> = (0..N).map(|i| (i, next(), next())).collect();
    let plan = std::sync::Arc::new(std::sync::Mutex::new(plan));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let plan = plan.clone();
        let client = if w % 2 == 0 { h1.clone() } else { h2.clone() };
        let token = proxy.token.clone();
        let base = proxy.url("");
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            loop {
                let Some((i, r1, r2)) = plan.lock().unwrap().pop() else {
                    break;
                };
                let path = match r1 % 4 {
                    0 => "/api/v2/tickets/1.json",
                    1 => "/__mock/slow?ms=5",
                    2 => "/__mock/stream?bytes=200000&chunked=1",
                    _ => "/api/v2/users/1.json",
                };
                let req = http::Request::builder()
                    .method(Method::GET)
                    .uri(format!("{base}{path}"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-request-id", format!("stress-{i}"))
                    .body(empty())
                    .unwrap();
                let abandon = r2 % 3 == 0;
                let whole = async {
                    let resp = client.request(req).await.ok()?;
                    let _ = resp.into_body().collect().await.ok()?;
                    Some(())
                };
                if abandon {
                    let after = Duration::from_micros((r2 >> 8) % 8000);
                    if let Ok(Some(())) = tokio::time::timeout(after, whole).await {
                        answered.push(i);
                    }
                } else {
                    whole.await.expect("a request left alone completes");
                    answered.push(i);
                }
            }
            answered
        }));
    }
    let mut answered = HashSet::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    drop((h1, h2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(&mut proxy).await;

    let all = records(proxy.dir.path());
    // A client that left mid-handshake is a refused connection, recorded as such (aggregated).
    let recs: Vec<Value> = all
        .iter()
        .filter(|r| at(r, "event.action") == "http_request")
        .cloned()
        .collect();
    for r in &all {
        assert!(
            ["http_request", "tls_handshake"].contains(&at(r, "event.action").as_str().unwrap()),
            "{r:#}"
        );
    }
    let by_id = by_request_id(&recs);
    // Nothing but these requests, each at most once.
    for (id, found) in &by_id {
        assert!(id.starts_with("stress-"), "{id}");
        assert_eq!(found.len(), 1, "{id}: {found:#?}");
    }
    assert_eq!(by_id.len(), recs.len(), "every record names a request");
    // Every answered request and every request the upstream saw is there.
    for i in &answered {
        assert!(by_id.contains_key(&format!("stress-{i}")), "stress-{i}");
    }
    every_upstream_request_is_recorded(&upstream, &recs);
    let abandoned = recs
        .iter()
        .filter(|r| at(r, "vendorgate.abandoned") == "client")
        .count();
    assert!(answered.len() >= N / 2, "{} answered", answered.len());
    assert!(abandoned > 0);
    eprintln!(
        "records {} (answered {}, abandoned {abandoned}, upstream saw {})",
        recs.len(),
        answered.len(),
        upstream.request_ids().len()
    );
    audit_intact(proxy.dir.path());
}

/// Reads one HTTP/1.1 response from a raw connection (status line, headers, a small body).
async fn read_response(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> (u16, Value) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len || n == 0 {
                let status = head[9..12].parse().unwrap();
                return (
                    status,
                    serde_json::from_str(&body[..len]).unwrap_or(Value::Null),
                );
            }
        }
        assert!(n > 0, "connection closed before a response: {text}");
    }
}

#[tokio::test]
async fn two_hosts_and_a_trickling_body_are_refused_with_their_codes_and_recorded() {
    let (pki, upstream, mut proxy) = setup(|c| c.server("body_read_timeout = \"300ms\"")).await;
    let token = proxy.token.clone();

    let mut tls = raw_tls(&pki, proxy.addr).await;
    let head = format!(
        "GET /api/v2/tickets/1.json HTTP/1.1\r\nHost: localhost\r\nHost: admin.internal\r\nAuthorization: Bearer {token}\r\nX-Request-Id: two-hosts\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut tls).await;
    assert_eq!((status, &body["error"]), (400, &"host_invalid".into()));
    assert_eq!(body["request_id"], "two-hosts");

    // CONNECT is not tunnelled, and the refusal is on the record like any other.
    let mut tls = raw_tls(&pki, proxy.addr).await;
    tls.write_all(
        b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nX-Request-Id: connect\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, body) = read_response(&mut tls).await;
    assert_eq!(
        (status, &body["error"]),
        (405, &"method_not_allowed".into())
    );

    // Ten bytes of a hundred, then nothing: refused after the body read timeout, not the
    // upstream's response timeout.
    let mut tls = raw_tls(&pki, proxy.addr).await;
    let head = format!(
        "POST /__mock/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nX-Request-Id: trickle\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (status, body) = read_response(&mut tls).await;
    assert_eq!(
        (status, &body["error"]),
        (408, &"request_body_timeout".into())
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    stop(&mut proxy).await;

    let recs = records(proxy.dir.path());
    let by_id = by_request_id(&recs);
    assert_eq!(
        at(&by_id["two-hosts"][0], "vendorgate.reason"),
        "host_invalid"
    );
    assert_eq!(at(&by_id["two-hosts"][0], "vendorgate.forwarded"), false);
    assert_eq!(
        at(&by_id["connect"][0], "vendorgate.reason"),
        "method_not_allowed"
    );
    let trickle = &by_id["trickle"][0];
    assert_eq!(at(trickle, "vendorgate.reason"), "request_body_timeout");
    assert_eq!(at(trickle, "http.response.status_code"), 408);
    assert_eq!(at(trickle, "http.request.bytes"), 10);
    assert!(!upstream.request_ids().contains(&"two-hosts".to_string()));
}

#[tokio::test]
async fn head_requests_complete_on_the_record() {
    let (pki, _upstream, mut proxy) = setup(|c| c).await;
    for version in [Http::One, Http::Two] {
        let client = client(&pki, version);
        let mut allowed = proxy.request(Method::HEAD, "/api/v2/tickets/1.json", empty());
        allowed.headers_mut().insert(
            "x-request-id",
            format!("head-ok-{version:?}").parse().unwrap(),
        );
        let (ok, _) = send(&client, allowed).await;
        // The mock answers what it has no HEAD route for with 404: an upstream answer all the same.
        assert_eq!(ok.status, 404);
        let mut refused = http::Request::head(proxy.url("/api/v2/tickets/1.json"))
            .body(empty())
            .unwrap();
        refused.headers_mut().insert(
            "x-request-id",
            format!("head-refused-{version:?}").parse().unwrap(),
        );
        let (denied, _) = send(&client, refused).await;
        assert_eq!(denied.status, 401);
    }
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    assert_eq!(recs.len(), 4, "{recs:#?}");
    for r in &recs {
        assert_eq!(at(r, "vendorgate.abandoned"), Value::Null, "{r:#}");
        assert_eq!(at(r, "vendorgate.completed"), true, "{r:#}");
    }
}
