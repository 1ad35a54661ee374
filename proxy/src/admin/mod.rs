//! The operators' listener. Unauthenticated: `/healthz` (the process is alive), `/readyz` (it should
//! get traffic) and `/metrics`. Authenticated by bearer token (`[[admin.tokens]]`, the config holds
//! only their SHA-256), the admin API under `/v1/`:
//!
//! | call | role | does |
//! |---|---|---|
//! | `GET /v1/locks` | viewer | the locks in force |
//! | `POST /v1/locks` | operator | a lock: `{"target": {"kind": "account", "value": "…"}, "message": "…", "ttl": "2h"}` |
//! | `DELETE /v1/locks/{id}` | operator | removes a lock |
//! | `GET /v1/sessions?account=&vendor=` | viewer | the live sessions this replica serves |
//! | `POST /v1/sessions/{id}/revoke` | operator | its next request 401 `session_revoked`, its streams cut |
//! | `GET /v1/usage?vendor=&account=` | viewer | the account's standing against every limit |
//! | `POST /v1/reload` | operator | reads the config file again; 422 `config_invalid` with `file:line:column` keeps the old policy |
//! | `GET /v1/grants?vendor=&account=` | viewer | just-in-time grants, pending and active (see [`grants`]) |
//! | `POST /v1/grants` | requester | asks for one: `{"vendor", "account", "classes", "duration", "reason", "ticket"}` |
//! | `POST /v1/grants/{id}/approve` | operator | someone other than the requester: active for its duration from now |
//! | `POST /v1/grants/{id}/deny` / `revoke` | operator | ends a pending / active one (`{"message"}`); revoking cuts its streams |
//!
//! JSON in and out; errors are `{"error": code}` with a stable code. Every mutating call, and every
//! refused one, is a record in the decision trail, naming who.
//!
//! Plain HTTP on loopback by default; bound elsewhere, tokens are required (a config error
//! otherwise).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use vendorgate_policy::config::{AdminRole, AdminToken};
use vendorgate_policy::{HumanDuration, Lock, LockTarget};

use crate::gateway::Gateway;
use crate::telemetry::metrics::Gauges;

mod grants;

/// A request body larger than this is refused: the API takes small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub async fn serve(listener: TcpListener, gw: &'static Gateway) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| async move {
                Ok::<_, std::convert::Infallible>(route(gw, peer, req).await)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn route(
    gw: &'static Gateway,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v1/") {
        return api(gw, peer, req, rest).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    match path.as_str() {
        "/healthz" => json(StatusCode::OK, json!({"status": "ok"})),
        "/readyz" => readiness(gw).await,
        "/metrics" => metrics(gw),
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

fn metrics(gw: &Gateway) -> Response<Full<Bytes>> {
    let status = &gw.trail.status;
    let (token_cache_hits, token_cache_misses) = gw.tokens.stats();
    let gauges = Gauges {
        trail_written: status.written.load(Ordering::Relaxed),
        trail_unrecorded: gw.trail.dropped.load(Ordering::Relaxed),
        trail_queue_depth: gw.trail.queue_depth(gw.config.trail.queue) as u64,
        trail_head_seq: status.head_seq.load(Ordering::Relaxed),
        trail_writable: status.healthy.load(Ordering::Relaxed),
        state_errors: gw.state.error_count(),
        state_calls: gw.state.call_count(),
        state_healthy: gw.state.healthy(),
        otel_decisions_dropped: gw
            .otel
            .as_ref()
            .map_or(0, |o| o.dropped.load(Ordering::Relaxed)),
        otel_exports: gw
            .otel
            .as_ref()
            .map_or(0, |o| o.exports.accepted.load(Ordering::Relaxed)),
        otel_export_failures: gw
            .otel
            .as_ref()
            .map_or(0, |o| o.exports.failed.load(Ordering::Relaxed)),
        token_cache_hits,
        token_cache_misses,
        token_cache_entries: gw.tokens.len() as u64,
        upstream_connections_open: crate::upstream::connections_open(),
    };
    let mut text = gw.metrics.render(&gauges);
    if let Some(left) = certificate_seconds_left(gw) {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "# HELP vendorgate_tls_certificate_expiry_seconds Seconds until the served certificate's notAfter (negative: expired).\n# TYPE vendorgate_tls_certificate_expiry_seconds gauge\nvendorgate_tls_certificate_expiry_seconds {left}"
        );
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Seconds until the served certificate expires (negative once it has).
fn certificate_seconds_left(gw: &Gateway) -> Option<i64> {
    let at = crate::trail::time::parse_rfc3339(&gw.cert.not_after()?)?;
    let now = SystemTime::now();
    Some(match at.duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    })
}

/// Warns from 14 days before the served certificate expires (checked hourly, and so also after a
/// SIGHUP replaced it), an error once it has.
pub async fn watch_certificate(gw: &'static Gateway) {
    const WARN_FROM: i64 = 14 * 86_400;
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match certificate_seconds_left(gw) {
            Some(left) if left <= 0 => {
                tracing::error!(
                    "the served TLS certificate has expired: replace it and send SIGHUP"
                )
            }
            Some(left) if left < WARN_FROM => tracing::warn!(
                days_left = left / 86_400,
                "the served TLS certificate expires soon: replace it and send SIGHUP"
            ),
            Some(_) => {}
            None => tracing::warn!("the served TLS certificate's expiry could not be read"),
        }
    }
}

/// Who called, once their token checked out.
struct Caller<'a> {
    name: &'a str,
    role: AdminRole,
}

