//! The tamper-evident line format, shared by the writer and `vendorgate audit verify`.
//!
//! Each record is one line: `{"seq":N,"prev_hash":"<hex>",<fields…>,"hash":"<hex>"}`. `hash` is the
//! SHA-256 of the line without its `,"hash":"…"` part (so it covers `seq` and `prev_hash`), and
//! `prev_hash` is the previous record's `hash` (64 zeros before the first). Editing a record breaks
//! its hash; deleting or reordering records breaks `seq` and `prev_hash`; a cut-off file ends in an
//! incomplete line. The chain runs on across rotated files.

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const SUFFIX_LEN: usize = ",\"hash\":\"".len() + 64 + "\"}".len();

pub fn sha256_hex(data: &[u8]) -> String {
    Hex::sha256(data).as_str().to_string()
}

/// A SHA-256 digest in lowercase hex, kept on the stack: the writer makes one per record.
#[derive(Clone, Copy)]
pub struct Hex([u8; 64]);

impl Hex {
    pub fn sha256(data: &[u8]) -> Hex {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(digest.as_ref()) {
            // A table rather than `write!("{:02x}")`: this runs for every record and every request.
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        Hex(out)
    }

    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Appends the line for record `seq` whose other fields are `fields` (a JSON object's members,
/// without braces) to `out`, newline included, and returns its hash. The writer puts a batch's
/// lines straight into the buffer it writes, without a string per line or per hash.
pub fn seal_into(out: &mut String, seq: u64, prev_hash: &str, fields: &str) -> Hex {
    let start = out.len();
    out.push_str("{\"seq\":");
    out.push_str(itoa::Buffer::new().format(seq));
    out.push_str(",\"prev_hash\":\"");
    out.push_str(prev_hash);
    out.push('"');
    if !fields.is_empty() {
        out.push(',');
        out.push_str(fields);
    }
    out.push('}');
    let hash = Hex::sha256(&out.as_bytes()[start..]);
    out.pop();
    out.push_str(",\"hash\":\"");
    out.push_str(hash.as_str());
    out.push_str("\"}\n");
    hash
}

/// What a line claims, once its own hash has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("incomplete record (the file was cut off here)")]
    Incomplete,
    #[error("not a sealed record")]
    Malformed,
    #[error("hash mismatch: the record was altered")]
    Altered,
}

/// Checks one line (without its newline) against its own hash.
pub fn open(line: &str) -> Result<Sealed, LineError> {
    if !line.ends_with("\"}") || line.len() < SUFFIX_LEN + 2 {
        return Err(if line.starts_with("{\"seq\":") {
            LineError::Incomplete
        } else {
            LineError::Malformed
        });
    }
    // The suffix is ASCII in a sealed record; a line where it would start inside a character is
    // not one (found by the trail_verify fuzz target: `split_at` there panicked).
    let split = line.len() - SUFFIX_LEN;
    let (body, suffix) = line.split_at_checked(split).ok_or(LineError::Malformed)?;
    let hash = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(LineError::Malformed)?;
    let mut unsigned = String::with_capacity(body.len() + 1);
    unsigned.push_str(body);
    unsigned.push('}');
    if Hex::sha256(unsigned.as_bytes()).as_str() != hash {
        return Err(LineError::Altered);
    }
    let value: serde_json::Value =
        serde_json::from_str(&unsigned).map_err(|_| LineError::Malformed)?;
    let seq = value
        .get("seq")
        .and_then(|v| v.as_u64())
        .ok_or(LineError::Malformed)?;
    let prev_hash = value
        .get("prev_hash")
        .and_then(|v| v.as_str())
        .ok_or(LineError::Malformed)?;
    Ok(Sealed {
        seq,
        prev_hash: prev_hash.to_string(),
        hash: hash.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_open_and_edits_are_caught() {
        let mut line = String::new();
        let hash = seal_into(&mut line, 1, GENESIS, "\"event\":{\"reason\":\"allowed\"}");
        let opened = open(line.trim_end()).unwrap();
        assert_eq!(
            (opened.seq, opened.hash.as_str(), opened.prev_hash.as_str()),
            (1, hash.as_str(), GENESIS)
        );
        let edited = line.trim_end().replace("allowed", "allowee");
        assert_eq!(open(&edited), Err(LineError::Altered));
        assert_eq!(open(&line[..line.len() / 2]), Err(LineError::Incomplete));
        assert_eq!(open("garbage"), Err(LineError::Malformed));
    }

    /// Found by `fuzz/fuzz_targets/trail_verify.rs`: a line whose hash suffix would begin inside a
    /// multi-byte character panicked instead of being refused.
    #[test]
    fn a_line_cut_inside_a_character_is_malformed_not_a_panic() {
        let mut line = String::from("{\"seq\":1,");
        line.push('\u{781}');
        line.push_str(&"0".repeat(SUFFIX_LEN - 3));
        line.push_str("\"}");
        assert!(!line.is_char_boundary(line.len() - SUFFIX_LEN));
        assert_eq!(open(&line), Err(LineError::Malformed));
    }
}
