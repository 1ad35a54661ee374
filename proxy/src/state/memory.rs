//! State in this process's memory: bounded, idle keys evicted, and no lock held across an await
//! (every operation is a short critical section on one shard or one cell). See [`super::cells`] for
//! how a cached identity reaches its cells without a lookup.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::Quota;
use vendorgate_policy::{GcraOutcome, RateRule};

use super::cells::{lock, CounterCell, RateCell, Registry, SessionCell, Slot};
use super::{Counter, Place, SessionOutcome, StateBackend, StateError};

/// The cells of one distinct rate rule (id, interval, burst): a reload that changes a rule's
/// numbers gets fresh cells rather than ones with the old quota.
struct RuleLimiter {
    id: String,
    interval_us: u64,
    burst: u32,
    quota: Quota,
    clock: DefaultClock,
    cells: Registry<RateCell>,
}

impl RuleLimiter {
    fn serves(&self, rule: &RateRule) -> bool {
        self.id == rule.id && self.interval_us == rule.interval_us() && self.burst == rule.burst
    }

    fn cell(&self, key: &str, now_ms: u64) -> Arc<RateCell> {
        let refill_ms = (u64::from(self.burst) * self.interval_us).div_ceil(1000);
        self.cells.get(key, now_ms, || {
            RateCell::new(self.quota, self.clock.clone(), refill_ms)
        })
    }
}

pub struct MemoryState {
    sessions: Registry<SessionCell>,
    /// Keyed without the window: a counter's window is its expiry (see [`Place::Key`]).
    counters: Registry<CounterCell>,
    /// A list, not a map: a policy has a handful of rules, and a scan compares `&str`s where a map
    /// lookup would build a `String` key.
    limiters: RwLock<Vec<Arc<RuleLimiter>>>,
    max_keys: usize,
}

impl MemoryState {
    pub fn new(max_keys: usize) -> Self {
        MemoryState {
            sessions: Registry::new(max_keys),
            counters: Registry::new(max_keys),
            limiters: RwLock::new(Vec::new()),
            max_keys,
        }
    }

    fn limiter(&self, rule: &RateRule) -> Arc<RuleLimiter> {
        if let Some(l) = self
            .limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|l| l.serves(rule))
        {
            return l.clone();
        }
        let mut list = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        // Another request may have added it between the two locks.
        if let Some(l) = list.iter().find(|l| l.serves(rule)) {
            return l.clone();
        }
        let burst = NonZeroU32::new(rule.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_micros(rule.interval_us()))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = Arc::new(RuleLimiter {
            id: rule.id.clone(),
            interval_us: rule.interval_us(),
            burst: rule.burst,
            quota,
            clock: DefaultClock::default(),
            cells: Registry::new(self.max_keys),
        });
        list.push(limiter.clone());
        limiter
    }

    /// Drops expired sessions and counters and rate keys back at full burst, unless a cached
    /// identity still holds them.
    pub fn evict(&self, now_ms: u64) {
        self.sessions.evict(now_ms);
        self.counters.evict(now_ms);
        for l in self
            .limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l.cells.evict(now_ms);
        }
    }

    /// [`StateBackend::touch_session`] through the identity's slot.
    pub fn touch_session_in(
        &self,
        key: &str,
        slot: &Slot<SessionCell>,
        now_ms: u64,
        idle_ms: u64,
        ttl_ms: u64,
    ) -> SessionOutcome {
        slot.get_or_init(|| self.sessions.get(key, now_ms, SessionCell::default))
            .touch(now_ms, idle_ms, ttl_ms)
    }

    /// [`StateBackend::rate`] through the identity's slot.
    pub fn rate_in(
        &self,
        rule: &RateRule,
        key: &str,
        slot: &Slot<RateCell>,
        now_ms: u64,
    ) -> GcraOutcome {
        let cell = slot.get_or_init(|| self.limiter(rule).cell(key, now_ms));
        check(cell, now_ms)
    }

    /// The cell of a byte counter (keyed without its window), for a [`Counter`] to carry.
    pub fn counter_cell(
        &self,
        slot: &Slot<CounterCell>,
        key: impl FnOnce() -> Arc<str>,
        now_ms: u64,
    ) -> Arc<CounterCell> {
        slot.get_or_init(|| {
            let key = key();
            self.counters
                .get(&key, now_ms, || CounterCell::new(key.clone()))
        })
        .clone()
    }

    fn cell_of(&self, c: &Counter, now_ms: u64) -> Arc<CounterCell> {
        match &c.place {
            Place::Cell(cell) => cell.clone(),
            Place::Key(key) => self
                .counters
                .get(key, now_ms, || CounterCell::new(key.clone())),
        }
    }

    /// A counter's cell if there is one (a counter never charged has none, and needs none).
    fn find(&self, c: &Counter) -> Option<Arc<CounterCell>> {
        match &c.place {
            Place::Cell(cell) => Some(cell.clone()),
            Place::Key(key) => self.counters.find(key),
        }
    }
}

