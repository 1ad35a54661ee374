//! State in this process's memory: bounded, idle keys evicted, and no lock held across an await
//! (every operation is a short critical section on one shard).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use foldhash::fast::RandomState;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use vendorgate_policy::{GcraOutcome, RateRule};

use super::{Counter, SessionOutcome, StateBackend, StateError};

const SHARDS: usize = 32;

/// Keys here are built by the proxy from verified tokens, never chosen freely by a client, and every
/// request looks several up: foldhash (seeded per process) rather than SipHash.
type Map<V> = HashMap<String, V, RandomState>;

type Limiter = RateLimiter<
    Arc<str>,
    DefaultKeyedStateStore<Arc<str>, RandomState>,
    DefaultClock,
    StateInformationMiddleware,
>;

struct RuleLimiter {
    id: String,
    interval_us: u64,
    burst: u32,
    limiter: Arc<Limiter>,
}

impl RuleLimiter {
    fn serves(&self, rule: &RateRule) -> bool {
        self.id == rule.id && self.interval_us == rule.interval_us() && self.burst == rule.burst
    }
}

struct Session {
    last_ms: u64,
    dead: bool,
    expires_ms: u64,
}

#[derive(Clone, Copy)]
struct Used {
    bytes: u64,
    expires_ms: u64,
}

pub struct MemoryState {
    sessions: Vec<Mutex<Map<Session>>>,
    counters: Vec<Mutex<Map<Used>>>,
    /// One governor limiter per distinct rule (id, interval, burst): a reload that changes a
    /// rule's numbers gets a fresh limiter rather than one with the old quota. A list, not a map:
    /// a policy has a handful of rules, and a scan compares `&str`s where a map lookup would build
    /// a `String` key on every request.
    limiters: RwLock<Vec<RuleLimiter>>,
    per_shard: usize,
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, and good enough to spread keys over a few shards.
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h as usize) % SHARDS
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryState {
    pub fn new(max_keys: usize) -> Self {
        MemoryState {
            sessions: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            counters: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            limiters: RwLock::new(Vec::new()),
            per_shard: max_keys.div_ceil(SHARDS).max(16),
        }
    }

    fn limiter(&self, rule: &RateRule) -> Arc<Limiter> {
        if let Some(l) = self
            .limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|l| l.serves(rule))
        {
            return l.limiter.clone();
        }
        let mut list = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        // Another request may have added it between the two locks.
        if let Some(l) = list.iter().find(|l| l.serves(rule)) {
            return l.limiter.clone();
        }
        let burst = NonZeroU32::new(rule.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_micros(rule.interval_us()))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = Arc::new(
            RateLimiter::dashmap_with_hasher(quota, RandomState::default())
                .with_middleware::<StateInformationMiddleware>(),
        );
        list.push(RuleLimiter {
            id: rule.id.clone(),
            interval_us: rule.interval_us(),
            burst: rule.burst,
            limiter: limiter.clone(),
        });
        limiter
    }

    /// Drops expired sessions and counters and forgets limiter keys back at full burst.
    pub fn evict(&self, now_ms: u64) {
        for shard in &self.sessions {
            lock(shard).retain(|_, s| s.expires_ms > now_ms);
        }
        for shard in &self.counters {
            lock(shard).retain(|_, c| c.expires_ms > now_ms);
        }
        for l in self
            .limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }

    /// Makes room in a full shard: expired entries first, then an arbitrary one (bounded memory
    /// beats perfect recall; the cost is one session or counter restarting).
    fn make_room<V>(map: &mut Map<V>, limit: usize, expired: impl Fn(&V) -> bool) {
        if map.len() < limit {
            return;
        }
        map.retain(|_, v| !expired(v));
        if map.len() >= limit {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
    }
}

pub(super) fn spawn_eviction<S: Send + Sync + 'static>(
    store: Weak<S>,
    local: fn(&S) -> &MemoryState,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { return };
            local(&store).evict(super::now_ms());
        }
    });
}

