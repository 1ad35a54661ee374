//! Header rewriting between the vendor's agent and the upstream.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::ip_text::IpText;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the RFC 7230 list proxies still meet): they describe one
/// connection and must not be forwarded. `Proxy-Authorization` also carries credentials meant for us.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
///
/// Only names actually present are removed: most messages carry none or just `Connection`, and
/// each removal hashes its name, so nine blind removals cost more than one pass over the names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    // `Connection: keep-alive` / `close` (nearly every message that has the header) name nothing
    // beyond the fixed list; parsing them would allocate a header name only to remove nothing.
    let listed = |name: &str| {
        name.eq_ignore_ascii_case("close")
            || HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(name))
    };
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !listed(name))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
    );
    for name in &doomed {
        headers.remove(name);
    }
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Headers that claim a client address (or a host): the proxy is the only source of those
/// upstream, so whatever the agent typed in any of them is removed (`X-Forwarded-For` is then set).
const CLAIMED: [HeaderName; 9] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-originating-ip"),
    HeaderName::from_static("x-forwarded-host"),
];
/// Sets `X-Forwarded-For/-Proto` for the upstream.
///
/// Whatever forwarding headers the client sent are discarded, not extended: the upstream's audit trail
/// and IP rules must see the address the proxy verified, not one a vendor typed. No
/// `X-Forwarded-Host` is sent: the only name it could carry is the one the agent typed, which the
/// SaaS has no use for (the proxy's public name is configuration, not a request header) and which
/// would let an agent put arbitrary text in the upstream's link building and logs.
pub fn set_forwarded(headers: &mut HeaderMap, client_ip: IpAddr) {
    remove_where(headers, |k| CLAIMED.contains(k));
    if let Ok(v) = HeaderValue::from_str(IpText::new(client_ip).as_str()) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
}

/// The first request header whose name holds an underscore, if any (see
/// `server.underscore_headers`).
pub fn underscored(headers: &HeaderMap) -> Option<&HeaderName> {
    headers.keys().find(|k| k.as_str().contains('_'))
}

/// Removes every header whose name holds an underscore; how many.
pub fn drop_underscored(headers: &mut HeaderMap) -> usize {
    remove_where(headers, |k| k.as_str().contains('_'))
}

/// Removes the headers whose names `doomed` picks, in one pass over the names present; how many.
/// Removing a name hashes it, so blind removals of a fixed list cost on every message, and most
/// messages carry none of them (no allocation either then).
pub fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) -> usize {
    let found: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in &found {
        headers.remove(name);
    }
    found.len()
}

/// A header value from arbitrary text (an account name from a token): visible ASCII is kept, anything
/// else is percent-encoded, so the value is always valid and never splits a header.
pub fn encoded_value(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x21..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9v"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn encoded_values_are_always_valid() {
        assert_eq!(encoded_value("acme/agent-7"), "acme/agent-7");
        assert_eq!(encoded_value("a b\r\nX-Evil: 1"), "a%20b%0D%0AX-Evil:%201");
        assert_eq!(encoded_value("zoë"), "zo%C3%AB");
    }

    #[test]
    fn forwarded_headers_replace_what_the_client_sent() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("true-client-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("cf-connecting-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        set_forwarded(&mut h, "127.0.0.2".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(!h.contains_key("x-forwarded-host"));
        assert!(!h.contains_key(header::FORWARDED));
        assert!(!h.contains_key("x-real-ip"));
        assert!(!h.contains_key("true-client-ip") && !h.contains_key("cf-connecting-ip"));
        set_forwarded(&mut h, "2001:db8::7".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key(header::UPGRADE));
    }
}