/// The caller's token against `[[admin.tokens]]`: its SHA-256 compared with every entry's in
/// constant time (no early exit, no length leak: the digests are all 32 bytes).
fn authenticate<'a>(
    tokens: &'a [AdminToken],
    req: &Request<Incoming>,
) -> Result<Caller<'a>, &'static str> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| vendorgate_policy::bearer(v.as_bytes()))
        .ok_or("admin_token_missing")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, presented.as_bytes());
    let mut found = None;
    for t in tokens {
        let Some(want) = hex32(t.sha256.get_ref()) else {
            continue;
        };
        let diff = want
            .iter()
            .zip(digest.as_ref())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && found.is_none() {
            found = Some(Caller {
                name: &t.name,
                role: t.role,
            });
        }
    }
    found.ok_or("admin_token_invalid")
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

async fn api(
    gw: &'static Gateway,
    peer: SocketAddr,
    req: Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    let mutating = req.method() != Method::GET && req.method() != Method::HEAD;
    let action = format!("{} /v1/{rest}", req.method());
    let caller = match authenticate(&gw.config.admin.tokens, &req) {
        Ok(caller) => caller,
        Err(code) => {
            if mutating {
                refused(gw, peer, "", &action, code).await;
            }
            return error(StatusCode::UNAUTHORIZED, code);
        }
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let needs = match (req.method(), segments.as_slice()) {
        (&Method::POST, ["grants"]) => AdminRole::Requester,
        _ if mutating => AdminRole::Operator,
        _ => AdminRole::Viewer,
    };
    if caller.role < needs {
        if mutating {
            refused(gw, peer, caller.name, &action, "admin_role_insufficient").await;
        }
        return error(StatusCode::FORBIDDEN, "admin_role_insufficient");
    }
    let by = caller.name.to_string();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["locks"]) => {
            let controls = gw.controls.current();
            json(StatusCode::OK, json!({"locks": controls.locks}))
        }
        (Method::GET, ["grants"]) => grants::list(gw, &req),
        (Method::POST, ["grants"]) => match read_json(req).await {
            Ok(ask) => grants::request(gw, peer, by, ask).await,
            Err(resp) => resp,
        },
        (Method::POST, ["grants", id, verb @ ("approve" | "deny" | "revoke")]) => {
            let message = match read_json::<Revoke>(req).await {
                Ok(r) => r.message,
                Err(resp) => return resp,
            };
            grants::act(gw, peer, by, id, verb, message).await
        }
        (Method::POST, ["locks"]) => match read_json::<NewLock>(req).await {
            Ok(new) => create_lock(gw, peer, by, new).await,
            Err(resp) => resp,
        },
        (Method::DELETE, ["locks", id]) => remove_lock(gw, peer, by, id.to_string()).await,
        (Method::GET, ["usage"]) => {
            let (vendor, account) = (param(&req, "vendor"), param(&req, "account"));
            let (Some(vendor), Some(account)) = (vendor, account) else {
                return error_with(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "vendor and account are required",
                );
            };
            let active = gw.active.load_full();
            let policy = &active.config.policy;
            let Some(index) = policy.vendors.iter().position(|v| v.id == vendor) else {
                return error(StatusCode::NOT_FOUND, "vendor_unknown");
            };
            let now = crate::clock::epoch_us(SystemTime::now());
            match crate::state::usage::usage(&gw.state, policy, index, &account, now).await {
                Ok(limits) => json(
                    StatusCode::OK,
                    json!({"vendor": vendor, "account": account, "limits": limits}),
                ),
                Err(e) => error_with(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "state_unavailable",
                    &e.to_string(),
                ),
            }
        }
        (Method::GET, ["sessions"]) => {
            let param = |name: &str| param(&req, name);
            let policy = &gw.active.load().config.policy;
            // Live: seen within the longest idle timeout any vendor has.
            let window = policy
                .vendors
                .iter()
                .map(|v| v.session_idle.as_millis() as u64)
                .max()
                .unwrap_or(0);
            let now = crate::clock::now_ms();
            let (account, vendor) = (param("account"), param("vendor"));
            let sessions = gw
                .sessions
                .list(now, window, account.as_deref(), vendor.as_deref());
            json(StatusCode::OK, json!({"sessions": sessions}))
        }
        (Method::POST, ["sessions", id, "revoke"]) => {
            let message = match read_json::<Revoke>(req).await {
                Ok(r) => r.message.unwrap_or_else(|| "session revoked".into()),
                Err(resp) => return resp,
            };
            revoke(gw, peer, by, id.to_string(), message).await
        }
        (Method::POST, ["reload"]) => {
            let result = gw.reload_from_file("admin API");
            if let Some(path) = gw.config_path.get() {
                crate::reload::record(gw, path, &by, Some(peer.ip()), &result).await;
            }
            match result {
                Ok(r) => json(
                    StatusCode::OK,
                    json!({"policy_version": r.version, "needs_restart": r.needs_restart}),
                ),
                Err(e @ crate::reload::ReloadError::NoFile) => {
                    error_with(StatusCode::CONFLICT, "no_config_file", &e.to_string())
                }
                Err(e) => error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "config_invalid",
                    &e.to_string(),
                ),
            }
        }
        (_, ["locks"] | ["locks", _] | ["grants"] | ["grants", ..]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// A query parameter's value (the API's values are ids and names: no percent-decoding needed
/// beyond what they may contain, which is none).
fn param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `POST /v1/sessions/{id}/revoke`, and a grant's deny and revoke: an optional message for the
/// trail.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(default)]
    message: Option<String>,
}

