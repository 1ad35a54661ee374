//! Three replicas (127.0.0.2, .3, .4) sharing one redis-server: an export limit, an egress cap
//! and an agent's session hold across them within the bounds `state::leases` states, and most
//! requests cost no round trip to Redis.

use std::time::Duration;

use http::Method;
use vendorgate_certs::Alpn;

use crate::limits::{download, req, status_and_reason, token, MIB};
use crate::support::*;

const REPLICAS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// Where the replicas keep their shared state: one server, or a cluster.
enum Shared<'a> {
    One(&'a RedisServer),
    Cluster(&'a RedisCluster),
    /// `[state]` lines of the test's own.
    Lines(String),
}

impl Shared<'_> {
    fn toml(&self) -> String {
        match self {
            Shared::One(r) => format!("redis_url = \"{}\"", r.url()),
            Shared::Cluster(c) => format!("redis_cluster = {}", c.urls()),
            Shared::Lines(lines) => lines.clone(),
        }
    }

    fn scripts_run(&self) -> u64 {
        let calls = |f: &dyn Fn(&str) -> u64| f("evalsha") + f("eval");
        match self {
            Shared::One(r) => calls(&|c| r.calls(c)),
            Shared::Cluster(c) => calls(&|x| c.calls(x)),
            Shared::Lines(_) => unreachable!("not counted"),
        }
    }
}

/// 32 exports an hour per agent (no refill while the test runs: exactly the burst), 2 MiB out
/// per agent per hour, a one-second idle timeout; state in `redis`, refused if it fails.
fn policy(redis: &Shared) -> String {
    policy_idle(redis, "1s")
}

fn policy_idle(redis: &Shared, idle: &str) -> String {
    format!(
        r#"
[identity]
issuer = "https://idp.e2e.test"
audiences = ["vendorgate"]
jwks_file = "@JWKS@"

[sessions]
idle_timeout = "{idle}"

[state]
backend = "redis"
{}
on_state_error = "deny"
timeout = "300ms"

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8"]
classes = ["read", "export"]

[[routes]]
id = "incremental"
methods = ["GET"]
path = "/api/v2/incremental/**"
class = "export"

[[routes]]
id = "everything-else"
path = "/**"
class = "read"

[[limits.rate]]
id = "exports"
per = "account"
classes = ["export"]
requests = 32
period = "1h"

[[limits.rate]]
id = "reads"
per = "account"
classes = ["read"]
requests = 100000
period = "1h"

[[limits.egress]]
id = "hourly"
per = "account"
max = "2MiB"
window = "1h"
"#,
        redis.toml()
    )
}

async fn replicas(pki: &Pki, redis: &Shared<'_>) -> Vec<Proxy> {
    let upstream = Box::leak(Box::new(mock(pki, Alpn::H2AndHttp11).await));
    replicas_of(pki, redis, upstream).await
}

async fn replicas_of(
    pki: &Pki,
    redis: &Shared<'_>,
    upstream: &vendorgate_mock::MockUpstream,
) -> Vec<Proxy> {
    replicas_with(pki, redis, upstream, &policy(redis)).await
}

async fn replicas_with(
    pki: &Pki,
    redis: &Shared<'_>,
    upstream: &vendorgate_mock::MockUpstream,
    policy: &str,
) -> Vec<Proxy> {
    let proxies: Vec<Proxy> = REPLICAS
        .iter()
        .map(|ip| Proxy::start(pki, ProxyConfig::to(upstream).listen(ip).policy(policy)))
        .collect();
    for (p, ip) in proxies.iter().zip(REPLICAS) {
        p.ready().await;
        assert_eq!(p.addr.ip().to_string(), ip);
        let cluster = matches!(redis, Shared::Cluster(_));
        let said = format!("connected to redis cluster={cluster}");
        assert!(p.log().contains(&said), "{}", p.log());
        let _ = upstream;
    }
    proxies
}

fn pki() -> Pki {
    Pki::with_names(&[
        "localhost",
        "127.0.0.1",
        REPLICAS[0],
        REPLICAS[1],
        REPLICAS[2],
    ])
}

#[tokio::test]
async fn three_replicas_hold_one_export_limit_and_one_egress_cap() {
    let redis = RedisServer::start();
    one_export_limit_and_one_egress_cap(&Shared::One(&redis)).await;
}

/// The same on a three-master Redis Cluster: every script's keys in one slot (the vendor's hash
/// tag), or Cluster would refuse them.
#[tokio::test]
async fn three_replicas_on_a_redis_cluster_hold_one_export_limit_and_one_egress_cap() {
    let cluster = RedisCluster::start();
    one_export_limit_and_one_egress_cap(&Shared::Cluster(&cluster)).await;
}

