//! Phase 1, the request filter: what can be refused cheaply and without knowing who asks. First the
//! proxy's own rules (methods it does not proxy, an ambiguous host, header names it refuses, a
//! declared body over the limit), then the policy's identity-free stage ([`Policy::admit`]: a path
//! with one meaning, a believable client address, an address that is some vendor's).

use http::{header, Method, Request};
use hyper::body::Incoming;
use vendorgate_policy::config::UnderscoreHeaders;
use vendorgate_policy::{Admission, Arrival, Denial, Policy};

use crate::conn::ConnInfo;
use crate::errors::ProxyError;
use crate::gateway::Gateway;
use crate::headers::{underscored, X_FORWARDED_FOR};
use crate::trail::record::Draft;

/// The proxy's own refusals. Returns the declared body length, if there is one.
pub fn check(gw: &Gateway, req: &Request<Incoming>) -> Result<Option<u64>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(req.method().to_string()));
    }
    if let Some(problem) = ambiguous_host(req) {
        return Err(ProxyError::HostInvalid(problem));
    }
    if gw.config.server.underscore_headers == UnderscoreHeaders::Refuse {
        if let Some(name) = underscored(req.headers()) {
            return Err(ProxyError::HeaderNameInvalid(name.to_string()));
        }
    }
    let limit = gw.config.server.max_request_body.0;
    let declared = content_length(req.headers());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::RequestBodyTooLarge { limit });
    }
    Ok(declared)
}

/// The policy's identity-free stage. The client address goes into the record even when the
/// path is refused first.
pub fn admit(
    policy: &Policy,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    draft: &mut Draft,
) -> Result<Admission, Denial> {
    let forwarded_for = joined(req.headers(), &X_FORWARDED_FOR);
    draft.client_ip = policy
        .client_ip(conn.peer_ip, forwarded_for.as_deref())
        .ok();
    let arrival = Arrival {
        peer: conn.peer_ip,
        forwarded_for: forwarded_for.as_deref(),
        path: req.uri().path(),
    };
    let admission = policy.admit(&arrival, &mut ())?;
    draft.path = Some(admission.path.clone());
    Ok(admission)
}

/// Why the request names its host ambiguously, if it does: two `Host` headers (RFC 9112 §3.2: a
/// 400), or a `Host` that differs from the authority in the request target (HTTP/2's
/// `:authority`, or an absolute-form target). Two front ends reading different hosts out of one
/// request is how routing and cache confusion start.
fn ambiguous_host<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host header");
    }
    match (host, req.uri().authority()) {
        (Some(host), Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Some("Host differs from the request target's authority")
        }
        _ => None,
    }
}

/// The declared body length, when there is a well-formed one.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// All values of a header joined with ", " (a list split over several lines is one list).
fn joined(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_string(), |mut acc, v| {
        acc.push_str(", ");
        acc.push_str(v);
        acc
    }))
}
