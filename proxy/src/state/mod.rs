//! Sessions, rate-limit state and byte counters: in this process's memory, or in Redis so several
//! replicas behind a load balancer enforce one limit together.
//!
//! [`StateStore`] is the one interface the request path holds: each operation goes to Redis when it
//! is configured, else to memory, and both run the policy crate's arithmetic
//! ([`vendorgate_policy::gcra`], [`vendorgate_policy::session_step`]). It adds the failure policy: when Redis cannot answer within `state.timeout`, `on_state_error = "deny"` refuses
//! the request (fail closed) and `"local"` falls back to this replica's memory. Either way the failure
//! is counted and logged (at most once a second, so an outage does not drown the log).

pub mod account;
pub mod activity;
mod carry;
pub mod cells;
pub mod controls;
pub mod keys;
pub mod leases;
pub mod link;
mod memory;
pub mod parents;
mod redis;
pub mod sessions;
pub mod usage;

use std::future::Future;
use std::pin::Pin;

use crate::clock::now_ms;
use crate::telemetry::throttle::LogThrottle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vendorgate_policy::config::{OnStateError, StateConfig};
use vendorgate_policy::{GcraOutcome, RateRule, SessionStep};

use carry::Carry;
use cells::{CounterCell, RateCell, SessionCell, Slot};
use leases::{Leases, Take, SESSION_GRACE, SETTLE_EVERY};
pub use memory::MemoryState;
pub use redis::RedisState;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
    #[error("state backend did not answer in time")]
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Active,
    /// Idle for too long; stays refused until the session key expires.
    IdleExpired,
}

impl From<SessionStep> for SessionOutcome {
    fn from(step: SessionStep) -> Self {
        if step.allowed() {
            SessionOutcome::Active
        } else {
            SessionOutcome::IdleExpired
        }
    }
}

/// One byte counter in its current window.
#[derive(Clone)]
pub struct Counter {
    pub place: Place,
    /// When the window began (ms since the epoch).
    pub window_start: u64,
    pub max: u64,
    /// When the window ends (ms since the epoch): the counter expires then.
    pub reset_at_ms: u64,
}

/// Where a counter is kept.
#[derive(Clone)]
pub enum Place {
    /// In this process's memory, already found (see [`cells`]).
    Cell(Arc<CounterCell>),
    /// By key: in Redis, or in memory when the local fallback must find it. The key names the rule
    /// and the scope, not the window: in memory a counter's window is its expiry (it counts from
    /// zero again once past `reset_at_ms`); in Redis the key is this, `:` and `window_start`
    /// (see [`Counter::windowed_key`]), and the old window's key expires by itself.
    Key(Arc<str>),
    /// In Redis, with this replica's pool for the counter's window, found once for the request
    /// (see [`leases`]); the key as in [`Place::Key`].
    Leased(Arc<str>, Arc<leases::BytePool>),
}

impl Counter {
    pub fn key(&self) -> &Arc<str> {
        match &self.place {
            Place::Cell(cell) => &cell.key,
            Place::Key(key) | Place::Leased(key, _) => key,
        }
    }

    /// The counter's key in Redis: one per window (its pool's, when it carries one).
    pub fn windowed_key(&self) -> String {
        if let Place::Leased(_, pool) = &self.place {
            return pool.key().to_string();
        }
        let mut n = itoa::Buffer::new();
        [&**self.key(), ":", n.format(self.window_start)].concat()
    }
}

pub struct StateStore {
    redis: Option<RedisState>,
    /// With Redis: what this replica holds of the shared limits (see [`leases`]).
    leases: Option<Leases>,
    local: MemoryState,
    on_error: OnStateError,
    timeout: Duration,
    pub prefix: keys::KeyPrefix,
    errors: AtomicU64,
    /// Calls to Redis made for requests.
    calls: AtomicU64,
    log_throttle: LogThrottle,
    /// What was decided locally while Redis was away, to carry into it on its return.
    carry: Carry,
}

