//! What operators put in force at run time, beside the policy file: locks and just-in-time grants.
//! The proxy keeps one [`Controls`] (persisted, shared between replicas, swapped whole on a change)
//! and hands it to [`crate::Policy::decide`] with each request.

use serde::{Deserialize, Serialize};

use crate::grants::Grant;
use crate::locks::{Lock, LockTarget, Subject};

/// The locks and grants in force, as of some moment. Empty is the common case and costs one check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controls {
    pub locks: Vec<Lock>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// The list cannot be confirmed (the shared store is unreachable) and the proxy was told to
    /// be strict about it: every request is refused.
    #[serde(skip)]
    pub unknown: bool,
}

/// What the grants say about a class an account does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted<'a> {
    /// No active grant opens it.
    No,
    /// This grant opens it.
    By(&'a Grant),
    /// The grants that would open it are locked; the first lock found.
    Locked(&'a Lock),
}

impl Controls {
    /// Nothing to check: no locks, no grants, and none unknown.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.grants.is_empty() && !self.unknown
    }

    /// Whether the lock rule has anything to look at.
    pub fn locks_to_check(&self) -> bool {
        !self.locks.is_empty() || self.unknown
    }

    /// The first lock in force at `now` that matches `who`.
    pub fn matching(&self, who: &Subject, now: u64) -> Option<&Lock> {
        self.locks
            .iter()
            .find(|l| l.in_force(now) && l.matches(who))
    }

    /// The locks that have expired by `now`.
    pub fn expired(&self, now: u64) -> impl Iterator<Item = &Lock> {
        self.locks.iter().filter(move |l| !l.in_force(now))
    }

    /// The grants whose time is over at `now` (lapsed unapproved, or expired).
    pub fn grants_over(&self, now: u64) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(move |g| g.state(now).is_over())
    }

    pub fn grant(&self, id: &str) -> Option<&Grant> {
        self.grants.iter().find(|g| g.id == id)
    }

    /// Whether an active grant lets `account` of `vendor` use `class` at `now`, and is not locked.
    pub fn granted(&self, vendor: &str, account: &str, class: &str, now: u64) -> Granted<'_> {
        let mut locked = None;
        for grant in self
            .grants
            .iter()
            .filter(|g| g.opens(vendor, account, class, now))
        {
            let lock = self.locks.iter().find(|l| {
                l.in_force(now) && matches!(&l.target, LockTarget::Grant(id) if *id == grant.id)
            });
            match lock {
                None => return Granted::By(grant),
                Some(lock) => locked = locked.or(Some(lock)),
            }
        }
        locked.map_or(Granted::No, Granted::Locked)
    }
}
