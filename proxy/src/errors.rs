//! The proxy's own refusals and failures, each with a stable reason code and one HTTP status.
//!
//! Codes are part of the interface: vendors' tooling and security reviewers match on them, so they are
//! never renamed, only added. Bodies stay generic; detail goes to the logs, never to the client.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

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
    /// The stable snake_case code carried in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::RequestBodyTooLarge { .. } => "request_body_too_large",
            ProxyError::RequestBodyIncomplete(_) => "request_body_incomplete",
            ProxyError::RequestBodyTimeout(_) => "request_body_timeout",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::HostInvalid(_) => "host_invalid",
            ProxyError::HeaderNameInvalid(_) => "header_name_invalid",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamConnectTimeout => "upstream_connect_timeout",
            ProxyError::UpstreamTls(_) => "upstream_tls_error",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamProtocol(_) => "upstream_protocol_error",
            ProxyError::RedirectRefused(_) => "upstream_redirect_refused",
            ProxyError::DownloadUnknown => "download_unknown",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::RequestBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBodyIncomplete(_)
            | ProxyError::HostInvalid(_)
            | ProxyError::HeaderNameInvalid(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::RedirectRefused(_) => StatusCode::BAD_GATEWAY,
            ProxyError::DownloadUnknown => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnectTimeout | ProxyError::UpstreamTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        error_response(self.status(), self.code(), request_id)
    }
}

/// `{"error": code, "request_id": id}` with the status. The request id was validated to be plain
/// ASCII without quotes or backslashes, so it needs no JSON escaping.
pub fn error_response(
    status: StatusCode,
    code: &'static str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let id = request_id.to_str().unwrap_or("");
    let body = format!("{{\"error\":\"{code}\",\"request_id\":\"{id}\"}}");
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
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
        for (err, code, status) in table {
            assert_eq!((err.code(), err.status().as_u16()), (code, status), "{err}");
        }
    }
}