async fn one_export_limit_and_one_egress_cap(redis: &Shared<'_>) {
    let pki = pki();
    let proxies = replicas(&pki, redis).await;
    let client = client(&pki, Http::One);
    let agent = token(&pki, "exporter");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";

    // Exports, eight at a time, round the three replicas: exactly the 32 of the limit pass, in
    // all (batches leased by one replica are spent there or given back, never granted twice).
    let mut admitted = 0;
    let mut refused = 0;
    for round in 0..10 {
        let sends = (0..8).map(|i| {
            let proxy = &proxies[(round * 8 + i) % 3];
            status_and_reason(&client, req(proxy, Method::GET, export, &agent))
        });
        for (status, reason, _) in futures_util::future::join_all(sends).await {
            match status {
                200 => admitted += 1,
                429 => {
                    assert_eq!(reason, "export_rate_limited");
                    refused += 1
                }
                other => panic!("{other} {reason}"),
            }
        }
    }
    assert_eq!((admitted, refused), (32, 48));

    // Reads lease their limit in batches: 300 reads ask Redis far fewer times than 300.
    let reader = token(&pki, "reader");
    let scripts_before = redis.scripts_run();
    for round in 0..30 {
        let sends = (0..10).map(|i| {
            let proxy = &proxies[(round * 10 + i) % 3];
            status_and_reason(
                &client,
                req(proxy, Method::GET, "/api/v2/tickets/1", &reader),
            )
        });
        for (status, reason, _) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200, "{reason}");
        }
    }
    let scripts = redis.scripts_run() - scripts_before;
    assert!(scripts < 100, "{scripts} scripts for 300 reads");

    // 2 MiB out, whichever replica streams it: 512 KiB downloads round the replicas until every
    // replica refuses. Never more than the cap; at most a slice (a 32nd of the cap) per replica
    // short of it, held by a replica when another ran out.
    let downloader = token(&pki, "downloader");
    let mut delivered = 0;
    let mut refusals = 0;
    for i in 0..12 {
        let proxy = &proxies[i % 3];
        let path = "/__mock/stream?bytes=524288&chunked=1";
        let (status, got, _) = download(&client, req(proxy, Method::GET, path, &downloader)).await;
        match status {
            200 => delivered += got,
            _ => refusals += 1,
        }
    }
    assert!(delivered <= 2 * MIB, "{delivered}");
    assert!(delivered + 3 * (2 * MIB / 32) >= 2 * MIB, "{delivered}");
    assert!(refusals >= 3, "every replica refuses at last: {refusals}");
}

#[tokio::test]
async fn an_agents_session_is_one_session_across_the_replicas() {
    let redis = RedisServer::start();
    one_session(&Shared::One(&redis)).await;
}

#[tokio::test]
async fn an_agents_session_is_one_session_across_the_replicas_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    one_session(&Shared::Cluster(&cluster)).await;
}

