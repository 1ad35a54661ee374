//! Faults while agents keep working: the decision log's disk fills, the shared state's Redis is
//! killed and comes back, the proxy is told to stop. Each test keeps a steady load running
//! through the fault ([`crate::load::Load`]) and then holds the proxy to account: every answered
//! request has exactly one record, nothing refused reached the upstream, the chain is intact,
//! nothing is left in flight, and the proxy recovered without help.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use vendorgate_certs::Alpn;

use crate::load::{Answer, Load};
use crate::support::*;

/// Sets the soft file-size limit (`RLIMIT_FSIZE`) of a running process; `None`: unlimited.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let soft = bytes.map_or_else(|| "unlimited".to_string(), |b| b.to_string());
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:"))
        .output()
        .expect("prlimit (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every answer with a request id has exactly one record, and there are no other records.
fn one_record_each(dir: &std::path::Path, answered: &[&Answer]) {
    let mut ids: HashMap<String, usize> = HashMap::new();
    for r in records(dir) {
        *ids.entry(at(&r, "http.request.id").as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for a in answered {
        let id = a.id.as_deref().expect("an answer without x-request-id");
        assert_eq!(ids.get(id), Some(&1), "records of {a:?}");
    }
    assert_eq!(
        ids.len(),
        answered.len(),
        "records of requests never answered"
    );
}

/// The disk under the decision log fills mid-load. Here the proxy's file-size limit is lowered to
/// just past the log's end (prlimit), so the batch being written is cut off mid-record as on a
/// full disk. While it lasts: 503 `decision_log_unavailable`, nothing unrecorded reaches the
/// upstream. The cut-off batch is cut away and written again once there is room, which the proxy
/// notices by itself.
#[tokio::test]
async fn a_full_disk_refuses_until_room_returns_and_leaves_one_intact_chain() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    proxy.ready().await;
    let log = proxy.dir.path().join("decisions.jsonl");
    let agent = proxy.token.clone();
    let url = proxy.url("/api/v2/tickets/1");
    let load = Load::start(&client(&pki, Http::Two), 8, move || {
        http::Request::get(&url)
            .header("authorization", format!("Bearer {agent}"))
            .body(empty())
            .unwrap()
    });
    assert!(
        load.until(Duration::from_secs(5), |a| a.status == 200)
            .await
    );

    let end = std::fs::metadata(&log).unwrap().len();
    // Far enough ahead that the load reaches it mid-batch rather than the limit catching the
    // file already past it.
    limit_file_size(proxy.pid(), Some(end + 64 * 1024));
    assert!(
        load.until(Duration::from_secs(5), |a| a
            .is(503, "decision_log_unavailable"))
            .await,
        "never refused on a full disk: {}",
        proxy.log()
    );
    assert_eq!(metric(&proxy, "vendorgate_trail_writable").await, 0.0);
    tokio::time::sleep(Duration::from_millis(500)).await;

    limit_file_size(proxy.pid(), None);
    assert!(
        load.until(Duration::from_secs(5), |a| a.status == 200)
            .await,
        "did not recover once there was room: {}",
        proxy.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answers, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(metric(&proxy, "vendorgate_trail_writable").await, 1.0);
    assert_eq!(metric(&proxy, "vendorgate_requests_in_flight").await, 0.0);
    stop(&mut proxy).await;

    let served: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    let refused = answers
        .iter()
        .filter(|a| a.is(503, "decision_log_unavailable"))
        .count();
    assert_eq!(served.len() + refused, answers.len(), "{answers:?}");
    assert_eq!(
        upstream.request_count(),
        served.len() as u64,
        "an unrecorded request reached the upstream"
    );
    one_record_each(proxy.dir.path(), &served);
    audit_intact(proxy.dir.path());
    let damaged: Vec<_> = std::fs::read_dir(proxy.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "damaged"))
        .collect();
    assert!(damaged.is_empty(), "{damaged:?}");
    // The proxy's own log shares the full disk, so what it said meanwhile is lost (without
    // stopping it); once there is room it says so.
    assert!(proxy.log().contains("decision log writable"));
}

/// SIGTERM while agents keep sending, over HTTP/1.1 and HTTP/2, some requests slow: everything
/// the proxy had begun finishes within the grace period and is answered, every answer has exactly
/// one record on disk when the process exits, and the only requests that fail are those that
/// found the door already closed (a new connection refused): never one cut midway, nor one sent
/// on a keep-alive connection the proxy was closing.
#[tokio::test]
async fn sigterm_under_load_answers_and_records_everything_begun() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(
        &pki,
        ProxyConfig::to(&upstream).server("shutdown_grace = \"10s\""),
    );
    proxy.ready().await;
    let loads: Vec<Load> = [Http::One, Http::Two]
        .into_iter()
        .map(|version| {
            let agent = proxy.token.clone();
            let (quick, slow) = (
                proxy.url("/api/v2/tickets/1"),
                proxy.url("/__mock/slow?ms=300"),
            );
            let n = std::sync::atomic::AtomicU64::new(0);
            Load::start(&client(&pki, version), 8, move || {
                let url = match n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3 {
                    0 => &slow,
                    _ => &quick,
                };
                http::Request::get(url)
                    .header("authorization", format!("Bearer {agent}"))
                    .body(empty())
                    .unwrap()
            })
        })
        .collect();
    while loads.iter().map(Load::count).sum::<usize>() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.signal("TERM");
    let status = proxy.wait_exit_async(Duration::from_secs(10)).await;
    assert!(
        status.expect("did not exit within the grace").success(),
        "{}",
        proxy.log()
    );
    let mut answers = Vec::new();
    let mut failed = Vec::new();
    for (load, version) in loads.into_iter().zip(["HTTP/1.1", "HTTP/2"]) {
        let (a, failures) = load.stop().await;
        answers.extend(a);
        failed.extend(failures.into_iter().map(|f| format!("{version}: {f}")));
    }
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(upstream.request_count(), answers.len() as u64);
    let answered: Vec<&Answer> = answers.iter().collect();
    one_record_each(proxy.dir.path(), &answered);
    audit_intact(proxy.dir.path());
    // A request sent on a keep-alive connection as the proxy stopped is answered (its last
    // call, `server.shutdown_idle_wait`), not lost to a close racing the client's write.
    for f in &failed {
        assert!(f.contains("(Connect)"), "a request cut or lost: {f}");
    }
}

/// Redis, holding the shared state, is killed under load and started again, then paused (a stopped
/// process: connections open, nothing answers) and let go. A replica with `on_state_error =
/// "deny"` answers 503 `state_unavailable` while Redis is away and serves again by itself within
/// seconds of its return; one with `"local"` keeps serving from its own memory throughout. No
/// request hangs, every answer has its record.
#[tokio::test]
async fn redis_killed_and_paused_under_load_deny_refuses_local_serves_both_recover() {
    let mut redis = RedisServer::start();
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let state = |on_error: &str| {
        format!(
            "{OPEN_POLICY}\n[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
             on_state_error = \"{on_error}\"\ntimeout = \"300ms\"\n",
            redis.url()
        )
    };
    let deny = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&state("deny")));
    let local = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&state("local")));
    deny.ready().await;
    local.ready().await;
    let load = |proxy: &Proxy| {
        let (agent, url) = (proxy.token.clone(), proxy.url("/api/v2/tickets/1"));
        Load::start(&client(&pki, Http::One), 4, move || {
            http::Request::get(&url)
                .header("authorization", format!("Bearer {agent}"))
                .body(empty())
                .unwrap()
        })
    };
    let (on_deny, on_local) = (load(&deny), load(&local));
    let served = |a: &Answer| a.status == 200;
    let refused = |a: &Answer| a.is(503, "state_unavailable");
    let secs = Duration::from_secs;
    assert!(on_deny.until(secs(5), served).await);

    for (away, back) in [
        (
            RedisServer::stop as fn(&mut RedisServer),
            RedisServer::restart as fn(&mut RedisServer),
        ),
        (
            |r: &mut RedisServer| r.pause(),
            |r: &mut RedisServer| r.resume(),
        ),
    ] {
        away(&mut redis);
        assert!(on_deny.until(secs(3), refused).await, "{}", deny.log());
        assert!(on_local.until(secs(3), served).await, "{}", local.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
        back(&mut redis);
        assert!(
            on_deny.until(secs(5), served).await,
            "still refusing with Redis back: {}",
            deny.log()
        );
    }

    for (mut proxy, load, allowed) in [
        (
            deny,
            on_deny,
            &(|a: &Answer| served(a) || refused(a)) as &dyn Fn(&Answer) -> bool,
        ),
        (local, on_local, &served),
    ] {
        let (answers, failures) = load.stop().await;
        assert!(failures.is_empty(), "{failures:?}");
        let odd: Vec<_> = answers.iter().filter(|a| !allowed(a)).collect();
        assert!(odd.is_empty(), "{odd:?}");
        assert_eq!(metric(&proxy, "vendorgate_requests_in_flight").await, 0.0);
        stop(&mut proxy).await;
        let answered: Vec<&Answer> = answers.iter().collect();
        one_record_each(proxy.dir.path(), &answered);
        audit_intact(proxy.dir.path());
    }
}