impl StateStore {
    /// The store `config` describes; `redis` is where its shared state is (see
    /// [`link::Target::from_config`]), `None` for memory.
    pub fn new(config: &StateConfig, redis: Option<link::Target>) -> Arc<Self> {
        let redis = redis.map(RedisState::connect);
        let leases = redis.as_ref().map(|_| Leases::new(config.max_keys));
        let store = Arc::new(StateStore {
            redis,
            leases,
            local: MemoryState::new(config.max_keys),
            on_error: config.on_state_error,
            timeout: config.timeout.0,
            prefix: keys::KeyPrefix::new(&config.key_prefix, !config.redis_cluster.is_empty()),
            errors: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            log_throttle: LogThrottle::default(),
            carry: Carry::default(),
        });
        every(&store, Duration::from_secs(10), |s| async move {
            s.local.evict(now_ms());
            if let Some(l) = &s.leases {
                l.evict(now_ms());
            }
        });
        if store.redis.is_some() {
            every(&store, SETTLE_EVERY, |s| async move { s.settle().await });
        }
        store
    }

    /// The leases, when Redis is configured and answering (see [`leases`]): `None` sends every
    /// operation to Redis, and `on_state_error` decides when it fails.
    fn leases(&self) -> Option<&Leases> {
        self.leases.as_ref().filter(|l| l.healthy())
    }

    /// Whether the shared state answered its last call (always, in memory). A replica that
    /// cannot reach Redis is not ready: a balancer should send its agents elsewhere.
    pub fn healthy(&self) -> bool {
        self.leases.as_ref().is_none_or(|l| l.healthy())
    }

    fn set_healthy(&self, healthy: bool) {
        if let Some(l) = &self.leases {
            if l.healthy.swap(healthy, Ordering::Relaxed) != healthy {
                if healthy {
                    tracing::info!(
                        "shared state answers: requests are decided from this replica's leases"
                    );
                } else {
                    tracing::warn!(
                        "shared state not answering: every request asks it until it does"
                    );
                }
            }
        }
    }

    /// Redis, when the state is shared (the detectors' hourly counts go there directly).
    pub fn redis(&self) -> Option<&RedisState> {
        self.redis.as_ref()
    }

