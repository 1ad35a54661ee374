//! Micro-benchmarks of the per-request policy work, and of how it scales with the policy's size.
//!
//!     cargo bench -p vendorgate-policy --bench policy
//!
//! Each group runs the same operation on a small policy (10 CIDRs, 10 routes) and on a large one
//! (10,000 CIDRs, 1,000 routes): the large one must not cost a user-visible amount more, because
//! lookups are binary searches over sorted ranges and a trie walk, not scans.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use vendorgate_mock::idp::{DevIdp, KeyKind};
use vendorgate_policy::path::normalize;
use vendorgate_policy::{Arrival, Config, Facts, KeySet, Policy, Presented};

const NOW: u64 = 1_800_000_000;

/// A policy with `cidrs` networks in the vendor's allow-list (the client's own among them) and
/// `routes` routes (the matched one among them, in the middle).
fn policy_text(cidrs: usize, routes: usize) -> String {
    // Scattered /28s (a multiplicative hash of the index), so that they cannot merge into a few
    // ranges: 10,000 networks stay 10,000 entries to search.
    let mut nets: Vec<String> = (0..cidrs.saturating_sub(1) as u32)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761) & 0x7eff_fff0);
            format!("\"{a}/28\"")
        })
        .collect();
    nets.insert(nets.len() / 2, "\"127.0.0.2/32\"".into());
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "server.pem"
tls_key = "server-key.pem"

[upstream]
url = "https://acme.zendesk.com"

[identity]
issuer = "https://idp.test"
audiences = ["vendorgate"]
jwks_file = "jwks.json"

[[vendors]]
id = "acme"
ip_allow = [{}]
classes = ["read"]
"#,
        nets.join(", ")
    );
    for i in 0..routes {
        let path = if i == routes / 2 {
            "/api/v2/tickets/{id}".to_string()
        } else {
            format!("/api/v2/resource-{i}/{{id}}/items/**")
        };
        text.push_str(&format!(
            "\n[[routes]]\nid = \"r{i}\"\nmethods = [\"GET\"]\npath = \"{path}\"\nclass = \"read\"\n"
        ));
    }
    text
}

fn compile(cidrs: usize, routes: usize) -> Policy {
    Config::from_toml(&policy_text(cidrs, routes), "bench.toml")
        .expect("bench policy compiles")
        .policy
}

const SIZES: [(&str, usize, usize); 2] = [("small", 10, 10), ("large", 10_000, 1_000)];

fn path_normalization(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    for (name, path) in [
        ("clean", "/api/v2/tickets/12345.json"),
        ("escaped", "/api/v2/users/%7Eagent/./tickets//12345%2Ejson"),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), path, |b, p| {
            b.iter(|| normalize(black_box(p)))
        });
    }
    g.finish();
}

fn cidr_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("cidr_lookup");
    let hit: IpAddr = "127.0.0.2".parse().unwrap();
    let miss: IpAddr = "192.0.2.7".parse().unwrap();
    for (name, cidrs, routes) in SIZES {
        let policy = compile(cidrs, routes);
        let ips = &policy.vendors[0].ips;
        assert!(ips.contains(hit) && !ips.contains(miss));
        g.bench_function(BenchmarkId::new("hit", name), |b| {
            b.iter(|| ips.contains(black_box(hit)))
        });
        g.bench_function(BenchmarkId::new("miss", name), |b| {
            b.iter(|| ips.contains(black_box(miss)))
        });
    }
    g.finish();
}

fn route_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_match");
    for (name, cidrs, routes) in SIZES {
        let policy = compile(cidrs, routes);
        assert!(policy
            .match_route(&Method::GET, "/api/v2/tickets/42.json")
            .is_some());
        g.bench_function(name, |b| {
            b.iter(|| policy.match_route(&Method::GET, black_box("/api/v2/tickets/42.json")))
        });
    }
    g.finish();
}

/// The whole per-request decision once the token is verified (the warm path): normalize, client
/// address, allow-lists, expiry, MFA, route and class.
fn evaluation(c: &mut Criterion) {
    let idp = DevIdp::new("https://idp.test");
    let keys = KeySet::from_jwks(&idp.jwks()).unwrap();
    let claims = idp.agent_claims("vendorgate", "agent-7", "acme", NOW - 60, 3600);
    let token = idp.mint(KeyKind::Es256, &claims);
    let peer: IpAddr = "127.0.0.2".parse().unwrap();
    let mut g = c.benchmark_group("evaluate");
    for (name, cidrs, routes) in SIZES {
        let policy = compile(cidrs, routes);
        let token_claims = policy.verify_token(&token, &keys, NOW).unwrap();
        let verified = policy.standing(&token_claims);
        let locks = vendorgate_policy::Controls::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                let arrival = Arrival {
                    peer: black_box(peer),
                    forwarded_for: None,
                    path: black_box("/api/v2/tickets/42.json"),
                };
                let admission = policy.admit(&arrival, &mut ()).unwrap();
                let facts = Facts {
                    method: &Method::GET,
                    admission: &admission,
                    token: Presented::Verified(&verified, &token_claims),
                    controls: &locks,
                };
                policy.decide(&facts, NOW, &mut ()).unwrap()
            })
        });
    }
    g.finish();

    // The cold path's extra: one ES256 signature check and the claims, per new token.
    let policy = compile(10, 10);
    c.bench_function("verify_token/es256", |b| {
        b.iter(|| policy.verify_token(black_box(&token), &keys, NOW).unwrap())
    });
}

/// What `[detect]` adds to an allowed request: its record ids, the tracker's judgement, and one
/// response chunk counted (the proxy counts each chunk; a 2 KiB response is one).
fn detection(c: &mut Criterion) {
    use std::sync::Mutex;
    use vendorgate_policy::detect::{record_ids, DetectRules, PeerPool, TimeZone, Tracker};
    let rules = DetectRules {
        enabled: true,
        ..DetectRules::default()
    };
    let zone = TimeZone::get("Europe/Lisbon").unwrap();
    let peers = Mutex::new(PeerPool::default());
    let tracker = Mutex::new(Tracker::new(NOW, &zone, &peers, &rules));
    let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let mut now = NOW;
    c.bench_function("detect/request_and_chunk", |b| {
        b.iter(|| {
            now += 1;
            let ids = record_ids(black_box("/api/v2/tickets/4711.json"), None);
            let mut t = tracker.lock().unwrap();
            let found = t.request(now, &zone, &peers, &rules, false, ip, &ids);
            let chunk = t.bytes(now, 2048, &zone, &peers, &rules);
            (found.len(), chunk.is_some())
        })
    });
}

criterion_group!(
    benches,
    path_normalization,
    cidr_lookup,
    route_match,
    evaluation,
    detection
);
criterion_main!(benches);
