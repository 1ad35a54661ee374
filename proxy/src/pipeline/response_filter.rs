//! Phase 5, the response filter: the upstream's answer made the agent's. A declared length the
//! egress budget cannot cover is refused whole rather than started and cut; hop-by-hop and
//! stripped headers go; a redirect off the upstream becomes a download grant or a refusal; links
//! move to the agent's origin; the upstream's request id is kept under its own name; the rate-limit
//! headers are set; the body streams back, metered when a cap applies.

use http::{header, HeaderValue, Response, Uri};
use hyper::body::Incoming;
use std::sync::Arc;

use vendorgate_policy::Direction;
use vendorgate_policy::{Denial, Reason};

use super::limit::{self, Admitted};
use super::request_filter::content_length;
use super::Refusal;
use crate::active::Active;
use crate::body::response::{ProxyBody, UpstreamBody};
use crate::downloads;
use crate::errors::ProxyError;
use crate::gateway::Gateway;
use crate::headers::{remove_where, strip_hop_by_hop, X_UPSTREAM_REQUEST_ID};
use crate::links::Public;
use crate::metering::Meter;
use crate::redact::records::Single;
use crate::redact::Redactor;
use crate::telemetry::request_id;
use crate::trail::record::Draft;
use crate::upstream::Lease;

/// What the response filter needs to know of the request.
pub struct Answering<'a> {
    /// Where the agent reached us (`Host` or the target's authority).
    pub origin_host: Option<HeaderValue>,
    /// Who a redirect would be granted to.
    pub granted: Granted<'a>,
    /// The request was itself a download: its redirects are not followed again.
    pub from_download: bool,
    pub now_ms: u64,
}

pub async fn filter(
    gw: &'static Gateway,
    active: &Active,
    upstream: Response<Incoming>,
    lease: Option<Lease>,
    limits: Admitted,
    answering: Answering<'_>,
    draft: &mut Draft,
) -> Result<Response<ProxyBody>, Refusal> {
    let (mut parts, body) = upstream.into_parts();
    draft.upstream_status = Some(parts.status.as_u16());
    let length = content_length(&parts.headers);
    let egress = limits.egress;
    if !egress.is_empty() && length.is_some_and(|len| len > limits.egress_left) {
        limit::check_budget(
            &gw.state,
            &egress,
            length,
            Direction::Egress,
            answering.now_ms,
        )
        .await?;
    }
    strip_hop_by_hop(&mut parts.headers);
    remove_where(&mut parts.headers, |k| active.strip_response.contains(k));
    let host = answering.origin_host.as_ref();
    if parts.status.is_redirection() {
        redirect_elsewhere(
            gw,
            active,
            host,
            answering.granted,
            answering.from_download,
            &mut parts.headers,
        )?;
    }
    // A HEAD answer, a 204 or a 304 has no body to read, whatever its headers say.
    let has_body = draft.method != http::Method::HEAD
        && !matches!(parts.status.as_u16(), 100..=199 | 204 | 304);
    let json = has_body && is_json(&parts.headers);
    let body = UpstreamBody::new(body);
    let body = redact(active, draft, json, &mut parts.headers, body);
    let redacting = body.is_redacting();
    let mut body = rewrite_links(active, host, json, &mut parts.headers, body);
    if redacting {
        read_ahead(gw, &mut body, &mut parts.headers).await?;
        refuse_out_of_scope(active, &body, draft).map_err(Refusal::Policy)?;
    }
    if let Some(theirs) = parts.headers.remove(&request_id::HEADER) {
        parts.headers.insert(X_UPSTREAM_REQUEST_ID.clone(), theirs);
    }
    limits.rate_headers.apply(&mut parts.headers);
    let body = if egress.is_empty() {
        ProxyBody::upstream(body, lease)
    } else {
        let meter = Meter::new(&gw.state, egress).expecting(length);
        ProxyBody::metered(body, meter, lease)
    };
    Ok(Response::from_parts(parts, body))
}

/// Who a download grant is for, and the path it continues.
pub struct Granted<'a> {
    pub vendor: &'a str,
    pub account: &'a str,
    pub path: &'a str,
}

/// A redirect off the upstream's origins: to a host in `upstream.redirect_hosts`, it becomes a
/// download grant the agent follows through the proxy ([`downloads`]); anywhere else, or from a
/// download itself, it is refused. Redirects on the upstream's origins (or relative ones) are
/// left to [`rewrite_links`].
fn redirect_elsewhere(
    gw: &Gateway,
    active: &Active,
    host: Option<&HeaderValue>,
    granted: Granted<'_>,
    from_download: bool,
    headers: &mut http::HeaderMap,
) -> Result<(), ProxyError> {
    let Some(target) = headers
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.parse::<Uri>().ok())
        .filter(|u| u.host().is_some())
    else {
        return Ok(());
    };
    if active.links.on_upstream(&target.to_string()) {
        return Ok(());
    }
    let refused = || ProxyError::RedirectRefused(target.host().unwrap_or("").to_string());
    if from_download || !gw.downloads.allows(&target) {
        return Err(refused());
    }
    let public = public_origin(active, host).ok_or_else(refused)?;
    let token = gw.downloads.grant(
        target.clone(),
        granted.vendor,
        granted.account,
        granted.path,
    );
    let location = format!("{}{}{token}", public.as_str(), downloads::PREFIX);
    let value = HeaderValue::from_str(&location).map_err(|_| refused())?;
    headers.insert(header::LOCATION, value);
    Ok(())
}