async fn one_session(redis: &Shared<'_>) {
    let pki = pki();
    let proxies = replicas(&pki, redis).await;
    let client = client(&pki, Http::One);
    let read = |p: &Proxy, t: &str| req(p, Method::GET, "/api/v2/tickets/1", t);

    // Busy on the first replica only, for longer than the idle timeout: its touches reach Redis
    // behind it, so the second does not find the session idle.
    let busy = token(&pki, "busy");
    for _ in 0..10 {
        assert_eq!(
            status_and_reason(&client, read(&proxies[0], &busy)).await.0,
            200
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for p in &proxies {
        let (status, reason, _) = status_and_reason(&client, read(p, &busy)).await;
        assert_eq!((status, reason.as_str()), (200, ""), "{}", p.addr);
    }

    // Idle past the timeout (and the grace for touches written behind): idle on every replica,
    // the one it was last seen on included.
    let idler = token(&pki, "idler");
    assert_eq!(
        status_and_reason(&client, read(&proxies[0], &idler))
            .await
            .0,
        200
    );
    assert_eq!(
        status_and_reason(&client, read(&proxies[1], &idler))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    for p in [&proxies[2], &proxies[1], &proxies[0]] {
        let (status, reason, _) = status_and_reason(&client, read(p, &idler)).await;
        assert_eq!(
            (status, reason.as_str()),
            (401, "session_idle_expired"),
            "{}",
            p.addr
        );
    }
}

/// Redis as production runs it: TLS (`rediss://`, trusting the CA in `state.redis_ca`) and an
/// ACL user whose password is read from a file (the default user is off). With the right
/// password the limits work; with a wrong one, or trusting a CA that did not sign Redis's
/// certificate, the proxy never gets in and `deny` refuses, saying why in its log.
#[tokio::test]
async fn redis_over_tls_as_an_acl_user() {
    let pki = pki();
    let (_redis, tls_port) = RedisServer::start_secured(&pki, "vendorgate", "s3cret-pw");
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, "s3cret-pw\n").unwrap();
    std::fs::write(&bad, "guess\n").unwrap();
    let stranger = Pki::new();
    let state = |password: &std::path::Path, ca: &std::path::Path| {
        Shared::Lines(format!(
            "redis_url = \"rediss://127.0.0.1:{tls_port}/0\"\nredis_username = \"vendorgate\"\n\
             redis_password_file = {password:?}\nredis_ca = {ca:?}"
        ))
    };
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let start =
        |shared: Shared| Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&policy(&shared)));
    let client = client(&pki, Http::One);
    let agent = token(&pki, "secured");
    let read = |p: &Proxy| req(p, Method::GET, "/api/v2/tickets/1", &agent);

    let proxy = start(state(&good, &pki.files.ca_cert));
    proxy.ready().await;
    assert_eq!(status_and_reason(&client, read(&proxy)).await.0, 200);
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";
    for _ in 0..32 {
        let r = req(&proxy, Method::GET, export, &agent);
        assert_eq!(status_and_reason(&client, r).await.0, 200);
    }
    let r = req(&proxy, Method::GET, export, &agent);
    assert_eq!(status_and_reason(&client, r).await.1, "export_rate_limited");

    let wrong_password = start(state(&bad, &pki.files.ca_cert));
    let wrong_ca = start(state(&good, &stranger.files.ca_cert));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (p, why) in [
        (&wrong_password, "authentication failed"),
        (&wrong_ca, "certificate"),
    ] {
        let (status, reason, _) = status_and_reason(&client, read(p)).await;
        assert_eq!(
            (status, reason.as_str()),
            (503, "state_unavailable"),
            "{}",
            p.log()
        );
        assert!(p.log().contains(why), "{why}: {}", p.log());
        assert!(!p.log().contains("s3cret-pw"), "the password in the log");
    }
}

