//! The decision record, schema `vendorgate.decision/1`. Field names follow the Elastic Common
//! Schema where ECS has a field (`@timestamp`, `event.*`, `http.*`, `url.*`, `client.ip`,
//! `source.ip`, `user.id`, `organization.id`, `trace.id`), so a SIEM ingests it without mapping
//! pain; what ECS lacks lives under `vendorgate.*`. The token itself is never recorded, only its
//! `iss`, `sub`, `amr` and a SHA-256 of its `jti` (computed once per token, in the token cache).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Uri};
use serde::Serialize;
use serde_json::{json, Value};

use super::time::{rfc3339, Timestamp};
use super::Slot;
use crate::gateway::Active;
use crate::identity::cache::Identity;
use crate::ip_text::IpText;
use crate::metrics::Metrics;
use crate::otel::{Otel, Span};
use crate::trace_context::TraceContext;

pub const SCHEMA: &str = "vendorgate.decision/1";

/// A record in the making: filled in as the request passes the phases, sealed when its response
/// body is done (or dropped), so the byte counts are final.
///
/// It holds references (the policy, the cached identity, header values) rather than copies of
/// their strings: one is made for every request, and most never need a field more than once.
pub struct Draft {
    pub slot: Option<Slot>,
    pub metrics: Arc<Metrics>,
    pub otel: Option<Arc<Otel>>,
    pub trace: TraceContext,
    pub started: Instant,
    pub at: SystemTime,
    pub request_id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
    /// The normalized path, once the request got that far.
    pub path: Option<String>,
    pub http_version: &'static str,
    pub peer: SocketAddr,
    pub client_ip: Option<IpAddr>,
    /// The policy that decided: names the vendor, route and class by index, and its version.
    pub active: Arc<Active>,
    pub vendor: Option<usize>,
    pub route: Option<usize>,
    pub identity: Option<Arc<Identity>>,
    pub allowed: bool,
    pub reason: &'static str,
    pub rule: String,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub bytes_in: Arc<AtomicU64>,
}

impl Draft {
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    fn vendor_id(&self) -> Option<&str> {
        let v = self.active.config.policy.vendors.get(self.vendor?)?;
        Some(&v.id)
    }

    fn route_id(&self) -> Option<&str> {
        let r = self.active.config.policy.routes.get(self.route?)?;
        Some(&r.id)
    }

    fn class(&self) -> Option<&str> {
        self.active.config.policy.class_name(self.route?)
    }

    fn account(&self) -> Option<&str> {
        self.identity.as_deref().map(|i| i.token.account.as_str())
    }

    /// Seals the record with the final counts and hands it to the writer.
    pub fn finish(mut self, bytes_out: u64, completed: bool, cut_off: bool) {
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let success = self.allowed && completed && self.status < 400;
        self.metrics.observe(
            self.allowed,
            self.reason,
            self.vendor_id(),
            self.account(),
            bytes_out,
            duration,
        );
        if let Some(otel) = &self.otel {
            otel.record(self.span(bytes_in, bytes_out, duration, success, cut_off));
        }
        let Some(slot) = self.slot.take() else { return };
        if !slot.is_recorded() {
            return;
        }
        let client_ip = self.client_ip.map(IpText::new);
        let source_ip = IpText::new(self.peer.ip().to_canonical());
        let decision = if self.allowed { "allow" } else { "deny" };
        let timestamp = Timestamp::at(self.at);
        let record = HttpRecord {
            timestamp: timestamp.as_str(),
            event: Event {
                kind: "event",
                category: ["web"],
                r#type: [if self.allowed { "allowed" } else { "denied" }],
                action: "http_request",
                outcome: if success { "success" } else { "failure" },
                reason: self.reason,
                duration: duration.as_nanos() as u64,
            },
            http: Http {
                version: self.http_version,
                request: HttpRequest {
                    id: self.request_id(),
                    method: self.method.as_str(),
                    bytes: bytes_in,
                },
                response: HttpResponse {
                    status_code: self.status,
                    bytes: bytes_out,
                },
            },
            url: Url {
                path: self.path.as_deref().unwrap_or(self.uri.path()),
                original: self.uri.path(),
                query: self.uri.query(),
            },
            client: client_ip.as_ref().map(|ip| Ip { ip: ip.as_str() }),
            source: Source {
                ip: source_ip.as_str(),
                port: self.peer.port(),
            },
            user: self.account().map(|id| Id { id }),
            organization: self.vendor_id().map(|id| Id { id }),
            trace: Id {
                id: self.trace.trace_id(),
            },
            vendorgate: Vendorgate {
                schema: SCHEMA,
                decision,
                reason: self.reason,
                rule: &self.rule,
                route: self.route_id(),
                class: self.class(),
                policy_version: &self.active.version,
                upstream_status: self.upstream_status,
                completed,
                cut_off,
                token: self.identity.as_deref().map(|i| Token {
                    iss: &i.token.iss,
                    sub: i.token.sub.as_deref(),
                    amr: &i.token.amr,
                    jti_sha256: i.jti_sha256.as_deref(),
                }),
            },
        };
        // Sized for a typical record, so the buffer is allocated once rather than grown four times.
        let mut json = Vec::with_capacity(1536);
        // Serializing plain structs into memory cannot fail, and serde_json writes UTF-8; a record
        // that somehow did fail would still be counted, as an empty one.
        let fields = match serde_json::to_writer(&mut json, &record) {
            Ok(()) => String::from_utf8(json).unwrap_or_default(),
            Err(_) => String::new(),
        };
        slot.submit(fields);
    }
}

