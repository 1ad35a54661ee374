//! Just-in-time grants: an account may use a class it does not hold (`export`, say) for a bounded
//! time, once someone other than the requester approved it.
//!
//! A grant is data, like a lock: the proxy keeps it (persisted, shared between replicas) and hands
//! it to [`crate::Policy::decide`] with each request, where it can open the class check and nothing
//! else. Its life: requested (pending, with a reason and a ticket) → approved (active until
//! `expires_at`) → expired; or denied, or left pending until it lapses, or revoked (a lock on the
//! grant, which also cuts what it is streaming). What happens at each step is checked here, pure,
//! so the admin API and the tests hold the same rules.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest a grant may ever last, whatever the config says (Teleport's ceiling too).
pub const MAX_DURATION_CEILING: Duration = Duration::from_secs(14 * 86_400);

/// `[grants]`, compiled: what may be asked for.
#[derive(Debug, Clone)]
pub struct GrantRules {
    pub max_duration: Duration,
    pub pending_ttl: Duration,
    /// Anchored: the whole ticket must match.
    pub ticket_pattern: Option<regex_lite::Regex>,
    /// Bit i set: class i may be granted.
    pub classes: u128,
}

impl Default for GrantRules {
    fn default() -> Self {
        GrantRules {
            max_duration: Duration::from_secs(8 * 3600),
            pending_ttl: Duration::from_secs(3600),
            ticket_pattern: None,
            classes: u128::MAX,
        }
    }
}

/// Why a grant request was refused: each is an admin API error code, with a detail for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("vendor {0:?} is not configured")]
    VendorUnknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("class {0:?} may not be granted (grants.classes)")]
    ClassNotGrantable(String),
    #[error("class {0:?} is already held by vendor {1:?}: nothing to grant")]
    AlreadyHeld(String, String),
    #[error("duration {asked}s is more than grants.max_duration ({max}s)")]
    TooLong { asked: u64, max: u64 },
    #[error("a ticket reference is required (grants.ticket_pattern)")]
    TicketMissing,
    #[error("ticket {0:?} does not match grants.ticket_pattern")]
    TicketInvalid(String),
}

impl RequestError {
    /// The admin API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::VendorUnknown(_) => "vendor_unknown",
            RequestError::Invalid(_) => "invalid_request",
            RequestError::ClassNotGrantable(_) => "class_not_grantable",
            RequestError::AlreadyHeld(..) => "class_already_held",
            RequestError::TooLong { .. } => "duration_too_long",
            RequestError::TicketMissing => "ticket_required",
            RequestError::TicketInvalid(_) => "ticket_invalid",
        }
    }
}

/// A request for a grant, as asked.
#[derive(Debug, Clone)]
pub struct GrantRequest<'a> {
    pub vendor: &'a str,
    pub account: &'a str,
    pub classes: &'a [String],
    pub duration: Duration,
    pub reason: &'a str,
    pub ticket: Option<&'a str>,
}

impl crate::Policy {
    /// Checks a request against `[grants]` and the vendors and classes, and makes the pending
    /// grant (`id` chosen by the caller, `by` the requester, `now` in seconds).
    pub fn request_grant(
        &self,
        req: &GrantRequest,
        id: String,
        by: &str,
        now: u64,
    ) -> Result<Grant, RequestError> {
        let rules = &self.grants;
        let vendor = self
            .vendors
            .iter()
            .find(|v| v.id == req.vendor)
            .ok_or_else(|| RequestError::VendorUnknown(req.vendor.to_string()))?;
        let text = |what: &str, value: &str, max: usize| {
            if value.trim().is_empty() || value.len() > max {
                Err(RequestError::Invalid(format!(
                    "{what} must be 1 to {max} bytes"
                )))
            } else {
                Ok(())
            }
        };
        text("account", req.account, 256)?;
        text("reason", req.reason, 1024)?;
        if req.classes.is_empty() {
            return Err(RequestError::Invalid(
                "classes must name at least one class".into(),
            ));
        }
        for name in req.classes {
            let Some(i) = self.classes.iter().position(|c| c == name) else {
                return Err(RequestError::Invalid(format!(
                    "class {name:?} is not used by any route"
                )));
            };
            if vendor.permits(i) {
                return Err(RequestError::AlreadyHeld(name.clone(), vendor.id.clone()));
            }
            if rules.classes & (1 << i) == 0 {
                return Err(RequestError::ClassNotGrantable(name.clone()));
            }
        }
        let asked = req.duration.as_secs();
        if asked == 0 {
            return Err(RequestError::Invalid("duration must be at least 1s".into()));
        }
        if req.duration > rules.max_duration {
            return Err(RequestError::TooLong {
                asked,
                max: rules.max_duration.as_secs(),
            });
        }
        let ticket = req.ticket.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = ticket {
            text("ticket", t, 128)?;
        }
        if let Some(pattern) = &rules.ticket_pattern {
            match ticket {
                None => return Err(RequestError::TicketMissing),
                Some(t) if !pattern.is_match(t) => {
                    return Err(RequestError::TicketInvalid(t.to_string()))
                }
                Some(_) => {}
            }
        }
        Ok(Grant {
            id,
            vendor: vendor.id.clone(),
            account: req.account.to_string(),
            classes: req.classes.to_vec(),
            reason: req.reason.to_string(),
            ticket: ticket.map(str::to_string),
            requested_by: by.to_string(),
            requested_at: now,
            duration: asked,
            pending_until: now.saturating_add(rules.pending_ttl.as_secs()),
            approved_by: None,
            approved_at: None,
            expires_at: None,
        })
    }
}

