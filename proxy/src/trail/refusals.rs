//! Connections and request heads refused before the request pipeline: a TLS handshake that failed
//! or timed out, a head hyper's parser refused (400, 414, 431), a head that did not arrive in time
//! (slowloris), an HTTP/2 connection the codec closed for a protocol violation (a rapid-reset or
//! CONTINUATION flood). No request got as far as a decision, but reviewers must see these: they
//! are what smuggling and flooding attempts look like from here.
//!
//! **Aggregated, so that a flood cannot drown the trail.** Each refusal is counted in the metrics,
//! but the trail gets at most one record per client address, per stage (TLS, HTTP) and per
//! `trail.refusal_interval`: the first refusal opens a window, later ones in it are counted, and
//! the window is written as one record when its interval is over (or at shutdown) with the count,
//! the kinds, and the first refusal's details. At most [`MAX_WINDOWS`] address windows are held;
//! beyond that (an attacker with many addresses), refusals from further addresses share one
//! window per stage with no address, which counts them too. So a flood costs at most
//! `MAX_WINDOWS + 2` records per interval, however fast it comes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::json::JsonOut;
use super::schema::SCHEMA;
use super::time::rfc3339;
use crate::ip_text::IpText;

/// Windows (an address in a stage) held at once; refusals from further addresses share the
/// overflow window of their stage.
pub const MAX_WINDOWS: usize = 4096;

/// Why a connection or a request head was refused before the pipeline. Stable codes, like the
/// request reasons: never renamed, only added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    TlsHandshakeFailed,
    TlsHandshakeTimeout,
    /// hyper's parser answered 400 (malformed request line, header or framing) or 505.
    RequestMalformed,
    /// hyper's parser answered 431 (head over `server.max_header_size`) or 414 (URI too long).
    RequestHeadTooLarge,
    /// A request head began and did not arrive whole within `server.header_read_timeout`.
    RequestHeadTimeout,
    /// The HTTP/2 codec closed the connection with a GOAWAY for the client's protocol violation.
    Http2ProtocolError,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::TlsHandshakeFailed,
        Refusal::TlsHandshakeTimeout,
        Refusal::RequestMalformed,
        Refusal::RequestHeadTooLarge,
        Refusal::RequestHeadTimeout,
        Refusal::Http2ProtocolError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TlsHandshakeFailed => "tls_handshake_failed",
            Refusal::TlsHandshakeTimeout => "tls_handshake_timeout",
            Refusal::RequestMalformed => "request_malformed",
            Refusal::RequestHeadTooLarge => "request_head_too_large",
            Refusal::RequestHeadTimeout => "request_head_timeout",
            Refusal::Http2ProtocolError => "http2_protocol_error",
        }
    }

    /// What the client was answered, if anything: a TLS failure gets no HTTP answer.
    pub fn status(self) -> Option<http::StatusCode> {
        use http::StatusCode;
        match self {
            Refusal::TlsHandshakeFailed | Refusal::TlsHandshakeTimeout => None,
            // A GOAWAY, not a response.
            Refusal::Http2ProtocolError => None,
            Refusal::RequestMalformed => Some(StatusCode::BAD_REQUEST),
            Refusal::RequestHeadTooLarge => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            Refusal::RequestHeadTimeout => Some(StatusCode::REQUEST_TIMEOUT),
        }
    }

    fn stage(self) -> Stage {
        match self {
            Refusal::TlsHandshakeFailed | Refusal::TlsHandshakeTimeout => Stage::Tls,
            _ => Stage::Http,
        }
    }
}

/// Where on the connection the refusal happened; each has its own window, so a TLS flood does not
/// hide an HTTP smuggling attempt from the same address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Stage {
    Tls,
    Http,
}

impl Stage {
    fn action(self) -> &'static str {
        match self {
            Stage::Tls => "tls_handshake",
            Stage::Http => "http_refused",
        }
    }
}

/// What is known of one refusal.
pub struct Refused<'a> {
    pub peer: SocketAddr,
    pub kind: Refusal,
    /// `1.1` or `2` once the protocol is known.
    pub http_version: Option<&'static str>,
    /// The error as the TLS library or the HTTP parser put it.
    pub detail: &'a str,
    /// The start of the refused request head, when it is at hand (see [`request_line`]).
    pub head: Option<&'a [u8]>,
}

/// Refusals from one address (or the overflow) in one stage, since the window opened.
struct Window {
    opened: Instant,
    first_at: SystemTime,
    last_at: SystemTime,
    /// The first refusal's client port and details.
    port: u16,
    first: Refusal,
    http_version: Option<&'static str>,
    detail: String,
    request_line: Option<String>,
    counts: [u64; Refusal::ALL.len()],
    /// Overflow only: refusals that came from addresses without a window of their own.
    addresses_over: bool,
}

