//! One request's way through the proxy, in named phases:
//!
//! 1. **request**: give it an id; refuse what can be refused cheaply and without knowing who asks
//!    (methods we do not proxy, a declared body over the limit, an ambiguous path, an address that is
//!    no vendor's).
//! 2. **identity**: the bearer token, verified (or found in the cache of verified tokens).
//! 3. **authorization**: what that vendor may do from that address on that route.
//! 4. **upstream request**: the normalized path that was authorized, the agent's credential swapped
//!    for the upstream's, the agent's identity in a header, hop-by-hop headers out, forwarding headers
//!    in; sent with the body streamed through the size limit.
//! 5. **response**: hop-by-hop headers out, the upstream's request id kept under its own name, ours
//!    set; the body streams back untouched.
//!
//! Every outcome, including every failure, becomes a response here: the service never returns an error
//! to hyper and never panics on what a client sends. Refusals never contact the upstream.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use vendorgate_policy::config::UnderscoreHeaders;
use vendorgate_policy::{
    bearer, Admission, Arrival, Challenge, Denial, Facts, Presented, Reason, VerifyError,
};

use crate::body::{ProxyBody, RequestBody, UpstreamBody};
use crate::conn::{ConnInfo, InFlight};
use crate::downloads;
use crate::errors::{error_response, ProxyError};
use crate::gateway::{Active, Gateway};
use crate::headers::{
    drop_underscored, remove_where, set_forwarded, strip_hop_by_hop, underscored, X_FORWARDED_FOR,
    X_UPSTREAM_REQUEST_ID,
};
use crate::identity::cache::{token_key, Identity};
use crate::limits::{self, Limited};
use crate::links::Public;
use crate::metering::Meter;
use crate::request_id;
use crate::trace_context::TraceContext;
use crate::trail::record::Draft;
use crate::upstream::classify;

/// Why a request did not get an upstream response.
enum Refusal {
    Policy(Denial),
    Limited(Limited),
    Proxy(ProxyError),
}

impl From<Result<Limited, Denial>> for Refusal {
    fn from(r: Result<Limited, Denial>) -> Self {
        match r {
            Ok(l) => Refusal::Limited(l),
            Err(d) => Refusal::Policy(d),
        }
    }
}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Self {
        Refusal::Policy(d)
    }
}

impl From<ProxyError> for Refusal {
    fn from(e: ProxyError) -> Self {
        Refusal::Proxy(e)
    }
}

/// `in_flight` is taken when hyper hands the request over, before this future first runs: an
/// HTTP/1.1 connection must not look idle (and park) in between.
///
/// This and [`forward`] return `async` blocks rather than being `async fn`s: a function's future
/// keeps each argument twice (as passed and as its working copy), and a request's future is moved
/// whole at every step.
#[allow(clippy::manual_async_fn)] // see the doc comment
pub fn handle(
    gw: &'static Gateway,
    in_flight: InFlight,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> {
    async move {
        let conn = in_flight.conn().clone();
        let request_id = gw.request_ids.take_or_generate(req.headers());
        let trace =
            TraceContext::from_request(req.headers(), &request_id, gw.request_ids.span_id());
        let slot = gw.trail.reserve().await;
        // One policy per request: what decides it is also what its record names, even across a reload.
        let active = gw.active.load_full();
        let mut draft = Draft::new(
            gw,
            active.clone(),
            trace,
            request_id.clone(),
            &req,
            conn.peer,
        );
        let outcome = match slot {
            Ok(slot) => {
                draft.slot = Some(slot);
                forward(gw, &active, &in_flight, &request_id, req, &mut draft).await
            }
            // Nothing proceeds that cannot be recorded (on_log_failure = "deny").
            Err(()) => Err(Refusal::Policy(Denial::new(
                Reason::DecisionLogUnavailable,
                "trail: queue full or log unwritable",
            ))),
        };
        let mut resp = match outcome {
            Ok(resp) => {
                draft.reason = "allowed";
                resp
            }
            Err(Refusal::Policy(denial)) => {
                log_denial(&request_id, &conn, &draft, &denial);
                draft.reason = denial.reason.as_str();
                draft.rule = denial.rule.to_string();
                draft.allowed = false;
                denial_response(&denial, &request_id)
            }
            Err(Refusal::Limited(limited)) => {
                log_denial(&request_id, &conn, &draft, &limited.denial);
                draft.reason = limited.denial.reason.as_str();
                draft.rule = limited.denial.rule.to_string();
                draft.allowed = false;
                let mut resp = denial_response(&limited.denial, &request_id);
                resp.headers_mut().extend(limited.headers);
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(limited.retry_after_secs),
                );
                resp
            }
            Err(Refusal::Proxy(err)) => {
                tracing::warn!(
                    request_id = request_id.to_str().unwrap_or(""),
                    client.ip = %conn.peer_ip,
                    http.method = %draft.method,
                    url.path = draft.uri.path(),
                    error.code = err.code(),
                    "{err}"
                );
                // The policy may have allowed it; the proxy could not complete it.
                draft.reason = err.code();
                draft.rule = err.to_string();
                err.to_response(&request_id)
            }
        };
        draft.status = resp.status().as_u16();
        resp.headers_mut()
            .insert(request_id::HEADER.clone(), request_id);
        if draft.method == Method::HEAD {
            // A HEAD answer carries no body: HTTP/2 clients reset a stream that sends one.
            resp = resp.map(ProxyBody::without_content);
        }
        Ok(resp.map(|body| body.recording(draft).holding(in_flight)))
    }
}

