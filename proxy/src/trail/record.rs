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
use serde_json::{json, Value};

use super::json::JsonOut;
use super::time::Timestamp;
use super::Slot;
use crate::gateway::{Active, Gateway};
use crate::identity::cache::Identity;
use crate::ip_text::IpText;
use crate::otel::Span;
use crate::trace_context::TraceContext;

pub const SCHEMA: &str = "vendorgate.decision/1";

/// How a request's exchange ended, as its record tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The response body went out to its end.
    Completed,
    /// An egress cap stopped the response mid-stream.
    CutOff,
    /// The upstream's response body broke off.
    Failed,
    /// The request was let go before its response ended: the client closed the connection or
    /// reset the stream, or the shutdown grace ran out. Whatever was under way (a decision, the
    /// upstream's answer, the body) stopped there.
    Abandoned,
}

/// Who let go of an abandoned request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    Client,
    Shutdown,
}

impl Abandoned {
    pub fn as_str(self) -> &'static str {
        match self {
            Abandoned::Client => "client",
            Abandoned::Shutdown => "shutdown",
        }
    }

    /// The status a record gives a request abandoned before any response was made: nginx's 499
    /// for a client that left, 503 for one the proxy cut at shutdown.
    fn status(self) -> u16 {
        match self {
            Abandoned::Client => 499,
            Abandoned::Shutdown => 503,
        }
    }

    /// The reason a record gives a request abandoned before any decision was made.
    fn reason(self) -> &'static str {
        match self {
            Abandoned::Client => "client_aborted",
            Abandoned::Shutdown => "shutdown",
        }
    }
}

/// A record in the making: filled in as the request passes the phases, sealed when its response
/// body is done, so the byte counts are final.
///
/// **It writes itself when dropped.** Whatever way a request ends (the client resets the stream
/// while the upstream is still answering, the connection dies mid-body, shutdown cuts it), the
/// future or body holding the draft is dropped, and the drop seals the record as
/// [`Ending::Abandoned`]. No code path has to remember to finish it, so none can forget.
///
/// It holds references (the policy, the cached identity, header values) rather than copies of
/// their strings: one is made for every request, and most never need a field more than once.
pub struct Draft {
    pub slot: Option<Slot>,
    pub gw: &'static Gateway,
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
    /// The request was handed to the upstream connection: from then on the SaaS may have received
    /// it, even if the client left before the answer.
    pub forwarded: bool,
    /// The client went away mid-upload: whatever answer follows, nobody is there to take it.
    pub client_left: bool,
    pub bytes_in: Arc<AtomicU64>,
    /// Set once the record has been sealed (by [`Draft::finish`] or the drop).
    sealed: bool,
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