/// One GCRA step on a cell.
fn check(cell: &RateCell, now_ms: u64) -> GcraOutcome {
    cell.used_at(now_ms);
    let limiter = &cell.limiter;
    match limiter.check() {
        Ok(snapshot) => GcraOutcome {
            allowed: true,
            new_tat: 0,
            retry_after_ms: 0,
            remaining: snapshot.remaining_burst_capacity(),
        },
        Err(not_until) => GcraOutcome {
            allowed: false,
            new_tat: 0,
            // The limiter's own clock: building a fresh quanta clock calibrates it (cpuid,
            // about 20 µs), which made every refusal cost more than a grant.
            retry_after_ms: not_until
                .wait_time_from(limiter.clock().now())
                .as_micros()
                .div_ceil(1000) as u64,
            remaining: 0,
        },
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
            // One counter (the usual policy): one lock, and nothing collected.
            let cell = match &c.place {
                Place::Cell(cell) => cell,
                Place::Key(_) => &self.cell_of(c, now_ms),
            };
            let mut used = lock(&cell.used);
            let grant = c.max.saturating_sub(used.at(now_ms)).min(want);
            if grant > 0 {
                used.charge(grant, now_ms, c.reset_at_ms);
            }
            return grant;
        }
        // Lock every counter's cell at once, in address order, so two requests sharing counters
        // can never wait on each other; the same cell twice is locked once.
        let mut cells: Vec<(Arc<CounterCell>, &Counter)> = counters
            .iter()
            .map(|c| (self.cell_of(c, now_ms), c))
            .collect();
        cells.sort_by_key(|(cell, _)| Arc::as_ptr(cell));
        cells.dedup_by(|a, b| Arc::ptr_eq(&a.0, &b.0));
        let mut guards: Vec<_> = cells
            .iter()
            .map(|(cell, c)| (lock(&cell.used), *c))
            .collect();
        let grant = guards
            .iter()
            .map(|(used, c)| c.max.saturating_sub(used.at(now_ms)))
            .fold(want, u64::min);
        if grant == 0 {
            return 0;
        }
        for (used, c) in &mut guards {
            used.charge(grant, now_ms, c.reset_at_ms);
        }
        grant
    }

    /// Gives back what a lease took and nothing used.
    pub fn release_now(&self, counters: &[Counter], amount: u64) {
        for c in counters {
            if let Some(cell) = self.find(c) {
                let mut used = lock(&cell.used);
                used.bytes = used.bytes.saturating_sub(amount);
            }
        }
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
        Ok(self
            .sessions
            .get(key, now_ms, SessionCell::default)
            .touch(now_ms, idle_ms, ttl_ms))
    }

    async fn rate(
        &self,
        rule: &RateRule,
        key: &Arc<str>,
        now_ms: u64,
    ) -> Result<GcraOutcome, StateError> {
        Ok(check(&self.limiter(rule).cell(key, now_ms), now_ms))
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
                let used = self.find(c).map_or(0, |cell| lock(&cell.used).at(now_ms));
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
            place: Place::Key(key.into()),
            window_start: 0,
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