/// Redis paused (a network partition, a stalled server), then killed and started again (its data
/// on disk): every replica notices within a beat and refuses (`deny`), is not ready meanwhile,
/// lets nothing through to the upstream, and serves again by itself when Redis is back. Across
/// it all the export limit never admits more than its 32 (a give-back lost in the outage may leave
/// it a few stricter: at most a batch per replica).
#[tokio::test]
async fn replicas_refuse_through_a_redis_pause_and_a_restart_and_recover_by_themselves() {
    let mut redis = RedisServer::start_durable();
    let pki = pki();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    // An idle timeout longer than the outages: the agent's session outlives them.
    let shared = Shared::One(&redis);
    let proxies = replicas_with(&pki, &shared, &upstream, &policy_idle(&shared, "5m")).await;
    let client = client(&pki, Http::One);
    let agent = token(&pki, "through-faults");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";
    let mut admitted = 0;
    let exports = |n: usize| {
        let sends: Vec<_> = (0..n)
            .map(|i| status_and_reason(&client, req(&proxies[i % 3], Method::GET, export, &agent)))
            .collect();
        async move {
            let mut ok = 0;
            for (status, reason, _) in futures_util::future::join_all(sends).await {
                match status {
                    200 => ok += 1,
                    429 | 503 => {}
                    other => panic!("{other} {reason}"),
                }
            }
            ok
        }
    };
    admitted += exports(10).await;
    assert_eq!(admitted, 10);

    for fault in ["pause", "restart"] {
        match fault {
            "pause" => redis.pause(),
            _ => redis.stop(),
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        let before = upstream.request_count();
        for p in &proxies {
            let (status, reason, _) =
                status_and_reason(&client, req(p, Method::GET, "/api/v2/tickets/1", &agent)).await;
            assert_eq!(
                (status, reason.as_str()),
                (503, "state_unavailable"),
                "{fault}"
            );
            let ready = admin_response(p.admin, "/readyz").await;
            assert!(ready.starts_with("HTTP/1.1 503"), "{fault}: {ready}");
        }
        assert_eq!(
            upstream.request_count(),
            before,
            "{fault}: nothing passes unmetered"
        );
        match fault {
            "pause" => redis.resume(),
            _ => redis.restart(),
        }
        for p in &proxies {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let r = req(p, Method::GET, "/api/v2/tickets/1", &agent);
                if status_and_reason(&client, r).await.0 == 200 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{fault}: {}", p.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        admitted += exports(9).await;
    }
    // Well past the limit now: the total stays within it.
    admitted += exports(30).await;
    assert!(
        (32 - 3 * 3..=32).contains(&admitted),
        "{admitted} exports admitted"
    );
}

/// Redis behind Sentinel: the replicas find the master through the sentinels; when it dies, the
/// sentinels promote its replica and every proxy replica finds the new master by itself (with
/// `deny`, refusing meanwhile, nothing else), and the export limit goes on from what the master
/// had replicated.
#[tokio::test]
async fn replicas_follow_a_sentinel_failover() {
    let redis = RedisSentinel::start();
    let pki = pki();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let shared = Shared::Lines(format!(
        "redis_sentinels = {}\nredis_sentinel_master = \"{SENTINEL_MASTER}\"",
        redis.urls()
    ));
    let proxies = replicas_with(&pki, &shared, &upstream, &policy_idle(&shared, "5m")).await;
    let replica = redis.replica.port;
    let redis = std::cell::RefCell::new(redis);
    let over = Failover {
        kill: Box::new(|| redis.borrow_mut().master.stop()),
        done: Box::new(|| redis.borrow().master_port() == replica),
    };
    exports_go_on_through(&pki, &proxies, over).await;
    for p in &proxies {
        assert!(
            p.log().contains("asking the sentinels again"),
            "{}",
            p.log()
        );
    }
}

/// Redis Cluster with a replica per master: the master holding the vendor's slot dies, the
/// cluster promotes its replica, and every proxy replica finds the slot's new owner by itself
/// (with `deny`, refusing meanwhile, nothing else), the export limit going on from what the
/// dead master had replicated.
#[tokio::test]
async fn replicas_follow_a_redis_cluster_failover() {
    let cluster = RedisCluster::start_with_replicas();
    let pki = pki();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let shared = Shared::Cluster(&cluster);
    let proxies = replicas_with(&pki, &shared, &upstream, &policy_idle(&shared, "5m")).await;
    let slot = cluster.slot("acme");
    let old = cluster
        .master_of(slot)
        .expect("a master for the vendor's slot");
    let cluster = std::cell::RefCell::new(cluster);
    let over = Failover {
        kill: Box::new(|| cluster.borrow_mut().node(old).stop()),
        done: Box::new(|| {
            cluster
                .borrow()
                .master_of(slot)
                .is_some_and(|new| new != old)
        }),
    };
    exports_go_on_through(&pki, &proxies, over).await;
}

/// How a test's Redis loses its master, and how it can tell the failover is over.
struct Failover<'a> {
    kill: Box<dyn FnOnce() + 'a>,
    done: Box<dyn Fn() -> bool + 'a>,
}

/// Ten exports round the replicas, the master killed, every replica probed until the failover
/// is over (each answer a 200 or a 503 `state_unavailable`, nothing else), then each serves
/// again by itself within 15 s, and forty more exports bring the total within the limit's
/// bound (32, less what each replica may hold leased).
async fn exports_go_on_through(pki: &Pki, proxies: &[Proxy], over: Failover<'_>) {
    let client = client(pki, Http::One);
    let agent = token(pki, "failover");
    let export = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=1";
    let mut admitted = 0;
    for i in 0..10 {
        let r = req(&proxies[i % 3], Method::GET, export, &agent);
        assert_eq!(status_and_reason(&client, r).await.0, 200);
        admitted += 1;
    }
    // Replication is asynchronous: what the master had not passed on when it died is lost.
    tokio::time::sleep(Duration::from_millis(300)).await;

    (over.kill)();
    let failover = std::time::Instant::now();
    while !(over.done)() {
        assert!(
            failover.elapsed() < Duration::from_secs(30),
            "no failover in 30 s"
        );
        for p in proxies {
            let r = req(p, Method::GET, "/api/v2/tickets/1", &agent);
            let (status, reason, _) = status_and_reason(&client, r).await;
            assert!(
                status == 200 || reason == "state_unavailable",
                "{status} {reason}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for p in proxies {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = req(p, Method::GET, "/api/v2/tickets/1", &agent);
            if status_and_reason(&client, r).await.0 == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{}", p.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for i in 0..40 {
        let r = req(&proxies[i % 3], Method::GET, export, &agent);
        if status_and_reason(&client, r).await.0 == 200 {
            admitted += 1;
        }
    }
    assert!(
        (32 - 3 * 3..=32).contains(&admitted),
        "{admitted} exports admitted"
    );
}
