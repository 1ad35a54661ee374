//! Request path normalization: one spelling per path, so a route rule cannot be bypassed by writing
//! the path differently.
//!
//! Unreserved characters that were percent-encoded are decoded (`%41` → `A`), other escapes are kept
//! as they are with uppercase hex, dot-segments are resolved and duplicate slashes collapsed. What a
//! proxy cannot normalize without guessing how the upstream will read it is refused instead: an
//! encoded `/` or `\`, a backslash, NUL or other control characters, and `..` that climbs above the
//! root.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains NUL or a control character")]
    ControlCharacter,
    #[error("path contains a malformed percent-escape")]
    BadEscape,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes the path part of a request target (no query).
pub fn normalize(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(path.to_owned());
    }
    rewrite(path)
}

/// True when `normalize` would give the path back as it is: no escape, backslash or control
/// character, no empty segment and no dot-segment. Nearly every request's path: one scan then,
/// instead of two passes and three buffers.
fn is_normal(bytes: &[u8]) -> bool {
    let is_dots = |segment: &[u8]| segment == b"." || segment == b"..";
    let mut start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'%' | b'\\' | 0..=0x1f | 0x7f => return false,
            b'/' if i == start || is_dots(&bytes[start..i]) => return false,
            b'/' => start = i + 1,
            _ => {}
        }
    }
    !is_dots(&bytes[start..])
}

/// The general case: `path` starts with '/'.
fn rewrite(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    // Pass 1: escapes. Decode unreserved, refuse separators and control characters, keep the rest.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => {
                        decoded.push('%');
                        decoded.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                        decoded.push(char::from(b"0123456789ABCDEF"[(v & 0xf) as usize]));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {}
        }
        // Copy one (possibly multi-byte) character. `path` is a &str, so boundaries are sound.
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        decoded.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    // Pass 2: segments. Empty segments (duplicate slashes) and "." vanish, ".." pops.
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash = decoded.ends_with('/') && decoded.len() > 1;
    let mut ends_in_dir = trailing_slash;
    for seg in decoded.split('/') {
        match seg {
            "" => {}
            "." => ends_in_dir = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                ends_in_dir = true;
            }
            s => {
                segments.push(s);
                ends_in_dir = trailing_slash;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (ends_in_dir && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let ok = [
            ("/api/v2/tickets/1.json", "/api/v2/tickets/1.json"),
            ("//api///v2/tickets", "/api/v2/tickets"),
            ("/api/v2/./tickets", "/api/v2/tickets"),
            ("/api/v2/tickets/../users/export", "/api/v2/users/export"),
            (
                "/api/v2/tickets/%2e%2e/users/export",
                "/api/v2/users/export",
            ),
            (
                "/api/v2/tickets/%2E%2E/users/export",
                "/api/v2/users/export",
            ),
            ("/api/v2/tickets/.%2e/users", "/api/v2/users"),
            ("/api/v2/%75sers", "/api/v2/users"),
            ("/api/v2/search?x", "/api/v2/search?x"),
            ("/a/b%20c", "/a/b%20c"),
            ("/a/b%7e", "/a/b~"),
            ("/a/b%3a", "/a/b%3A"),
            ("/", "/"),
            ("/a/", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/é/ü", "/é/ü"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            ("/api/v2/tickets%2f..%2fusers", PathError::EncodedSeparator),
            ("/api/v2/tickets%2F1", PathError::EncodedSeparator),
            ("/api/v2/tickets%5c1", PathError::EncodedSeparator),
            ("/api\\v2", PathError::Backslash),
            ("/api/v2%00/x", PathError::ControlCharacter),
            ("/api/\u{1}", PathError::ControlCharacter),
            ("/..", PathError::AboveRoot),
            ("/api/../../etc", PathError::AboveRoot),
            ("/api/%2e%2e/%2e%2e/x", PathError::AboveRoot),
            ("/api/%zz", PathError::BadEscape),
            ("/api/%2", PathError::BadEscape),
            ("api", PathError::NotAbsolute),
        ];
        for (input, want) in bad {
            assert_eq!(normalize(input), Err(want), "{input}");
        }
    }

    proptest! {
        /// The shortcut for paths already normal answers exactly what the full rewrite would.
        #[test]
        fn the_shortcut_agrees_with_the_rewrite(path in "/[a-zé./%0-9A-F\\\\\t]{0,40}") {
            prop_assert_eq!(normalize(&path), rewrite(&path));
        }

        #[test]
        fn normalize_is_idempotent(path in "/[a-z./%0-9A-F]{0,40}") {
            if let Ok(once) = normalize(&path) {
                prop_assert_eq!(normalize(&once), Ok(once.clone()));
            }
        }

        /// A normalized path under a prefix never escapes it unless the tail really climbs (has a ".."
        /// segment once `%2e` is read as '.'), and no dot-segment or empty segment survives.
        #[test]
        fn no_escape_from_a_prefix(tail in "[a-z./]{0,12}(%2[eE]|/|\\.|[a-z]){0,12}") {
            let path = format!("/api/v2/tickets/{tail}");
            if let Ok(n) = normalize(&path) {
                let decoded = tail.replace("%2e", ".").replace("%2E", ".");
                let climbs = decoded.split('/').any(|s| s == "..");
                if !climbs {
                    prop_assert!(n.starts_with("/api/v2/tickets"), "{} -> {}", path, n);
                }
                prop_assert!(n.split('/').all(|s| s != "." && s != ".."), "{}", n);
                prop_assert!(!n.contains("//"), "{}", n);
            }
        }
    }
}
