//! The proxy's own refusals and failures: [`ProxyError`] with its detail (for the log and the
//! record's rule), [`Failure`] without it (its code and status, part of [`crate::outcome`]).
//!
//! Codes are part of the interface: vendors' tooling and security reviewers match on them, so they are
//! never renamed, only added. Bodies stay generic; detail goes to the logs, never to the client.

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("request body exceeds the {limit}-byte limit")]
    RequestBodyTooLarge { limit: u64 },
    #[error("the client stopped sending the request body: {0}")]
    RequestBodyIncomplete(String),
    #[error("the client sent the request body too slowly (nothing for {0:?})")]
    RequestBodyTimeout(std::time::Duration),
    #[error("method {0} is not proxied")]
    MethodNotAllowed(String),
    #[error("ambiguous Host: {0}")]
    HostInvalid(&'static str),
    #[error("header name {0:?} holds an underscore (server.underscore_headers = \"refuse\")")]
    HeaderNameInvalid(String),
    #[error("could not connect to the upstream: {0}")]
    UpstreamUnreachable(String),
    #[error("connecting to the upstream timed out")]
    UpstreamConnectTimeout,
    #[error("TLS with the upstream failed: {0}")]
    UpstreamTls(String),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream broke the exchange: {0}")]
    UpstreamProtocol(String),
    #[error("the upstream redirected to {0}, which is not in upstream.redirect_hosts")]
    RedirectRefused(String),
    #[error("no live download grant for this account at this path")]
    DownloadUnknown,
}

impl ProxyError {
    /// What kind of failure this is: its code and status (see [`Failure`]).
    pub fn kind(&self) -> Failure {
        match self {
            ProxyError::RequestBodyTooLarge { .. } => Failure::RequestBodyTooLarge,
            ProxyError::RequestBodyIncomplete(_) => Failure::RequestBodyIncomplete,
            ProxyError::RequestBodyTimeout(_) => Failure::RequestBodyTimeout,
            ProxyError::MethodNotAllowed(_) => Failure::MethodNotAllowed,
            ProxyError::HostInvalid(_) => Failure::HostInvalid,
            ProxyError::HeaderNameInvalid(_) => Failure::HeaderNameInvalid,
            ProxyError::UpstreamUnreachable(_) => Failure::UpstreamUnreachable,
            ProxyError::UpstreamConnectTimeout => Failure::UpstreamConnectTimeout,
            ProxyError::UpstreamTls(_) => Failure::UpstreamTls,
            ProxyError::UpstreamTimeout => Failure::UpstreamTimeout,
            ProxyError::UpstreamProtocol(_) => Failure::UpstreamProtocol,
            ProxyError::RedirectRefused(_) => Failure::RedirectRefused,
            ProxyError::DownloadUnknown => Failure::DownloadUnknown,
        }
    }
}

/// A [`ProxyError`] without its detail: what the record, the metrics and the client are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    RequestBodyTooLarge,
    RequestBodyIncomplete,
    RequestBodyTimeout,
    MethodNotAllowed,
    HostInvalid,
    HeaderNameInvalid,
    UpstreamUnreachable,
    UpstreamConnectTimeout,
    UpstreamTls,
    UpstreamTimeout,
    UpstreamProtocol,
    RedirectRefused,
    DownloadUnknown,
}

impl Failure {
    pub const ALL: [Failure; 13] = [
        Failure::RequestBodyTooLarge,
        Failure::RequestBodyIncomplete,
        Failure::RequestBodyTimeout,
        Failure::MethodNotAllowed,
        Failure::HostInvalid,
        Failure::HeaderNameInvalid,
        Failure::UpstreamUnreachable,
        Failure::UpstreamConnectTimeout,
        Failure::UpstreamTls,
        Failure::UpstreamTimeout,
        Failure::UpstreamProtocol,
        Failure::RedirectRefused,
        Failure::DownloadUnknown,
    ];

    /// The stable snake_case code carried in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::RequestBodyTooLarge => "request_body_too_large",
            Failure::RequestBodyIncomplete => "request_body_incomplete",
            Failure::RequestBodyTimeout => "request_body_timeout",
            Failure::MethodNotAllowed => "method_not_allowed",
            Failure::HostInvalid => "host_invalid",
            Failure::HeaderNameInvalid => "header_name_invalid",
            Failure::UpstreamUnreachable => "upstream_unreachable",
            Failure::UpstreamConnectTimeout => "upstream_connect_timeout",
            Failure::UpstreamTls => "upstream_tls_error",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::UpstreamProtocol => "upstream_protocol_error",
            Failure::RedirectRefused => "upstream_redirect_refused",
            Failure::DownloadUnknown => "download_unknown",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Failure::RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::RequestBodyIncomplete | Failure::HostInvalid | Failure::HeaderNameInvalid => {
                StatusCode::BAD_REQUEST
            }
            Failure::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Failure::UpstreamUnreachable
            | Failure::UpstreamTls
            | Failure::UpstreamProtocol
            | Failure::RedirectRefused => StatusCode::BAD_GATEWAY,
            Failure::DownloadUnknown => StatusCode::NOT_FOUND,
            Failure::UpstreamConnectTimeout | Failure::UpstreamTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code_and_status() {
        let table = [
            (
                ProxyError::RequestBodyTooLarge { limit: 1 },
                "request_body_too_large",
                413,
            ),
            (
                ProxyError::RequestBodyIncomplete("x".into()),
                "request_body_incomplete",
                400,
            ),
            (
                ProxyError::RequestBodyTimeout(std::time::Duration::from_secs(1)),
                "request_body_timeout",
                408,
            ),
            (ProxyError::HostInvalid("x"), "host_invalid", 400),
            (
                ProxyError::HeaderNameInvalid("x_y".into()),
                "header_name_invalid",
                400,
            ),
            (
                ProxyError::MethodNotAllowed("CONNECT".into()),
                "method_not_allowed",
                405,
            ),
            (
                ProxyError::UpstreamUnreachable("x".into()),
                "upstream_unreachable",
                502,
            ),
            (
                ProxyError::UpstreamConnectTimeout,
                "upstream_connect_timeout",
                504,
            ),
            (
                ProxyError::UpstreamTls("x".into()),
                "upstream_tls_error",
                502,
            ),
            (ProxyError::UpstreamTimeout, "upstream_timeout", 504),
            (
                ProxyError::UpstreamProtocol("x".into()),
                "upstream_protocol_error",
                502,
            ),
            (
                ProxyError::RedirectRefused("x".into()),
                "upstream_redirect_refused",
                502,
            ),
            (ProxyError::DownloadUnknown, "download_unknown", 404),
        ];
        assert_eq!(table.len(), Failure::ALL.len());
        for (err, code, status) in table {
            let kind = err.kind();
            assert_eq!(
                (kind.as_str(), kind.status().as_u16()),
                (code, status),
                "{err}"
            );
        }
    }
}