#[derive(Default)]
struct Windows {
    by_address: HashMap<(IpAddr, Stage), Window>,
    overflow: HashMap<Stage, Window>,
}

/// The windows of refusals not yet written.
pub struct Refusals {
    interval: Duration,
    windows: Mutex<Windows>,
}

impl Refusals {
    pub fn new(interval: Duration) -> Self {
        Refusals {
            interval,
            windows: Mutex::default(),
        }
    }

    /// Counts a refusal into its window, opening one if there is none.
    pub fn note(&self, r: &Refused<'_>) {
        let ip = r.peer.ip().to_canonical();
        let stage = r.kind.stage();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Windows {
            by_address,
            overflow,
        } = &mut *w;
        let window = if by_address.contains_key(&(ip, stage)) || by_address.len() < MAX_WINDOWS {
            by_address
                .entry((ip, stage))
                .or_insert_with(|| Window::open(r, false))
        } else {
            overflow
                .entry(stage)
                .or_insert_with(|| Window::open(r, true))
        };
        window.counts[r.kind as usize] += 1;
        window.last_at = SystemTime::now();
    }

    /// The records of the windows whose interval is over at `now` (every window, with `all`: at
    /// shutdown), removed from what is held.
    pub fn due(&self, now: Instant, all: bool, policy_version: &str) -> Vec<String> {
        let interval = self.interval;
        let is_due = |w: &Window| all || now.duration_since(w.opened) >= interval;
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        w.by_address.retain(|(ip, stage), window| {
            if !is_due(window) {
                return true;
            }
            out.push(window.to_json(Some(*ip), *stage, policy_version));
            false
        });
        w.overflow.retain(|stage, window| {
            if !is_due(window) {
                return true;
            }
            out.push(window.to_json(None, *stage, policy_version));
            false
        });
        out
    }
}

impl Window {
    fn open(r: &Refused<'_>, addresses_over: bool) -> Self {
        let now = SystemTime::now();
        Window {
            opened: Instant::now(),
            first_at: now,
            last_at: now,
            port: r.peer.port(),
            first: r.kind,
            http_version: r.http_version,
            detail: r.detail.to_string(),
            request_line: r.head.map(request_line),
            counts: [0; Refusal::ALL.len()],
            addresses_over,
        }
    }

    fn to_json(&self, ip: Option<IpAddr>, stage: Stage, policy_version: &str) -> String {
        let count: u64 = self.counts.iter().sum();
        let mut j = JsonOut::with_capacity(512);
        j.raw("{\"@timestamp\":").str(&rfc3339(self.first_at));
        j.raw(",\"event\":{\"kind\":\"event\",\"category\":[\"network\"],\"type\":[\"denied\"],\"action\":")
            .str(stage.action())
            .raw(",\"outcome\":\"failure\",\"reason\":")
            .str(self.first.as_str())
            .raw(",\"start\":")
            .str(&rfc3339(self.first_at))
            .raw(",\"end\":")
            .str(&rfc3339(self.last_at))
            .raw("}");
        if let Some(v) = self.http_version {
            j.raw(",\"http\":{\"version\":").str(v).raw("}");
        }
        if let Some(ip) = ip {
            j.raw(",\"source\":{\"ip\":")
                .str(IpText::new(ip).as_str())
                .raw(",\"port\":")
                .u64(self.port.into())
                .raw("}");
        }
        j.raw(",\"vendorgate\":{\"schema\":")
            .str(SCHEMA)
            .raw(",\"decision\":\"deny\",\"reason\":")
            .str(self.first.as_str())
            .raw(",\"rule\":")
            .str(&self.detail)
            .raw(",\"policy_version\":")
            .str(policy_version)
            .raw(",\"count\":")
            .u64(count)
            .raw(",\"refusals\":{");
        let mut first = true;
        for kind in Refusal::ALL {
            let n = self.counts[kind as usize];
            if n == 0 {
                continue;
            }
            if !std::mem::take(&mut first) {
                j.raw(",");
            }
            j.str(kind.as_str()).raw(":").u64(n);
        }
        j.raw("}");
        if let Some(line) = &self.request_line {
            j.raw(",\"request_line\":").str(line);
        }
        if self.addresses_over {
            j.raw(",\"addresses_over_limit\":true");
        }
        j.raw("}}");
        j.finish()
    }
}

