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
    out.push('"');
    let bytes = s.as_bytes();
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Every byte that needs escaping is ASCII, so `i` is on a character boundary.
        out.push_str(&s[clean..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        clean = i + 1;
    }
    out.push_str(&s[clean..]);
    out.push('"');
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
