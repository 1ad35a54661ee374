//! Sessions, rate limits and byte caps as compiled rules, and the arithmetic every backend runs:
//! [`gcra`] and [`session_step`] are what the in-memory cells call with the request's time, and
//! what the Redis scripts mirror line for line (a conformance test drives both with one sequence).
//! Counting happens in the proxy's state backends; what to count, for whom, and with which numbers
//! is decided here.

use std::time::Duration;

use crate::config::Scope;

/// A compiled `[[limits.rate]]`: GCRA with `interval` between requests and `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRule {
    pub id: String,
    pub per: Scope,
    pub classes: u128,
    /// Empty: every vendor.
    pub vendors: Vec<usize>,
    pub requests: u32,
    pub period: Duration,
    pub burst: u32,
}

impl RateRule {
    /// Time between evenly spaced requests (the GCRA emission interval), in microseconds: a rule
    /// of more than 1,000 requests a second still has a non-zero interval (milliseconds rounded
    /// such a rule down to zero, then up to a stricter 1 ms).
    pub fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.requests.max(1))).max(1)
    }
}

/// Which way bytes flow: a byte cap counts one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Request bodies, to the SaaS (`[[limits.ingress]]`).
    Ingress,
    /// Response bodies, to the agent (`[[limits.egress]]`).
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The refusal when the cap is used up.
    pub fn reason(self) -> crate::Reason {
        match self {
            Direction::Ingress => crate::Reason::IngressCapExceeded,
            Direction::Egress => crate::Reason::EgressCapExceeded,
        }
    }
}

/// A compiled `[[limits.egress]]` or `[[limits.ingress]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteRule {
    pub id: String,
    pub per: Scope,
    /// All ones: every class.
    pub classes: u128,
    pub vendors: Vec<usize>,
    pub max: u64,
    pub window: Duration,
}

impl ByteRule {
    /// The start of the fixed window holding `now_ms`, and when it ends.
    pub fn window_at(&self, now_ms: u64) -> (u64, u64) {
        let len = (self.window.as_millis() as u64).max(1);
        let start = now_ms - now_ms % len;
        (start, start + len)
    }
}

pub(crate) fn applies(classes: u128, vendors: &[usize], class: usize, vendor: usize) -> bool {
    classes & (1 << class) != 0 && (vendors.is_empty() || vendors.contains(&vendor))
}

/// One GCRA step, all times in microseconds. `tat` is the theoretical arrival time stored for
/// the key (0 when new). Returns whether the request is allowed, the new TAT to store when it is,
/// the wait before a retry when not (rounded up to whole milliseconds), and how many requests
/// remain in the burst.
pub fn gcra(tat: u64, now_us: u64, interval_us: u64, burst: u32) -> GcraOutcome {
    let tolerance = interval_us * u64::from(burst.max(1) - 1);
    let tat = tat.max(now_us);
    let allow_at = tat.saturating_sub(tolerance);
    if now_us < allow_at {
        return GcraOutcome {
            allowed: false,
            new_tat: tat,
            retry_after_ms: (allow_at - now_us).div_ceil(1000),
            remaining: 0,
        };
    }
    let new_tat = tat + interval_us;
    let used = (new_tat - now_us).div_ceil(interval_us);
    GcraOutcome {
        allowed: true,
        new_tat,
        retry_after_ms: 0,
        remaining: u64::from(burst.max(1)).saturating_sub(used) as u32,
    }
}

/// Up to `want` GCRA steps at once (a replica leasing requests from a shared limit, see the proxy's
/// `state::leases`): as many as conform now, in order, each as [`gcra`] would take it. Returns how
/// many were granted (0: refused, with the wait before the first would conform, whole
/// milliseconds), the new TAT, and the burst left after them. `want = 1` is [`gcra`].
pub fn gcra_take(
    tat: u64,
    now_us: u64,
    interval_us: u64,
    burst: u32,
    want: u32,
) -> (u32, GcraOutcome) {
    let interval_us = interval_us.max(1);
    let tolerance = interval_us * u64::from(burst.max(1) - 1);
    let tat = tat.max(now_us);
    let allow_at = tat.saturating_sub(tolerance);
    if now_us < allow_at {
        let refused = GcraOutcome {
            allowed: false,
            new_tat: tat,
            retry_after_ms: (allow_at - now_us).div_ceil(1000),
            remaining: 0,
        };
        return (0, refused);
    }
    // The j-th step (from 0) conforms while tat + j·interval - tolerance <= now.
    let conforming = (now_us - allow_at) / interval_us + 1;
    let granted = conforming.min(u64::from(want)) as u32;
    let new_tat = tat + interval_us * u64::from(granted);
    let used = (new_tat - now_us).div_ceil(interval_us);
    let outcome = GcraOutcome {
        allowed: granted > 0,
        new_tat,
        retry_after_ms: 0,
        remaining: u64::from(burst.max(1)).saturating_sub(used) as u32,
    };
    (granted, outcome)
}

/// What is stored of a session between requests (nothing once it has expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// The last request's time (ms since the epoch).
    pub last_ms: u64,
    /// Idled out: refused until the record expires.
    pub dead: bool,
}

/// What one request does to its session, and what the store must write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStep {
    /// Allowed: store `last_ms = now`, kept for the session's TTL from now.
    Active,
    /// Idle past the timeout as of this request: refused; store `dead`, kept for the TTL from now,
    /// so the token stays refused until it expires.
    IdledOut,
    /// Already idled out: refused; nothing changes.
    Dead,
}

impl SessionStep {
    pub fn allowed(self) -> bool {
        self == SessionStep::Active
    }
}

