//! The decision trail through the real proxy: one record per decision, tamper evidence checked by
//! `vendorgate audit verify`, the reviewers' commands, and /metrics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use vendorgate_certs::Alpn;
use vendorgate_mock::idp::KeyKind;

use crate::support::at as get;
use crate::support::*;

fn vendorgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("decisions")
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_request_and_refused_handshake_yields_exactly_one_record() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);

    let (ok, body) = send(&client, proxy.get("/api/v2/tickets/9.json?include=users")).await;
    let (denied, _) = send(&client, get_unauth(&proxy.url("/api/v2/tickets/9"))).await;
    let stranger = vendorgate_mock::idp::SigningKey::generate(KeyKind::Es256, "nope").sign(
        &pki.idp
            .agent_claims(AUDIENCE, "x", "acme", vendorgate_mock::idp::now(), 60),
    );
    let (forged, _) = send(
        &client,
        bearer_get(&proxy.url("/api/v2/tickets/9"), &stranger),
    )
    .await;
    // A client that speaks no TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(&mut proxy).await;

    let recs = records(proxy.dir.path());
    assert_eq!(recs.len(), 4, "{recs:#?}");
    let by_id = |resp: &http::response::Parts| {
        let id = resp.headers["x-request-id"].to_str().unwrap();
        recs.iter()
            .filter(|r| get(r, "http.request.id") == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let allowed = by_id(&ok);
    assert_eq!(allowed.len(), 1);
    let a = &allowed[0];
    assert_eq!(get(a, "vendorgate.decision"), "allow");
    assert_eq!(get(a, "vendorgate.reason"), "allowed");
    assert_eq!(get(a, "vendorgate.route"), "everything");
    assert_eq!(get(a, "user.id"), "agent-1");
    assert_eq!(get(a, "organization.id"), "acme");
    assert_eq!(get(a, "client.ip"), "127.0.0.1");
    assert_eq!(get(a, "url.path"), "/api/v2/tickets/9.json");
    assert_eq!(get(a, "url.query"), "include=users");
    assert_eq!(get(a, "http.response.status_code"), 200);
    assert_eq!(get(a, "http.response.bytes"), body.len() as u64);
    assert_eq!(get(a, "vendorgate.completed"), true);
    assert_eq!(get(a, "vendorgate.upstream_status"), 200);
    assert_eq!(get(a, "vendorgate.token.iss"), ISSUER);
    assert_eq!(
        get(a, "vendorgate.token.amr"),
        serde_json::json!(["pwd", "mfa"])
    );
    assert_eq!(
        get(a, "vendorgate.token.jti_sha256")
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(get(a, "vendorgate.policy_version")
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(get(a, "event.outcome"), "success");

    let d = &by_id(&denied)[0];
    assert_eq!(
        (get(d, "vendorgate.decision"), get(d, "vendorgate.reason")),
        ("deny".into(), "token_missing".into())
    );
    let f = &by_id(&forged)[0];
    assert_eq!(get(f, "vendorgate.reason"), "token_invalid");
    let tls: Vec<_> = recs
        .iter()
        .filter(|r| get(r, "event.action") == "tls_handshake")
        .collect();
    assert_eq!(tls.len(), 1);
    assert_eq!(get(tls[0], "vendorgate.reason"), "tls_handshake_failed");

    // Never the token itself.
    let raw = std::fs::read_to_string(proxy.dir.path().join("decisions.jsonl")).unwrap();
    assert!(!raw.contains(&proxy.token) && !raw.contains(&stranger));
    let out = vendorgate(&[
        "audit",
        "verify",
        proxy.dir.path().join("decisions.jsonl").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("intact: 4 records, seq 1–4"));
}

fn get_unauth(url: &str) -> http::Request<TestBody> {
    http::Request::get(url).body(empty()).unwrap()
}

/// Runs `audit verify` on copies of `files` after `tamper` has had its way with them.
fn verify_after(files: &[PathBuf], tamper: impl FnOnce(&Path)) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    tamper(dir.path());
    let copies: Vec<String> = logs(dir.path())
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["audit", "verify"];
    args.extend(copies.iter().map(String::as_str));
    let out = vendorgate(&args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    f(&mut lines);
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[tokio::test]
async fn audit_verify_finds_edits_deletions_reordering_and_truncation_across_rotation() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).policy(&format!(
            "{OPEN_POLICY}\n[trail]\nmax_file_size = \"4KiB\"\n"
        )),
    );
    let client = client(&pki, Http::One);
    for i in 0..20 {
        let (parts, _) = send(&client, proxy.get(&format!("/api/v2/tickets/{}", i + 1))).await;
        assert_eq!(parts.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/99")).await;
    assert_eq!(parts.status, 200);
    stop(&mut proxy).await;
    let files = logs(proxy.dir.path());
    assert!(files.len() >= 2, "expected a rotation: {files:?}");
    let (ok, out) = verify_after(&files, |_| {});
    assert!(ok && out.contains("intact: 21 records, seq 1–21"), "{out}");

    let rotated = |d: &Path| {
        logs(d)
            .into_iter()
            .find(|p| p.file_name().unwrap() != "decisions.jsonl")
            .unwrap()
    };
    let rotated_name = rotated(proxy.dir.path())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();

    // An edited field.
    let (ok, out) = verify_after(&files, |d| {
        edit_lines(&rotated(d), |l| {
            l[1] = l[1].replace("\"status_code\":200", "\"status_code\":201")
        })
    });
    assert!(
        !ok && out.contains(&format!("{rotated_name}:2: hash mismatch")),
        "{out}"
    );
    // A record deleted at the rotation boundary (the last of the first file): noticed at the first
    // record of the next file.
    let (ok, out) = verify_after(&files, |d| {
        edit_lines(&rotated(d), |l| {
            l.pop();
        })
    });
    assert!(!ok && out.contains(".jsonl:1: records missing"), "{out}");
    assert!(!out.contains(&rotated_name), "{out}");
    // Two records swapped.
    let (ok, out) = verify_after(&files, |d| edit_lines(&rotated(d), |l| l.swap(1, 2)));
    assert!(
        !ok && out.contains(&format!(
            "{rotated_name}:2: records missing: expected seq 2, found seq 3"
        )),
        "{out}"
    );
    // A record deleted in the middle.
    let (ok, out) = verify_after(&files, |d| {
        edit_lines(&rotated(d), |l| {
            l.remove(1);
        })
    });
    assert!(
        !ok && out.contains(&format!("{rotated_name}:2: records missing")),
        "{out}"
    );
    // The newest file cut off mid-record. (Usually the active `decisions.jsonl`; when the last
    // record happened to fill it, the writer rotated at shutdown and the newest is a rotated one.)
    let (ok, out) = verify_after(&files, |d| {
        let p = logs(d).pop().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, &text[..text.len() - 40]).unwrap();
    });
    assert!(!ok && out.contains("truncated"), "{out}");
    // Whole records cut off the end: caught against the head seen elsewhere.
    let head = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>();
    let mut args = vec!["audit", "verify", "--expect-head", "25"];
    args.extend(head.iter().map(String::as_str));
    let out = vendorgate(&args);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("truncated: the log ends at seq 21")
    );
}

#[tokio::test]
async fn an_unwritable_log_refuses_requests_by_default() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let blocker = pki.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where a directory should be").unwrap();
    let trail = |mode: &str| {
        format!(
            "{OPEN_POLICY}\n[trail]\npath = {:?}\non_log_failure = \"{mode}\"\n",
            blocker.join("decisions.jsonl")
        )
    };
    let deny = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&trail("deny")));
    let client = client(&pki, Http::One);
    let before = upstream.request_count();
    let (parts, body) = send_json(&client, deny.get("/api/v2/tickets/1")).await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (503, Some("decision_log_unavailable"))
    );
    assert_eq!(
        upstream.request_count(),
        before,
        "an unrecorded request reached the upstream"
    );
    assert!(deny.log().contains("unwritable"), "{}", deny.log());

    let allow = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&trail("allow")));
    assert_eq!(
        send(&client, allow.get("/api/v2/tickets/1")).await.0.status,
        200
    );
    let metrics = admin_text(allow.admin, "/metrics").await;
    assert!(
        metrics.contains("vendorgate_trail_unrecorded_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("vendorgate_trail_writable 0"), "{metrics}");
}

#[tokio::test]
async fn ten_thousand_concurrent_requests_make_ten_thousand_chained_records() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::Two);
    let mut tasks = vec![];
    for t in 0..50 {
        let client = client.clone();
        let reqs: Vec<_> = (0..200)
            .map(|i| proxy.get(&format!("/api/v2/tickets/{}", (t * 200 + i) % 1000 + 1)))
            .collect();
        tasks.push(tokio::spawn(async move {
            for r in reqs {
                let (parts, _) = send(&client, r).await;
                assert_eq!(parts.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    assert_eq!(recs.len(), 10_000);
    let ids: std::collections::HashSet<_> = recs
        .iter()
        .map(|r| get(r, "http.request.id").to_string())
        .collect();
    assert_eq!(ids.len(), 10_000, "one record per request, none twice");
    let out = vendorgate(&[
        "audit",
        "verify",
        proxy.dir.path().join("decisions.jsonl").to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("intact: 10000 records, seq 1–10000"),
        "{:?}",
        out
    );
}

#[tokio::test]
async fn reviewers_query_summarize_and_explain() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);
    for _ in 0..3 {
        send(&client, proxy.get("/__mock/stream?bytes=1000")).await;
    }
    send(&client, get_unauth(&proxy.url("/api/v2/tickets/1"))).await;
    let metrics = admin_text(proxy.admin, "/metrics").await;
    check_exposition(&metrics);
    assert!(
        metrics.contains(
            "vendorgate_requests_total{decision=\"allow\",reason=\"allowed\",vendor=\"acme\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("vendorgate_egress_bytes_total{vendor=\"acme\",account=\"agent-1\"} 3000"),
        "{metrics}"
    );
    // One signature check for the three requests carrying the same token; the tokenless one
    // never reaches the cache.
    for line in [
        "vendorgate_token_cache_misses_total 1",
        "vendorgate_token_cache_hits_total 2",
        "vendorgate_token_cache_entries 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    stop(&mut proxy).await;
    let log = proxy.dir.path().join("decisions.jsonl");
    let log = log.to_str().unwrap();

    let out = vendorgate(&["audit", "query", log, "--decision", "deny"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.lines().nth(1).unwrap().contains("token_missing"),
        "{table}"
    );
    let out = vendorgate(&[
        "audit",
        "query",
        log,
        "--account",
        "agent-1",
        "--since",
        "1h",
        "--json",
    ]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let out = vendorgate(&[
        "audit",
        "query",
        log,
        "--until",
        "2000-01-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 0);

    let out = vendorgate(&["audit", "summary", log]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("acme / agent-1")
            && summary.contains("requests   3")
            && summary.contains("egress     2.9 KiB"),
        "{summary}"
    );
    assert!(
        summary.contains("(unauthenticated)") && summary.contains("token_missing 1"),
        "{summary}"
    );
    assert!(summary.contains("127.0.0.0/24"), "{summary}");

    // explain: allowed with a token, refused without.
    let config = proxy.config_path();
    let token_file = proxy.dir.path().join("token");
    std::fs::write(&token_file, &proxy.token).unwrap();
    let out = vendorgate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--path",
        "/api/v2/tickets/1",
        "--token",
        token_file.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("decision   ALLOW via everything")
            && text.contains("account agent-1 of vendor acme"),
        "{text}"
    );
    let out = vendorgate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--path",
        "/api/v2/tickets/1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DENY token_missing"));
    let out = vendorgate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--path",
        "/api/%2e%2e/%2e%2e/x",
        "--token",
        token_file.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("DENY path_ambiguous"));
}

/// The Prometheus text exposition format, checked line by line: every sample belongs to a family
/// announced by # HELP and # TYPE, names and labels are well formed, values are numbers.
fn check_exposition(text: &str) {
    let mut declared: std::collections::HashMap<String, String> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| declared.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            declared.contains_key(family),
            "sample before its # TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(
                    k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && v.starts_with('"'),
                    "{line}"
                );
            }
        }
    }
    assert!(declared.len() >= 8);
}

#[allow(dead_code)]
fn method() -> Method {
    Method::GET
}

/// An OTLP/HTTP receiver (protobuf, decoded with the spec's own message types) on a loopback
/// port, keeping every export it is sent and the `x-api-key` header it came with.
struct OtlpReceiver {
    addr: std::net::SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    /// A status to answer every export with instead of taking it (0: take them).
    refuse: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl OtlpReceiver {
    async fn start() -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>> = Default::default();
        let refuse: std::sync::Arc<std::sync::atomic::AtomicU16> = Default::default();
        let (sink, refusing) = (got.clone(), refuse.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (sink, refusing) = (sink.clone(), refusing.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            let refused = refusing.load(std::sync::atomic::Ordering::Relaxed);
                            async move {
                                let path = req.uri().path().to_string();
                                let content_type = req
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string();
                                let json = content_type == "application/json";
                                let ok = json || content_type == "application/x-protobuf";
                                let key = req
                                    .headers()
                                    .get("x-api-key")
                                    .map(|v| v.to_str().unwrap_or("").to_string());
                                let gzip = req
                                    .headers()
                                    .get("content-encoding")
                                    .is_some_and(|v| v == "gzip");
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let body = if gzip {
                                    use std::io::Read;
                                    let mut out = Vec::new();
                                    flate2::read::GzDecoder::new(&body[..])
                                        .read_to_end(&mut out)
                                        .unwrap();
                                    out.into()
                                } else {
                                    body
                                };
                                let status = match decode(&path, &body, json) {
                                    _ if refused != 0 => refused,
                                    Some(mut v) if ok => {
                                        v["x-api-key"] = serde_json::json!(key);
                                        v["gzip"] = serde_json::json!(gzip);
                                        v["json"] = serde_json::json!(json);
                                        sink.lock().unwrap().push((path, v));
                                        200
                                    }
                                    _ => 400,
                                };
                                let mut resp = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"{}"),
                                ));
                                *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        OtlpReceiver { addr, got, refuse }
    }

    fn exports(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// An OTLP/HTTP body (protobuf, or OTLP/JSON when `json`) decoded as the spec's messages, as
/// JSON (the OTLP JSON mapping).
fn decode(path: &str, body: &[u8], json: bool) -> Option<Value> {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    fn read<M: prost::Message + Default + serde::de::DeserializeOwned + serde::Serialize>(
        body: &[u8],
        json: bool,
    ) -> Option<Value> {
        let message: M = if json {
            serde_json::from_slice(body).ok()?
        } else {
            M::decode(body).ok()?
        };
        serde_json::to_value(message).ok()
    }
    match path {
        "/v1/traces" => read::<ExportTraceServiceRequest>(body, json),
        "/v1/metrics" => read::<ExportMetricsServiceRequest>(body, json),
        "/v1/logs" => read::<ExportLogsServiceRequest>(body, json),
        _ => None,
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| &kv["value"])
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn spans_and_metrics_reach_an_otlp_receiver_and_the_trace_continues_upstream() {
    let receiver = OtlpReceiver::start().await;
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let policy = format!("{OPEN_POLICY}\n[otel]\nendpoint = \"http://{}\"\nexport_interval = \"1s\"\nservice_name = \"vg-test\"\n", receiver.addr);
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&policy));
    let client = client(&pki, Http::One);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut req = proxy.get("/__mock/echo");
    req.headers_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let (_, echo) = send_json(&client, req).await;
    let upstream_parent = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        upstream_parent.starts_with(&format!("00-{trace_id}-")) && upstream_parent.ends_with("-01"),
        "{upstream_parent}"
    );
    let our_span = upstream_parent.split('-').nth(2).unwrap().to_string();
    assert_ne!(our_span, caller_span);
    send(&client, get_unauth(&proxy.url("/api/v2/tickets/1"))).await;

    let mut spans: Vec<Value> = vec![];
    for _ in 0..50 {
        spans = receiver
            .exports("/v1/traces")
            .iter()
            .flat_map(|e| {
                e["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if spans.len() >= 2 && !receiver.exports("/v1/metrics").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let traces = receiver.exports("/v1/traces");
    let resource = &traces[0]["resourceSpans"][0]["resource"];
    assert_eq!(attr(resource, "service.name")["stringValue"], "vg-test");
    let allowed = spans
        .iter()
        .find(|s| s["traceId"] == trace_id)
        .unwrap_or_else(|| panic!("the allowed request's span: {traces:#?}"));
    assert_eq!(allowed["parentSpanId"], caller_span);
    assert_eq!(allowed["spanId"], our_span.as_str());
    assert_eq!(allowed["kind"], 2);
    assert_eq!(attr(allowed, "vendorgate.decision")["stringValue"], "allow");
    assert_eq!(attr(allowed, "vendorgate.vendor")["stringValue"], "acme");
    assert_eq!(
        attr(allowed, "vendorgate.account")["stringValue"],
        "agent-1"
    );
    assert_eq!(
        attr(allowed, "http.response.status_code")["intValue"],
        "200"
    );
    let denied = spans
        .iter()
        .find(|s| attr(s, "vendorgate.reason")["stringValue"] == "token_missing")
        .expect("the denied request's span");
    assert_eq!(denied["status"]["code"], 2);
    assert_eq!(attr(denied, "vendorgate.decision")["stringValue"], "deny");

    let metrics = receiver.exports("/v1/metrics");
    let names: Vec<String> = metrics
        .iter()
        .flat_map(|m| {
            m["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "vendorgate.requests",
        "vendorgate.egress.bytes",
        "vendorgate.request.duration",
    ] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
}

/// Configured by the standard variables alone (no endpoint in `[otel]`): the endpoint, a SaaS
/// collector's API key header, gzip and the service name come from `OTEL_*`; with `decisions = true`
/// every decision record reaches the collector as a log record, its line (chain fields and all)
/// as the body, the same as in the file trail, and its fields as attributes.
#[tokio::test]
async fn decision_records_reach_an_otlp_receiver_as_log_records_set_up_by_the_otel_variables() {
    exported_by_the_variables(&[], &[]).await;
}

/// The same in OTLP/JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`), but for the spans, which a
/// signal's own variable keeps in protobuf.
#[tokio::test]
async fn otlp_json_is_spoken_when_the_protocol_variables_ask_for_it() {
    exported_by_the_variables(
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ],
        &["/v1/logs", "/v1/metrics"],
    )
    .await;
}

/// The export set up by the variables alone, `extra` with them; the exports on `json` paths
/// must come as OTLP/JSON, the others as protobuf.
async fn exported_by_the_variables(extra: &[(&str, &str)], json: &[&str]) {
    let receiver = OtlpReceiver::start().await;
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let policy = format!("{OPEN_POLICY}\n[otel]\ndecisions = true\n");
    let mut config = ProxyConfig::to(&upstream)
        .policy(&policy)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{}", receiver.addr),
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=collector-secret")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .env("OTEL_SERVICE_NAME", "vg-from-env")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500");
    for (name, value) in extra {
        config = config.env(name, value);
    }
    let mut proxy = Proxy::start(&pki, config);
    let client = client(&pki, Http::One);
    send(&client, proxy.get("/api/v2/tickets/1")).await;
    send(&client, get_unauth(&proxy.url("/api/v2/tickets/2"))).await;
    let log_records = |receiver: &OtlpReceiver| -> Vec<Value> {
        receiver
            .exports("/v1/logs")
            .iter()
            .flat_map(|e| {
                e["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    for _ in 0..50 {
        if log_records(&receiver).len() >= 2 && !receiver.exports("/v1/metrics").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = log_records(&receiver);
    stop(&mut proxy).await;
    let lines: Vec<String> = std::fs::read_to_string(proxy.dir.path().join("decisions.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let requests: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"action\":\"http_request\""))
        .collect();
    assert_eq!(requests.len(), 2, "{lines:#?}");
    for line in requests {
        let record: Value = serde_json::from_str(line).unwrap();
        let copy = logged
            .iter()
            .find(|r| r["body"]["stringValue"] == line.as_str())
            .unwrap_or_else(|| panic!("{line} not among {logged:#?}"));
        assert_eq!(copy["eventName"], "vendorgate.decision");
        assert_eq!(attr(copy, "seq")["intValue"], record["seq"].to_string());
        assert_eq!(attr(copy, "hash")["stringValue"], record["hash"]);
        assert_eq!(attr(copy, "prev_hash")["stringValue"], record["prev_hash"]);
    }
    for path in ["/v1/logs", "/v1/traces", "/v1/metrics"] {
        let exports = receiver.exports(path);
        assert!(!exports.is_empty(), "nothing on {path}");
        for e in exports {
            assert_eq!(e["x-api-key"], "collector-secret", "{path}");
            assert_eq!(e["gzip"], true, "{path}");
            assert_eq!(e["json"], json.contains(&path), "{path}");
        }
    }
    let traces = receiver.exports("/v1/traces");
    let resource = &traces[0]["resourceSpans"][0]["resource"];
    assert_eq!(attr(resource, "service.name")["stringValue"], "vg-from-env");
}

/// What an OTel test runs against: a receiver, and a proxy (with its upstream) exporting to it
/// with metrics every `every` and `env` set.
struct Exporting {
    receiver: OtlpReceiver,
    pki: Pki,
    _upstream: vendorgate_mock::MockUpstream,
    proxy: Proxy,
}

async fn exporting(every: &str, env: &[(&str, &str)]) -> Exporting {
    let receiver = OtlpReceiver::start().await;
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let policy = format!(
        "{OPEN_POLICY}\n[otel]\nendpoint = \"http://{}\"\nexport_interval = \"{every}\"\n",
        receiver.addr
    );
    let mut config = ProxyConfig::to(&upstream).policy(&policy);
    for (name, value) in env {
        config = config.env(name, value);
    }
    let proxy = Proxy::start(&pki, config);
    proxy.ready().await;
    Exporting {
        receiver,
        pki,
        _upstream: upstream,
        proxy,
    }
}

/// `OTEL_SDK_DISABLED=true` turns the export off even with an endpoint in `[otel]` (the same
/// config exports when the variable is absent: the test above).
#[tokio::test]
async fn otel_sdk_disabled_turns_the_export_off() {
    let Exporting {
        receiver,
        pki,
        mut proxy,
        _upstream,
    } = exporting("1s", &[("OTEL_SDK_DISABLED", "true")]).await;
    let client = client(&pki, Http::One);
    send(&client, proxy.get("/api/v2/tickets/1")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop(&mut proxy).await;
    assert!(receiver.got.lock().unwrap().is_empty());
}

/// The sampler and resource variables, as the SDK reads them: `OTEL_TRACES_SAMPLER=always_off`
/// sends no span while the metrics go on, carrying `OTEL_RESOURCE_ATTRIBUTES`.
#[tokio::test]
async fn the_sampler_and_resource_variables_apply() {
    let Exporting {
        receiver,
        pki,
        mut proxy,
        _upstream,
    } = exporting(
        "300ms",
        &[
            ("OTEL_TRACES_SAMPLER", "always_off"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=e2e,team=support-ops",
            ),
        ],
    )
    .await;
    let client = client(&pki, Http::One);
    for _ in 0..3 {
        send(&client, proxy.get("/api/v2/tickets/1")).await;
    }
    for _ in 0..50 {
        if !receiver.exports("/v1/metrics").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Spans are batched every second: give them the time to come if they were going to.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(&mut proxy).await;
    assert!(receiver.exports("/v1/traces").is_empty(), "spans sent");
    let metrics = receiver.exports("/v1/metrics");
    let resource = &metrics.first().expect("no metrics")["resourceMetrics"][0]["resource"];
    assert_eq!(
        attr(resource, "deployment.environment")["stringValue"],
        "e2e"
    );
    assert_eq!(attr(resource, "team")["stringValue"], "support-ops");
    assert_eq!(attr(resource, "service.name")["stringValue"], "vendorgate");
}

/// A protocol variable asking for gRPC, which this build does not speak: `check`
/// names the variable and what to do, and `run` refuses to start rather than send protobuf to a
/// gRPC port batch after failing batch. `http/protobuf` itself is accepted.
#[tokio::test]
async fn an_otlp_protocol_this_build_cannot_speak_is_refused_at_start() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let policy = format!("{OPEN_POLICY}\n[otel]\nendpoint = \"http://127.0.0.1:4317\"\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendorgate.toml");
    std::fs::write(
        &path,
        ProxyConfig::to(&upstream).policy(&policy).render(&pki),
    )
    .unwrap();
    let with = |command: &str, variable: &str, value: &str| {
        let mut child = Command::new(BIN)
            .args([command, "--config", path.to_str().unwrap()])
            .env(variable, value)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{command} with {variable}={value} kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    for (variable, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
    ] {
        for command in ["check", "run"] {
            let out = with(command, variable, value);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command}: {stderr}");
            assert!(
                stderr.contains(&format!("{variable}={value}"))
                    && stderr.contains("http/protobuf or http/json only"),
                "{command}: {stderr}"
            );
        }
    }
    for value in ["http/protobuf", "http/json"] {
        let out = with("check", "OTEL_EXPORTER_OTLP_PROTOCOL", value);
        assert!(
            out.status.success(),
            "{value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A collector refusing every batch (401, as for a wrong API key) is seen, not only by the
/// collector: one warning naming the endpoint and the answer, then the failures counted in
/// `vendorgate_otel_export_failures_total`; once it takes them again, one line says so and
/// `vendorgate_otel_exports_total` counts on. Neither line carries the API key.
#[tokio::test]
async fn a_collector_refusing_the_exports_is_seen_in_the_log_and_the_metrics() {
    use std::sync::atomic::Ordering;
    let Exporting {
        receiver,
        pki,
        mut proxy,
        _upstream,
    } = exporting(
        "300ms",
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=wrong-secret")],
    )
    .await;
    // Nothing is exported before the first request.
    receiver.refuse.store(401, Ordering::Relaxed);
    let client = client(&pki, Http::One);
    send(&client, proxy.get("/api/v2/tickets/1")).await;
    let until = |name: &'static str, at_least: f64| {
        let proxy = &proxy;
        async move {
            for _ in 0..100 {
                if metric(proxy, name).await >= at_least {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{name} never reached {at_least}: {}", proxy.log());
        }
    };
    until("vendorgate_otel_export_failures_total", 3.0).await;
    assert_eq!(metric(&proxy, "vendorgate_otel_exports_total").await, 0.0);
    let log = proxy.log();
    let warned = "OTLP export failed: answered 401";
    assert_eq!(log.matches(warned).count(), 1, "{log}");
    assert!(log.contains(&receiver.addr.to_string()), "{log}");

    receiver.refuse.store(0, Ordering::Relaxed);
    send(&client, proxy.get("/api/v2/tickets/1")).await;
    until("vendorgate_otel_exports_total", 1.0).await;
    let log = proxy.log();
    assert_eq!(
        log.matches("OTLP export accepted again").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("wrong-secret"), "{log}");
    stop(&mut proxy).await;
}

#[tokio::test]
async fn the_html_report_is_one_self_contained_page_with_three_charts() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let client = client(&pki, Http::One);
    for _ in 0..5 {
        send(&client, proxy.get("/__mock/stream?bytes=20000")).await;
    }
    send(&client, get_unauth(&proxy.url("/api/v2/tickets/1"))).await;
    stop(&mut proxy).await;
    let out_path = proxy.dir.path().join("report.html");
    let out = vendorgate(&[
        "audit",
        "report",
        proxy.dir.path().join("decisions.jsonl").to_str().unwrap(),
        "--html",
        out_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 3);
    for caption in [
        "Egress per account over time",
        "Denials over time, by reason",
        "Heaviest exporters",
    ] {
        assert!(html.contains(caption), "{caption}");
    }
    assert!(
        html.contains("acme/agent-1")
            && html.contains("97.7 KiB")
            && html.contains("token_missing (1)"),
        "{html}"
    );
    // Opens with no network: nothing is fetched from anywhere.
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "{external} in the report");
    }
}
