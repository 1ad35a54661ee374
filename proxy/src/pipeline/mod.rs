//! One request's way through the proxy, in named phases, one module each, in this order:
//!
//! 1. [`request_filter`]: refuse what can be refused cheaply and without knowing who asks, then
//!    the policy's identity-free stage ([`Policy::admit`](vendorgate_policy::Policy::admit)).
//! 2. [`identify`]: the bearer token, verified (or found in the cache of verified tokens); the
//!    download grant the request names, if any.
//! 3. [`authorize`]: [`Policy::decide`](vendorgate_policy::Policy::decide), the one decision the
//!    proxy, `explain` and the tests share.
//! 4. [`limit`]: the session's idle timeout, rate limits, byte budgets.
//! 5. [`upstream_request`]: the request rebuilt for the upstream and sent, the body streamed.
//! 6. [`response_filter`]: the upstream's answer made the agent's, its body streamed back.
//! 7. record: the [`Draft`] each phase fills in is sealed when the response body ends or is
//!    dropped ([`crate::trail::record`]); a refusal's answer is [`respond`]'s.
//!
//! Every outcome, including every failure, becomes a response here: the service never returns an error
//! to hyper and never panics on what a client sends. Refusals never contact the upstream.

pub mod authorize;
pub mod identify;
pub mod limit;
pub mod parent;
pub mod request_filter;
pub mod respond;
pub mod response_filter;
pub mod upstream_request;

use std::convert::Infallible;
use std::future::Future;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use vendorgate_policy::{Denial, Reason};

use crate::active::Active;
use crate::body::response::ProxyBody;
use crate::conn::InFlight;
use crate::errors::ProxyError;
use crate::gateway::Gateway;
use crate::outcome::Outcome;
use crate::telemetry::request_id;
use crate::telemetry::trace_context::TraceContext;
use crate::trail::record::Draft;
use limit::Limited;
use response_filter::{Answering, Granted};

/// Why a request did not get an upstream response.
pub enum Refusal {
    Policy(Denial),
    Limited(Limited),
    Proxy(ProxyError),
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

/// What every phase of one request reads: the gateway, the policy generation it is decided under,
/// its connection's in-flight marker and its id.
pub struct Ctx<'a> {
    pub gw: &'static Gateway,
    pub active: &'a Active,
    pub in_flight: &'a InFlight,
    pub request_id: &'a HeaderValue,
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
                let ctx = Ctx {
                    gw,
                    active: &active,
                    in_flight: &in_flight,
                    request_id: &request_id,
                };
                forward(&ctx, req, &mut draft).await
            }
            // Nothing proceeds that cannot be recorded (on_log_failure = "deny").
            Err(()) => Err(Refusal::Policy(Denial::new(
                Reason::DecisionLogUnavailable,
                "trail: queue full or log unwritable",
            ))),
        };
        let mut resp = match outcome {
            Ok(resp) => {
                draft.outcome = Outcome::Allowed;
                resp
            }
            Err(refusal) => respond::refused(refusal, &request_id, &conn, &mut draft),
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

/// The phases in order, over one request context. `req` is moved into the upstream request phase;
/// each earlier phase borrows it.
#[allow(clippy::manual_async_fn)] // see `handle`
fn forward<'a>(
    ctx: &'a Ctx<'a>,
    req: Request<Incoming>,
    draft: &'a mut Draft,
) -> impl Future<Output = Result<Response<ProxyBody>, Refusal>> + 'a {
    async move {
        let gw = ctx.gw;
        let policy = &ctx.active.config.policy;
        let declared = request_filter::check(gw, &req)?;
        let admission = request_filter::admit(policy, ctx.in_flight.conn(), &req, draft)?;

        // The request's time, read once: every check from here decides as of it.
        let now_us = crate::clock::epoch_us(draft.at);
        let now_ms = now_us / 1000;
        let now = now_ms / 1000;
        let identity = identify::identify(gw, ctx.active, &req, &admission, now).await?;
        draft.identity = Some(identity.clone());
        let standing = &identity.standing;
        draft.vendor = Some(standing.vendor);
        let vendor_id = policy
            .vendors
            .get(standing.vendor)
            .map_or("", |v| v.id.as_str());
        let download = identify::download(gw, &req, &admission, vendor_id, &identity)?;

        let allow = authorize::authorize(
            policy,
            &req,
            &admission,
            &identity,
            download.as_ref(),
            &gw.controls.current(),
            now,
        )?;
        draft.allowed = true;
        draft.route = Some(allow.route);
        draft.grant = allow.grant.clone();

        let mut limits =
            limit::limit(&gw.state, policy, &allow, &identity, declared, now_us).await?;
        let account = &identity.state;
        account
            .session_stats
            .get_or_init(|| {
                let token = &identity.token;
                let id = token.sid.as_deref().or(token.jti.as_deref());
                let key = &account.session_key;
                gw.sessions
                    .entry(key, &identity.vendor, &token.account, id, now_ms)
            })
            .seen(now_ms, admission.client_ip);
        let watching = watch_activity(gw, policy, &allow, &identity, &admission, &req, now);
        tracing::debug!(
            request_id = ctx.request_id.to_str().unwrap_or(""),
            vendor = %policy.vendors[allow.vendor].id,
            account = %identity.token.account,
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
        parent::check(
            gw,
            ctx.active,
            &allow,
            &admission.path,
            ctx.request_id,
            draft,
            now_ms,
        )
        .await?;
        let ingress = std::mem::take(&mut limits.ingress);
        let (answer, lease) = upstream_request::send(
            ctx,
            req,
            &admission,
            &identity,
            download.as_ref(),
            ingress,
            draft,
        )
        .await?;

        let answering = Answering {
            origin_host,
            granted: Granted {
                vendor: vendor_id,
                account: &identity.token.account,
                path: &admission.path,
            },
            from_download: download.is_some(),
            now_ms,
        };
        let watched = gw.controls.watch(
            admission.client_ip,
            identity.clone(),
            allow.grant.as_deref(),
        );
        let resp = response_filter::filter(gw, ctx.active, answer, lease, limits, answering, draft)
            .await?;
        Ok(resp.map(|body| {
            let body = body.watched(watched);
            match watching {
                Some(activity) => body.detected(activity, gw.active.load_full()),
                None => body,
            }
        }))
    }
}

/// The detectors' view of an allowed request (when `[detect]` is on): counted and judged on the
/// account's tracker, which is returned so the response's bytes are counted as they stream.
fn watch_activity(
    gw: &'static Gateway,
    policy: &vendorgate_policy::Policy,
    allow: &vendorgate_policy::Allow,
    identity: &crate::identity::cache::Identity,
    admission: &vendorgate_policy::Admission,
    req: &Request<Incoming>,
    now: u64,
) -> Option<std::sync::Arc<crate::state::activity::AccountActivity>> {
    let rules = &policy.detect;
    if !rules.enabled {
        return None;
    }
    let vendor = policy.vendors.get(allow.vendor)?;
    let activity = identity
        .state
        .activity
        .get_or_init(|| {
            gw.activity.account(
                &vendor.id,
                &identity.token.account,
                &vendor.zone,
                now,
                rules,
            )
        })
        .clone();
    let export = match policy.routes[allow.route].action {
        vendorgate_policy::RouteAction::Class(c) => rules.export_classes & (1 << c) != 0,
        vendorgate_policy::RouteAction::Deny => false,
    };
    let records = vendorgate_policy::detect::record_ids(&admission.path, req.uri().query());
    activity.request(now, rules, export, admission.client_ip, &records);
    Some(activity)
}
