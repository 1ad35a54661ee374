//! Just enough JSON writing for the decision record: one is written for every request, and a
//! generic serializer spent more instructions on it than the rest of the request path's own code.
//!
//! Strings are escaped exactly as serde_json escapes them (quote, backslash and control
//! characters; everything else verbatim), so a record reads the same to every JSON parser.

/// Appends to a JSON text the caller lays out; commas and keys are the caller's literals.
pub struct JsonOut {
    buf: String,
}

impl JsonOut {
    pub fn with_capacity(n: usize) -> Self {
        JsonOut {
            buf: String::with_capacity(n),
        }
    }

    /// Literal JSON text (punctuation and keys), written as given.
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.buf.push_str(s);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        escape_into(&mut self.buf, s);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.push_str(itoa::Buffer::new().format(v));
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    /// `["a","b"]`
    pub fn strs(&mut self, items: &[String]) -> &mut Self {
        self.buf.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            escape_into(&mut self.buf, item);
        }
        self.buf.push(']');
        self
    }

    pub fn finish(self) -> String {
        self.buf
    }
}

/// `s` as a JSON string literal, quotes included.
fn escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut clean = 0;
    let mut i = first_escape(bytes);
    while i < bytes.len() {
        let b = bytes[i];
        // Every byte that needs escaping is ASCII, so `i` is on a character boundary.
        out.push_str(&s[clean..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        clean = i + 1;
        i = clean + first_escape(&bytes[clean..]);
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

/// Where the first byte JSON needs escaped (a control character, `"` or `\\`) is, or the length.
/// Eight bytes at a time: a record's strings are mostly runs that need nothing, and the bytewise
/// scan was the largest single cost of writing one. In each word the lowest flagged byte is a true
/// match (the borrow tricks only flag falsely above a true match), and bytes of multi-byte UTF-8
/// characters (0x80 and up) are never flagged.
fn first_escape(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for (n, chunk) in words.by_ref().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        let found = (control | quote | backslash) & HIGH;
        if found != 0 {
            return n * 8 + (found.trailing_zeros() / 8) as usize;
        }
    }
    let tail = words.remainder();
    let start = bytes.len() - tail.len();
    start
        + tail
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
            .unwrap_or(tail.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for c in (0u32..0x800).chain([0x2028, 0x2029, 0xfeff, 0x1f600]) {
            let s: String = char::from_u32(c).into_iter().collect();
            let text = format!("a{s}b{s}");
            assert_eq!(
                escaped(&text),
                serde_json::to_string(&text).unwrap(),
                "{c:#x}"
            );
        }
        let nasty = "/api/\"x\"\\y\r\n\u{7}zoë\u{1b}[31m";
        // Every position of an escape in and around the eight-byte words, among clean ASCII and
        // multi-byte characters.
        for filler in [
            "abcdefghijklmnopqrstuvwxyz0123456789",
            "zoë😀ünïcödé✓zoë😀ünïcödé",
        ] {
            for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", " ", "\u{7f}"] {
                for at in 0..filler.chars().count() {
                    let text: String = filler
                        .chars()
                        .take(at)
                        .chain(special.chars())
                        .chain(filler.chars().skip(at))
                        .collect();
                    assert_eq!(escaped(&text), serde_json::to_string(&text).unwrap());
                }
            }
            assert_eq!(escaped(filler), serde_json::to_string(filler).unwrap());
        }
        assert_eq!(escaped(nasty), serde_json::to_string(nasty).unwrap());
        assert_eq!(escaped(""), "\"\"");
    }

    #[test]
    fn what_it_writes_parses_back() {
        let mut out = JsonOut::with_capacity(8);
        out.raw("{\"a\":")
            .str("x\"y")
            .raw(",\"n\":")
            .u64(u64::MAX)
            .raw(",\"b\":")
            .bool(false)
            .raw(",\"l\":")
            .strs(&["p".into(), "q\\".into()])
            .raw(",\"e\":")
            .strs(&[])
            .raw("}");
        let v: serde_json::Value = serde_json::from_str(&out.finish()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "x\"y", "n": u64::MAX, "b": false, "l": ["p", "q\\"], "e": []})
        );
    }
}
