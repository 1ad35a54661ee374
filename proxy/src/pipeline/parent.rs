//! The parent's scope: routes whose records carry no scope fields of their own (a ticket's
//! comments and audits, its update: `routes.parent`) are judged by the record their path names.
//! Under a vendor's scope, the parent ticket is judged *before* the request goes upstream, so an
//! out-of-scope ticket's comments are never fetched and its update never made: 403
//! `out_of_scope`.
//!
//! The parent's scope fields come from a short-lived cache, or on a miss from a side request to
//! the upstream (`GET /api/v2/tickets/{id}.json` with the proxy's credential, on the upstream's
//! own connections). Each lookup is counted (`vendorgate_scope_parent_lookups_total`) and the
//! request's record says which parent was judged and where its fields came from. A parent that
//! cannot be read (the upstream fails or times out) refuses the request: fail closed.

use http::{header, HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Limited};
use vendorgate_policy::scope::{read_single, record_path, RecordFields};
use vendorgate_policy::{Allow, Denial, Reason};

use super::Refusal;
use crate::active::Active;
use crate::body::request::RequestBody;
use crate::errors::ProxyError;
use crate::gateway::Gateway;
use crate::redact::records::MAX_RECORD;
use crate::telemetry::request_id;
use crate::trail::record::Draft;

/// Judges the parent `path` names against the vendor's scope, when the route has a parent and
/// the vendor a scope there.
pub async fn check(
    gw: &Gateway,
    active: &Active,
    allow: &Allow,
    path: &str,
    request_id: &HeaderValue,
    draft: &mut Draft,
    now_ms: u64,
) -> Result<(), Refusal> {
    let policy = &active.config.policy;
    let Some(scope) = policy.scope(allow.vendor, allow.route) else {
        return Ok(());
    };
    let Some((resource, id)) = policy.parent_of(allow.route, path) else {
        return Ok(());
    };
    let (fields, source) = match gw.parents.get(resource, id, now_ms) {
        Some(fields) => (fields, "cache"),
        // Boxed: the rare path, kept out of every request's future.
        None => match Box::pin(fetch(gw, active, resource, id, request_id)).await {
            Ok(fields) => {
                gw.parents.put(resource, id, fields.clone(), now_ms);
                (fields, "upstream")
            }
            Err(e) => {
                gw.metrics.parent_lookup("failed");
                draft.scoped = Some(summary(resource, id, "failed", None));
                return Err(Refusal::Proxy(e));
            }
        },
    };
    gw.metrics.parent_lookup(source);
    let verdict = scope.judge(&fields);
    draft.scoped = Some(summary(resource, id, source, Some(verdict.is_ok())));
    verdict.map_err(|outside| {
        let vendor = policy
            .vendors
            .get(allow.vendor)
            .map_or("", |v| v.id.as_str());
        Refusal::Policy(Denial::new(
            Reason::OutOfScope,
            format!("vendors[{vendor}].scope: parent {resource}/{id}: {outside}"),
        ))
    })
}

/// `{"parent":"tickets/42","lookup":"cache","inside":true}` for the decision record.
fn summary(resource: &str, id: &str, lookup: &str, inside: Option<bool>) -> String {
    let mut v = serde_json::json!({"parent": format!("{resource}/{id}"), "lookup": lookup});
    if let Some(inside) = inside {
        v["inside"] = inside.into();
    }
    v.to_string()
}

/// The parent's scope fields from the upstream. A parent that is no record (a malformed id, a
/// 404) has none, and so is outside any scope.
async fn fetch(
    gw: &Gateway,
    active: &Active,
    resource: &str,
    id: &str,
    request_id: &HeaderValue,
) -> Result<RecordFields, ProxyError> {
    let Some(record) = record_path(resource, id) else {
        return Ok(RecordFields::default());
    };
    let path = gw
        .upstream
        .path_for(&record, None)
        .map_err(|e| ProxyError::UpstreamProtocol(format!("cannot build the parent's URI: {e}")))?;
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(credential) = &active.credential {
        headers.insert(header::AUTHORIZATION, credential.clone());
    }
    headers.insert(request_id::HEADER.clone(), request_id.clone());
    let read = async {
        let (resp, lease) = gw
            .upstream
            .send(req)
            .await
            .map_err(|e| crate::upstream::classify(&e))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RECORD)
            .collect()
            .await
            .map_err(|e| ProxyError::UpstreamProtocol(format!("the parent {resource}/{id}: {e}")))?
            .to_bytes();
        if let Some(lease) = lease {
            lease.release();
        }
        match status.as_u16() {
            200 => Ok(read_single(&bytes).unwrap_or_default()),
            404 => Ok(RecordFields::default()),
            other => Err(ProxyError::UpstreamProtocol(format!(
                "the parent {resource}/{id} could not be read: status {other}"
            ))),
        }
    };
    tokio::time::timeout(gw.upstream.response_timeout, read)
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)?
}
