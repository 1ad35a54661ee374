//! Request ids: the thread that ties a vendor's complaint, the proxy's records and the upstream's logs
//! together.
//!
//! A well-formed id from the client is kept (so a caller's own tracing carries through); anything else
//! is replaced. Generated ids are a per-process random prefix plus a permuted counter: unique without a
//! syscall per request, and not a readable count of the traffic.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// A `HeaderName`, not a `&str`: inserting under a string name builds (and allocates) the name on
/// every insert.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

pub struct RequestIds {
    prefix: u64,
    key: u64,
    counter: AtomicU64,
    span_key: u64,
    spans: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    pub fn new() -> Self {
        let random = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u32(std::process::id());
            h.finish()
        };
        RequestIds {
            prefix: random(1),
            key: random(2),
            counter: AtomicU64::new(0),
            span_key: random(3),
            spans: AtomicU64::new(0),
        }
    }

    /// The client's id when it is acceptable, else a fresh one.
    pub fn take_or_generate(&self, headers: &HeaderMap) -> HeaderValue {
        match headers.get(&HEADER) {
            Some(v) if is_acceptable(v.as_bytes()) => v.clone(),
            _ => self.generate(),
        }
    }

    pub fn generate(&self) -> HeaderValue {
        let mixed = permuted(&self.counter, self.key);
        let mut buf = [0u8; 32];
        hex(self.prefix, &mut buf[..16]);
        hex(mixed, &mut buf[16..]);
        // Hex digits are always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// A W3C span id (16 hex digits) for this process's span of one request: unique within the
    /// process even when clients reuse request ids, and never all zeros (which W3C reserves).
    pub fn span_id(&self) -> [u8; 16] {
        let mut buf = [0u8; 16];
        hex(permuted(&self.spans, self.span_key).max(1), &mut buf);
        buf
    }
}

/// The next value of `counter`, scrambled. Odd multiplications, xor and rotation are bijections on
/// u64: distinct counts, distinct results.
fn permuted(counter: &AtomicU64, key: u64) -> u64 {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    ((n ^ key).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .rotate_left(29)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Up to 128 characters of `[A-Za-z0-9._:-]`: enough for UUIDs, ULIDs and trace ids, and nothing that
/// could smuggle structure into a log line or a SIEM field.
fn is_acceptable(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_unique_and_well_formed() {
        let ids = RequestIds::new();
        let seen: HashSet<_> = (0..10_000).map(|_| ids.generate()).collect();
        assert_eq!(seen.len(), 10_000);
        for id in seen.iter().take(10) {
            assert_eq!(id.len(), 32);
            assert!(is_acceptable(id.as_bytes()));
        }
    }

    #[test]
    fn client_ids_are_kept_only_when_clean() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        h.insert(
            HEADER.clone(),
            HeaderValue::from_static("7f3c2a10-uuid-like:01"),
        );
        assert_eq!(ids.take_or_generate(&h), "7f3c2a10-uuid-like:01");
        for bad in ["has space", "quote\"d", "", "semi;colon"] {
            h.insert(HEADER.clone(), HeaderValue::from_str(bad).unwrap());
            assert_ne!(ids.take_or_generate(&h), bad);
        }
        h.insert(
            HEADER.clone(),
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(ids.take_or_generate(&h).len(), 32);
    }
}