// The record's shape, borrowed from the draft: one serialization, no intermediate JSON tree.
#[derive(Serialize)]
struct HttpRecord<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    event: Event,
    http: Http<'a>,
    url: Url<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<Ip<'a>>,
    source: Source<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization: Option<Id<'a>>,
    trace: Id<'a>,
    vendorgate: Vendorgate<'a>,
}

#[derive(Serialize)]
struct Event {
    kind: &'static str,
    category: [&'static str; 1],
    r#type: [&'static str; 1],
    action: &'static str,
    outcome: &'static str,
    reason: &'static str,
    duration: u64,
}

#[derive(Serialize)]
struct Http<'a> {
    version: &'static str,
    request: HttpRequest<'a>,
    response: HttpResponse,
}

#[derive(Serialize)]
struct HttpRequest<'a> {
    id: &'a str,
    method: &'a str,
    bytes: u64,
}

#[derive(Serialize)]
struct HttpResponse {
    status_code: u16,
    bytes: u64,
}

#[derive(Serialize)]
struct Url<'a> {
    path: &'a str,
    original: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
}

#[derive(Serialize)]
struct Ip<'a> {
    ip: &'a str,
}

#[derive(Serialize)]
struct Source<'a> {
    ip: &'a str,
    port: u16,
}

#[derive(Serialize)]
struct Id<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Vendorgate<'a> {
    schema: &'static str,
    decision: &'static str,
    reason: &'static str,
    rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<&'a str>,
    policy_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
    completed: bool,
    cut_off: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<Token<'a>>,
}

#[derive(Serialize)]
struct Token<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    amr: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    jti_sha256: Option<&'a str>,
}

impl Draft {
    fn span(
        &self,
        bytes_in: u64,
        bytes_out: u64,
        took: std::time::Duration,
        success: bool,
        cut_off: bool,
    ) -> Span {
        let mut attributes: Vec<(&'static str, Value)> = vec![
            ("http.request.method", json!(self.method.as_str())),
            (
                "url.path",
                json!(self.path.as_deref().unwrap_or(self.uri.path())),
            ),
            ("http.response.status_code", json!(self.status)),
            ("http.request.body.size", json!(bytes_in)),
            ("http.response.body.size", json!(bytes_out)),
            (
                "client.address",
                json!(self.client_ip.unwrap_or(self.peer.ip()).to_string()),
            ),
            ("vendorgate.request_id", json!(self.request_id())),
            (
                "vendorgate.decision",
                json!(if self.allowed { "allow" } else { "deny" }),
            ),
            ("vendorgate.reason", json!(self.reason)),
            ("vendorgate.policy_version", json!(&*self.active.version)),
            ("vendorgate.cut_off", json!(cut_off)),
        ];
        for (k, v) in [
            ("vendorgate.vendor", self.vendor_id()),
            ("vendorgate.account", self.account()),
            ("vendorgate.route", self.route_id()),
            ("vendorgate.class", self.class()),
        ] {
            if let Some(v) = v {
                attributes.push((k, json!(v)));
            }
        }
        if !self.rule.is_empty() {
            attributes.push(("vendorgate.rule", json!(self.rule)));
        }
        Span {
            trace_id: self.trace.trace_id().to_owned(),
            span_id: self.trace.span_id().to_owned(),
            parent_span_id: self.trace.parent_span_id().map(str::to_owned),
            name: format!("{} {}", self.method, self.route_id().unwrap_or("(refused)")),
            start: self.at,
            end: self.at + took,
            error: !success,
            attributes,
        }
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        // A draft is always finished by its body; this only guards against a path that forgets.
        if self.slot.is_some() {
            tracing::error!(
                request_id = self.request_id(),
                "decision record dropped unfinished"
            );
        }
    }
}

/// The record of a connection refused before any request (TLS handshake failed or timed out).
pub fn connection_failure(
    peer: SocketAddr,
    reason: &'static str,
    detail: &str,
    policy_version: &str,
) -> String {
    let record = json!({
        "@timestamp": rfc3339(SystemTime::now()),
        "event": {"kind": "event", "category": ["network"], "type": ["denied"], "action": "tls_handshake", "outcome": "failure", "reason": reason},
        "source": {"ip": peer.ip().to_canonical().to_string(), "port": peer.port()},
        "vendorgate": {"schema": SCHEMA, "decision": "deny", "reason": reason, "rule": detail, "policy_version": policy_version},
    });
    record.to_string()
}
