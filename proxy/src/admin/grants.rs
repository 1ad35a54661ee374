//! The admin API's just-in-time grants: asked for by a requester, approved by someone else,
//! denied, revoked, listed. The rules (what may be asked, who may approve) are the policy's
//! ([`vendorgate_policy::Policy::request_grant`], [`vendorgate_policy::Grant::approved`]); this is
//! the HTTP and the bookkeeping.
//!
//! **No change without its record**: each change is made (compare-and-set, so two operators or two
//! replicas acting on one grant cannot both win), then recorded; if the record cannot be queued
//! the change is undone and the call answers 503 `decision_log_unavailable`.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use serde::Deserialize;
use serde_json::{json, Value};
use vendorgate_policy::{ApprovalError, Grant, GrantRequest, GrantState, HumanDuration};

use super::{error, error_with, new_id, param, record};
use crate::gateway::Gateway;

/// `POST /v1/grants`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ask {
    vendor: String,
    account: String,
    classes: Vec<String>,
    /// `"2h"`: how long it lasts once approved.
    duration: String,
    reason: String,
    #[serde(default)]
    ticket: Option<String>,
}

/// A grant as the API shows it: its fields and its state now.
fn shown(grant: &Grant, now: u64) -> Value {
    let mut v = json!(grant);
    v["state"] = json!(grant.state(now).as_str());
    v
}

fn now() -> u64 {
    crate::clock::now_ms() / 1000
}

/// `GET /v1/grants?vendor=&account=`.
pub(super) fn list(gw: &Gateway, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (vendor, account) = (param(req, "vendor"), param(req, "account"));
    let now = now();
    let controls = gw.controls.current();
    let grants: Vec<Value> = controls
        .grants
        .iter()
        .filter(|g| vendor.as_deref().is_none_or(|v| g.vendor == v))
        .filter(|g| account.as_deref().is_none_or(|a| g.account == a))
        .map(|g| shown(g, now))
        .collect();
    super::json(StatusCode::OK, json!({"grants": grants}))
}

/// `POST /v1/grants`: a pending grant, checked against `[grants]`.
pub(super) async fn request(
    gw: &'static Gateway,
    peer: SocketAddr,
    by: String,
    ask: Ask,
) -> Response<Full<Bytes>> {
    let duration = match HumanDuration::parse(&ask.duration) {
        Ok(d) => d.0,
        Err(e) => {
            return error_with(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("duration: {e}"),
            )
        }
    };
    let policy = &gw.active.load().config.policy;
    let asked = GrantRequest {
        vendor: &ask.vendor,
        account: &ask.account,
        classes: &ask.classes,
        duration,
        reason: &ask.reason,
        ticket: ask.ticket.as_deref(),
    };
    let grant = match policy.request_grant(&asked, new_id("gr"), &by, now()) {
        Ok(g) => g,
        Err(e) => {
            let status = match e {
                vendorgate_policy::RequestError::VendorUnknown(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            return error_with(status, e.code(), &e.to_string());
        }
    };
    let c = Change {
        action: "grant_requested",
        was: None,
        new: Some(&grant),
        message: None,
    };
    change(gw, peer, &by, c, StatusCode::CREATED).await
}

/// `POST /v1/grants/{id}/approve | deny | revoke`.
pub(super) async fn act(
    gw: &'static Gateway,
    peer: SocketAddr,
    by: String,
    id: &str,
    verb: &str,
    message: Option<String>,
) -> Response<Full<Bytes>> {
    if message.as_ref().is_some_and(|m| m.len() > 1024) {
        return error_with(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "message must be at most 1024 bytes",
        );
    }
    let Some(grant) = gw.controls.current().grant(id).cloned() else {
        return error(StatusCode::NOT_FOUND, "grant_unknown");
    };
    let now = now();
    let state = grant.state(now);
    match (verb, state) {
        ("approve", _) => match grant.approved(&by, now) {
            Ok(active) => {
                let ok = StatusCode::OK;
                let c = Change {
                    action: "grant_approved",
                    was: Some(&grant),
                    new: Some(&active),
                    message: None,
                };
                change(gw, peer, &by, c, ok).await
            }
            Err(e) => {
                let status = match e {
                    ApprovalError::SelfApproval => StatusCode::FORBIDDEN,
                    ApprovalError::AlreadyActive | ApprovalError::Lapsed => StatusCode::CONFLICT,
                };
                if e == ApprovalError::SelfApproval {
                    let call = format!("POST /v1/grants/{id}/approve");
                    super::refused(gw, peer, &by, &call, "self_approval").await;
                }
                error(status, &e.to_string())
            }
        },
        ("deny", GrantState::Pending) | ("revoke", GrantState::Active) => {
            let action = if verb == "deny" {
                "grant_denied"
            } else {
                "grant_revoked"
            };
            let c = Change {
                action,
                was: Some(&grant),
                new: None,
                message,
            };
            change(gw, peer, &by, c, StatusCode::OK).await
        }
        ("deny", _) => error(StatusCode::CONFLICT, "grant_not_pending"),
        _ => error(StatusCode::CONFLICT, "grant_not_active"),
    }
}

/// One change to a grant: from `was` to `new` (`None`: absent, so a request adds one and a denial
/// or revocation removes it), recorded as `action` (with `message` when it ends one).
struct Change<'a> {
    action: &'a str,
    was: Option<&'a Grant>,
    new: Option<&'a Grant>,
    message: Option<String>,
}

/// Makes the change (compare-and-set; cutting what an ended grant streams), then records it; the
/// change is undone if the record cannot be queued. Answers `status` with the grant.
async fn change(
    gw: &'static Gateway,
    peer: SocketAddr,
    by: &str,
    c: Change<'_>,
    status: StatusCode,
) -> Response<Full<Bytes>> {
    let Some(grant) = c.new.or(c.was) else {
        return error(StatusCode::NOT_FOUND, "grant_unknown");
    };
    match gw.controls.change_grant(c.was, c.new).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::CONFLICT, "grant_changed"),
        Err(e) => return unwritable(e),
    }
    let mut detail = json!({"grant": shown(grant, now())});
    if c.new.is_none() {
        detail["message"] = json!(c.message);
    }
    if !record(gw, c.action, by, Some(peer), true, detail).await {
        let _ = gw.controls.change_grant(c.new, c.was).await;
        return error(StatusCode::SERVICE_UNAVAILABLE, "decision_log_unavailable");
    }
    tracing::warn!(grant = %grant.id, by, "{}", c.action);
    super::json(status, json!({"grant": shown(grant, now())}))
}

fn unwritable(e: crate::state::controls::ControlsError) -> Response<Full<Bytes>> {
    tracing::error!("{e}");
    error(StatusCode::SERVICE_UNAVAILABLE, "grant_state_unwritable")
}
