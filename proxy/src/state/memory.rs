//! State in this process's memory: bounded, idle keys evicted, and no lock held across an await
//! (every operation is a short critical section on one shard or one cell). See [`super::cells`] for
//! how a cached identity reaches its cells without a lookup.

use std::sync::{Arc, RwLock};

use vendorgate_policy::{GcraOutcome, RateRule};

use super::cells::{lock, CounterCell, RateCell, Registry, SessionCell, Slot};
use super::{Counter, Place, SessionOutcome};

/// The cells of one distinct rate rule (id, interval, burst): a reload that changes a rule's
/// numbers gets fresh cells rather than ones with the old quota.
struct RuleLimiter {
    id: String,
    interval_us: u64,
    burst: u32,
    cells: Registry<RateCell>,
}

impl RuleLimiter {
    fn serves(&self, rule: &RateRule) -> bool {
        self.id == rule.id && self.interval_us == rule.interval_us() && self.burst == rule.burst
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
        let limiter = Arc::new(RuleLimiter {
            id: rule.id.clone(),
            interval_us: rule.interval_us(),
            burst: rule.burst,
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

    /// Records activity on a session unless it has been idle for more than `idle_ms`
    /// ([`vendorgate_policy::session_step`]); the record is kept `ttl_ms`. Through the identity's
    /// slot: the key is looked up only the first time.
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

    /// One [`vendorgate_policy::gcra`] step for `key` under `rule`, at the request's time
    /// (`now_us`, microseconds since the epoch), through the identity's slot.
    pub fn rate_in(
        &self,
        rule: &RateRule,
        key: &str,
        slot: &Slot<RateCell>,
        now_us: u64,
    ) -> GcraOutcome {
        let cell = slot.get_or_init(|| {
            self.limiter(rule)
                .cells
                .get(key, now_us / 1000, RateCell::default)
        });
        cell.step(rule.interval_us(), rule.burst, now_us)
    }

    /// `key`'s theoretical arrival time under `rule` (0: no cell, so a full burst), without a step.
    pub fn rate_tat(&self, rule: &RateRule, key: &str) -> u64 {
        self.limiter(rule).cells.find(key).map_or(0, |c| c.tat())
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
            Place::Key(key) | Place::Leased(key, _) => self
                .counters
                .get(key, now_ms, || CounterCell::new(key.clone())),
        }
    }

    /// A counter's cell if there is one (a counter never charged has none, and needs none).
    fn find(&self, c: &Counter) -> Option<Arc<CounterCell>> {
        match &c.place {
            Place::Cell(cell) => Some(cell.clone()),
            Place::Key(key) | Place::Leased(key, _) => self.counters.find(key),
        }
    }
}

impl MemoryState {
    /// Takes up to `want` bytes from every counter at once (the same amount from each), never
    /// more than the smallest remaining budget, and returns what was granted. Without a future:
    /// memory answers at once, so the body meter can take a lease inside `poll_frame`.
    pub fn lease_now(&self, counters: &[Counter], want: u64, now_ms: u64) -> u64 {
        if let [c] = counters {
            // One counter (the usual policy): one lock, and nothing collected.
            let cell = match &c.place {
                Place::Cell(cell) => cell,
                Place::Key(_) | Place::Leased(..) => &self.cell_of(c, now_ms),
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

    /// The remaining budget of each counter, in order.
    pub fn remaining(&self, counters: &[Counter], now_ms: u64) -> Vec<u64> {
        counters
            .iter()
            .map(|c| {
                let used = self.find(c).map_or(0, |cell| lock(&cell.used).at(now_ms));
                c.max.saturating_sub(used)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vendorgate_policy::config::Scope;

    use super::*;

    /// A step for `key` as a request with no cached identity takes it (found by key).
    fn rate(state: &MemoryState, rule: &RateRule, key: &str, now_us: u64) -> GcraOutcome {
        state.rate_in(rule, key, &Slot::default(), now_us)
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
        assert!(rate(&state, &slow, "k", 0).allowed);
        let refused = rate(&state, &slow, "k", 0);
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
        assert!(rate(&state, &fast, "k", 0).allowed);
        assert!(!rate(&state, &fast, "k", 5).allowed);
        assert!(rate(&state, &fast, "k", 10).allowed);
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
        assert_eq!(state.remaining(&[vendor], 4), vec![30]);
        // A single counter starts a fresh window once its own is over.
        assert_eq!(state.lease_now(std::slice::from_ref(&account), 10, 5), 0);
        assert_eq!(
            state.lease_now(&[counter("acct", 100, 20_000)], 10, 10_000),
            10
        );
    }
}