impl MemoryState {
    /// [`StateBackend::lease`] without a future: memory answers at once, so the body meter can
    /// take a lease inside `poll_frame` without boxing one.
    pub fn lease_now(&self, counters: &[Counter], want: u64, now_ms: u64) -> u64 {
        if let [c] = counters {
            // One counter (the usual policy): one shard, and the key copied only when new.
            let mut g = lock(&self.counters[shard_of(&c.key)]);
            let used = g
                .get(&c.key)
                .filter(|u| u.expires_ms > now_ms)
                .map_or(0, |u| u.bytes);
            let grant = c.max.saturating_sub(used).min(want);
            if grant > 0 {
                Self::charge(&mut g, c, grant, now_ms, self.per_shard);
            }
            return grant;
        }
        // Counters of one request may sit in different shards: lock them in shard order so two
        // requests can never wait on each other.
        let mut shards: Vec<usize> = counters.iter().map(|c| shard_of(&c.key)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, Map<Used>>)> = shards
            .iter()
            .map(|&i| (i, lock(&self.counters[i])))
            .collect();
        let used = |guards: &Vec<(usize, std::sync::MutexGuard<'_, Map<Used>>)>, c: &Counter| {
            let g = &guards.iter().find(|(i, _)| *i == shard_of(&c.key))?.1;
            g.get(&c.key)
                .filter(|u| u.expires_ms > now_ms)
                .map(|u| u.bytes)
        };
        let grant = counters
            .iter()
            .map(|c| c.max.saturating_sub(used(&guards, c).unwrap_or(0)))
            .fold(want, u64::min);
        if grant == 0 {
            return 0;
        }
        for c in counters {
            let shard = shard_of(&c.key);
            if let Some((_, g)) = guards.iter_mut().find(|(i, _)| *i == shard) {
                Self::charge(g, c, grant, now_ms, self.per_shard);
            }
        }
        grant
    }

    /// Gives back what a lease took and nothing used.
    pub fn release_now(&self, counters: &[Counter], amount: u64) {
        for c in counters {
            if let Some(u) = lock(&self.counters[shard_of(&c.key)]).get_mut(&c.key) {
                u.bytes = u.bytes.saturating_sub(amount);
            }
        }
    }

    /// Adds `grant` to `c`'s count, starting a fresh window if the old one is over.
    fn charge(map: &mut Map<Used>, c: &Counter, grant: u64, now_ms: u64, limit: usize) {
        let fresh = Used {
            bytes: 0,
            expires_ms: c.reset_at_ms,
        };
        let entry = match map.get_mut(&c.key) {
            Some(u) => u,
            None => {
                Self::make_room(map, limit, |u: &Used| u.expires_ms <= now_ms);
                map.entry(c.key.clone()).or_insert(fresh)
            }
        };
        if entry.expires_ms <= now_ms {
            *entry = fresh;
        }
        entry.bytes += grant;
    }
}

impl StateBackend for MemoryState {
    async fn touch_session(
        &self,
        key: &str,
        now_ms: u64,
        idle_ms: u64,
        ttl_ms: u64,
    ) -> Result<SessionOutcome, StateError> {
        let mut shard = lock(&self.sessions[shard_of(key)]);
        if let Some(s) = shard.get_mut(key) {
            if s.expires_ms > now_ms {
                if s.dead {
                    return Ok(SessionOutcome::IdleExpired);
                }
                if now_ms.saturating_sub(s.last_ms) > idle_ms {
                    s.dead = true;
                    s.expires_ms = now_ms + ttl_ms;
                    return Ok(SessionOutcome::IdleExpired);
                }
                s.last_ms = now_ms;
                s.expires_ms = now_ms + ttl_ms;
                return Ok(SessionOutcome::Active);
            }
        }
        Self::make_room(&mut shard, self.per_shard, |s: &Session| {
            s.expires_ms <= now_ms
        });
        shard.insert(
            key.to_string(),
            Session {
                last_ms: now_ms,
                dead: false,
                expires_ms: now_ms + ttl_ms,
            },
        );
        Ok(SessionOutcome::Active)
    }

