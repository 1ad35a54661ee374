//! Locks: the kill switch. A lock names a target (an account, a vendor, a session, a source
//! network, a grant) and refuses every request of it until it is removed or expires. Locks in
//! force are data, not config: the proxy keeps them with the grants ([`crate::Controls`]) and
//! hands them to [`crate::Policy::decide`] with each request, where they are one rule among the
//! others.
//!
//! Matching is here, pure, so the same function decides a new request and which streams already
//! in flight must be cut.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// What a lock targets. Any matching lock applies; there are no wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum LockTarget {
    /// An account (the token's account claim), whichever vendor it signs in through.
    Account(String),
    /// Every account of a vendor (its configured id).
    Vendor(String),
    /// One session: the token's `sid`, else its `jti`.
    Session(String),
    /// Every request from a source network (the client address the policy uses).
    Network(IpNetwork),
    /// What a just-in-time grant opens (a grant's revocation): requests it would allow are
    /// refused and its streams cut; the account keeps what it holds without it.
    Grant(String),
}

impl fmt::Display for LockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockTarget::Account(a) => write!(f, "account {a}"),
            LockTarget::Vendor(v) => write!(f, "vendor {v}"),
            LockTarget::Session(s) => write!(f, "session {s}"),
            LockTarget::Network(n) => write!(f, "network {n}"),
            LockTarget::Grant(g) => write!(f, "grant {g}"),
        }
    }
}

/// One lock, as created, persisted and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Unique, chosen by the proxy (`lk_` and 16 hex digits).
    pub id: String,
    pub target: LockTarget,
    /// Why, for the people who read the trail (never sent to the agent).
    pub message: String,
    /// Who created it (the admin token's name).
    pub created_by: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Seconds since the epoch; `None`: until removed.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// A session revocation rather than a lock: refused as `session_revoked` (401: the agent signs
    /// in again) instead of `locked`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revocation: bool,
}

impl Lock {
    pub fn in_force(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    /// The refusal it causes.
    pub fn reason(&self) -> crate::Reason {
        if self.revocation {
            crate::Reason::SessionRevoked
        } else {
            crate::Reason::Locked
        }
    }

    pub fn matches(&self, who: &Subject) -> bool {
        match &self.target {
            LockTarget::Account(a) => who.account == Some(a.as_str()),
            LockTarget::Vendor(v) => who.vendor == Some(v.as_str()),
            LockTarget::Session(s) => {
                who.sid == Some(s.as_str()) || (who.sid.is_none() && who.jti == Some(s.as_str()))
            }
            LockTarget::Network(n) => n.contains(who.client_ip),
            LockTarget::Grant(g) => who.grant == Some(g.as_str()),
        }
    }
}

/// Who a request (or a stream in flight) is, as locks see it. What is not known yet is `None`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub client_ip: IpAddr,
    pub vendor: Option<&'a str>,
    pub account: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub jti: Option<&'a str>,
    /// The grant that allowed it (a stream in flight), if one did.
    pub grant: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Controls;

    fn lock(target: LockTarget, expires_at: Option<u64>) -> Lock {
        Lock {
            id: "lk_1".into(),
            target,
            message: "compromised".into(),
            created_by: "soc".into(),
            created_at: 100,
            expires_at,
            revocation: false,
        }
    }

    #[test]
    fn each_target_matches_its_own_and_nothing_else() {
        let who = Subject {
            client_ip: "203.0.113.7".parse().unwrap(),
            vendor: Some("acme"),
            account: Some("agent-7"),
            sid: None,
            jti: Some("j-1"),
            grant: None,
        };
        let hits = [
            LockTarget::Account("agent-7".into()),
            LockTarget::Vendor("acme".into()),
            LockTarget::Session("j-1".into()),
            LockTarget::Network("203.0.113.0/24".parse().unwrap()),
        ];
        for t in hits {
            assert!(lock(t.clone(), None).matches(&who), "{t}");
        }
        let misses = [
            LockTarget::Account("agent-8".into()),
            LockTarget::Vendor("globex".into()),
            LockTarget::Session("j-2".into()),
            LockTarget::Network("198.51.100.0/24".parse().unwrap()),
        ];
        for t in misses {
            assert!(!lock(t.clone(), None).matches(&who), "{t}");
        }
        // A session with a sid is named by its sid, not its jti.
        let with_sid = Subject {
            sid: Some("s-1"),
            ..who
        };
        assert!(!lock(LockTarget::Session("j-1".into()), None).matches(&with_sid));
        assert!(lock(LockTarget::Session("s-1".into()), None).matches(&with_sid));
        // Before the token is known, only a network lock can match.
        let anonymous = Subject {
            vendor: None,
            account: None,
            sid: None,
            jti: None,
            ..who
        };
        assert!(!lock(LockTarget::Account("agent-7".into()), None).matches(&anonymous));
    }

    #[test]
    fn a_lock_holds_until_it_expires() {
        let who = Subject {
            client_ip: "203.0.113.7".parse().unwrap(),
            vendor: Some("acme"),
            account: Some("agent-7"),
            sid: None,
            jti: None,
            grant: None,
        };
        let set = Controls {
            locks: vec![lock(LockTarget::Vendor("acme".into()), Some(200))],
            ..Controls::default()
        };
        assert!(set.matching(&who, 199).is_some());
        assert!(set.matching(&who, 200).is_none());
        assert_eq!(set.expired(200).count(), 1);
        let json = serde_json::to_string(&set).unwrap();
        assert!(
            json.contains(r#""target":{"kind":"vendor","value":"acme"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Controls>(&json).unwrap(), set);
    }
}
