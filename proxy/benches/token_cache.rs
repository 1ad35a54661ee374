//! Micro-benchmarks of the proxy's per-request state lookups, and how they scale with the number of
//! active accounts (10 vs 100,000): the verified-token cache hit that replaces a signature check,
//! and the in-memory session, rate and byte-counter operations keyed per account.
//!
//!     cargo bench -p vendorgate --bench token_cache

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vendorgate::identity::cache::{token_key, Identity};
use vendorgate::identity::TokenCache;
use vendorgate::state::cells::{CounterCell, RateCell, SessionCell, Slot};
use vendorgate::state::{Counter, MemoryState, Place};
use vendorgate_policy::config::Scope;
use vendorgate_policy::{Policy, RateRule, VerifiedToken};

const NOW: u64 = 1_800_000_000;
const ACCOUNTS: [usize; 2] = [10, 100_000];

/// A token of realistic length (an ES256 JWT is 500–800 characters).
fn token(i: usize) -> String {
    format!("eyJhbGciOiJFUzI1NiJ9.{}.{i:08}", "x".repeat(600))
}

fn verified(i: usize, policy: &Arc<str>) -> Arc<Identity> {
    let token = VerifiedToken {
        vendor: 0,
        account: format!("agent-{i}@acme.example"),
        iss: "https://idp.test".into(),
        sub: Some(format!("agent-{i}")),
        amr: vec!["mfa".into()],
        acr: None,
        auth_time: Some(NOW - 60),
        iat: Some(NOW - 60),
        exp: NOW + 3600,
        sid: None,
        jti: None,
        alg: "ES256".into(),
        kid: Some("k1".into()),
    };
    Arc::new(Identity::new(
        token,
        policy.clone(),
        &Policy::default(),
        &vendorgate::state::keys::KeyPrefix::new("vg", false),
        i as u128,
    ))
}

fn token_cache_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("token_cache_hit");
    for n in ACCOUNTS {
        let cache = TokenCache::new(n * 2);
        let policy: Arc<str> = Arc::from("sha256:bench");
        for i in 0..n {
            cache.insert(token_key(&token(i)), verified(i, &policy));
        }
        let probe = token(n / 2);
        g.bench_with_input(BenchmarkId::from_parameter(n), &probe, |b, t| {
            b.iter(|| cache.get(token_key(black_box(t)), NOW, &policy).unwrap())
        });
    }
    g.finish();
}

/// What the limits cost per request in memory: one session touch, one GCRA step, one egress lease
/// and its release, on one account among `n` active ones. `by_key`: found by key (a new identity,
/// or the local fallback of a Redis deployment); `cached`: through the cells a cached identity
/// keeps (every later request of a token).
fn account_state(c: &mut Criterion) {
    let rule = RateRule {
        id: "exports".into(),
        per: Scope::Account,
        classes: 1,
        vendors: vec![],
        requests: 1_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000,
    };
    let now_ms = NOW * 1000;
    let key =
        |i: usize| -> Arc<str> { Arc::from(format!("vg:egress:acme:agent-{i}@acme.example")) };
    let counter = |place| Counter {
        place,
        window_start: now_ms,
        max: u64::MAX / 2,
        reset_at_ms: now_ms + 3_600_000,
    };
    let session = |i: usize| format!("vg:session:acme:agent-{i}@acme.example");
    let rate = |i: usize| -> Arc<str> { Arc::from(format!("vg:rate:acme:agent-{i}")) };
    let mut g = c.benchmark_group("account_state");
    for n in ACCOUNTS {
        let state = MemoryState::new(n * 4);
        // What each account's cached identity holds.
        let held: Vec<(Slot<SessionCell>, Slot<RateCell>, Slot<CounterCell>)> = (0..n)
            .map(|_| (Slot::default(), Slot::default(), Slot::default()))
            .collect();
        for (i, (s, r, e)) in held.iter().enumerate() {
            state.touch_session_in(&session(i), s, now_ms, 1_800_000, 3_600_000);
            state.rate_in(&rule, &rate(i), r, now_ms * 1000);
            let cell = state.counter_cell(e, || key(i), now_ms);
            state.lease_now(&[counter(Place::Cell(cell))], 2048, now_ms);
        }
        let i = n / 2;
        let (key_session, key_rate) = (session(i), rate(i));
        let key_counters = [counter(Place::Key(key(i)))];
        g.bench_function(BenchmarkId::new("by_key", n), |b| {
            b.iter(|| {
                let fresh = (Slot::default(), Slot::default());
                state.touch_session_in(&key_session, &fresh.0, now_ms, 1_800_000, 3_600_000);
                state.rate_in(&rule, &key_rate, &fresh.1, now_ms * 1000);
                let got = state.lease_now(&key_counters, 2048, now_ms);
                state.release_now(&key_counters, got);
            })
        });
        let (s, r, e) = &held[i];
        let counters = [counter(Place::Cell(state.counter_cell(
            e,
            || key(i),
            now_ms,
        )))];
        g.bench_function(BenchmarkId::new("cached", n), |b| {
            b.iter(|| {
                state.touch_session_in(&key_session, s, now_ms, 1_800_000, 3_600_000);
                state.rate_in(&rule, &key_rate, r, now_ms * 1000);
                let got = state.lease_now(&counters, 2048, now_ms);
                state.release_now(&counters, got);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, token_cache_hit, account_state);
criterion_main!(benches);
