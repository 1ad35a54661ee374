//! How a request ended, as one value: the one vocabulary of the decision record's `event.reason`,
//! the metrics' `reason` label and the JSON error body's `error`, with one status map.
//!
//! The codes come from their owners (the policy's [`Reason`]s, the proxy's [`Failure`]s, the
//! connection-level [`Refusal`]s, the abandoned request's two), and a test holds them unique
//! together: a dashboard can match on a code without knowing which part of the proxy produced it.

use http::StatusCode;
use vendorgate_policy::Reason;

use crate::errors::Failure;
use crate::trail::refusals::Refusal;
use crate::trail::schema::Abandoned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded under the policy (whatever the upstream then answered).
    Allowed,
    /// Refused by the policy or a limit.
    Refused(Reason),
    /// The proxy refused it or could not complete it.
    Failed(Failure),
    /// Let go before any decision: the client left, or shutdown cut it.
    Abandoned(Abandoned),
    /// Refused before it was a request (a TLS handshake, a head hyper could not parse).
    Connection(Refusal),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused(reason) => reason.as_str(),
            Outcome::Failed(failure) => failure.as_str(),
            Outcome::Abandoned(Abandoned::Client) => "client_aborted",
            Outcome::Abandoned(Abandoned::Shutdown) => "shutdown",
            Outcome::Connection(refusal) => refusal.as_str(),
        }
    }

    /// The status the client got (or, for an abandoned request, what a proxy's access log says:
    /// nginx's 499 for a client that left, 503 for a request cut at shutdown). `None`: no HTTP
    /// answer at all (a failed TLS handshake).
    pub fn status(self) -> Option<StatusCode> {
        match self {
            Outcome::Allowed => Some(StatusCode::OK),
            Outcome::Refused(reason) => Some(reason.status()),
            Outcome::Failed(failure) => Some(failure.status()),
            Outcome::Abandoned(Abandoned::Client) => StatusCode::from_u16(499).ok(),
            Outcome::Abandoned(Abandoned::Shutdown) => Some(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Connection(refusal) => refusal.status(),
        }
    }

    /// Whether the policy let it through.
    pub fn allowed(self) -> bool {
        self == Outcome::Allowed
    }

    /// Every outcome there is.
    pub fn all() -> impl Iterator<Item = Outcome> {
        std::iter::once(Outcome::Allowed)
            .chain(Reason::ALL.into_iter().map(Outcome::Refused))
            .chain(Failure::ALL.into_iter().map(Outcome::Failed))
            .chain([Abandoned::Client, Abandoned::Shutdown].map(Outcome::Abandoned))
            .chain(Refusal::ALL.into_iter().map(Outcome::Connection))
    }
}

impl From<Reason> for Outcome {
    fn from(reason: Reason) -> Self {
        Outcome::Refused(reason)
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        Outcome::Failed(failure)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_code_is_unique_across_the_vocabularies_and_snake_case() {
        let codes: Vec<&str> = Outcome::all().map(Outcome::as_str).collect();
        let unique: HashSet<&str> = codes.iter().copied().collect();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        for code in codes {
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!(
            Outcome::Abandoned(Abandoned::Client)
                .status()
                .map(|s| s.as_u16()),
            Some(499)
        );
        assert_eq!(
            Outcome::Connection(Refusal::TlsHandshakeFailed).status(),
            None
        );
    }
}