fn log_denial(request_id: &HeaderValue, conn: &ConnInfo, draft: &Draft, denial: &Denial) {
    tracing::info!(
        request_id = request_id.to_str().unwrap_or(""),
        client.ip = %conn.peer_ip,
        http.method = %draft.method,
        url.path = draft.uri.path(),
        reason = denial.reason.as_str(),
        rule = %denial.rule,
        "denied"
    );
}

/// The JSON refusal, with the RFC 6750 / RFC 9470 challenge on a 401. Never echoes the token.
fn denial_response(denial: &Denial, request_id: &HeaderValue) -> Response<ProxyBody> {
    let reason = denial.reason;
    let mut resp = error_response(reason.status(), reason.as_str(), request_id);
    let challenge = match reason.challenge() {
        Some(Challenge::Plain) => Some("Bearer realm=\"vendorgate\""),
        Some(Challenge::InvalidToken) => Some("Bearer realm=\"vendorgate\", error=\"invalid_token\""),
        Some(Challenge::InsufficientUserAuthentication) => Some(
            "Bearer realm=\"vendorgate\", error=\"insufficient_user_authentication\", error_description=\"sign in again with multi-factor authentication\"",
        ),
        None => None,
    };
    if let Some(c) = challenge {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    resp
}

#[allow(clippy::manual_async_fn)] // see the doc comment
fn forward<'a>(
    gw: &'static Gateway,
    active: &'a Active,
    in_flight: &'a InFlight,
    request_id: &'a HeaderValue,
    req: Request<Incoming>,
    draft: &'a mut Draft,
) -> impl Future<Output = Result<Response<ProxyBody>, Refusal>> + 'a {
    async move {
        // Phase 1: request.
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(req.method().to_string()).into());
        }
        if let Some(problem) = ambiguous_host(&req) {
            return Err(ProxyError::HostInvalid(problem).into());
        }
        let underscores = gw.config.server.underscore_headers;
        if underscores == UnderscoreHeaders::Refuse {
            if let Some(name) = underscored(req.headers()) {
                return Err(ProxyError::HeaderNameInvalid(name.to_string()).into());
            }
        }
        let limit = gw.config.server.max_request_body.0;
        let declared = content_length(req.headers());
        if declared.is_some_and(|len| len > limit) {
            return Err(ProxyError::RequestBodyTooLarge { limit }.into());
        }
        let policy = &active.config.policy;
        let conn = in_flight.conn();
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

        // Phase 2: identity.
        // The request's time, read once: every check below decides as of it.
        let now_us = crate::state::epoch_us(draft.at);
        let now_ms = now_us / 1000;
        let now = now_ms / 1000;
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()));
        let verified = match token {
            Some(token) => verify(gw, active, token, token_key(token), now)
                .await
                .map_err(Some),
            None => Err(None),
        };
        let cached = match verified {
            Ok(cached) => cached,
            Err(refused) => {
                let presented = refused
                    .as_ref()
                    .map_or(Presented::Missing, Presented::Unverified);
                let facts = Facts {
                    method: req.method(),
                    admission: &admission,
                    token: presented,
                };
                // `decide` refuses it at its token step; should that ever change, it stays refused.
                let refusal = policy.decide(&facts, now, &mut ()).err();
                return Err(refusal
                    .unwrap_or_else(|| Denial::new(Reason::TokenInvalid, "no verified token"))
                    .into());
            }
        };
        draft.identity = Some(cached.clone());
        let standing = &cached.standing;
        draft.vendor = Some(standing.vendor);
        let vendor_id = policy
            .vendors
            .get(standing.vendor)
            .map_or("", |v| v.id.as_str());
        // A download the upstream redirected this account to (see `downloads`): followed only by
        // the account it was granted to, authorized as the request that was redirected.
        let download = match admission.path.strip_prefix(downloads::PREFIX) {
            Some(grant) => Some(
                gw.downloads
                    .find(grant, vendor_id, &cached.token.account)
                    .filter(|_| matches!(*req.method(), Method::GET | Method::HEAD))
                    .ok_or(ProxyError::DownloadUnknown)?,
            ),
            None => None,
        };

        // Phase 3: authorization, then the limits (only now: a request that fails authentication must
        // not spend anyone's rate limit or touch a session).
        let redirected;
        let facts = match &download {
            Some(grant) => {
                redirected = Admission {
                    client_ip: admission.client_ip,
                    path: grant.path.clone(),
                };
                Facts {
                    method: &Method::GET,
                    admission: &redirected,
                    token: Presented::Verified(standing),
                }
            }
            None => Facts {
                method: req.method(),
                admission: &admission,
                token: Presented::Verified(standing),
            },
        };
        let allow = policy.decide(&facts, now, &mut ())?;
        draft.allowed = true;
        draft.route = Some(allow.route);
        limits::check_session(&gw.state, policy, &allow, &cached, now_ms).await?;
        let rate_headers = limits::check_rates(&gw.state, policy, &allow, &cached, now_us).await?;
        let ingress = limits::byte_counters(&gw.state, policy, true, &allow, &cached, now_ms);
        limits::check_budget(
            &gw.state,
            &ingress,
            declared,
            Reason::IngressCapExceeded,
            now_ms,
        )
        .await?;
        let egress = limits::byte_counters(&gw.state, policy, false, &allow, &cached, now_ms);
        let egress_left =
            limits::check_budget(&gw.state, &egress, None, Reason::EgressCapExceeded, now_ms)
                .await?;
        tracing::debug!(
            request_id = request_id.to_str().unwrap_or(""),
            vendor = %policy.vendors[allow.vendor].id,
            account = %cached.token.account,
            route = %policy.routes[allow.route].id,
            "allowed"
        );

        // Where the agent reached us: its links are rewritten to that origin (unless
        // `server.public_url` says where).
        let origin_host = req
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| req.uri().authority().and_then(|a| a.as_str().parse().ok()));

        // Phase 4: upstream request (or the download's), built in a block: only the send is held
        // while the upstream answers, not the parts it was made from (every step of a request
        // moves its future whole).
        let (upstream_resp, lease) = if let Some(grant) = &download {
            draft.forwarded = true;
            let fetch = gw.downloads.fetch(grant, req.headers());
            let fetched = tokio::time::timeout(gw.upstream.response_timeout, fetch)
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)??;
            (fetched, None)
        } else {
            let (sending, upload) = {
                let (mut parts, body) = req.into_parts();
                let path = gw
                    .upstream
                    .path_for(&admission.path, parts.uri.path_and_query())
                    .map_err(|e| {
                        ProxyError::UpstreamProtocol(format!("cannot build upstream URI: {e}"))
                    })?;
                let mut headers = std::mem::take(&mut parts.headers);
                strip_hop_by_hop(&mut headers);
                if underscores == UnderscoreHeaders::Drop {
                    gw.metrics
                        .underscore_headers_dropped(drop_underscored(&mut headers));
                }
                remove_where(&mut headers, |k| active.strip_request.contains(k));
                // The client sets Host (HTTP/1.1) or :authority (HTTP/2) from the URI: the upstream's.
                headers.remove(header::HOST);
                // The agent's token is for us; the upstream gets the proxy's own credential, or none.
                headers.remove(header::AUTHORIZATION);
                if let Some(credential) = &active.credential {
                    headers.insert(header::AUTHORIZATION, credential.clone());
                }
                if let Some(name) = &active.identity_header {
                    // Whatever the client put there is a claim, not a fact: replace it.
                    headers.insert(name.clone(), cached.who.clone());
                }
                set_forwarded(&mut headers, admission.client_ip);
                headers.insert(request_id::HEADER.clone(), request_id.clone());
                headers.insert(
                    HeaderName::from_static("traceparent"),
                    draft.trace.traceparent(),
                );

                let (body, upload) =
                    RequestBody::new(body, limit, gw.config.server.body_read_timeout.0);
                let mut body = body.counting(draft.bytes_in.clone());
                if upload.is_some() {
                    // There is an upload: it may outlast the response.
                    body = body.holding(in_flight.also());
                }
                if !ingress.is_empty() {
                    body = body.metered(Meter::new(&gw.state, ingress));
                }
                let mut up_req = Request::new(body);
                *up_req.method_mut() = parts.method;
                *up_req.uri_mut() = Uri::from(path);
                // The pool speaks whichever version the upstream negotiated; HTTP/1.1 here means "either".
                *up_req.version_mut() = Version::HTTP_11;
                *up_req.headers_mut() = headers;
                let sending =
                    tokio::time::timeout(gw.upstream.response_timeout, gw.upstream.send(up_req));
                (sending, upload)
            };

            // From here the SaaS may receive the request, whatever the client does next.
            draft.forwarded = true;
            match sending.await.map_err(|_| ProxyError::UpstreamTimeout)? {
                Ok(sent) => sent,
                Err(e) => {
                    return Err(match upload {
                        Some(flag) if flag.too_large() => {
                            Refusal::Proxy(ProxyError::RequestBodyTooLarge { limit })
                        }
                        Some(flag) if flag.ingress_cap() => Refusal::Policy(Denial::new(
                            Reason::IngressCapExceeded,
                            "limits.ingress (budget ran out during the upload)",
                        )),
                        Some(flag) if flag.timed_out() => Refusal::Proxy(
                            ProxyError::RequestBodyTimeout(gw.config.server.body_read_timeout.0),
                        ),
                        Some(flag) if flag.client_gone() => {
                            // Whatever the upstream made of the broken upload, the client left.
                            draft.client_left = true;
                            Refusal::Proxy(ProxyError::RequestBodyIncomplete(e.to_string()))
                        }
                        _ => Refusal::Proxy(classify(&e)),
                    });
                }
            }
        };

        // Phase 5: response. A declared length that the egress budget cannot cover is refused whole
        // rather than started and cut.
        let (mut parts, body) = upstream_resp.into_parts();
        draft.upstream_status = Some(parts.status.as_u16());
        let length = content_length(&parts.headers);
        if !egress.is_empty() && length.is_some_and(|len| len > egress_left) {
            limits::check_budget(
                &gw.state,
                &egress,
                length,
                Reason::EgressCapExceeded,
                now_ms,
            )
            .await?;
        }
        strip_hop_by_hop(&mut parts.headers);
        remove_where(&mut parts.headers, |k| active.strip_response.contains(k));
        if parts.status.is_redirection() {
            let granted = Granted {
                vendor: vendor_id,
                account: &cached.token.account,
                path: &admission.path,
            };
            let from_download = download.is_some();
            redirect_elsewhere(
                gw,
                active,
                origin_host.as_ref(),
                granted,
                from_download,
                &mut parts.headers,
            )?;
        }
        let body = rewrite_links(
            active,
            origin_host.as_ref(),
            &mut parts.headers,
            UpstreamBody::new(body),
        );
        if let Some(theirs) = parts.headers.remove(&request_id::HEADER) {
            parts.headers.insert(X_UPSTREAM_REQUEST_ID.clone(), theirs);
        }
        rate_headers.apply(&mut parts.headers);
        let body = if egress.is_empty() {
            ProxyBody::upstream(body, lease)
        } else {
            let meter = Meter::new(&gw.state, egress).expecting(length);
            ProxyBody::metered(body, meter, lease)
        };
        Ok(Response::from_parts(parts, body))
    }
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