    async fn rate(
        &self,
        rule: &RateRule,
        key: &Arc<str>,
        _now_ms: u64,
    ) -> Result<GcraOutcome, StateError> {
        let limiter = self.limiter(rule);
        Ok(match limiter.check_key(key) {
            Ok(snapshot) => GcraOutcome {
                allowed: true,
                new_tat: 0,
                retry_after_ms: 0,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => GcraOutcome {
                allowed: false,
                new_tat: 0,
                // The limiter's own clock: building a fresh quanta clock calibrates it
                // (cpuid, about 20 µs), which made every refusal cost more than a grant.
                retry_after_ms: not_until
                    .wait_time_from(limiter.clock().now())
                    .as_micros()
                    .div_ceil(1000) as u64,
                remaining: 0,
            },
        })
    }

    async fn lease(&self, counters: &[Counter], want: u64, now_ms: u64) -> Result<u64, StateError> {
        Ok(self.lease_now(counters, want, now_ms))
    }

    async fn release(&self, counters: &[Counter], amount: u64) -> Result<(), StateError> {
        self.release_now(counters, amount);
        Ok(())
    }

    async fn remaining(&self, counters: &[Counter], now_ms: u64) -> Result<Vec<u64>, StateError> {
        Ok(counters
            .iter()
            .map(|c| {
                let used = lock(&self.counters[shard_of(&c.key)])
                    .get(&c.key)
                    .filter(|u| u.expires_ms > now_ms)
                    .map_or(0, |u| u.bytes);
                c.max.saturating_sub(used)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use vendorgate_policy::config::Scope;

    use super::*;

    /// The memory backend's futures never wait: poll once.
    fn ready<T>(fut: impl Future<Output = T>) -> T {
        match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the memory backend never waits"),
        }
    }

    fn rule(requests: u32, burst: u32) -> RateRule {
        RateRule {
            id: "r".into(),
            per: Scope::Account,
            classes: u128::MAX,
            vendors: vec![],
            requests,
            period: Duration::from_secs(1),
            burst,
        }
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        let state = MemoryState::new(100);
        let slow = rule(1, 1);
        let k: Arc<str> = Arc::from("k");
        assert!(ready(state.rate(&slow, &k, 0)).unwrap().allowed);
        let refused = ready(state.rate(&slow, &k, 0)).unwrap();
        assert!(!refused.allowed);
        assert!(
            (900..=1000).contains(&refused.retry_after_ms),
            "{refused:?}"
        );
    }

    #[test]
    fn rules_faster_than_a_request_a_millisecond_keep_their_rate() {
        // 100,000 a second, no burst: one every 10 µs. Rounded to whole milliseconds, this rule
        // allowed one request a millisecond.
        let state = MemoryState::new(100);
        let fast = rule(100_000, 1);
        let k: Arc<str> = Arc::from("k");
        assert!(ready(state.rate(&fast, &k, 0)).unwrap().allowed);
        std::thread::sleep(Duration::from_micros(200));
        assert!(ready(state.rate(&fast, &k, 0)).unwrap().allowed);
    }

    fn counter(key: &str, max: u64, reset_at_ms: u64) -> Counter {
        Counter {
            key: key.into(),
            max,
            reset_at_ms,
        }
    }

    #[test]
    fn a_lease_grants_what_the_tightest_counter_leaves_and_charges_every_counter() {
        let state = MemoryState::new(1000);
        let account = counter("acct", 100, 10_000);
        let vendor = counter("vendor", 150, 10_000);
        let both = [account.clone(), vendor.clone()];
        assert_eq!(state.lease_now(&both, 80, 0), 80);
        // The account has 20 left, the vendor 70: the account decides.
        assert_eq!(state.lease_now(&both, 80, 1), 20);
        assert_eq!(state.lease_now(&both, 80, 2), 0);
        // Another account of the same vendor only has what the vendor has left.
        let other = [counter("acct2", 100, 10_000), vendor.clone()];
        assert_eq!(state.lease_now(&other, 80, 3), 50);
        // Giving back unused budget makes it available again, on every counter.
        state.release_now(&other, 30);
        assert_eq!(ready(state.remaining(&[vendor], 4)).unwrap(), vec![30]);
        // A single counter starts a fresh window once its own is over.
        assert_eq!(state.lease_now(std::slice::from_ref(&account), 10, 5), 0);
        assert_eq!(
            state.lease_now(&[counter("acct", 100, 20_000)], 10, 10_000),
            10
        );
    }
}