    pub fn backend_name(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Failures of the shared backend so far.
    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Calls to the shared backend made for requests so far.
    pub fn call_count(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs `op` against Redis when configured. `None` means "use local memory instead": either
    /// there is no Redis, or it failed and the policy says `local`.
    ///
    /// Boxed: a Redis call's state is over a KiB, and every request's future (moved whole at
    /// each step) would otherwise carry room for it even when the counters are in memory.
    fn shared<'a, T: 'a>(
        &'a self,
        what: &'static str,
        op: impl Future<Output = Result<T, StateError>> + 'a,
    ) -> Pin<Box<impl Future<Output = Option<Result<T, StateError>>> + 'a>> {
        Box::pin(async move {
            self.redis.as_ref()?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let err = match tokio::time::timeout(self.timeout, op).await {
                Ok(Ok(v)) => {
                    self.set_healthy(true);
                    return Some(Ok(v));
                }
                Ok(Err(e)) => e,
                Err(_) => StateError::Timeout,
            };
            self.set_healthy(false);
            self.errors.fetch_add(1, Ordering::Relaxed);
            if self.log_throttle.allow() {
                tracing::error!(
                    operation = what,
                    failures = self.errors.load(Ordering::Relaxed),
                    on_state_error = ?self.on_error,
                    "shared state failed: {err}"
                );
            }
            match self.on_error {
                OnStateError::Deny => Some(Err(err)),
                OnStateError::Local => None,
            }
        })
    }

    /// `slot` is where the request's identity keeps the session's in-memory cell.
    /// `now` (milliseconds since the epoch) is the request's: one reading of the clock serves all
    /// its checks, as the time it is decided at.
    pub async fn touch_session(
        &self,
        key: &str,
        slot: &Slot<SessionCell>,
        idle_ms: u64,
        ttl_ms: u64,
        now: u64,
    ) -> Result<SessionOutcome, StateError> {
        if let Some(r) = &self.redis {
            let lease = self.leases().map(|l| (l, l.session(key, now)));
            if let Some((leases, lease)) = &lease {
                if let (true, queue) = lease.touch_here(now, idle_ms, ttl_ms) {
                    if queue {
                        leases.queue_session(key, lease);
                    }
                    return Ok(SessionOutcome::Active);
                }
            }
            // Touches written behind reach Redis late: it judges idleness with a grace for them.
            let judged_idle = idle_ms + SESSION_GRACE.as_millis() as u64;
            if let Some(out) = self
                .shared(
                    "session",
                    r.touch_session(key, judged_idle, ttl_ms, Some(now)),
                )
                .await
            {
                if let (Some((_, lease)), Ok(o)) = (&lease, &out) {
                    lease.confirmed(*o == SessionOutcome::Active, now);
                }
                return out;
            }
        }
        let out = self.local.touch_session_in(key, slot, now, idle_ms, ttl_ms);
        if self.redis.is_some() && out == SessionOutcome::Active {
            self.carry.session(key, now, ttl_ms);
        }
        Ok(out)
    }

    /// One GCRA step for `key` under `rule`. `slot` is where the request's identity keeps its
    /// in-memory cell for this rule; `now_us` is the request's time in microseconds (Redis counts
    /// by its own clock, which every replica shares).
    pub async fn rate(
        &self,
        rule: &RateRule,
        key: &Arc<str>,
        slot: &Slot<RateCell>,
        now_us: u64,
    ) -> Result<GcraOutcome, StateError> {
        if let Some(r) = &self.redis {
            let Some(leases) = self.leases() else {
                if let Some(out) = self.shared("rate", r.rate(rule, key, None)).await {
                    return out;
                }
                return Ok(self.rate_here(rule, key, slot, now_us));
            };
            let pool = leases.token_pool(key, now_us / 1000);
            let batch_max = leases::max_batch(rule.burst);
            let (want, give_back, batch) = match pool.take(now_us, batch_max, rule.interval_us()) {
                Take::Took(outcome) => return Ok(outcome),
                Take::Lease {
                    want,
                    give_back,
                    batch,
                } => (want, give_back, batch),
            };
            let asked = r.rate_take(rule, key, want, give_back, None);
            let out = self.shared("rate", asked).await;
            let granted = match &out {
                Some(Ok((n, o))) => Some((*n, o.remaining)),
                _ => None,
            };
            pool.leased(batch, granted, now_us);
            leases.note_tokens(&pool);
            match out {
                Some(Ok((n, o))) => {
                    let held = n.saturating_sub(1);
                    return Ok(GcraOutcome {
                        remaining: o.remaining.saturating_add(held),
                        ..o
                    });
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(self.rate_here(rule, key, slot, now_us))
    }

    /// A step in this replica's memory: the state in memory, or Redis failed and the policy is
    /// `local` (then carried into Redis on its return).
    fn rate_here(
        &self,
        rule: &RateRule,
        key: &Arc<str>,
        slot: &Slot<RateCell>,
        now_us: u64,
    ) -> GcraOutcome {
        let out = self.local.rate_in(rule, key, slot, now_us);
        if self.redis.is_some() && out.allowed {
            self.carry.rate(key, rule.interval_us());
        }
        out
    }

    /// Where `key` stands under `rule` without taking a step: requests left in the burst, and how
    /// long until it is whole again (µs). What the admin API's usage reports.
    pub async fn rate_standing(
        &self,
        rule: &RateRule,
        key: &str,
        now_us: u64,
    ) -> Result<(u32, u64), StateError> {
        let tat = match &self.redis {
            Some(r) => match self.shared("usage", r.rate_tat(key)).await {
                Some(out) => out?,
                None => self.local.rate_tat(rule, key),
            },
            None => self.local.rate_tat(rule, key),
        };
        Ok(vendorgate_policy::gcra_standing(
            tat,
            now_us,
            rule.interval_us(),
            rule.burst,
        ))
    }

    /// Where a byte counter is kept: its in-memory cell, through the identity's `slot` (the key
    /// is only made the first time); with Redis, its key and this replica's pool for the window
    /// that starts at `window_start` and ends at `window_end` (the local fallback finds cells by
    /// key).
    pub fn counter_place(
        &self,
        slot: &Slot<CounterCell>,
        key: impl FnOnce() -> Arc<str>,
        now: u64,
        (window_start, window_end): (u64, u64),
    ) -> Place {
        if let Some(leases) = &self.leases {
            let key = key();
            let pool = leases.byte_pool(&key, window_start, window_end, now);
            return Place::Leased(key, pool);
        }
        Place::Cell(self.local.counter_cell(slot, key, now))
    }

    pub async fn lease(&self, counters: &[Counter], want: u64) -> Result<u64, StateError> {
        let now = now_ms();
        if let Some(r) = &self.redis {
            if let Some(leases) = self.leases() {
                let mut drawn = leases.draw(counters, want, now);
                if drawn.complete(want) {
                    return Ok(drawn.settle(now));
                }
                let asks = drawn.short(want);
                match self.top_up(r, &mut drawn, &asks, want, now).await {
                    Some(Ok(())) => return Ok(drawn.settle(now)),
                    Some(Err(e)) => {
                        drawn.restore(now);
                        return Err(e);
                    }
                    None => drawn.restore(now),
                }
            } else if let Some(out) = self.shared("lease", r.lease(counters, want, now)).await {
                return out;
            }
        }
        let granted = self.local.lease_now(counters, want, now);
        if self.redis.is_some() {
            self.carry.bytes(counters, granted as i64);
        }
        Ok(granted)
    }

    /// A lease decided without waiting: in memory, or from this replica's pools when they hold it
    /// all; `None` when Redis must be asked (use [`StateStore::lease`]).
    pub fn lease_now(&self, counters: &[Counter], want: u64) -> Option<u64> {
        let now = now_ms();
        if self.redis.is_some() {
            // Shared: at once only when this replica's pools hold it all.
            let drawn = self.leases()?.draw(counters, want, now);
            if drawn.complete(want) {
                return Some(drawn.settle(now));
            }
            drawn.restore(now);
            return None;
        }
        Some(self.local.lease_now(counters, want, now))
    }

    /// [`StateStore::release`] at once: in memory, or into this replica's pools; false when Redis
    /// is not answering and the caller must use the async call.
    pub fn release_now(&self, counters: &[Counter], amount: u64) -> bool {
        if self.redis.is_some() {
            // Shared: back into this replica's pools, which give back what stays unused.
            let Some(leases) = self.leases() else {
                return false;
            };
            leases.put_back(counters, amount, now_ms());
            return true;
        }
        self.local.release_now(counters, amount);
        true
    }

    pub async fn release(&self, counters: &[Counter], amount: u64) -> Result<(), StateError> {
        if let Some(r) = &self.redis {
            if let Some(out) = self.shared("release", r.release(counters, amount)).await {
                return out;
            }
        }
        self.local.release_now(counters, amount);
        if self.redis.is_some() {
            self.carry.bytes(counters, -(amount as i64));
        }
        Ok(())
    }

    /// Leases in one call what `drawn`'s pools lacked of `want` (`asks`: counter, bytes); `None`:
    /// Redis failed and the policy is `local`.
    async fn top_up(
        &self,
        r: &RedisState,
        drawn: &mut leases::Drawn<'_>,
        asks: &[(usize, u64)],
        want: u64,
        now: u64,
    ) -> Option<Result<(), StateError>> {
        let out = self
            .shared("lease", r.lease_each(drawn.counters, asks, now))
            .await?;
        Some(out.map(|grants| {
            for ((i, _), (granted, left)) in asks.iter().zip(grants) {
                drawn.leased(*i, want, granted, left, now);
            }
        }))
    }

    /// What each counter has left, for a request about to use `need` bytes: with Redis, this
    /// replica's pools are stocked first (a slice beyond `need`, leased in one call, only when a
    /// pool holds less), and a counter's remainder is what its pool holds, and what Redis has
    /// left when it was just asked. Elsewhere, [`StateStore::remaining`].
    pub async fn budget(
        &self,
        counters: &[Counter],
        need: u64,
        now: u64,
    ) -> Result<Vec<u64>, StateError> {
        if let (Some(r), Some(leases)) = (&self.redis, self.leases()) {
            let mut drawn = leases.draw(counters, need, now);
            let asks = drawn.short(need);
            if !asks.is_empty() {
                match self.top_up(r, &mut drawn, &asks, need, now).await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        drawn.restore(now);
                        return Err(e);
                    }
                    None => {
                        drawn.restore(now);
                        return Ok(self.local.remaining(counters, now));
                    }
                }
            }
            drawn.restore(now);
            // A remainder seen now counts; one seen at an older lease may be long spent by
            // other replicas, and a body larger than the pool asks again (with `need` its size).
            let standing = leases.standing(counters, now).into_iter().enumerate();
            return Ok(standing
                .map(
                    |(i, (held, left))| match asks.iter().any(|(k, _)| *k == i) {
                        true => held.saturating_add(left),
                        false => held,
                    },
                )
                .collect());
        }
        self.remaining(counters, now).await
    }

    pub async fn remaining(&self, counters: &[Counter], now: u64) -> Result<Vec<u64>, StateError> {
        if let Some(r) = &self.redis {
            if let Some(out) = self.shared("remaining", r.remaining(counters)).await {
                return out;
            }
        }
        Ok(self.local.remaining(counters, now))
    }
}

/// Runs `work` on the store every `period` for as long as the store lives, on the caller's runtime
/// (none in a plain unit test: nothing then runs).
fn every<F, Fut>(store: &Arc<StateStore>, period: Duration, work: F)
where
    F: Fn(Arc<StateStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = Arc::downgrade(store);
    handle.spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { return };
            work(store).await;
        }
    });
}

