//! Phase 4, limit: sessions, request rates and byte budgets for one allowed request (only now: a
//! request that fails authentication must not spend anyone's rate limit or touch a session), and
//! the `RateLimit` headers that let well-behaved clients pace themselves
//! (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "id";q=10;w=60` and
//! `RateLimit: "id";r=3;t=12`).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use vendorgate_policy::{
    Allow, ByteRule, Denial, Direction, GcraOutcome, Policy, RateRule, Reason,
};

use super::Refusal;

use crate::identity::cache::Identity;
use crate::state::account::RuleState;
use crate::state::keys::{byte_key, rate_key};
use crate::state::{Counter, SessionOutcome, StateError, StateStore};

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A refusal by a limit, with what the client needs to know to come back.
pub struct Limited {
    pub denial: Denial,
    pub retry_after_secs: u64,
    pub headers: HeaderMap,
}

fn state_denial(e: StateError) -> Refusal {
    Refusal::Policy(Denial::new(Reason::StateUnavailable, e.to_string()))
}

/// What the limits let through: the headers to answer with, and the byte counters the bodies
/// are metered against.
pub struct Admitted {
    pub rate_headers: RateHeaders,
    pub ingress: Vec<Counter>,
    pub egress: Vec<Counter>,
    /// What the egress budget had left when the request was let through.
    pub egress_left: u64,
}

/// The phase: the session's idle timeout, every rate limit, then the ingress budget (a declared
/// upload that cannot fit is refused before it is read) and the egress budget (nothing left:
/// refused before the upstream is asked). `now_us` is the request's time.
pub async fn limit(
    store: &StateStore,
    policy: &Policy,
    allow: &Allow,
    identity: &Identity,
    declared: Option<u64>,
    now_us: u64,
) -> Result<Admitted, Refusal> {
    let now_ms = now_us / 1000;
    check_session(store, policy, allow, identity, now_ms).await?;
    let rate_headers = check_rates(store, policy, allow, identity, now_us).await?;
    let ingress = byte_counters(store, policy, Direction::Ingress, allow, identity, now_ms);
    check_budget(store, &ingress, declared, Direction::Ingress, now_ms).await?;
    let egress = byte_counters(store, policy, Direction::Egress, allow, identity, now_ms);
    let egress_left = check_budget(store, &egress, None, Direction::Egress, now_ms).await?;
    Ok(Admitted {
        rate_headers,
        ingress,
        egress,
        egress_left,
    })
}

/// Idle timeout: the session must have seen a request within it (its lifetime is a rule of
/// [`Policy::decide`]). The record outlives the token so
/// an idled-out token stays refused until it expires. `now_ms` is the request's time (milliseconds
/// since the epoch), as for every check here.
pub async fn check_session(
    store: &StateStore,
    policy: &Policy,
    allow: &Allow,
    identity: &Identity,
    now_ms: u64,
) -> Result<(), Refusal> {
    let now = now_ms / 1000;
    let token = &identity.standing;
    let vendor = &policy.vendors[allow.vendor];
    let key = &identity.state.session_key;
    let idle_ms = vendor.session_idle.as_millis() as u64;
    let ttl_ms = (token.exp.saturating_sub(now) * 1000).max(idle_ms) + 60_000;
    match store
        .touch_session(key, &identity.state.session, idle_ms, ttl_ms, now_ms)
        .await
        .map_err(state_denial)?
    {
        SessionOutcome::Active => Ok(()),
        SessionOutcome::IdleExpired => Err(Refusal::Policy(Denial::new(
            Reason::SessionIdleExpired,
            "sessions.idle_timeout",
        ))),
    }
}

/// `RateLimit-Policy` / `RateLimit` values for the rules that applied, as `", "`-separated lists.
#[derive(Default)]
pub struct RateHeaders {
    policy: String,
    state: String,
}

/// Appends `"id";a=1;b=2` to a list.
fn push_item(list: &mut String, id: &str, params: [(&str, u64); 2]) {
    // Room for the item at once: grown a character at a time, the list reallocated four times.
    list.reserve(id.len() + 2 * (3 + 20) + 4);
    if !list.is_empty() {
        list.push_str(", ");
    }
    list.push('"');
    list.push_str(id);
    list.push('"');
    for (name, value) in params {
        list.push(';');
        list.push_str(name);
        list.push_str(itoa::Buffer::new().format(value));
    }
}

