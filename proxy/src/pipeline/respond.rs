//! The answers the proxy makes itself: a refusal or failure as a JSON body carrying its stable
//! code and the request id (never the token, never the upstream's credential), with the RFC 6750 /
//! RFC 9470 challenge on a 401 and `Retry-After` on a limit; and the record told why.

use http::{header, HeaderValue, Response, StatusCode};
use vendorgate_policy::{Challenge, Denial};

use super::Refusal;
use crate::body::response::ProxyBody;
use crate::conn::ConnInfo;
use crate::outcome::Outcome;
use crate::trail::record::Draft;

/// The response for a request that got no upstream answer, and its outcome in the record.
pub fn refused(
    refusal: Refusal,
    request_id: &HeaderValue,
    conn: &ConnInfo,
    draft: &mut Draft,
) -> Response<ProxyBody> {
    match refusal {
        Refusal::Policy(denial) => {
            denied(&denial, request_id, conn, draft);
            denial_response(&denial, request_id)
        }
        Refusal::Limited(limited) => {
            denied(&limited.denial, request_id, conn, draft);
            let mut resp = denial_response(&limited.denial, request_id);
            resp.headers_mut().extend(limited.headers);
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(limited.retry_after_secs),
            );
            resp
        }
        Refusal::Proxy(err) => {
            let kind = err.kind();
            tracing::warn!(
                request_id = request_id.to_str().unwrap_or(""),
                client.ip = %conn.peer_ip,
                http.method = %draft.method,
                url.path = draft.uri.path(),
                error.code = kind.as_str(),
                "{err}"
            );
            // The policy may have allowed it; the proxy could not complete it.
            draft.outcome = Outcome::Failed(kind);
            draft.rule = err.to_string();
            error_response(kind.status(), kind.as_str(), request_id)
        }
    }
}

fn denied(denial: &Denial, request_id: &HeaderValue, conn: &ConnInfo, draft: &mut Draft) {
    tracing::info!(
        request_id = request_id.to_str().unwrap_or(""),
        client.ip = %conn.peer_ip,
        http.method = %draft.method,
        url.path = draft.uri.path(),
        reason = denial.reason.as_str(),
        rule = %denial.rule,
        "denied"
    );
    draft.outcome = Outcome::Refused(denial.reason);
    draft.rule = denial.rule.to_string();
    draft.allowed = false;
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

/// `{"error": code, "request_id": id}` with the status. The request id was validated to be plain
/// ASCII without quotes or backslashes, so it needs no JSON escaping.
fn error_response(
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