impl StateStore {
    /// The heartbeat in Redis mode, every [`SETTLE_EVERY`]: session touches decided here are
    /// written behind, leases past their hold given back, and what was decided locally while
    /// Redis was away carried into it (see [`carry`]), all in one transaction; with nothing to
    /// write, a `PING`. Its answer sets the health flag, so a replica whose Redis stopped
    /// answering stops deciding from its leases within a beat.
    async fn settle(&self) {
        let (Some(redis), Some(leases)) = (&self.redis, &self.leases) else {
            return;
        };
        let now = now_ms();
        // Held before this beat adds to it: decided locally while Redis was away.
        let fallback = self.carry.is_pending();
        for (key, last, ttl) in leases.sessions_to_write() {
            self.carry.session(&key, last, ttl);
        }
        let (tokens, bytes) = leases.expired(now);
        for (key, n, interval) in tokens {
            self.carry.rates(&key, interval, -i64::from(n));
        }
        for (key, n, until) in bytes {
            self.carry.bytes_at(key, until, -(n as i64));
        }
        let Ok(mut conn) = redis.conn() else {
            return;
        };
        let limit = self.timeout * 4;
        let answered = if self.carry.is_pending() {
            match self.carry.flush(&mut conn, limit).await {
                Ok(keys) if fallback => {
                    tracing::info!(
                        keys,
                        "carried into redis what was decided locally while it was away"
                    );
                    true
                }
                Ok(_) => true,
                Err(e) => {
                    if fallback {
                        tracing::warn!("carrying local decisions into redis (will retry): {e}");
                    }
                    false
                }
            }
        } else {
            let ping = ::redis::cmd("PING");
            let answer = tokio::time::timeout(self.timeout, ping.query_async::<()>(&mut conn));
            matches!(answer.await, Ok(Ok(())))
        };
        self.set_healthy(answered);
    }
}
