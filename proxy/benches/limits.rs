//! What sessions, rate limits and byte metering cost on the request path, in memory and in Redis.
//!
//! Runs the proxy in-process in front of the mock upstream and measures requests per second and
//! latency for the same request stream under four configurations: policy only (no limits), limits in
//! memory, limits in a real redis-server (started here on a free loopback port), and, for
//! reference, the raw state operations. Prints figures and ratios.
//!
//!     cargo bench -p vendorgate --bench limits
//!
//! Everything shares this machine's cores (client, proxy, upstream, Redis): compare ratios, not
//! absolute numbers.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use vendorgate_certs::dev::{DevPki, LOCAL_NAMES};
use vendorgate_certs::{client_config, server_config, Alpn, ReloadableCert};
use vendorgate_mock::idp::{self, DevIdp, KeyKind};
use vendorgate_mock::{MockOptions, MockUpstream};

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 32;

fn policy(jwks: &str, limits: bool, state: &str) -> String {
    let limits = if limits {
        r#"
[[limits.rate]]
id = "reads"
per = "account"
classes = ["read"]
requests = 1000000
period = "1s"

[[limits.egress]]
id = "egress"
per = "account"
max = "100GiB"
window = "1h"

[[limits.egress]]
id = "egress-vendor"
per = "vendor"
max = "1000GiB"
window = "1d"
"#
    } else {
        ""
    };
    format!(
        r#"
[identity]
issuer = "https://idp.bench"
audiences = ["vendorgate"]
jwks_file = "{jwks}"

[state]
{state}

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8"]
classes = ["read"]

[[routes]]
path = "/**"
class = "read"
{limits}"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        std::thread::sleep(Duration::from_millis(300));
        Some(Redis(child, port))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    name: &'static str,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn run(
    name: &'static str,
    dir: &std::path::Path,
    text: String,
    ca: &std::path::Path,
    token: &str,
) -> Run {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let config = vendorgate::load_config(&path).unwrap();
    let running = vendorgate::start(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tls = client_config(Some(ca), Alpn::Http11).unwrap();
    tls.alpn_protocols.clear();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(https);
    let url: http::Uri = format!(
        "https://localhost:{}/__mock/static/2k",
        running.proxy_addr.port()
    )
    .parse()
    .unwrap();
    let auth = format!("Bearer {token}");
    let one = |client: Client<_, Empty<Bytes>>, url: http::Uri, auth: String| async move {
        let req = http::Request::get(url)
            .header("authorization", auth)
            .body(Empty::new())
            .unwrap();
        let started = Instant::now();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        started.elapsed()
    };
    for _ in 0..200 {
        one(client.clone(), url.clone(), auth.clone()).await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(REQUESTS / CONCURRENCY);
            for _ in 0..REQUESTS / CONCURRENCY {
                lat.push(one(client.clone(), url.clone(), auth.clone()).await);
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    running.shutdown();
    running.wait().await;
    Run {
        name,
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: lat[lat.len() / 2].as_secs_f64() * 1e6,
        p99_us: lat[lat.len() * 99 / 100].as_secs_f64() * 1e6,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(LOCAL_NAMES).unwrap().write_to(&dir.path().join("certs")).unwrap();
        let idp = DevIdp::new("https://idp.bench");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, idp.jwks()).unwrap();
        let token = idp.mint(KeyKind::Es256, &idp.agent_claims("vendorgate", "bench-agent", "acme", idp::now(), 3600));
        let cert = Arc::new(ReloadableCert::load(&pki.server_cert, &pki.server_key).unwrap());
        let mock = MockUpstream::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(Arc::new(server_config(cert, Alpn::H2AndHttp11).unwrap())),
            MockOptions::default(),
        )
        .await
        .unwrap();
        let head = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"https://127.0.0.1:{}\"\nca_bundle = {:?}\n[log]\nlevel = \"error\"\n",
            pki.server_cert, pki.server_key, mock.addr().port(), pki.ca_cert
        );
        let jwks = jwks.display().to_string();
        let redis = Redis::start();
        let mut runs = vec![];
        // Interleaved rounds so drift in machine load spreads over every case.
        for _round in 0..3 {
            runs.push(run("policy only", dir.path(), format!("{head}{}", policy(&jwks, false, "")), &pki.ca_cert, &token).await);
            runs.push(run("limits, memory", dir.path(), format!("{head}{}", policy(&jwks, true, "")), &pki.ca_cert, &token).await);
            if let Some(r) = &redis {
                let state = format!("backend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}/0\"", r.1);
                runs.push(run("limits, redis", dir.path(), format!("{head}{}", policy(&jwks, true, &state)), &pki.ca_cert, &token).await);
            }
        }
        println!("\n{REQUESTS} requests of 2 KiB over HTTP/2+TLS, {CONCURRENCY} concurrent, medians of 3 interleaved rounds");
        println!("{:<18} {:>10} {:>10} {:>10} {:>12}", "case", "req/s", "p50 µs", "p99 µs", "vs policy");
        let median = |name: &str, f: fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().filter(|r| r.name == name).map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let base = median("policy only", |r| r.rps);
        for name in ["policy only", "limits, memory", "limits, redis"] {
            let rps = median(name, |r| r.rps);
            if rps.is_nan() {
                println!("{name:<18} (redis-server not installed)");
                continue;
            }
            println!(
                "{name:<18} {rps:>10.0} {:>10.0} {:>10.0} {:>11.2}x",
                median(name, |r| r.p50_us),
                median(name, |r| r.p99_us),
                rps / base
            );
        }
        mock.stop().await;
    });
}