/// The origin the agent's links should point at: `server.public_url`, else `https://` and the
/// authority the request was sent to (validated as one).
fn public_origin(active: &Active, host: Option<&HeaderValue>) -> Option<Public> {
    match &active.public_origin {
        Some(public) => Some(public.clone()),
        None => Public::for_host(host?),
    }
}

/// A JSON body, by its `Content-Type` (`application/json`, `…+json`).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"json"))
    })
}

/// Takes the vendor's redacted fields (`vendors.redact`) out of a JSON body as it streams, and the
/// records outside its scope (`vendors.scope`) ([`crate::redact`]). Other bodies (attachments,
/// files) pass: the fields and records are JSON's. A JSON body that is compressed or otherwise not
/// JSON is cut at the first byte the redactor cannot read, never passed on unread.
fn redact(
    active: &Active,
    draft: &Draft,
    json: bool,
    headers: &mut http::HeaderMap,
    body: UpstreamBody,
) -> UpstreamBody {
    let (true, Some(vendor), Some(route)) = (json, draft.vendor, draft.route) else {
        return body;
    };
    let policy = &active.config.policy;
    let fields = policy.redactions(vendor, route);
    let scope = policy.scope(vendor, route);
    if fields.is_none() && scope.is_none() {
        return body;
    }
    headers.remove(header::CONTENT_LENGTH);
    let mut redactor = Redactor::new(fields.cloned().unwrap_or_else(|| Arc::from([])));
    if let Some(scope) = scope {
        redactor = redactor.scoping(scope.clone());
    }
    body.redacting(redactor)
}

/// Upstream bytes a redacted body is read ahead by before its headers go (a few pages of a list).
const READ_AHEAD: usize = 64 * 1024;

/// A redacted body's first frames, read before the headers go ([`UpstreamBody::read_ahead`]): a
/// page that has ended by then is sent with its length, not chunked (an extra write per response
/// otherwise); and a body that is not JSON from its first bytes is refused here, 502, rather than
/// cut after a 200.
async fn read_ahead(
    gw: &Gateway,
    body: &mut UpstreamBody,
    headers: &mut http::HeaderMap,
) -> Result<(), ProxyError> {
    let read = tokio::time::timeout(gw.upstream.response_timeout, body.read_ahead(READ_AHEAD))
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)?
        .map_err(|e| ProxyError::UpstreamProtocol(e.to_string()))?;
    if let Some(len) = read {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(())
}

/// The body's single record (`ticket`) is outside the vendor's scope: the response is refused,
/// 403 `out_of_scope`, before its headers; the agent receives nothing of it.
fn refuse_out_of_scope(
    active: &Active,
    body: &UpstreamBody,
    draft: &mut Draft,
) -> Result<(), Denial> {
    let Some(redactor) = body.redactor() else {
        return Ok(());
    };
    let Single::Outside(outside) = redactor.single() else {
        return Ok(());
    };
    draft.scoped = redactor.scope_summary();
    let vendor = draft
        .vendor
        .and_then(|v| active.config.policy.vendors.get(v))
        .map_or("", |v| v.id.as_str());
    Err(Denial::new(
        Reason::OutOfScope,
        format!("vendors[{vendor}].scope: the ticket's {outside}"),
    ))
}

/// Moves the upstream's links to the agent's origin ([`public_origin`]): in `Location`, and in a
/// JSON body as it streams. A compressed body (the upstream was asked for none) passes as it is,
/// logged. The origin is worked out only for a response that has links to move.
fn rewrite_links(
    active: &Active,
    host: Option<&HeaderValue>,
    json: bool,
    headers: &mut http::HeaderMap,
    body: UpstreamBody,
) -> UpstreamBody {
    let location = headers.get(header::LOCATION).and_then(|l| l.to_str().ok());
    if location.is_none() && !json {
        return body;
    }
    let Some(public) = public_origin(active, host) else {
        return body;
    };
    if let Some(moved) = location
        .and_then(|l| active.links.rewrite_url(l, public.as_str()))
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        headers.insert(header::LOCATION, moved);
    }
    if !json {
        return body;
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        tracing::warn!("a compressed JSON response passes with its links unrewritten");
        return body;
    }
    let resized = active.links.changes_length(&public);
    if resized {
        headers.remove(header::CONTENT_LENGTH);
    }
    body.rewriting(active.links.rewriter(&public), resized)
}
