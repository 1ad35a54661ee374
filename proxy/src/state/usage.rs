//! An account's standing against every limit that can apply to it: for each rate limit, the
//! requests left in its burst and when it is whole again; for each byte cap, the bytes used in the
//! current window, what is left and when the window resets. Read without spending anything.

use serde::Serialize;
use vendorgate_policy::config::Scope;
use vendorgate_policy::{Direction, Policy};

use super::keys::{byte_key, rate_key};
use super::{Counter, Place, StateError, StateStore};

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleUsage {
    Rate {
        id: String,
        per: &'static str,
        requests: u32,
        period_secs: u64,
        burst: u32,
        remaining: u32,
        full_in_secs: u64,
    },
    Bytes {
        id: String,
        direction: &'static str,
        per: &'static str,
        max: u64,
        used: u64,
        remaining: u64,
        window_secs: u64,
        resets_in_secs: u64,
    },
}

fn scope(per: Scope) -> &'static str {
    match per {
        Scope::Account => "account",
        Scope::Vendor => "vendor",
    }
}

/// The standing of `account` of vendor `vendor` (an index into `policy.vendors`) at `now_us`.
pub async fn usage(
    store: &StateStore,
    policy: &Policy,
    vendor: usize,
    account: &str,
    now_us: u64,
) -> Result<Vec<RuleUsage>, StateError> {
    let vendor_id = &policy.vendors[vendor].id;
    let applies = |vendors: &[usize]| vendors.is_empty() || vendors.contains(&vendor);
    let mut out = Vec::new();
    for rule in policy.rate_rules.iter().filter(|r| applies(&r.vendors)) {
        let key = rate_key(&store.prefix, rule, vendor_id, account);
        let (remaining, full_in_us) = store.rate_standing(rule, &key, now_us).await?;
        out.push(RuleUsage::Rate {
            id: rule.id.clone(),
            per: scope(rule.per),
            requests: rule.requests,
            period_secs: rule.period.as_secs(),
            burst: rule.burst,
            remaining,
            full_in_secs: full_in_us.div_ceil(1_000_000),
        });
    }
    let now_ms = now_us / 1000;
    for direction in [Direction::Egress, Direction::Ingress] {
        let rules = match direction {
            Direction::Egress => &policy.egress_rules,
            Direction::Ingress => &policy.ingress_rules,
        };
        for rule in rules.iter().filter(|r| applies(&r.vendors)) {
            let key = byte_key(&store.prefix, direction, rule, vendor_id, account);
            let (start, end) = rule.window_at(now_ms);
            let counter = Counter {
                place: Place::Key(key),
                window_start: start,
                max: rule.max,
                reset_at_ms: end,
            };
            let remaining = store
                .remaining(std::slice::from_ref(&counter), now_ms)
                .await?
                .first()
                .copied()
                .unwrap_or(rule.max);
            out.push(RuleUsage::Bytes {
                id: rule.id.clone(),
                direction: direction.as_str(),
                per: scope(rule.per),
                max: rule.max,
                used: rule.max.saturating_sub(remaining),
                remaining,
                window_secs: rule.window.as_secs(),
                resets_in_secs: end.saturating_sub(now_ms).div_ceil(1000),
            });
        }
    }
    Ok(out)
}
