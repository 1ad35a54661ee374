//! The decision record, schema `vendorgate.decision/1`. Field names follow the Elastic Common
//! Schema where ECS has a field (`@timestamp`, `event.*`, `http.*`, `url.*`, `client.ip`,
//! `source.ip`, `user.id`, `organization.id`, `trace.id`), so a SIEM ingests it without mapping
//! pain; what ECS lacks lives under `vendorgate.*`. The token itself is never recorded, only its
//! `iss`, `sub`, `amr` and a SHA-256 of its `jti`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::chain::sha256_hex;
use super::time::rfc3339;
use super::Slot;
use crate::metrics::Metrics;
use crate::otel::{Otel, Span};

pub const SCHEMA: &str = "vendorgate.decision/1";

/// What the token said, minus anything secret.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    pub iss: String,
    pub sub: Option<String>,
    pub amr: Vec<String>,
    pub jti_sha256: Option<String>,
}

impl TokenFacts {
    pub fn from(t: &vendorgate_policy::VerifiedToken) -> Self {
        TokenFacts {
            iss: t.iss.clone(),
            sub: t.sub.clone(),
            amr: t.amr.clone(),
            jti_sha256: t.jti.as_ref().map(|j| sha256_hex(j.as_bytes())),
        }
    }
}

/// A record in the making: filled in as the request passes the phases, sealed when its response
/// body is done (or dropped), so the byte counts are final.
pub struct Draft {
    pub slot: Option<Slot>,
    pub metrics: Arc<Metrics>,
    pub otel: Option<Arc<Otel>>,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub started: Instant,
    pub at: SystemTime,
    pub request_id: String,
    pub trace_id: String,
    pub method: String,
    pub raw_path: String,
    pub query: Option<String>,
    pub path: Option<String>,
    pub http_version: &'static str,
    pub peer: SocketAddr,
    pub client_ip: Option<IpAddr>,
    pub vendor: Option<String>,
    pub account: Option<String>,
    pub route: Option<String>,
    pub class: Option<String>,
    pub allowed: bool,
    pub reason: &'static str,
    pub rule: String,
    pub token: Option<TokenFacts>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub bytes_in: Arc<AtomicU64>,
    pub policy_version: Arc<str>,
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        map.insert(key.to_string(), v.into());
    }
}

impl Draft {
    /// Seals the record with the final counts and hands it to the writer.
    pub fn finish(mut self, bytes_out: u64, completed: bool, cut_off: bool) {
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let success = self.allowed && completed && self.status < 400;
        self.metrics.observe(
            self.allowed,
            self.reason,
            self.vendor.as_deref(),
            self.account.as_deref(),
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
        let mut vg = Map::new();
        vg.insert("schema".into(), json!(SCHEMA));
        vg.insert(
            "decision".into(),
            json!(if self.allowed { "allow" } else { "deny" }),
        );
        vg.insert("reason".into(), json!(self.reason));
        vg.insert("rule".into(), json!(self.rule));
        insert_some(&mut vg, "route", self.route.take());
        insert_some(&mut vg, "class", self.class.take());
        vg.insert("policy_version".into(), json!(&*self.policy_version));
        insert_some(&mut vg, "upstream_status", self.upstream_status);
        vg.insert("completed".into(), json!(completed));
        vg.insert("cut_off".into(), json!(cut_off));
        if let Some(t) = self.token.take() {
            let mut tok = Map::new();
            tok.insert("iss".into(), json!(t.iss));
            insert_some(&mut tok, "sub", t.sub);
            tok.insert("amr".into(), json!(t.amr));
            insert_some(&mut tok, "jti_sha256", t.jti_sha256);
            vg.insert("token".into(), Value::Object(tok));
        }
        let mut url = Map::new();
        url.insert(
            "path".into(),
            json!(self.path.take().unwrap_or_else(|| self.raw_path.clone())),
        );
        url.insert("original".into(), json!(self.raw_path));
        insert_some(&mut url, "query", self.query.take());
        let mut record = Map::new();
        record.insert("@timestamp".into(), json!(rfc3339(self.at)));
        record.insert(
            "event".into(),
            json!({
                "kind": "event",
                "category": ["web"],
                "type": [if self.allowed { "allowed" } else { "denied" }],
                "action": "http_request",
                "outcome": if success { "success" } else { "failure" },
                "reason": self.reason,
                "duration": duration.as_nanos() as u64,
            }),
        );
        record.insert(
            "http".into(),
            json!({
                "version": self.http_version,
                "request": {"id": self.request_id, "method": self.method, "bytes": bytes_in},
                "response": {"status_code": self.status, "bytes": bytes_out},
            }),
        );
        record.insert("url".into(), Value::Object(url));
        if let Some(ip) = self.client_ip {
            record.insert("client".into(), json!({"ip": ip.to_string()}));
        }
        record.insert(
            "source".into(),
            json!({"ip": self.peer.ip().to_canonical().to_string(), "port": self.peer.port()}),
        );
        if let Some(a) = self.account.take() {
            record.insert("user".into(), json!({"id": a}));
        }
        if let Some(v) = self.vendor.take() {
            record.insert("organization".into(), json!({"id": v}));
        }
        record.insert("trace".into(), json!({"id": self.trace_id}));
        record.insert("vendorgate".into(), Value::Object(vg));
        slot.submit(members(&Value::Object(record)));
    }
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
            ("http.request.method", json!(self.method)),
            (
                "url.path",
                json!(self.path.as_deref().unwrap_or(&self.raw_path)),
            ),
            ("http.response.status_code", json!(self.status)),
            ("http.request.body.size", json!(bytes_in)),
            ("http.response.body.size", json!(bytes_out)),
            (
                "client.address",
                json!(self.client_ip.unwrap_or(self.peer.ip()).to_string()),
            ),
            ("vendorgate.request_id", json!(self.request_id)),
            (
                "vendorgate.decision",
                json!(if self.allowed { "allow" } else { "deny" }),
            ),
            ("vendorgate.reason", json!(self.reason)),
            ("vendorgate.policy_version", json!(&*self.policy_version)),
            ("vendorgate.cut_off", json!(cut_off)),
        ];
        for (k, v) in [
            ("vendorgate.vendor", &self.vendor),
            ("vendorgate.account", &self.account),
            ("vendorgate.route", &self.route),
            ("vendorgate.class", &self.class),
        ] {
            if let Some(v) = v {
                attributes.push((k, json!(v)));
            }
        }
        if !self.rule.is_empty() {
            attributes.push(("vendorgate.rule", json!(self.rule)));
        }
        Span {
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            parent_span_id: self.parent_span_id.clone(),
            name: format!(
                "{} {}",
                self.method,
                self.route.as_deref().unwrap_or("(refused)")
            ),
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
            tracing::error!(request_id = %self.request_id, "decision record dropped unfinished");
        }
    }
}

/// A JSON object's text without its braces, as the chained line format wants it.
fn members(v: &Value) -> String {
    let text = v.to_string();
    text[1..text.len() - 1].to_string()
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
    members(&record)
}
