//! The decision record, schema `vendorgate.decision/1`. Field names follow the Elastic Common
//! Schema where ECS has a field (`@timestamp`, `event.*`, `http.*`, `url.*`, `client.ip`,
//! `source.ip`, `user.id`, `organization.id`, `trace.id`), so a SIEM ingests it without mapping
//! pain; what ECS lacks lives under `vendorgate.*`. The token itself is never recorded, only its
//! `iss`, `sub`, `amr` and a SHA-256 of its `jti` (computed once per token, in the token cache).

use serde_json::Value;

use super::json::JsonOut;

pub const SCHEMA: &str = "vendorgate.decision/1";

/// A field of a decision record, by its dotted path: the one list that the writers
/// ([`Record::to_json`], the refusal records), the reviewers' commands (`audit`) and the OTel span
/// agree on. A round-trip test writes a record and reads every field back through this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// When the request arrived (RFC 3339, UTC).
    Timestamp,
    /// `http_request`, or the stage of a connection refused before the pipeline.
    Action,
    /// `allow` or `deny`.
    Decision,
    /// The outcome's code ([`crate::outcome::Outcome::as_str`]).
    Reason,
    /// The rule that decided, for a refusal.
    Rule,
    /// The token's account.
    Account,
    /// The account's vendor.
    Vendor,
    /// The client address the policy used.
    ClientIp,
    /// The TCP peer.
    SourceIp,
    /// The request id (ours, or the client's if it sent a valid one).
    RequestId,
    /// The request method.
    Method,
    /// The status the client got.
    Status,
    /// Request body bytes sent upstream.
    BytesIn,
    /// Response body bytes sent to the client.
    BytesOut,
    /// The normalized path, what was matched and forwarded.
    Path,
    /// The path as sent.
    Original,
    /// The matched route's id.
    Route,
    /// The route's class.
    Class,
    /// The just-in-time grant that opened the class, when the vendor does not hold it.
    Grant,
    /// The policy that decided.
    PolicyVersion,
    /// An egress cap stopped the response.
    CutOff,
    /// The upstream may have received the request.
    Forwarded,
    /// Who let go of an abandoned request (`client`, `shutdown`).
    Abandoned,
    /// The W3C trace id.
    TraceId,
}

impl Field {
    pub const ALL: [Field; 24] = [
        Field::Timestamp,
        Field::Action,
        Field::Decision,
        Field::Reason,
        Field::Rule,
        Field::Account,
        Field::Vendor,
        Field::ClientIp,
        Field::SourceIp,
        Field::RequestId,
        Field::Method,
        Field::Status,
        Field::BytesIn,
        Field::BytesOut,
        Field::Path,
        Field::Original,
        Field::Route,
        Field::Class,
        Field::Grant,
        Field::PolicyVersion,
        Field::CutOff,
        Field::Forwarded,
        Field::Abandoned,
        Field::TraceId,
    ];

    /// Where it sits in the record's JSON (ECS where ECS has the field).
    pub fn path(self) -> &'static str {
        match self {
            Field::Timestamp => "@timestamp",
            Field::Action => "event.action",
            Field::Decision => "vendorgate.decision",
            Field::Reason => "vendorgate.reason",
            Field::Rule => "vendorgate.rule",
            Field::Account => "user.id",
            Field::Vendor => "organization.id",
            Field::ClientIp => "client.ip",
            Field::SourceIp => "source.ip",
            Field::RequestId => "http.request.id",
            Field::Method => "http.request.method",
            Field::Status => "http.response.status_code",
            Field::BytesIn => "http.request.bytes",
            Field::BytesOut => "http.response.bytes",
            Field::Path => "url.path",
            Field::Original => "url.original",
            Field::Route => "vendorgate.route",
            Field::Class => "vendorgate.class",
            Field::Grant => "vendorgate.grant",
            Field::PolicyVersion => "vendorgate.policy_version",
            Field::CutOff => "vendorgate.cut_off",
            Field::Forwarded => "vendorgate.forwarded",
            Field::Abandoned => "vendorgate.abandoned",
            Field::TraceId => "trace.id",
        }
    }

    /// Its attribute name on the OTel span: OTel's semantic conventions where they name it
    /// differently from ECS, `vendorgate.*` for what they lack, else the record's own path.
    pub fn otel(self) -> &'static str {
        match self {
            Field::Account => "vendorgate.account",
            Field::Vendor => "vendorgate.vendor",
            Field::ClientIp => "client.address",
            Field::SourceIp => "source.address",
            Field::RequestId => "vendorgate.request_id",
            Field::BytesIn => "http.request.body.size",
            Field::BytesOut => "http.response.body.size",
            same => same.path(),
        }
    }
}