/// Who a download grant is for, and the path it continues.
struct Granted<'a> {
    vendor: &'a str,
    account: &'a str,
    path: &'a str,
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

/// Moves the upstream's links to the agent's origin ([`public_origin`]): in `Location`, and in a
/// JSON body as it streams. A compressed body (the upstream was asked for none) passes as it is,
/// logged. The origin is worked out only for a response that has links to move.
fn rewrite_links(
    active: &Active,
    host: Option<&HeaderValue>,
    headers: &mut http::HeaderMap,
    body: UpstreamBody,
) -> UpstreamBody {
    let location = headers.get(header::LOCATION).and_then(|l| l.to_str().ok());
    let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"json"))
    });
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

/// The declared body length, when there is a well-formed one.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
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

/// A verified token: from the cache, or checked against the IdP's keys (fetching them again once
/// if the token names a key we do not hold: the IdP may have rotated).
async fn verify(
    gw: &'static Gateway,
    active: &Active,
    token: &str,
    key: u128,
    now: u64,
) -> Result<Arc<Identity>, Denial> {
    if let Some(hit) = gw.tokens.get(key, now, &active.version) {
        return Ok(hit);
    }
    let policy = &active.config.policy;
    let keys = active.keys.current().ok_or_else(|| {
        Denial::new(
            Reason::IdentityKeysUnavailable,
            "no IdP key set has been obtained",
        )
    })?;
    let verified = match policy.verify_token(token, &keys, now) {
        Ok(v) => v,
        Err(VerifyError::UnknownKey { .. }) => {
            // Boxed: rare, and its state would otherwise widen every request's future.
            let refetched = Box::pin(active.keys.refetch_for_unknown_key()).await;
            let keys = active.keys.current().filter(|_| refetched).unwrap_or(keys);
            policy
                .verify_token(token, &keys, now)
                .map_err(VerifyError::denial)?
        }
        Err(refused) => return Err(refused.denial()),
    };
    let verified = Arc::new(Identity::new(
        verified,
        active.version.clone(),
        policy,
        &gw.state.prefix,
        key,
    ));
    gw.tokens.insert(key, verified.clone());
    Ok(verified)
}
