//! One account's handles on its state, kept with its cached identity: the keys its session, rate
//! limiters and byte counters live under, and the slots of the in-memory cells once found (see
//! [`super::cells`]). Built once per verified token, under one policy (rule indexes are that
//! policy's).

use std::sync::Arc;

use vendorgate_policy::{ByteRule, Direction, Policy, VerifiedToken};

use super::cells::{CounterCell, RateCell, SessionCell, Slot};
use super::keys::{byte_key, rate_key, session_key, KeyPrefix};
use super::sessions::Session;

/// One rule's state for one account: the key that finds the shared cell, and the slot that keeps
/// it once found.
pub struct RuleState<C> {
    pub key: Arc<str>,
    pub slot: Slot<C>,
}

impl<C> RuleState<C> {
    pub fn new(key: Arc<str>) -> Self {
        RuleState {
            key,
            slot: Slot::default(),
        }
    }
}

pub struct AccountState {
    /// The in-memory session cell, once found.
    pub session: Slot<SessionCell>,
    /// The session's entry among the live sessions (see [`super::sessions`]), once found.
    pub session_stats: Slot<Session>,
    /// The account's behaviour, for the detectors (see [`super::activity`]), once found.
    pub activity: Slot<super::activity::AccountActivity>,
    /// The policy's rate limits and byte caps, by rule index.
    pub rates: Box<[RuleState<RateCell>]>,
    egress: Box<[RuleState<CounterCell>]>,
    ingress: Box<[RuleState<CounterCell>]>,
    /// The session's key (see [`session_key`]).
    pub session_key: Box<str>,
}

impl AccountState {
    /// `token`'s state under `policy`, its keys under `prefix`; `hash` is the token's cache key
    /// (the session key of a token with neither `sid` nor `jti`).
    pub fn new(policy: &Policy, prefix: &KeyPrefix, token: &VerifiedToken, hash: u128) -> Self {
        let vendor = policy
            .vendors
            .get(token.vendor)
            .map_or("", |v| v.id.as_str());
        let account = &token.account;
        let byte_states = |direction: Direction, rules: &[ByteRule]| {
            rules
                .iter()
                .map(|rule| RuleState::new(byte_key(prefix, direction, rule, vendor, account)))
                .collect()
        };
        AccountState {
            session: Slot::default(),
            session_stats: Slot::default(),
            activity: Slot::default(),
            rates: policy
                .rate_rules
                .iter()
                .map(|rule| RuleState::new(rate_key(prefix, rule, vendor, account)))
                .collect(),
            egress: byte_states(Direction::Egress, &policy.egress_rules),
            ingress: byte_states(Direction::Ingress, &policy.ingress_rules),
            session_key: session_key(prefix, vendor, token, hash).into(),
        }
    }

    /// The state of the ingress or egress caps, by rule index.
    pub fn bytes(&self, direction: Direction) -> &[RuleState<CounterCell>] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}
