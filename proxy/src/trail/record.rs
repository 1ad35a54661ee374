//! A decision record in the making ([`Draft`]): filled in as the request passes the phases, and
//! written when it ends, whatever way it ends. The fields and their JSON are [`super::schema`]'s.
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Uri};

use super::schema::{Abandoned, Ending, Field, Record};
use super::time::Timestamp;
use super::Slot;
use crate::active::Active;
use crate::identity::cache::Identity;
use crate::ip_text::IpText;
use crate::outcome::Outcome;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otel::Otel;
use crate::telemetry::otel::Span;
use crate::telemetry::trace_context::TraceContext;
use opentelemetry::KeyValue;

/// Where a sealed record reports besides the trail: the gateway, seen only through what the
/// record needs of it (so the record does not depend on the gateway that depends on it).
pub trait Observers: Sync {
    /// True once the shutdown grace has run out and the requests still busy are being cut.
    fn cutting(&self) -> bool;
    fn metrics(&self) -> &Metrics;
    fn otel(&self) -> Option<&Otel>;
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
    /// Where the record reports besides the trail (the gateway).
    pub observers: &'static dyn Observers,
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
    /// The just-in-time grant that opened the route's class, if one did.
    pub grant: Option<String>,
    /// The vendor's redacted fields, when its response was redacted: `{"**.email":3}` (field →
    /// values taken out; names, never values).
    pub redacted: Option<String>,
    /// The vendor's record scope, when its response was scoped: `{"kept":2,"withheld":3,
    /// "first":"group_id 360001 is outside the scope"}` (counts and the first reason; never a
    /// record's content).
    pub scoped: Option<String>,
    pub identity: Option<Arc<Identity>>,
    pub allowed: bool,
    /// How it ended so far: what the record's `event.reason` says.
    pub outcome: Outcome,
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
        observers: &'static dyn Observers,
        active: Arc<Active>,
        trace: TraceContext,
        request_id: HeaderValue,
        req: &http::Request<B>,
        peer: SocketAddr,
    ) -> Self {
        observers.metrics().begun();
        Draft {
            slot: None,
            observers,
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
            grant: None,
            redacted: None,
            scoped: None,
            identity: None,
            allowed: false,
            outcome: Outcome::Allowed,
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
            if self.observers.cutting() && !self.client_left {
                Abandoned::Shutdown
            } else {
                Abandoned::Client
            }
        });
        if let Some(by) = abandoned {
            // No response was made yet: the record says what the access log of a proxy would.
            if self.status == 0 {
                let abandoned = Outcome::Abandoned(by);
                self.status = abandoned.status().map_or(0, |s| s.as_u16());
                if !self.allowed {
                    self.outcome = abandoned;
                }
            }
            self.observers.metrics().abandoned(by);
        }
        let completed = ending == Ending::Completed && !self.client_left;
        let cut_off = ending == Ending::CutOff;
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let success = self.allowed && completed && self.status < 400;
        if let Some(session) = self
            .identity
            .as_deref()
            .and_then(|i| i.state.session_stats.get())
        {
            session.sent(bytes_out);
        }
        self.observers.metrics().observe(
            self.allowed,
            self.outcome.as_str(),
            self.vendor_id(),
            self.identity
                .as_deref()
                .map(|i| (&i.egress_metric, i.token.account.as_str())),
            bytes_out,
            duration,
        );
        if let Some(otel) = self.observers.otel() {
            otel.record(self.span(bytes_in, bytes_out, duration, success, cut_off, abandoned));
        }
        let Some(slot) = self.slot.take() else { return };
        if !slot.is_recorded() {
            return;
        }
        let client_ip = self.client_ip.map(IpText::new);
        let source_ip = IpText::new(self.peer.ip().to_canonical());
        let timestamp = Timestamp::at(self.at);
        let record = Record {
            timestamp: timestamp.as_str(),
            allowed: self.allowed,
            success,
            reason: self.outcome.as_str(),
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
            account: self.identity.as_deref().map(|i| i.record.account()),
            vendor: self.vendor_id(),
            trace_id: self.trace.trace_id(),
            rule: &self.rule,
            route: self.route_id(),
            class: self.class(),
            grant: self.grant.as_deref(),
            redacted: self.redacted.as_deref(),
            scoped: self.scoped.as_deref(),
            policy_version: &self.active.version,
            upstream_status: self.upstream_status,
            completed,
            cut_off,
            forwarded: self.forwarded,
            abandoned: abandoned.map(Abandoned::as_str),
            token: self.identity.as_deref().map(|i| i.record.token()),
        };
        slot.submit(record.to_json());
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
        let text = |f: Field, v: &str| KeyValue::new(f.otel(), v.to_owned());
        let int = |f: Field, v: u64| KeyValue::new(f.otel(), v as i64);
        let mut attributes = Vec::with_capacity(20);
        attributes.extend([
            text(Field::Method, self.method.as_str()),
            text(Field::Path, self.path.as_deref().unwrap_or(self.uri.path())),
            int(Field::Status, u64::from(self.status)),
            int(Field::BytesIn, bytes_in),
            int(Field::BytesOut, bytes_out),
            KeyValue::new(
                Field::ClientIp.otel(),
                self.client_ip.unwrap_or(self.peer.ip()).to_string(),
            ),
            text(Field::RequestId, self.request_id()),
            text(Field::Decision, if self.allowed { "allow" } else { "deny" }),
            text(Field::Reason, self.outcome.as_str()),
            text(Field::PolicyVersion, &self.active.version),
            KeyValue::new(Field::CutOff.otel(), cut_off),
            KeyValue::new(Field::Forwarded.otel(), self.forwarded),
        ]);
        if let Some(by) = abandoned {
            attributes.push(text(Field::Abandoned, by.as_str()));
        }
        for (k, v) in [
            (Field::Vendor, self.vendor_id()),
            (
                Field::Account,
                self.identity.as_deref().map(|i| i.token.account.as_str()),
            ),
            (Field::Route, self.route_id()),
            (Field::Class, self.class()),
            (Field::Grant, self.grant.as_deref()),
        ] {
            if let Some(v) = v {
                attributes.push(text(k, v));
            }
        }
        if !self.rule.is_empty() {
            attributes.push(text(Field::Rule, &self.rule));
        }
        Span {
            trace: self.trace,
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
