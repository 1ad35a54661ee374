//! The limit phase of the pipeline: sessions, request rates and byte budgets for one allowed
//! request, and the `RateLimit` headers that let well-behaved clients pace themselves
//! (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "id";q=10;w=60` and
//! `RateLimit: "id";r=3;t=12`).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use vendorgate_policy::config::Scope;
use vendorgate_policy::{
    Allow, ByteRule, Denial, GcraOutcome, Policy, RateRule, Reason, VerifiedToken,
};

use crate::identity::cache::{Identity, RuleState};
use crate::state::{Counter, SessionOutcome, StateError, StateStore};

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A refusal by a limit, with what the client needs to know to come back.
pub struct Limited {
    pub denial: Denial,
    pub retry_after_secs: u64,
    pub headers: HeaderMap,
}

fn state_denial(e: StateError) -> Denial {
    Denial::new(Reason::StateUnavailable, e.to_string())
}

/// The state key of a session: the token's `sid`, else its `jti`, else the token's hash; scoped to
/// the vendor so two IdP tenants' ids cannot collide.
pub fn session_key(prefix: &str, vendor: &str, token: &VerifiedToken, token_hash: u128) -> String {
    match (&token.sid, &token.jti) {
        (Some(sid), _) => key(&[prefix, "sess", vendor, "sid", sid]),
        (None, Some(jti)) => key(&[prefix, "sess", vendor, "jti", jti]),
        (None, None) => key(&[prefix, "sess", vendor, "tok", &format!("{token_hash:032x}")]),
    }
}

/// A state key: the parts joined by `:`. Built with one allocation of the right size; keys are
/// made several times a request, and `format!` cost more than the lookups they serve.
fn key(parts: &[&str]) -> String {
    parts.join(":")
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
) -> Result<(), Denial> {
    let now = now_ms / 1000;
    let token = &identity.standing;
    let vendor = &policy.vendors[allow.vendor];
    let key = &identity.session_key;
    let idle_ms = vendor.session_idle.as_millis() as u64;
    let ttl_ms = (token.exp.saturating_sub(now) * 1000).max(idle_ms) + 60_000;
    match store
        .touch_session(key, &identity.session, idle_ms, ttl_ms, now_ms)
        .await
        .map_err(state_denial)?
    {
        SessionOutcome::Active => Ok(()),
        SessionOutcome::IdleExpired => Err(Denial::new(
            Reason::SessionIdleExpired,
            "sessions.idle_timeout",
        )),
    }
}

/// The state key of `rule`'s limiter for this account (or its vendor, by the rule's scope).
pub fn rate_key(prefix: &str, rule: &RateRule, vendor: &str, account: &str) -> Arc<str> {
    scope_key(prefix, "rate", &rule.id, rule.per, vendor, account)
}

/// The state key of a byte counter (`ingress` or `egress`) for this account or its vendor, without
/// the window (see [`crate::state::Place::Key`]).
pub fn byte_key(
    prefix: &str,
    ingress: bool,
    rule: &ByteRule,
    vendor: &str,
    account: &str,
) -> Arc<str> {
    let kind = if ingress { "ingress" } else { "egress" };
    scope_key(prefix, kind, &rule.id, rule.per, vendor, account)
}

fn scope_key(
    prefix: &str,
    kind: &str,
    id: &str,
    per: Scope,
    vendor: &str,
    account: &str,
) -> Arc<str> {
    Arc::from(match per {
        Scope::Account => key(&[prefix, kind, id, "a", vendor, account]),
        Scope::Vendor => key(&[prefix, kind, id, "v", vendor]),
    })
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
) -> Result<RateHeaders, Result<Limited, Denial>> {
    let mut headers = RateHeaders::default();
    for (i, rule) in policy.rate_rules_for(allow.vendor, allow.route) {
        let mut made = None;
        let state = rule_state(&identity.rates, i, &mut made, || {
            let vendor = &policy.vendors[allow.vendor].id;
            rate_key(&store.prefix, rule, vendor, &identity.token.account)
        });
        let (key, slot) = (&state.key, &state.slot);
        let outcome = store
            .rate(rule, key, slot, now_us)
            .await
            .map_err(|e| Err(state_denial(e)))?;
        headers.add(rule, &outcome);
        if !outcome.allowed {
            let mut map = HeaderMap::new();
            headers.apply(&mut map);
            return Err(Ok(Limited {
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
    ingress: bool,
    allow: &Allow,
    identity: &Identity,
    now_ms: u64,
) -> Vec<Counter> {
    let states = identity.byte_state(ingress);
    policy
        .byte_rules_for(ingress, allow.vendor, allow.route)
        .map(|(i, rule): (usize, &ByteRule)| {
            let mut made = None;
            let state = rule_state(states, i, &mut made, || {
                let vendor = &policy.vendors[allow.vendor].id;
                byte_key(
                    &store.prefix,
                    ingress,
                    rule,
                    vendor,
                    &identity.token.account,
                )
            });
            let place = store.counter_place(&state.slot, || state.key.clone(), now_ms);
            let (start, end) = rule.window_at(now_ms);
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
    reason: Reason,
    now_ms: u64,
) -> Result<u64, Result<Limited, Denial>> {
    if counters.is_empty() {
        return Ok(u64::MAX);
    }
    let remaining = store
        .remaining(counters, now_ms)
        .await
        .map_err(|e| Err(state_denial(e)))?;
    let left = remaining.iter().copied().min().unwrap_or(u64::MAX);
    let need = declared.unwrap_or(1).max(1);
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
    let kind = if reason == Reason::IngressCapExceeded {
        "ingress"
    } else {
        "egress"
    };
    Err(Ok(Limited {
        denial: Denial::new(
            reason,
            format!("limits.{kind} ({left} bytes left in the window)"),
        ),
        retry_after_secs: reset.saturating_sub(now_ms).div_ceil(1000).max(1),
        headers: HeaderMap::new(),
    }))
}