    /// A draft for a request that has just arrived; the phases fill in the rest.
    pub fn new<B>(
        gw: &'static Gateway,
        active: Arc<Active>,
        trace: TraceContext,
        request_id: HeaderValue,
        req: &http::Request<B>,
        peer: SocketAddr,
    ) -> Self {
        Draft {
            slot: None,
            gw,
            trace,
            started: Instant::now(),
            at: SystemTime::now(),
            request_id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            path: None,
            http_version: match req.version() {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
            peer,
            client_ip: None,
            active,
            vendor: None,
            route: None,
            identity: None,
            allowed: false,
            reason: "allowed",
            rule: String::new(),
            status: 0,
            upstream_status: None,
            forwarded: false,
            client_left: false,
            bytes_in: Arc::new(AtomicU64::new(0)),
            sealed: false,
        }
    }

    /// Seals the record with the final counts and hands it to the writer.
    pub fn finish(mut self, bytes_out: u64, ending: Ending) {
        self.seal(bytes_out, ending);
    }

    fn seal(&mut self, bytes_out: u64, ending: Ending) {
        if std::mem::replace(&mut self.sealed, true) {
            return;
        }
        let abandoned = (ending == Ending::Abandoned || self.client_left).then(|| {
            if self.gw.is_cutting() && !self.client_left {
                Abandoned::Shutdown
            } else {
                Abandoned::Client
            }
        });
        if let Some(by) = abandoned {
            // No response was made yet: the record says what the access log of a proxy would.
            if self.status == 0 {
                self.status = by.status();
                if !self.allowed {
                    self.reason = by.reason();
                }
            }
            self.gw.metrics.abandoned(by);
        }
        let completed = ending == Ending::Completed && !self.client_left;
        let cut_off = ending == Ending::CutOff;
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let success = self.allowed && completed && self.status < 400;
        self.gw.metrics.observe(
            self.allowed,
            self.reason,
            self.vendor_id(),
            self.identity.as_deref(),
            bytes_out,
            duration,
        );
        if let Some(otel) = self.gw.otel.as_deref() {
            otel.record(self.span(bytes_in, bytes_out, duration, success, cut_off, abandoned));
        }
        let Some(slot) = self.slot.take() else { return };
        if !slot.is_recorded() {
            return;
        }
        let client_ip = self.client_ip.map(IpText::new);
        let source_ip = IpText::new(self.peer.ip().to_canonical());
        let timestamp = Timestamp::at(self.at);
        let record = HttpRecord {
            timestamp: timestamp.as_str(),
            allowed: self.allowed,
            success,
            reason: self.reason,
            duration_ns: duration.as_nanos() as u64,
            http_version: self.http_version,
            request_id: self.request_id(),
            method: self.method.as_str(),
            bytes_in,
            status: self.status,
            bytes_out,
            path: self.path.as_deref().unwrap_or(self.uri.path()),
            original: self.uri.path(),
            query: self.uri.query(),
            client_ip: client_ip.as_ref().map(IpText::as_str),
            source_ip: source_ip.as_str(),
            source_port: self.peer.port(),
            account: self.identity.as_deref().map(Identity::account_json),
            vendor: self.vendor_id(),
            trace_id: self.trace.trace_id(),
            rule: &self.rule,
            route: self.route_id(),
            class: self.class(),
            policy_version: &self.active.version,
            upstream_status: self.upstream_status,
            completed,
            cut_off,
            forwarded: self.forwarded,
            abandoned: abandoned.map(Abandoned::as_str),
            token: self.identity.as_deref().map(Identity::record_token),
        };
        slot.submit(record.to_json());
    }
}

/// The record's fields, borrowed from the draft.
struct HttpRecord<'a> {
    timestamp: &'a str,
    allowed: bool,
    success: bool,
    reason: &'static str,
    duration_ns: u64,
    http_version: &'static str,
    request_id: &'a str,
    method: &'a str,
    bytes_in: u64,
    status: u16,
    bytes_out: u64,
    path: &'a str,
    original: &'a str,
    query: Option<&'a str>,
    client_ip: Option<&'a str>,
    source_ip: &'a str,
    source_port: u16,
    /// Already a JSON string, made once per verified token.
    account: Option<&'a str>,
    vendor: Option<&'a str>,
    trace_id: &'a str,
    rule: &'a str,
    route: Option<&'a str>,
    class: Option<&'a str>,
    policy_version: &'a str,
    upstream_status: Option<u16>,
    completed: bool,
    cut_off: bool,
    forwarded: bool,
    abandoned: Option<&'static str>,
    /// The `token` object, made once per verified token (see [`token_object`]).
    token: Option<&'a str>,
}

/// The record's `user.id`, as the JSON string written into every record of the token: made once,
/// with the `token` object.
pub fn account_json(account: &str) -> String {
    let mut j = JsonOut::with_capacity(account.len() + 2);
    j.str(account);
    j.finish()
}

/// The record's `token` object: the same for every request of a token, so written once (into
/// [`crate::identity::cache::Identity`]) rather than escaped again on every request.
pub fn token_object(
    iss: &str,
    sub: Option<&str>,
    amr: &[String],
    jti_sha256: Option<&str>,
) -> String {
    let mut j = JsonOut::with_capacity(128);
    j.raw("{\"iss\":").str(iss);
    if let Some(sub) = sub {
        j.raw(",\"sub\":").str(sub);
    }
    j.raw(",\"amr\":").strs(amr);
    if let Some(jti) = jti_sha256 {
        j.raw(",\"jti_sha256\":").str(jti);
    }
    j.raw("}");
    j.finish()
}

