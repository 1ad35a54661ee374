//! The decision record, schema `vendorgate.decision/1`. Field names follow the Elastic Common
//! Schema where ECS has a field (`@timestamp`, `event.*`, `http.*`, `url.*`, `client.ip`,
//! `source.ip`, `user.id`, `organization.id`, `trace.id`), so a SIEM ingests it without mapping
//! pain; what ECS lacks lives under `vendorgate.*`. The token itself is never recorded, only its
//! `iss`, `sub`, `amr` and a SHA-256 of its `jti` (computed once per token, in the token cache).

use super::json::JsonOut;

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
}

/// A decision record's fields, borrowed from whatever holds them (the draft, a test).
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub allowed: bool,
    pub success: bool,
    pub reason: &'static str,
    pub duration_ns: u64,
    pub http_version: &'static str,
    pub request_id: &'a str,
    pub method: &'a str,
    pub bytes_in: u64,
    pub status: u16,
    pub bytes_out: u64,
    pub path: &'a str,
    pub original: &'a str,
    pub query: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub source_ip: &'a str,
    pub source_port: u16,
    /// Already a JSON string, made once per verified token.
    pub account: Option<&'a str>,
    pub vendor: Option<&'a str>,
    pub trace_id: &'a str,
    pub rule: &'a str,
    pub route: Option<&'a str>,
    pub class: Option<&'a str>,
    pub policy_version: &'a str,
    pub upstream_status: Option<u16>,
    pub completed: bool,
    pub cut_off: bool,
    pub forwarded: bool,
    pub abandoned: Option<&'static str>,
    /// The `token` object, made once per verified token (see [`token_object`]).
    pub token: Option<&'a str>,
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

impl Record<'_> {
    /// The schema's nesting, in a fixed key order; absent optional fields are left out.
    pub fn to_json(&self) -> String {
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn full<'a>(account: &'a str, token: &'a str) -> Record<'a> {
        Record {
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
        let record = Record {
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