/// A revocation is a lock on the session that refuses it as `session_revoked` (401: sign in again)
/// and cuts its streams like any lock, on every replica; it holds as long as any session may live.
async fn revoke(
    gw: &'static Gateway,
    peer: SocketAddr,
    by: String,
    id: String,
    message: String,
) -> Response<Full<Bytes>> {
    if id.is_empty() || message.len() > 1024 {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let policy = &gw.active.load().config.policy;
    let lifetime = policy
        .vendors
        .iter()
        .map(|v| v.session_lifetime.as_secs())
        .max()
        .unwrap_or(86_400);
    let now = crate::clock::now_ms() / 1000;
    let lock = Lock {
        id: new_id("lk"),
        target: LockTarget::Session(id),
        message,
        created_by: by,
        created_at: now,
        expires_at: Some(now + lifetime),
        revocation: true,
    };
    put_in_force(gw, peer, "revoke", lock).await
}

/// Records `lock` (as `action`, by its creator) and puts it in force: a lock nobody can see in the
/// record is not made. 201 with the lock and the streams it cut here.
async fn put_in_force(
    gw: &'static Gateway,
    peer: SocketAddr,
    action: &str,
    lock: Lock,
) -> Response<Full<Bytes>> {
    match impose(gw, Some(peer), action, lock.clone()).await {
        Ok(cut) => json(
            StatusCode::CREATED,
            json!({"lock": lock, "streams_cut": cut}),
        ),
        Err(code) => error(StatusCode::SERVICE_UNAVAILABLE, code),
    }
}

/// Records `lock` and puts it in force (an operator's, or a detector's); the streams it cut here,
/// or the error code (`decision_log_unavailable`, `lock_state_unwritable`).
pub async fn impose(
    gw: &'static Gateway,
    source: Option<SocketAddr>,
    action: &str,
    lock: Lock,
) -> Result<usize, &'static str> {
    let by = lock.created_by.clone();
    if !record(gw, action, &by, source, true, json!({"lock": &lock})).await {
        return Err("decision_log_unavailable");
    }
    match gw.controls.add(lock.clone()).await {
        Ok(cut) => {
            tracing::warn!(lock = %lock.id, target = %lock.target, by = %by, streams_cut = cut, "{action} in force");
            Ok(cut)
        }
        Err(e) => {
            tracing::error!("{e}");
            Err("lock_state_unwritable")
        }
    }
}

