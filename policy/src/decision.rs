//! What the policy decided and why, as values.
//!
//! Reason codes are an interface: vendors' tooling, dashboards and auditors match on them, so they
//! are never renamed, only added. The status each maps to lives in one place, [`Reason::status`].

use std::borrow::Cow;

use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The path could not be normalized unambiguously (encoded `/`, `\`, NUL, `..` above the root).
    PathAmbiguous,
    /// `X-Forwarded-For` from a trusted proxy held something that is not an address.
    ForwardedForInvalid,
    /// The client address is not in the vendor's allow-list (or in no vendor's).
    IpNotAllowed,
    /// No `Authorization: Bearer` token.
    TokenMissing,
    /// Malformed, badly signed, wrong algorithm, unknown key, oversized, or missing required claims.
    TokenInvalid,
    TokenExpired,
    /// `nbf` is in the future.
    TokenNotYetValid,
    IssuerMismatch,
    AudienceMismatch,
    /// Neither `amr` nor `acr` proves multi-factor authentication.
    MfaMissing,
    /// `auth_time` is older than allowed (or absent).
    AuthTooOld,
    /// The token names no configured vendor.
    VendorUnknown,
    /// A route rule explicitly denies this method and path.
    RouteDenied,
    /// No route matches: default deny.
    RouteUnknown,
    /// The route's class is not one the vendor may use.
    ClassNotPermitted,
    /// The IdP's keys have never been obtained, so no token can be checked: fail closed.
    IdentityKeysUnavailable,
    /// No request for longer than the idle timeout: the session is over until the agent signs in.
    SessionIdleExpired,
    /// The session is older (from `auth_time`, else `iat`) than its maximum lifetime.
    SessionLifetimeExpired,
    /// A request-rate limit on the route's class is used up for now.
    ExportRateLimited,
    /// The response-byte budget for the window is used up (or this response would pass it).
    EgressCapExceeded,
    /// The request-byte budget for the window is used up (or this upload would pass it).
    IngressCapExceeded,
    /// The shared state (sessions, limits) cannot be reached and `on_state_error = "deny"`.
    StateUnavailable,
    /// The decision could not be recorded and `on_log_failure = "deny"`.
    DecisionLogUnavailable,
    /// A lock in force targets the account, vendor, session or network (the record names it).
    Locked,
    /// An operator revoked the session: the agent must sign in again.
    SessionRevoked,
    /// The vendor's access windows do not include this moment (for this class).
    OutsideAccessWindow,
    /// The record the upstream returned is outside the vendor's scope (`vendors.scope`): nothing
    /// of it reaches the agent.
    OutOfScope,
}

/// The `error` parameter of the `WWW-Authenticate: Bearer` challenge for a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// No credentials were sent: no error code (RFC 6750 §3.1).
    Plain,
    /// RFC 6750 `invalid_token`.
    InvalidToken,
    /// RFC 9470 `insufficient_user_authentication`: sign in again with MFA.
    InsufficientUserAuthentication,
}

impl Reason {
    pub const ALL: [Reason; 27] = [
        Reason::PathAmbiguous,
        Reason::ForwardedForInvalid,
        Reason::IpNotAllowed,
        Reason::TokenMissing,
        Reason::TokenInvalid,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::IssuerMismatch,
        Reason::AudienceMismatch,
        Reason::MfaMissing,
        Reason::AuthTooOld,
        Reason::VendorUnknown,
        Reason::RouteDenied,
        Reason::RouteUnknown,
        Reason::ClassNotPermitted,
        Reason::IdentityKeysUnavailable,
        Reason::SessionIdleExpired,
        Reason::SessionLifetimeExpired,
        Reason::ExportRateLimited,
        Reason::EgressCapExceeded,
        Reason::IngressCapExceeded,
        Reason::StateUnavailable,
        Reason::DecisionLogUnavailable,
        Reason::Locked,
        Reason::SessionRevoked,
        Reason::OutsideAccessWindow,
        Reason::OutOfScope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PathAmbiguous => "path_ambiguous",
            Reason::ForwardedForInvalid => "forwarded_for_invalid",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::TokenMissing => "token_missing",
            Reason::TokenInvalid => "token_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::MfaMissing => "mfa_missing",
            Reason::AuthTooOld => "auth_too_old",
            Reason::VendorUnknown => "vendor_unknown",
            Reason::RouteDenied => "route_denied",
            Reason::RouteUnknown => "route_unknown",
            Reason::ClassNotPermitted => "class_not_permitted",
            Reason::IdentityKeysUnavailable => "identity_keys_unavailable",
            Reason::SessionIdleExpired => "session_idle_expired",
            Reason::SessionLifetimeExpired => "session_lifetime_expired",
            Reason::ExportRateLimited => "export_rate_limited",
            Reason::EgressCapExceeded => "egress_cap_exceeded",
            Reason::IngressCapExceeded => "ingress_cap_exceeded",
            Reason::StateUnavailable => "state_unavailable",
            Reason::DecisionLogUnavailable => "decision_log_unavailable",
            Reason::Locked => "locked",
            Reason::SessionRevoked => "session_revoked",
            Reason::OutsideAccessWindow => "outside_access_window",
            Reason::OutOfScope => "out_of_scope",
        }
    }

    /// Token problems are 401 (the agent can fix them by signing in), policy problems 403 (it
    /// cannot), malformed requests 400, and not being able to decide at all 503.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::PathAmbiguous | Reason::ForwardedForInvalid => StatusCode::BAD_REQUEST,
            Reason::TokenMissing
            | Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::IssuerMismatch
            | Reason::AudienceMismatch
            | Reason::MfaMissing
            | Reason::AuthTooOld
            | Reason::SessionIdleExpired
            | Reason::SessionLifetimeExpired
            | Reason::SessionRevoked => StatusCode::UNAUTHORIZED,
            Reason::IpNotAllowed
            | Reason::VendorUnknown
            | Reason::RouteDenied
            | Reason::RouteUnknown
            | Reason::ClassNotPermitted
            | Reason::Locked
            | Reason::OutsideAccessWindow
            | Reason::OutOfScope => StatusCode::FORBIDDEN,
            Reason::ExportRateLimited | Reason::EgressCapExceeded | Reason::IngressCapExceeded => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Reason::IdentityKeysUnavailable
            | Reason::StateUnavailable
            | Reason::DecisionLogUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn challenge(self) -> Option<Challenge> {
        match self {
            Reason::TokenMissing => Some(Challenge::Plain),
            Reason::MfaMissing | Reason::AuthTooOld => {
                Some(Challenge::InsufficientUserAuthentication)
            }
            r if r.status() == StatusCode::UNAUTHORIZED => Some(Challenge::InvalidToken),
            _ => None,
        }
    }
}

/// A refusal: the reason, and the rule that decided it (for the decision record, never the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub rule: Cow<'static, str>,
}

impl Denial {
    pub fn new(reason: Reason, rule: impl Into<Cow<'static, str>>) -> Self {
        Denial {
            reason,
            rule: rule.into(),
        }
    }
}

/// Permission to forward, with what the later phases need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Index into [`crate::Policy::vendors`].
    pub vendor: usize,
    /// Index into [`crate::Policy::routes`].
    pub route: usize,
    /// The just-in-time grant that opened the route's class, when the vendor does not hold it:
    /// the decision's record names it.
    pub grant: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_statuses_fixed() {
        let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert!(r
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let table = [
            (Reason::PathAmbiguous, 400, None),
            (Reason::ForwardedForInvalid, 400, None),
            (Reason::IpNotAllowed, 403, None),
            (Reason::TokenMissing, 401, Some(Challenge::Plain)),
            (Reason::TokenInvalid, 401, Some(Challenge::InvalidToken)),
            (Reason::TokenExpired, 401, Some(Challenge::InvalidToken)),
            (Reason::TokenNotYetValid, 401, Some(Challenge::InvalidToken)),
            (Reason::IssuerMismatch, 401, Some(Challenge::InvalidToken)),
            (Reason::AudienceMismatch, 401, Some(Challenge::InvalidToken)),
            (
                Reason::MfaMissing,
                401,
                Some(Challenge::InsufficientUserAuthentication),
            ),
            (
                Reason::AuthTooOld,
                401,
                Some(Challenge::InsufficientUserAuthentication),
            ),
            (Reason::VendorUnknown, 403, None),
            (Reason::RouteDenied, 403, None),
            (Reason::RouteUnknown, 403, None),
            (Reason::ClassNotPermitted, 403, None),
            (Reason::IdentityKeysUnavailable, 503, None),
            (
                Reason::SessionIdleExpired,
                401,
                Some(Challenge::InvalidToken),
            ),
            (
                Reason::SessionLifetimeExpired,
                401,
                Some(Challenge::InvalidToken),
            ),
            (Reason::ExportRateLimited, 429, None),
            (Reason::EgressCapExceeded, 429, None),
            (Reason::IngressCapExceeded, 429, None),
            (Reason::StateUnavailable, 503, None),
            (Reason::DecisionLogUnavailable, 503, None),
            (Reason::Locked, 403, None),
            (Reason::SessionRevoked, 401, Some(Challenge::InvalidToken)),
            (Reason::OutsideAccessWindow, 403, None),
            (Reason::OutOfScope, 403, None),
        ];
        assert_eq!(table.len(), Reason::ALL.len());
        for (r, status, challenge) in table {
            assert_eq!(
                (r.status().as_u16(), r.challenge()),
                (status, challenge),
                "{}",
                r.as_str()
            );
        }
    }
}