/// A field of a parsed record (`None` when the record lacks it).
pub fn field(record: &Value, f: Field) -> Option<&Value> {
    f.path().split('.').try_fold(record, |v, k| v.get(k))
}

/// A text field, `""` when absent.
pub fn text(record: &Value, f: Field) -> &str {
    field(record, f).and_then(Value::as_str).unwrap_or("")
}

/// A number field, 0 when absent.
pub fn number(record: &Value, f: Field) -> u64 {
    field(record, f).and_then(Value::as_u64).unwrap_or(0)
}

/// A record of an operator's act or the locks' own change (lock, unlock, expiry, a refused admin
/// call), in the same chain as the decisions. Rare, so built with `serde_json` rather than laid
/// out by hand; the fields the readers use sit where [`Field`] says.
pub fn admin_event(
    at: std::time::SystemTime,
    action: &str,
    by: &str,
    source: Option<std::net::IpAddr>,
    allowed: bool,
    detail: Value,
) -> String {
    let timestamp = super::time::rfc3339(at);
    let mut record = serde_json::json!({
        "@timestamp": timestamp,
        "event": {
            "kind": "event",
            "category": ["iam"],
            "type": [if allowed { "change" } else { "denied" }],
            "action": action,
            "outcome": if allowed { "success" } else { "failure" },
            "reason": action,
        },
        "user": {"name": by},
        "vendorgate": {
            "schema": SCHEMA,
            "decision": if allowed { "allow" } else { "deny" },
            "reason": action,
            "admin": detail,
        },
    });
    if let Some(ip) = source {
        record["source"] = serde_json::json!({"ip": ip.to_canonical().to_string()});
    }
    record.to_string()
}

/// A detector's finding (see [`crate::detect`]): ECS `event.kind: alert`, the account as `user.id`
/// and its vendor as `organization.id` (so `audit query --account` finds it beside the account's
/// requests), the finding under `vendorgate.anomaly`.
pub fn anomaly_event(
    at: std::time::SystemTime,
    vendor: &str,
    account: &str,
    source: Option<std::net::IpAddr>,
    detail: Value,
) -> String {
    let timestamp = super::time::rfc3339(at);
    let mut record = serde_json::json!({
        "@timestamp": timestamp,
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["indicator"],
            "action": "anomaly",
            "outcome": "success",
            "reason": "anomaly",
        },
        "user": {"id": account},
        "organization": {"id": vendor},
        "vendorgate": {
            "schema": SCHEMA,
            "decision": "allow",
            "reason": "anomaly",
            "anomaly": detail,
        },
    });
    if let Some(ip) = source {
        record["client"] = serde_json::json!({"ip": ip.to_canonical().to_string()});
    }
    record.to_string()
}

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
    pub grant: Option<&'a str>,
    /// Already a JSON object (see [`crate::redact::Redactor::summary`]).
    pub redacted: Option<&'a str>,
    /// Already a JSON object (see [`crate::redact::Redactor::scope_summary`]).
    pub scoped: Option<&'a str>,
    pub policy_version: &'a str,
    pub upstream_status: Option<u16>,
    pub completed: bool,
    pub cut_off: bool,
    pub forwarded: bool,
    pub abandoned: Option<&'static str>,
    /// The `token` object, made once per verified token (see [`token_object`]).
    pub token: Option<&'a str>,
}