/// `POST /v1/locks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLock {
    target: LockTarget,
    message: String,
    /// How long it holds (`"30m"`, `"2h"`); absent: until removed.
    #[serde(default)]
    ttl: Option<String>,
}

async fn create_lock(
    gw: &'static Gateway,
    peer: SocketAddr,
    by: String,
    new: NewLock,
) -> Response<Full<Bytes>> {
    if new.message.trim().is_empty() || new.message.len() > 1024 {
        return error_with(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "message must be 1 to 1024 bytes",
        );
    }
    if let LockTarget::Account(v)
    | LockTarget::Vendor(v)
    | LockTarget::Session(v)
    | LockTarget::Grant(v) = &new.target
    {
        if v.is_empty() {
            return error_with(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the target needs a value",
            );
        }
    }
    let now = crate::clock::now_ms() / 1000;
    let expires_at = match new.ttl.as_deref().map(HumanDuration::parse).transpose() {
        Ok(ttl) => ttl.map(|d| now + d.0.as_secs().max(1)),
        Err(e) => {
            return error_with(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("ttl: {e}"),
            )
        }
    };
    let lock = Lock {
        id: new_id("lk"),
        target: new.target,
        message: new.message,
        created_by: by,
        created_at: now,
        expires_at,
        revocation: false,
    };
    put_in_force(gw, peer, "lock", lock).await
}

async fn remove_lock(
    gw: &'static Gateway,
    peer: SocketAddr,
    by: String,
    id: String,
) -> Response<Full<Bytes>> {
    let removed = match gw.controls.remove(&id).await {
        Ok(Some(lock)) => lock,
        Ok(None) => return error(StatusCode::NOT_FOUND, "lock_unknown"),
        Err(e) => {
            tracing::error!("{e}");
            return error(StatusCode::SERVICE_UNAVAILABLE, "lock_state_unwritable");
        }
    };
    tracing::warn!(lock = %removed.id, target = %removed.target, by = %by, "lock removed");
    record(
        gw,
        "unlock",
        &by,
        Some(peer),
        true,
        json!({"lock": &removed}),
    )
    .await;
    json(StatusCode::OK, json!({"lock": removed}))
}

/// Locks and grants that have run out, removed and recorded; run every second.
pub async fn expire(gw: &'static Gateway) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = crate::clock::now_ms() / 1000;
        for lock in gw.controls.due(now) {
            let detail = json!({"lock": &lock});
            settle(gw, "lock_expired", detail, gw.controls.remove(&lock.id)).await;
        }
        for grant in gw.controls.grants_due(now) {
            let action = match grant.state(now) {
                vendorgate_policy::GrantState::Lapsed => "grant_lapsed",
                _ => "grant_expired",
            };
            let detail = json!({"grant": &grant});
            let gone = async {
                let changed = gw.controls.change_grant(Some(&grant), None).await?;
                Ok(changed.then_some(()))
            };
            settle(gw, action, detail, gone).await;
        }
    }
}