/// The idle-timeout rule. `record` is the session's stored record, `None` when there is none
/// (new, or expired: a session starts at its first request).
pub fn session_step(record: Option<SessionRecord>, now_ms: u64, idle_ms: u64) -> SessionStep {
    match record {
        Some(r) if r.dead => SessionStep::Dead,
        Some(r) if now_ms.saturating_sub(r.last_ms) > idle_ms => SessionStep::IdledOut,
        _ => SessionStep::Active,
    }
}

/// Where a GCRA key stands without taking a step: the requests left in its burst at `now_us`, and
/// how long until the burst is whole again (microseconds). The same arithmetic as [`gcra`]'s
/// `remaining`, so what `usage` reports is what the next request would see.
pub fn gcra_standing(tat: u64, now_us: u64, interval_us: u64, burst: u32) -> (u32, u64) {
    let interval = interval_us.max(1);
    let ahead = tat.saturating_sub(now_us);
    let used = ahead.div_ceil(interval);
    let remaining = u64::from(burst.max(1)).saturating_sub(used) as u32;
    (remaining, ahead)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraOutcome {
    pub allowed: bool,
    pub new_tat: u64,
    pub retry_after_ms: u64,
    pub remaining: u32,
}

#[cfg(test)]
mod tests {

    #[test]
    fn taking_several_steps_at_once_is_taking_them_one_by_one() {
        for (burst, interval, start_tat, now) in [
            (10u32, 1000u64, 0u64, 5_000_000u64),
            (10, 1000, 5_004_000, 5_000_000),
            (1, 250, 0, 77),
            (64, 7, 1_000_300, 1_000_000),
            (3, 1_000_000, 9_000_000, 7_100_000),
        ] {
            for want in [1u32, 2, 5, 64, 200] {
                let (granted, out) = gcra_take(start_tat, now, interval, burst, want);
                let mut tat = start_tat;
                let mut one_by_one = 0;
                let mut last = gcra(tat, now, interval, burst);
                while one_by_one < want {
                    let step = gcra(tat, now, interval, burst);
                    if !step.allowed {
                        if one_by_one == 0 {
                            last = step;
                        }
                        break;
                    }
                    tat = step.new_tat;
                    last = step;
                    one_by_one += 1;
                }
                assert_eq!(
                    granted, one_by_one,
                    "burst {burst} interval {interval} want {want}"
                );
                assert_eq!(out, last, "burst {burst} interval {interval} want {want}");
            }
        }
    }

    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_spaces_requests() {
        // 10 a minute (one per 6 s), burst 3; times in microseconds.
        let (interval, burst) = (6_000_000, 3);
        let mut tat = 0;
        let now = 1_000_000_000;
        let mut remaining = vec![];
        for _ in 0..3 {
            let o = gcra(tat, now, interval, burst);
            assert!(o.allowed);
            remaining.push(o.remaining);
            tat = o.new_tat;
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = gcra(tat, now, interval, burst);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 6_000);
        // After the advertised wait, exactly one more.
        let later = gcra(tat, now + 6_000_000, interval, burst);
        assert!(later.allowed);
        assert!(!gcra(later.new_tat, now + 6_000_000, interval, burst).allowed);
        // After a long pause, the full burst again.
        assert_eq!(gcra(tat, now + 60_000_000, interval, burst).remaining, 2);
    }

    #[test]
    fn fast_rules_keep_their_rate() {
        // 100,000 a second: a 10 µs interval, which whole milliseconds would have made 1 ms
        // (100 times stricter than configured).
        let rule = RateRule {
            id: "fast".into(),
            per: Scope::Account,
            classes: u128::MAX,
            vendors: vec![],
            requests: 100_000,
            period: Duration::from_secs(1),
            burst: 1,
        };
        assert_eq!(rule.interval_us(), 10);
        let first = gcra(0, 5_000_000, rule.interval_us(), 1);
        assert!(first.allowed);
        assert!(!gcra(first.new_tat, 5_000_000, rule.interval_us(), 1).allowed);
        assert!(gcra(first.new_tat, 5_000_010, rule.interval_us(), 1).allowed);
    }

    #[test]
    fn standing_agrees_with_the_steps() {
        let (interval, burst, now) = (6_000_000, 3, 1_000_000_000);
        assert_eq!(gcra_standing(0, now, interval, burst), (3, 0));
        let first = gcra(0, now, interval, burst);
        // After each request: what the step said remains, and the burst whole again that many
        // intervals on.
        assert_eq!(
            gcra_standing(first.new_tat, now, interval, burst),
            (first.remaining, interval)
        );
        let second = gcra(first.new_tat, now, interval, burst);
        assert_eq!(
            gcra_standing(second.new_tat, now, interval, burst),
            (second.remaining, 2 * interval)
        );
    }

    #[test]
    fn a_session_idles_out_and_stays_out() {
        let idle = 1_000;
        assert_eq!(session_step(None, 5_000, idle), SessionStep::Active);
        let live = SessionRecord {
            last_ms: 5_000,
            dead: false,
        };
        assert_eq!(session_step(Some(live), 6_000, idle), SessionStep::Active);
        assert_eq!(session_step(Some(live), 6_001, idle), SessionStep::IdledOut);
        let dead = SessionRecord { dead: true, ..live };
        assert_eq!(session_step(Some(dead), 5_001, idle), SessionStep::Dead);
    }

    #[test]
    fn windows_are_aligned() {
        let rule = ByteRule {
            id: "x".into(),
            per: Scope::Account,
            classes: u128::MAX,
            vendors: vec![],
            max: 10,
            window: Duration::from_secs(3600),
        };
        assert_eq!(rule.window_at(7_200_000 + 5), (7_200_000, 10_800_000));
    }
}