/// What every record of one token says of it, written once (when the token is first verified)
/// rather than escaped again on every request: the account as a JSON string, then the `token`
/// object (the `jti` hashed, never the token itself).
pub struct TokenFragments {
    json: Box<str>,
    account_len: usize,
}

impl TokenFragments {
    pub fn new(token: &vendorgate_policy::VerifiedToken) -> Self {
        let jti_sha256 = token
            .jti
            .as_ref()
            .map(|j| super::chain::sha256_hex(j.as_bytes()));
        let account = account_json(&token.account);
        let object = token_object(
            &token.iss,
            token.sub.as_deref(),
            &token.amr,
            jti_sha256.as_deref(),
        );
        TokenFragments {
            account_len: account.len(),
            json: [account, object].concat().into(),
        }
    }

    /// The record's `user.id`: the account, quoted and escaped.
    pub fn account(&self) -> &str {
        &self.json[..self.account_len]
    }

    /// The record's `vendorgate.token` object.
    pub fn token(&self) -> &str {
        &self.json[self.account_len..]
    }
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
        if let Some(grant) = self.grant {
            j.raw(",\"grant\":").str(grant);
        }
        if let Some(redacted) = self.redacted {
            j.raw(",\"redacted\":").raw(redacted);
        }
        if let Some(scoped) = self.scoped {
            j.raw(",\"scope\":").raw(scoped);
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
            grant: None,
            redacted: None,
            scoped: None,
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

    /// The writer and the readers agree: every field written is found where [`Field`] says, with
    /// the value the record held.
    #[test]
    fn every_field_reads_back_what_was_written() {
        let amr = ["pwd".to_string()];
        let token = token_object("https://idp.test", None, &amr, None);
        let account = account_json("agent-1 \"east\"");
        let mut record = full(&account, &token);
        record.abandoned = Some("client");
        record.cut_off = true;
        record.rule = "limits.egress";
        record.grant = Some("gr_0123456789abcdef");
        let v: Value = serde_json::from_str(&record.to_json()).unwrap();
        let want = |f: Field| -> Value {
            match f {
                Field::Timestamp => json!(record.timestamp),
                Field::Action => json!("http_request"),
                Field::Decision => json!("allow"),
                Field::Reason => json!(record.reason),
                Field::Rule => json!(record.rule),
                Field::Account => json!("agent-1 \"east\""),
                Field::Vendor => json!(record.vendor),
                Field::ClientIp => json!(record.client_ip),
                Field::SourceIp => json!(record.source_ip),
                Field::RequestId => json!(record.request_id),
                Field::Method => json!(record.method),
                Field::Status => json!(record.status),
                Field::BytesIn => json!(record.bytes_in),
                Field::BytesOut => json!(record.bytes_out),
                Field::Path => json!(record.path),
                Field::Original => json!(record.original),
                Field::Route => json!(record.route),
                Field::Class => json!(record.class),
                Field::Grant => json!(record.grant),
                Field::PolicyVersion => json!(record.policy_version),
                Field::CutOff => json!(record.cut_off),
                Field::Forwarded => json!(record.forwarded),
                Field::Abandoned => json!(record.abandoned),
                Field::TraceId => json!(record.trace_id),
            }
        };
        for f in Field::ALL {
            assert_eq!(field(&v, f), Some(&want(f)), "{}", f.path());
        }
        assert_eq!(text(&v, Field::Vendor), "acme");
        assert_eq!(number(&v, Field::BytesOut), 2047);
        let otel: std::collections::HashSet<_> = Field::ALL.iter().map(|f| f.otel()).collect();
        assert_eq!(
            otel.len(),
            Field::ALL.len(),
            "two fields share an OTel name"
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
            grant: None,
            redacted: None,
            scoped: None,
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