/// The refused head's first line, at most 128 bytes of it, with anything that is not printable
/// ASCII written as `\xNN`: enough to tell a smuggling attempt's shape (`GET /x HTTP/1.1`,
/// `POST / HTTP/1.1` with a bare `\n`) without keeping its headers, where tokens live.
pub fn request_line(head: &[u8]) -> String {
    const MAX: usize = 128;
    let end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let mut out = String::with_capacity(end.min(MAX) + 8);
    for &b in &head[..end.min(MAX)] {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if end > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn refused(ip: &str, kind: Refusal) -> Refused<'static> {
        Refused {
            peer: SocketAddr::new(ip.parse().unwrap(), 40000),
            kind,
            http_version: None,
            detail: "received corrupt message",
            head: None,
        }
    }

    fn parse(records: &[String]) -> Vec<Value> {
        records
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    }

    #[test]
    fn a_flood_from_one_address_is_one_record_per_interval_with_its_count_and_kinds() {
        let r = Refusals::new(Duration::from_secs(60));
        for _ in 0..1999 {
            r.note(&refused("127.0.0.9", Refusal::TlsHandshakeFailed));
        }
        r.note(&refused("127.0.0.9", Refusal::TlsHandshakeTimeout));
        assert!(r.due(Instant::now(), false, "v").is_empty(), "not yet due");
        let recs = parse(&r.due(Instant::now() + Duration::from_secs(60), false, "v"));
        assert_eq!(recs.len(), 1);
        let v = &recs[0]["vendorgate"];
        assert_eq!(v["count"], 2000);
        assert_eq!(v["refusals"]["tls_handshake_failed"], 1999);
        assert_eq!(v["refusals"]["tls_handshake_timeout"], 1);
        assert_eq!(v["reason"], "tls_handshake_failed");
        assert_eq!(recs[0]["event"]["action"], "tls_handshake");
        assert_eq!(recs[0]["source"]["ip"], "127.0.0.9");
        // The readers find it through the same schema as a request's record.
        use crate::trail::schema::{text, Field};
        let read = |f| text(&recs[0], f);
        assert_eq!(read(Field::Action), "tls_handshake");
        assert_eq!(read(Field::Decision), "deny");
        assert_eq!(read(Field::Reason), "tls_handshake_failed");
        assert_eq!(read(Field::Rule), "received corrupt message");
        assert_eq!(read(Field::SourceIp), "127.0.0.9");
        assert_eq!(read(Field::PolicyVersion), "v");
        assert!(read(Field::Timestamp).ends_with('Z'));
        assert!(r.due(Instant::now(), true, "v").is_empty(), "written once");
    }

    #[test]
    fn stages_and_addresses_have_their_own_windows_and_the_rest_overflow() {
        let r = Refusals::new(Duration::from_secs(60));
        r.note(&refused("127.0.0.9", Refusal::TlsHandshakeFailed));
        r.note(&Refused {
            http_version: Some("1.1"),
            head: Some(b"GET /a\x00b HTTP/1.1\r\nAuthorization: Bearer secret\r\n"),
            ..refused("127.0.0.9", Refusal::RequestMalformed)
        });
        for i in 0..MAX_WINDOWS + 10 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128));
            r.note(&Refused {
                peer: SocketAddr::new(ip, 1),
                ..refused("127.0.0.1", Refusal::TlsHandshakeFailed)
            });
        }
        let recs = parse(&r.due(Instant::now(), true, "v"));
        // Two windows for 127.0.0.9 (one a stage), 4094 more addresses, one overflow window.
        assert_eq!(recs.len(), MAX_WINDOWS + 1);
        let http: Vec<_> = recs
            .iter()
            .filter(|v| v["event"]["action"] == "http_refused")
            .collect();
        assert_eq!(http.len(), 1);
        assert_eq!(
            http[0]["vendorgate"]["request_line"],
            "GET /a\\x00b HTTP/1.1"
        );
        assert_eq!(http[0]["http"]["version"], "1.1");
        assert!(!recs.iter().any(|v| v.to_string().contains("secret")));
        let over: Vec<_> = recs
            .iter()
            .filter(|v| v["vendorgate"]["addresses_over_limit"] == true)
            .collect();
        assert_eq!(over.len(), 1);
        assert!(over[0].get("source").is_none());
        assert_eq!(over[0]["vendorgate"]["count"], 12);
    }

    #[test]
    fn request_lines_are_cut_and_escaped() {
        assert_eq!(request_line(b"GET / HTTP/1.1\r\nHost: x"), "GET / HTTP/1.1");
        assert_eq!(request_line(b"G\\T\t/"), "G\\x5cT\\x09/");
        let long = [b'a'; 200];
        let line = request_line(&long);
        assert!(line.starts_with(&"a".repeat(128)) && line.ends_with('…'));
    }
}
