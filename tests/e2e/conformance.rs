//! The limiter arithmetic has one definition (`vendorgate_policy::gcra`, `session_step`) and three
//! places that run it: the pure functions, the in-memory cells, and the Lua scripts in a real
//! redis-server. One sequence of requests goes through all three, with one clock, and every answer
//! must agree.

use std::time::Duration;

use vendorgate::state::cells::{SessionCell, Slot};
use vendorgate::state::{MemoryState, RedisState, SessionOutcome};
use vendorgate_policy::config::Scope;
use vendorgate_policy::{gcra, gcra_take, session_step, RateRule, SessionRecord, SessionStep};

use crate::support::RedisServer;

/// A deterministic walk of request times (µs): bursts, steady trickles and long pauses.
fn times(seed: u64, n: usize, start_us: u64, scale_us: u64) -> Vec<u64> {
    let mut x = seed;
    let mut t = start_us;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let gap = match (x >> 33) % 10 {
                0..=4 => 0,                          // a burst
                5..=7 => (x >> 40) % scale_us,       // within an interval
                8 => scale_us * ((x >> 40) % 4 + 1), // a few intervals
                _ => scale_us * 40,                  // a pause: full burst again
            };
            t += gap;
            t
        })
        .collect()
}

async fn connected(url: String) -> RedisState {
    let target = vendorgate::state::link::Target::from_url(&url, Duration::from_secs(2)).unwrap();
    let redis = RedisState::connect(target);
    let probe = RateRule {
        id: "probe".into(),
        per: Scope::Account,
        classes: 1,
        vendors: vec![],
        requests: 1,
        period: Duration::from_secs(1),
        burst: 1,
    };
    for _ in 0..100 {
        if redis.rate(&probe, "vg:probe", Some(1)).await.is_ok() {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis never answered");
}

#[tokio::test]
async fn gcra_agrees_in_the_pure_function_the_memory_cells_and_redis() {
    let server = RedisServer::start();
    let redis = connected(server.url()).await;
    let memory = MemoryState::new(1000);
    let rules = [
        // 10 a second, burst 3.
        (1, 10, 3, 100_000),
        // 100,000 a second, no burst: a 10 µs interval.
        (2, 100_000, 1, 10),
        // 7 a second, burst 5: an interval that does not divide a millisecond evenly.
        (3, 7, 5, 142_857),
    ];
    for (seed, requests, burst, scale) in rules {
        let rule = RateRule {
            id: format!("r{seed}"),
            per: Scope::Account,
            classes: 1,
            vendors: vec![],
            requests,
            period: Duration::from_secs(1),
            burst,
        };
        let key = format!("vg:conformance:{seed}");
        let slot = Slot::default();
        let mut tat = 0;
        let (mut allowed, mut refused) = (0, 0);
        for (i, now) in times(seed, 400, 1_800_000_000_000_000, scale)
            .into_iter()
            .enumerate()
        {
            let pure = gcra(tat, now, rule.interval_us(), rule.burst);
            if pure.allowed {
                tat = pure.new_tat;
                allowed += 1;
            } else {
                refused += 1;
            }
            let cell = memory.rate_in(&rule, &key, &slot, now);
            let lua = redis.rate(&rule, &key, Some(now)).await.unwrap();
            let answer =
                |o: vendorgate_policy::GcraOutcome| (o.allowed, o.retry_after_ms, o.remaining);
            assert_eq!(
                answer(cell),
                answer(pure),
                "memory, rule {seed}, step {i} at {now}"
            );
            assert_eq!(
                answer(lua),
                answer(pure),
                "redis, rule {seed}, step {i} at {now}"
            );
        }
        // The walk must exercise both answers, or it compares nothing interesting.
        assert!(
            allowed > 20 && refused > 20,
            "rule {seed}: {allowed} allowed, {refused} refused"
        );
    }
}

/// A replica's lease of several requests at once (`state::leases`), with expired ones given back
/// in the same call: the script and `gcra_take` agree step for step, on batches of every size.
#[tokio::test]
async fn a_batch_lease_agrees_in_the_pure_function_and_redis() {
    let server = RedisServer::start();
    let redis = connected(server.url()).await;
    let rule = RateRule {
        id: "batch".into(),
        per: Scope::Account,
        classes: 1,
        vendors: vec![],
        requests: 50,
        period: Duration::from_secs(1),
        burst: 40,
    };
    let key = "vg:conformance:batch";
    let mut tat = 0u64;
    let (mut partial, mut refused) = (0, 0);
    for (i, now) in times(9, 300, 1_800_000_000_000_000, 40_000)
        .into_iter()
        .enumerate()
    {
        let want = [1u32, 3, 8, 17, 40][i % 5];
        // Every seventh call gives back two requests taken before and never used.
        let back = if i % 7 == 6 { 2 } else { 0 };
        let given = tat.saturating_sub(u64::from(back) * rule.interval_us());
        let (n, pure) = gcra_take(given, now, rule.interval_us(), rule.burst, want);
        if n > 0 || back > 0 {
            tat = pure.new_tat.max(given.max(now));
        }
        let (lua_n, lua) = redis
            .rate_take(&rule, key, want, back, Some(now))
            .await
            .unwrap();
        let answer = |o: vendorgate_policy::GcraOutcome| (o.allowed, o.retry_after_ms, o.remaining);
        assert_eq!(
            (lua_n, answer(lua)),
            (n, answer(pure)),
            "step {i} at {now}, want {want}"
        );
        if n == 0 {
            refused += 1;
        } else if n < want {
            partial += 1;
        }
    }
    assert!(
        partial > 10 && refused > 10,
        "{partial} partial, {refused} refused"
    );
}

#[tokio::test]
async fn the_idle_rule_agrees_in_the_pure_function_the_memory_cells_and_redis() {
    let server = RedisServer::start();
    let redis = connected(server.url()).await;
    let idle_ms = 1_000;
    // Long enough that no record expires during the walk (Redis expires keys by its own clock).
    let ttl_ms = 3_600_000;
    for seed in 1..=5u64 {
        let key = format!("vg:conformance:sess:{seed}");
        let cell = SessionCell::default();
        let mut record: Option<SessionRecord> = None;
        let mut outcomes = [0; 2];
        for (i, now_us) in times(seed, 60, 1_800_000_000_000_000, 400_000)
            .into_iter()
            .enumerate()
        {
            let now = now_us / 1000;
            let step = session_step(record, now, idle_ms);
            match step {
                SessionStep::Active => {
                    record = Some(SessionRecord {
                        last_ms: now,
                        dead: false,
                    })
                }
                SessionStep::IdledOut => record = record.map(|r| SessionRecord { dead: true, ..r }),
                SessionStep::Dead => {}
            }
            let pure = SessionOutcome::from(step);
            outcomes[usize::from(pure == SessionOutcome::IdleExpired)] += 1;
            let memory = cell.touch(now, idle_ms, ttl_ms);
            let lua = redis
                .touch_session(&key, idle_ms, ttl_ms, Some(now))
                .await
                .unwrap();
            assert_eq!(memory, pure, "memory, walk {seed}, step {i} at {now}");
            assert_eq!(lua, pure, "redis, walk {seed}, step {i} at {now}");
        }
        assert!(
            outcomes[0] > 0 && outcomes[1] > 0,
            "walk {seed}: {outcomes:?}"
        );
    }
    // The memory cell through the store's slot path agrees as well (the path the proxy takes).
    let memory = MemoryState::new(10);
    let slot = Slot::default();
    let t = 1_800_000_000_000;
    assert_eq!(
        memory.touch_session_in("s", &slot, t, idle_ms, ttl_ms),
        SessionOutcome::Active
    );
    assert_eq!(
        memory.touch_session_in("s", &slot, t + idle_ms + 1, idle_ms, ttl_ms),
        SessionOutcome::IdleExpired
    );
}
