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

use vendorgate_policy::config::{Backend, OnStateError, StateConfig};
use vendorgate_policy::{GcraOutcome, RateRule, SessionStep};

use carry::Carry;
use cells::{CounterCell, RateCell, SessionCell, Slot};
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
}

impl Counter {
    pub fn key(&self) -> &Arc<str> {
        match &self.place {
            Place::Cell(cell) => &cell.key,
            Place::Key(key) => key,
        }
    }

    /// The counter's key in Redis: one per window.
    pub fn windowed_key(&self) -> String {
        let mut n = itoa::Buffer::new();
        [&**self.key(), ":", n.format(self.window_start)].concat()
    }
}

pub struct StateStore {
    redis: Option<RedisState>,
    local: MemoryState,
    on_error: OnStateError,
    timeout: Duration,
    pub prefix: String,
    errors: AtomicU64,
    log_throttle: LogThrottle,
    /// What was decided locally while Redis was away, to carry into it on its return.
    carry: Carry,
}

impl StateStore {
    pub fn new(config: &StateConfig) -> Arc<Self> {
        let redis = match (config.backend, &config.redis_url) {
            (Backend::Redis, Some(url)) => {
                Some(RedisState::connect(url.get_ref().clone(), config.timeout.0))
            }
            _ => None,
        };
        let store = Arc::new(StateStore {
            redis,
            local: MemoryState::new(config.max_keys),
            on_error: config.on_state_error,
            timeout: config.timeout.0,
            prefix: config.key_prefix.clone(),
            errors: AtomicU64::new(0),
            log_throttle: LogThrottle::default(),
            carry: Carry::default(),
        });
        every(&store, Duration::from_secs(10), |s| async move {
            s.local.evict(now_ms());
        });
        if store.redis.is_some() && store.on_error == OnStateError::Local {
            every(&store, Duration::from_secs(1), |s| async move {
                s.carry().await
            });
        }
        store
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
            let err = match tokio::time::timeout(self.timeout, op).await {
                Ok(Ok(v)) => return Some(Ok(v)),
                Ok(Err(e)) => e,
                Err(_) => StateError::Timeout,
            };
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
            if let Some(out) = self
                .shared("session", r.touch_session(key, idle_ms, ttl_ms, Some(now)))
                .await
            {
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
            if let Some(out) = self.shared("rate", r.rate(rule, key, None)).await {
                return out;
            }
        }
        let out = self.local.rate_in(rule, key, slot, now_us);
        if self.redis.is_some() && out.allowed {
            self.carry.rate(key, rule.interval_us());
        }
        Ok(out)
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
    /// is only made the first time); its key when counters are shared through Redis (the local
    /// fallback then finds cells by key).
    pub fn counter_place(
        &self,
        slot: &Slot<CounterCell>,
        key: impl FnOnce() -> Arc<str>,
        now: u64,
    ) -> Place {
        if self.redis.is_some() {
            return Place::Key(key());
        }
        Place::Cell(self.local.counter_cell(slot, key, now))
    }

    pub async fn lease(&self, counters: &[Counter], want: u64) -> Result<u64, StateError> {
        let now = now_ms();
        if let Some(r) = &self.redis {
            if let Some(out) = self.shared("lease", r.lease(counters, want, now)).await {
                return out;
            }
        }
        let granted = self.local.lease_now(counters, want, now);
        if self.redis.is_some() {
            self.carry.bytes(counters, granted as i64);
        }
        Ok(granted)
    }

    /// A lease decided without waiting, when the counters live in this process's memory; `None`
    /// when they are shared through Redis (use [`StateStore::lease`]).
    pub fn lease_now(&self, counters: &[Counter], want: u64) -> Option<u64> {
        if self.redis.is_some() {
            return None;
        }
        Some(self.local.lease_now(counters, want, now_ms()))
    }

    /// [`StateStore::release`] at once when the counters are in memory; false when they are in
    /// Redis and the caller must use the async call.
    pub fn release_now(&self, counters: &[Counter], amount: u64) -> bool {
        if self.redis.is_some() {
            return false;
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
    /// Carries what was decided locally into Redis if it answers again (see [`carry`]); run every
    /// second when `on_state_error = "local"`.
    async fn carry(&self) {
        if !self.carry.is_pending() {
            return;
        }
        let Some(Ok(mut conn)) = self.redis.as_ref().map(RedisState::conn) else {
            return;
        };
        match self.carry.flush(&mut conn, self.timeout * 4).await {
            Ok(keys) => tracing::info!(
                keys,
                "carried into redis what was decided locally while it was away"
            ),
            Err(e) => tracing::warn!("carrying local decisions into redis (will retry): {e}"),
        }
    }
}