/// Records an expiry and removes what expired, exactly once across replicas. Shared: the replica
/// whose removal succeeds records it. Alone: recorded before it goes, so once the list no longer
/// shows it, its expiry is on the trail.
async fn settle<T>(
    gw: &'static Gateway,
    action: &str,
    detail: Value,
    remove: impl std::future::Future<Output = Result<Option<T>, crate::state::controls::ControlsError>>,
) {
    let shared = gw.controls.is_shared();
    if !shared {
        record(gw, action, "expiry", None, true, detail.clone()).await;
    }
    match remove.await {
        Ok(Some(_)) => {
            tracing::warn!(action, "{detail}");
            if shared {
                record(gw, action, "expiry", None, true, detail).await;
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!("{action}: {e}"),
    }
}

async fn refused(gw: &'static Gateway, peer: SocketAddr, by: &str, action: &str, code: &str) {
    tracing::warn!(client.ip = %peer.ip(), by, action, code, "admin call refused");
    let detail = json!({"call": action, "error": code});
    record(gw, "admin_refused", by, Some(peer), false, detail).await;
}

/// Writes an admin event to the trail; false if it could not be queued.
async fn record(
    gw: &'static Gateway,
    action: &str,
    by: &str,
    peer: Option<SocketAddr>,
    allowed: bool,
    detail: Value,
) -> bool {
    let trail: &'static crate::trail::Trail = &gw.trail;
    trail
        .record_event(action, by, peer.map(|p| p.ip()), allowed, detail)
        .await
}

/// `lk_` (a lock) or `gr_` (a grant) and 64 random bits in hex. An id need not be secret, only
/// unique: should the system's generator fail, the clock's nanoseconds serve (refusing to lock out
/// an attacker over an id would be the wrong way round).
pub fn new_id(kind: &str) -> String {
    let bits = crate::unguessable::hex(8).unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        format!("{:016x}", t.map_or(0, |d| d.as_nanos() as u64))
    });
    format!("{kind}_{bits}")
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "request_body_too_large"))?
        .to_bytes();
    // No body at all reads as an empty object: the fields that are optional may be left out.
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    serde_json::from_slice(body)
        .map_err(|e| error_with(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()))
}

/// Ready when the proxy listener is serving (not starting, not draining), the shared state (Redis,
/// when configured) has been reached, and the upstream's name resolves: without those, requests
/// would fail and traffic is better sent elsewhere.
async fn readiness(gw: &Gateway) -> Response<Full<Bytes>> {
    if !gw.is_ready() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "draining"}),
        );
    }
    // Shared state not reached yet (just started), or not answering now with `on_state_error =
    // "deny"`: every request would be refused, so traffic is better sent to a replica that has it.
    let deny = gw.config.state.on_state_error == vendorgate_policy::config::OnStateError::Deny;
    if gw.state.redis().is_some_and(|r| !r.connected()) || (deny && !gw.state.healthy()) {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "state_unavailable"}),
        );
    }
    // The shared lock list not confirmed yet (just started, or Redis lost for a while) with
    // `locks.on_state_error = "strict"`: every request would be refused too.
    if gw.controls.current().unknown {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "locks_unknown"}),
        );
    }
    let url = &gw.config.upstream.url;
    let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
    let resolved = match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().is_some(),
        _ => false,
    };
    if resolved {
        json(StatusCode::OK, json!({"status": "ready"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "upstream_unresolvable"}),
        )
    }
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json(status, json!({"error": code}))
}

fn error_with(status: StatusCode, code: &str, detail: &str) -> Response<Full<Bytes>> {
    json(status, json!({"error": code, "detail": detail}))
}

fn json(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