/// One grant, as requested, persisted and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Unique, chosen by the proxy (`gr_` and 16 hex digits).
    pub id: String,
    /// The vendor's configured id and the account (the token's account claim).
    pub vendor: String,
    pub account: String,
    /// Class names it opens.
    pub classes: Vec<String>,
    /// Why: what the people who approve and review read.
    pub reason: String,
    /// The ticket it serves (checked against `grants.ticket_pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Who asked (an admin token's name) and when (seconds since the epoch).
    pub requested_by: String,
    pub requested_at: u64,
    /// How long it lasts once approved, in seconds.
    pub duration: u64,
    /// Unapproved by then, it lapses.
    pub pending_until: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<u64>,
    /// Set at approval: `approved_at + duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Where a grant stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Awaiting approval.
    Pending,
    /// Never approved, and now too old to be.
    Lapsed,
    /// Approved and not yet expired: it opens its classes.
    Active,
    /// Approved, and its time is up.
    Expired,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Lapsed => "lapsed",
            GrantState::Active => "active",
            GrantState::Expired => "expired",
        }
    }

    /// Whether a grant in this state is over and leaves the set (recorded as it goes).
    pub fn is_over(self) -> bool {
        matches!(self, GrantState::Lapsed | GrantState::Expired)
    }
}

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an approval was refused: each is an admin API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// The approver is the requester: a grant needs a second person.
    #[error("self_approval")]
    SelfApproval,
    /// Already approved.
    #[error("grant_already_active")]
    AlreadyActive,
    /// Pending too long (or over): it must be requested again.
    #[error("grant_lapsed")]
    Lapsed,
}

impl Grant {
    pub fn state(&self, now: u64) -> GrantState {
        match self.expires_at {
            Some(end) if now < end => GrantState::Active,
            Some(_) => GrantState::Expired,
            None if now < self.pending_until => GrantState::Pending,
            None => GrantState::Lapsed,
        }
    }

    /// Whether it lets `account` of `vendor` use `class` at `now`.
    pub fn opens(&self, vendor: &str, account: &str, class: &str, now: u64) -> bool {
        self.state(now) == GrantState::Active
            && self.vendor == vendor
            && self.account == account
            && self.classes.iter().any(|c| c == class)
    }

    /// The grant approved by `by` at `now`: active for its duration from now.
    pub fn approved(&self, by: &str, now: u64) -> Result<Grant, ApprovalError> {
        if by == self.requested_by {
            return Err(ApprovalError::SelfApproval);
        }
        match self.state(now) {
            GrantState::Pending => Ok(Grant {
                approved_by: Some(by.to_string()),
                approved_at: Some(now),
                expires_at: Some(now.saturating_add(self.duration)),
                ..self.clone()
            }),
            GrantState::Active => Err(ApprovalError::AlreadyActive),
            GrantState::Lapsed | GrantState::Expired => Err(ApprovalError::Lapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Grant {
        Grant {
            id: "gr_1".into(),
            vendor: "acme".into(),
            account: "agent-7".into(),
            classes: vec!["export".into()],
            reason: "quarterly report".into(),
            ticket: Some("INC-1234".into()),
            requested_by: "lead".into(),
            requested_at: 1_000,
            duration: 7_200,
            pending_until: 4_600,
            approved_by: None,
            approved_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn a_grant_opens_only_once_approved_by_someone_else_and_only_until_it_expires() {
        let g = pending();
        assert_eq!(g.state(1_000), GrantState::Pending);
        assert!(!g.opens("acme", "agent-7", "export", 1_000));
        assert_eq!(g.approved("lead", 2_000), Err(ApprovalError::SelfApproval));
        let active = g.approved("soc", 2_000).unwrap();
        assert_eq!(active.expires_at, Some(9_200));
        assert_eq!(
            active.approved("soc", 2_001),
            Err(ApprovalError::AlreadyActive)
        );
        assert!(active.opens("acme", "agent-7", "export", 2_000));
        assert!(active.opens("acme", "agent-7", "export", 9_199));
        assert!(!active.opens("acme", "agent-7", "export", 9_200));
        assert_eq!(active.state(9_200), GrantState::Expired);
        // Only its account, vendor and classes.
        assert!(!active.opens("acme", "agent-8", "export", 2_000));
        assert!(!active.opens("globex", "agent-7", "export", 2_000));
        assert!(!active.opens("acme", "agent-7", "admin", 2_000));
        // A pending grant lapses: too late to approve.
        assert_eq!(g.state(4_600), GrantState::Lapsed);
        assert_eq!(g.approved("soc", 4_600), Err(ApprovalError::Lapsed));
        assert!(GrantState::Lapsed.is_over() && GrantState::Expired.is_over());
    }

    #[test]
    fn a_grant_round_trips_as_json_without_empty_fields() {
        let g = pending();
        let json = serde_json::to_string(&g).unwrap();
        assert!(!json.contains("approved_by"), "{json}");
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g);
    }
}