impl RateHeaders {
    fn add(&mut self, rule: &RateRule, o: &GcraOutcome) {
        let window = rule.period.as_secs().max(1);
        push_item(
            &mut self.policy,
            &rule.id,
            [("q=", u64::from(rule.burst)), ("w=", window)],
        );
        let reset_ms = if o.allowed {
            (u64::from(rule.burst.saturating_sub(o.remaining)) * rule.interval_us()).div_ceil(1000)
        } else {
            o.retry_after_ms
        };
        push_item(
            &mut self.state,
            &rule.id,
            [
                ("r=", u64::from(o.remaining)),
                ("t=", reset_ms.div_ceil(1000)),
            ],
        );
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        if self.policy.is_empty() {
            return;
        }
        for (name, items) in [(&RATELIMIT_POLICY, self.policy), (&RATELIMIT, self.state)] {
            // The lists become the values as they are, without a copy.
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(items)) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// Rule `i`'s state for this identity, made with it under the same policy (see
/// [`Identity::rates`]). Should the identity lack it, a fresh one for `key` goes in `made`: a fresh
/// slot still reaches the account's shared cell, by key, so the request is counted all the same.
fn rule_state<'a, C>(
    states: &'a [RuleState<C>],
    i: usize,
    made: &'a mut Option<RuleState<C>>,
    key: impl FnOnce() -> Arc<str>,
) -> &'a RuleState<C> {
    match states.get(i) {
        Some(state) => state,
        None => made.insert(RuleState::new(key())),
    }
}

/// Every rate limit on this request's class, at the request's time in microseconds. The first one
/// used up refuses it with `Retry-After`.
pub async fn check_rates(
    store: &StateStore,
    policy: &Policy,
    allow: &Allow,
    identity: &Identity,
    now_us: u64,
) -> Result<RateHeaders, Refusal> {
    let mut headers = RateHeaders::default();
    for (i, rule) in policy.rate_rules_for(allow.vendor, allow.route) {
        let mut made = None;
        let state = rule_state(&identity.state.rates, i, &mut made, || {
            let vendor = &policy.vendors[allow.vendor].id;
            rate_key(&store.prefix, rule, vendor, &identity.token.account)
        });
        let (key, slot) = (&state.key, &state.slot);
        let outcome = store
            .rate(rule, key, slot, now_us)
            .await
            .map_err(state_denial)?;
        headers.add(rule, &outcome);
        if !outcome.allowed {
            let mut map = HeaderMap::new();
            headers.apply(&mut map);
            return Err(Refusal::Limited(Limited {
                denial: Denial::new(
                    Reason::ExportRateLimited,
                    format!("limits.rate[{}]", rule.id),
                ),
                retry_after_secs: outcome.retry_after_ms.div_ceil(1000).max(1),
                headers: map,
            }));
        }
    }
    Ok(headers)
}

/// The counters of the egress or ingress caps on this request, for the current windows.
pub fn byte_counters(
    store: &StateStore,
    policy: &Policy,
    direction: Direction,
    allow: &Allow,
    identity: &Identity,
    now_ms: u64,
) -> Vec<Counter> {
    let states = identity.state.bytes(direction);
    policy
        .byte_rules_for(direction, allow.vendor, allow.route)
        .map(|(i, rule): (usize, &ByteRule)| {
            let mut made = None;
            let state = rule_state(states, i, &mut made, || {
                let vendor = &policy.vendors[allow.vendor].id;
                byte_key(
                    &store.prefix,
                    direction,
                    rule,
                    vendor,
                    &identity.token.account,
                )
            });
            let (start, end) = rule.window_at(now_ms);
            let key = || state.key.clone();
            let place = store.counter_place(&state.slot, key, now_ms, (start, end));
            Counter {
                place,
                window_start: start,
                max: rule.max,
                reset_at_ms: end,
            }
        })
        .collect()
}

/// What is left of a byte budget, refusing when nothing is (or when `declared` bytes would not fit).
pub async fn check_budget(
    store: &StateStore,
    counters: &[Counter],
    declared: Option<u64>,
    direction: Direction,
    now_ms: u64,
) -> Result<u64, Refusal> {
    if counters.is_empty() {
        return Ok(u64::MAX);
    }
    let need = declared.unwrap_or(1).max(1);
    let remaining = store
        .budget(counters, need, now_ms)
        .await
        .map_err(state_denial)?;
    let left = remaining.iter().copied().min().unwrap_or(u64::MAX);
    if left >= need {
        return Ok(left);
    }
    // Retry when every counter that is too short has reset.
    let reset = counters
        .iter()
        .zip(&remaining)
        .filter(|(_, rem)| **rem < need)
        .map(|(c, _)| c.reset_at_ms)
        .max()
        .unwrap_or(now_ms);
    Err(Refusal::Limited(Limited {
        denial: Denial::new(
            direction.reason(),
            format!(
                "limits.{} ({left} bytes left in the window)",
                direction.as_str()
            ),
        ),
        retry_after_secs: reset.saturating_sub(now_ms).div_ceil(1000).max(1),
        headers: HeaderMap::new(),
    }))
}
