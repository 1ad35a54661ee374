//! One request's way through the proxy, in named phases:
//!
//! 1. **request**: give it an id; refuse what can be refused without the upstream (methods we do not
//!    proxy, a declared body over the limit). Policy checks join here as they land.
//! 2. **upstream request**: rewrite for the upstream (authority, hop-by-hop headers out, forwarding
//!    headers in) and send it, body streamed through the size limit.
//! 3. **response**: hop-by-hop headers out, the upstream's request id kept under its own name, ours set;
//!    the body streams back untouched.
//!
//! Every outcome, including every failure, becomes a response here: the service never returns an error
//! to hyper and never panics on what a client sends.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::body::{ProxyBody, RequestBody};
use crate::conn::{ConnInfo, InFlight};
use crate::errors::ProxyError;
use crate::gateway::Gateway;
use crate::headers::{set_forwarded, strip_hop_by_hop, X_UPSTREAM_REQUEST_ID};
use crate::request_id;
use crate::upstream::classify;

pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let in_flight = InFlight::begin(conn.clone());
    let request_id = gw.request_ids.take_or_generate(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = match forward(&gw, &conn, &request_id, req).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::warn!(
                request_id = request_id.to_str().unwrap_or(""),
                client.ip = %conn.peer_ip,
                http.method = %method,
                url.path = %path,
                error.code = err.code(),
                "{err}"
            );
            err.to_response(&request_id)
        }
    };
    resp.headers_mut().insert(request_id::HEADER, request_id);
    Ok(resp.map(|body| body.holding(in_flight)))
}

async fn forward(
    gw: &Gateway,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // Phase 1: request.
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(req.method().to_string()));
    }
    let limit = gw.config.server.max_request_body.0;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::RequestBodyTooLarge { limit });
    }

    // Phase 2: upstream request.
    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let uri = gw
        .upstream
        .uri_for(&parts.uri)
        .map_err(|e| ProxyError::UpstreamProtocol(format!("cannot build upstream URI: {e}")))?;
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    // The client sets Host (HTTP/1.1) or :authority (HTTP/2) from the URI: the upstream's.
    headers.remove(header::HOST);
    set_forwarded(&mut headers, conn.peer_ip, original_host);
    headers.insert(request_id::HEADER, request_id.clone());

    let (body, overflow) = RequestBody::new(body, limit);
    let mut up_req = Request::new(body);
    *up_req.method_mut() = parts.method;
    *up_req.uri_mut() = uri;
    // The pool speaks whichever version the upstream negotiated; HTTP/1.1 here means "either".
    *up_req.version_mut() = Version::HTTP_11;
    *up_req.headers_mut() = headers;

    let upstream_resp = tokio::time::timeout(
        gw.upstream.response_timeout,
        gw.upstream.client.request(up_req),
    )
    .await
    .map_err(|_| ProxyError::UpstreamTimeout)?
    .map_err(|e| match overflow {
        Some(flag) if flag.happened() => ProxyError::RequestBodyTooLarge { limit },
        _ => classify(&e),
    })?;

    // Phase 3: response.
    let (mut parts, body) = upstream_resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(theirs) = parts.headers.remove(request_id::HEADER) {
        parts.headers.insert(X_UPSTREAM_REQUEST_ID.clone(), theirs);
    }
    Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
}