impl HttpRecord<'_> {
    /// The schema's nesting, in a fixed key order; absent optional fields are left out.
    fn to_json(&self) -> String {
        // Sized for a typical record, so the buffer is allocated once.
        let mut j = JsonOut::with_capacity(1536);
        j.raw("{\"@timestamp\":").str(self.timestamp);
        j.raw(",\"event\":{\"kind\":\"event\",\"category\":[\"web\"],\"type\":[")
            .str(if self.allowed { "allowed" } else { "denied" })
            .raw("],\"action\":\"http_request\",\"outcome\":")
            .str(if self.success { "success" } else { "failure" })
            .raw(",\"reason\":")
            .str(self.reason)
            .raw(",\"duration\":")
            .u64(self.duration_ns)
            .raw("}");
        j.raw(",\"http\":{\"version\":")
            .str(self.http_version)
            .raw(",\"request\":{\"id\":")
            .str(self.request_id)
            .raw(",\"method\":")
            .str(self.method)
            .raw(",\"bytes\":")
            .u64(self.bytes_in)
            .raw("},\"response\":{\"status_code\":")
            .u64(self.status.into())
            .raw(",\"bytes\":")
            .u64(self.bytes_out)
            .raw("}}");
        j.raw(",\"url\":{\"path\":")
            .str(self.path)
            .raw(",\"original\":")
            .str(self.original);
        if let Some(q) = self.query {
            j.raw(",\"query\":").str(q);
        }
        j.raw("}");
        if let Some(ip) = self.client_ip {
            j.raw(",\"client\":{\"ip\":").str(ip).raw("}");
        }
        j.raw(",\"source\":{\"ip\":")
            .str(self.source_ip)
            .raw(",\"port\":")
            .u64(self.source_port.into())
            .raw("}");
        if let Some(id) = self.account {
            j.raw(",\"user\":{\"id\":").raw(id).raw("}");
        }
        if let Some(id) = self.vendor {
            j.raw(",\"organization\":{\"id\":").str(id).raw("}");
        }
        j.raw(",\"trace\":{\"id\":").str(self.trace_id).raw("}");
        j.raw(",\"vendorgate\":{\"schema\":")
            .str(SCHEMA)
            .raw(",\"decision\":")
            .str(if self.allowed { "allow" } else { "deny" })
            .raw(",\"reason\":")
            .str(self.reason)
            .raw(",\"rule\":")
            .str(self.rule);
        if let Some(route) = self.route {
            j.raw(",\"route\":").str(route);
        }
        if let Some(class) = self.class {
            j.raw(",\"class\":").str(class);
        }
        j.raw(",\"policy_version\":").str(self.policy_version);
        if let Some(status) = self.upstream_status {
            j.raw(",\"upstream_status\":").u64(status.into());
        }
        j.raw(",\"completed\":")
            .bool(self.completed)
            .raw(",\"cut_off\":")
            .bool(self.cut_off)
            .raw(",\"forwarded\":")
            .bool(self.forwarded);
        if let Some(by) = self.abandoned {
            j.raw(",\"abandoned\":").str(by);
        }
        if let Some(t) = self.token {
            j.raw(",\"token\":").raw(t);
        }
        j.raw("}}");
        j.finish()
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
        abandoned: Option<Abandoned>,
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
            ("vendorgate.forwarded", json!(self.forwarded)),
        ];
        if let Some(by) = abandoned {
            attributes.push(("vendorgate.abandoned", json!(by.as_str())));
        }
        for (k, v) in [
            ("vendorgate.vendor", self.vendor_id()),
            (
                "vendorgate.account",
                self.identity.as_deref().map(|i| i.token.account.as_str()),
            ),
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
        // Dropped unsealed: the request was let go before its response ended (see the type).
        self.seal(0, Ending::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full<'a>(account: &'a str, token: &'a str) -> HttpRecord<'a> {
        HttpRecord {
            timestamp: "2026-11-22T16:57:51.871Z",
            allowed: true,
            success: true,
            reason: "allowed",
            duration_ns: 598_511,
            http_version: "1.1",
            request_id: "c2e0f89a863d22e806b787bc90c382b2",
            method: "GET",
            bytes_in: 0,
            status: 200,
            bytes_out: 2047,
            path: "/api/v2/tickets/1",
            original: "/api/v2//tickets/./1",
            query: Some("q=\"x\"&y=\\"),
            client_ip: Some("2001:db8::7"),
            source_ip: "127.0.0.1",
            source_port: 42064,
            account: Some(account),
            vendor: Some("acme"),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            rule: "",
            route: Some("tickets"),
            class: Some("read"),
            policy_version: "sha256:672693e5c6757050",
            upstream_status: Some(200),
            completed: true,
            cut_off: false,
            forwarded: true,
            abandoned: None,
            token: Some(token),
        }
    }

    #[test]
    fn a_full_record_has_every_field_in_its_place() {
        let amr = ["pwd".to_string(), "mfa".to_string()];
        let token = token_object("https://idp.test", Some("agent-1\n"), &amr, Some("0e71"));
        let account = account_json("agent-1 \"east\"");
        let v: Value = serde_json::from_str(&full(&account, &token).to_json()).unwrap();
        assert_eq!(
            v,
            json!({
                "@timestamp": "2026-11-22T16:57:51.871Z",
                "event": {"kind": "event", "category": ["web"], "type": ["allowed"],
                          "action": "http_request", "outcome": "success", "reason": "allowed",
                          "duration": 598_511},
                "http": {"version": "1.1",
                         "request": {"id": "c2e0f89a863d22e806b787bc90c382b2", "method": "GET", "bytes": 0},
                         "response": {"status_code": 200, "bytes": 2047}},
                "url": {"path": "/api/v2/tickets/1", "original": "/api/v2//tickets/./1", "query": "q=\"x\"&y=\\"},
                "client": {"ip": "2001:db8::7"},
                "source": {"ip": "127.0.0.1", "port": 42064},
                "user": {"id": "agent-1 \"east\""},
                "organization": {"id": "acme"},
                "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
                "vendorgate": {"schema": SCHEMA, "decision": "allow", "reason": "allowed", "rule": "",
                               "route": "tickets", "class": "read",
                               "policy_version": "sha256:672693e5c6757050", "upstream_status": 200,
                               "completed": true, "cut_off": false, "forwarded": true,
                               "token": {"iss": "https://idp.test", "sub": "agent-1\n",
                                         "amr": ["pwd", "mfa"], "jti_sha256": "0e71"}},
            })
        );
    }

    #[test]
    fn a_refusal_before_identity_leaves_out_what_was_never_known() {
        let record = HttpRecord {
            allowed: false,
            success: false,
            reason: "ip_not_allowed",
            query: None,
            client_ip: None,
            account: None,
            vendor: None,
            route: None,
            class: None,
            upstream_status: None,
            token: None,
            rule: "vendors[*].ip_allow",
            forwarded: false,
            abandoned: Some("client"),
            ..full("", "")
        };
        assert_eq!(
            record.to_json(),
            concat!(
                r#"{"@timestamp":"2026-11-22T16:57:51.871Z","event":{"kind":"event","category":["web"],"#,
                r#""type":["denied"],"action":"http_request","outcome":"failure","reason":"ip_not_allowed","#,
                r#""duration":598511},"http":{"version":"1.1","request":{"id":"c2e0f89a863d22e806b787bc90c382b2","#,
                r#""method":"GET","bytes":0},"response":{"status_code":200,"bytes":2047}},"url":{"#,
                r#""path":"/api/v2/tickets/1","original":"/api/v2//tickets/./1"},"source":{"ip":"127.0.0.1","#,
                r#""port":42064},"trace":{"id":"4bf92f3577b34da6a3ce929d0e0e4736"},"vendorgate":{"#,
                r#""schema":"vendorgate.decision/1","decision":"deny","reason":"ip_not_allowed","#,
                r#""rule":"vendors[*].ip_allow","policy_version":"sha256:672693e5c6757050","#,
                r#""completed":true,"cut_off":false,"forwarded":false,"abandoned":"client"}}"#
            )
        );
    }
}
