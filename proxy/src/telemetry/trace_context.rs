//! W3C trace context: the caller's trace id when it sent a valid `traceparent`, else one derived
//! from the request id; propagated upstream with a span id of our own.
//!
//! Ids are kept as fixed-size hex arrays, not strings: every request carries one of these into its
//! decision record and its upstream `traceparent`, and none of that needs the heap.

use http::{HeaderMap, HeaderValue};

#[derive(Clone, Copy, Debug)]
pub struct TraceContext {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    /// The caller's span, when it sent a `traceparent`.
    parent_span_id: Option<[u8; 16]>,
    sampled: bool,
}

/// Lowercase hex digits only: what W3C allows in ids, and always valid UTF-8 and header text.
fn is_hex(s: &[u8]) -> bool {
    s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn as_str(hex: &[u8]) -> &str {
    // Only ever filled with ASCII hex digits.
    std::str::from_utf8(hex).unwrap_or_default()
}

/// The `00-<trace>-<parent>-<flags>` of a `traceparent` header, when well formed.
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 16], bool)> {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    if !is_hex(trace) || !is_hex(parent) || !is_hex(flags) || trace.iter().all(|&b| b == b'0') {
        return None;
    }
    // Bit 0 of the flags is "sampled"; the others are for future use.
    let sampled = matches!(
        flags[1],
        b'1' | b'3' | b'5' | b'7' | b'9' | b'b' | b'd' | b'f'
    );
    Some((trace.try_into().ok()?, parent.try_into().ok()?, sampled))
}

impl TraceContext {
    /// `span_id` is this request's own span (16 hex digits, from [`crate::telemetry::request_id::RequestIds`]).
    pub fn from_request(headers: &HeaderMap, request_id: &HeaderValue, span_id: [u8; 16]) -> Self {
        if let Some((trace_id, parent, sampled)) =
            headers.get("traceparent").and_then(|v| parse(v.as_bytes()))
        {
            return TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                sampled,
            };
        }
        let rid = request_id.as_bytes();
        let mut trace_id = [0u8; 32];
        if rid.len() == 32 && rid.iter().all(u8::is_ascii_hexdigit) {
            trace_id.copy_from_slice(rid);
            trace_id.make_ascii_lowercase();
        } else {
            // A request id of another shape still names one trace, always the same one.
            let digest = crate::trail::chain::sha256_hex(rid);
            trace_id.copy_from_slice(&digest.as_bytes()[..32]);
        }
        TraceContext {
            trace_id,
            span_id,
            parent_span_id: None,
            sampled: true,
        }
    }

    pub fn trace_id(&self) -> &str {
        as_str(&self.trace_id)
    }

    pub fn span_id(&self) -> &str {
        as_str(&self.span_id)
    }

    pub fn parent_span_id(&self) -> Option<&str> {
        self.parent_span_id.as_ref().map(|p| as_str(p))
    }

    /// The `traceparent` to send upstream: the same trace, our span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        let mut v = [0u8; 55];
        v[..3].copy_from_slice(b"00-");
        v[3..35].copy_from_slice(&self.trace_id);
        v[35] = b'-';
        v[36..52].copy_from_slice(&self.span_id);
        v[52] = b'-';
        v[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        HeaderValue::from_bytes(&v).unwrap_or_else(|_| {
            HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-00")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: [u8; 16] = *b"00f067aa0ba902b7";

    fn headers(traceparent: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(traceparent));
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued() {
        let h = headers("00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-00");
        let rid = HeaderValue::from_static("ignored");
        let t = TraceContext::from_request(&h, &rid, SPAN);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id(), Some("b7ad6b7169203331"));
        assert_eq!(
            t.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_trace_from_the_request_id() {
        let rid = HeaderValue::from_static("C2E0F89A863D22E806B787BC90C382B2");
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-b7ad6b7169203331-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-6b7ad6b7169203331-01",
        ] {
            let t = TraceContext::from_request(&headers(bad), &rid, SPAN);
            assert_eq!(t.trace_id(), "c2e0f89a863d22e806b787bc90c382b2", "{bad}");
            assert_eq!(t.parent_span_id(), None);
            assert!(t.traceparent().to_str().unwrap().ends_with("-01"));
        }
    }

    #[test]
    fn a_request_id_of_another_shape_still_names_one_trace() {
        let rid = HeaderValue::from_static("ticket-1234:retry");
        let a = TraceContext::from_request(&HeaderMap::new(), &rid, SPAN);
        let b = TraceContext::from_request(&HeaderMap::new(), &rid, *b"1111111111111111");
        assert_eq!(a.trace_id(), b.trace_id());
        assert!(is_hex(a.trace_id().as_bytes()) && a.trace_id().len() == 32);
        assert_eq!(a.span_id(), "00f067aa0ba902b7");
    }
}
