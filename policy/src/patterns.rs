//! Free-text patterns a vendor's redaction can look for inside string values: a ticket's
//! description or a comment's body where a customer wrote their phone number or IBAN. Off unless
//! a `[[vendors.redact]]` names them; each match becomes `[redacted]`, the rest of the text stays.
//!
//! The matchers are hand-written and linear (no regex engine on the response path), and work on
//! a JSON string's raw text (between its quotes, escapes as written): the digits and letters they
//! look for are ASCII, and an escape before a match (`\n+33…`) counts as a word boundary. A
//! number with an escape inside it (`+33\u00206…`, which no JSON encoder writes for a space) is
//! not seen.
//!
//! - **phone**: 9 to 15 digits (E.164's most), written with spaces, dots, dashes, slashes or
//!   parentheses between them, starting with `+`, `(` or a digit, at word boundaries; a date-like
//!   start (`2026-12-03 10…`: 19xx or 20xx, a separator, two digits) is not one.
//! - **iban**: two capital letters, two check digits, 11 to 30 letters or digits (grouped by single
//!   spaces or not), whose ISO 13616 check (mod 97) holds: an order number or a ticket id cannot
//!   pass for one.

use serde::Deserialize;

/// A free-text pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Phone,
    Iban,
}

/// A set of patterns (a bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Patterns(u8);

impl Patterns {
    pub fn with(self, p: Pattern) -> Self {
        Patterns(self.0 | Self::bit(p))
    }

    fn bit(p: Pattern) -> u8 {
        match p {
            Pattern::Phone => 1,
            Pattern::Iban => 2,
        }
    }

    pub fn has(self, p: Pattern) -> bool {
        self.0 & Self::bit(p) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names, for `explain`.
    pub fn names(self) -> Vec<&'static str> {
        [(Pattern::Phone, "phone"), (Pattern::Iban, "iban")]
            .into_iter()
            .filter(|(p, _)| self.has(*p))
            .map(|(_, n)| n)
            .collect()
    }
}

/// What replaces a match.
pub const MASK: &[u8] = b"[redacted]";

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Whether a match may begin at `i`: the text's start, a non-word byte, or an escape (`\n`).
fn starts_word(text: &[u8], i: usize) -> bool {
    i == 0
        || !is_word(text[i - 1])
        || (i >= 2
            && text[i - 2] == b'\\'
            && matches!(text[i - 1], b'n' | b't' | b'r' | b'b' | b'f'))
}

/// Whether a match may end just before `i`.
fn ends_word(text: &[u8], i: usize) -> bool {
    i >= text.len() || !is_word(text[i])
}

/// The end (exclusive) of a phone number starting at `i`, if one does.
fn phone_at(text: &[u8], i: usize) -> Option<usize> {
    let first = text[i];
    if !(first.is_ascii_digit() || first == b'+' || first == b'(') || !starts_word(text, i) {
        return None;
    }
    // A date (2026-12-03, 2026/12/03, 2026.12.03) is not a phone number.
    let rest = &text[i..];
    if rest.len() >= 7
        && (rest.starts_with(b"19") || rest.starts_with(b"20"))
        && rest[..4].iter().all(u8::is_ascii_digit)
        && matches!(rest[4], b'-' | b'/' | b'.')
        && rest[5..7].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let (mut digits, mut end, mut separators) = (0, None, 0);
    let mut j = i + usize::from(first == b'+');
    while j < text.len() {
        let b = text[j];
        if b.is_ascii_digit() {
            digits += 1;
            separators = 0;
            end = Some(j + 1);
            if digits > 15 {
                return None;
            }
        } else if matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')') && separators < 2 {
            separators += 1;
        } else {
            break;
        }
        j += 1;
    }
    let end = end?;
    (digits >= 9 && ends_word(text, end)).then_some(end)
}

/// The end (exclusive) of an IBAN starting at `i`, if one does.
fn iban_at(text: &[u8], i: usize) -> Option<usize> {
    let head = text.get(i..i + 4)?;
    let plausible = head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit();
    if !plausible || !starts_word(text, i) {
        return None;
    }
    // The compact characters and, for each, where it ends in the text.
    let mut chars: Vec<(u8, usize)> = Vec::with_capacity(34);
    let mut j = i;
    while j < text.len() && chars.len() < 34 {
        let b = text[j];
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            chars.push((b, j + 1));
            j += 1;
        } else if b == b' ' && j + 1 < text.len() && text[j + 1].is_ascii_alphanumeric() {
            j += 1;
        } else {
            break;
        }
    }
    // The longest prefix that ends a word and passes the check.
    (15..=chars.len())
        .rev()
        .find(|&n| ends_word(text, chars[n - 1].1) && mod97(&chars[..n]) == 1)
        .map(|n| chars[n - 1].1)
}

/// ISO 13616: the first four characters moved to the end, letters as 10–35, the number mod 97.
fn mod97(chars: &[(u8, usize)]) -> u32 {
    let mut r = 0u32;
    for &(b, _) in chars[4..].iter().chain(&chars[..4]) {
        let v = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        r = if v >= 10 {
            (r * 100 + v) % 97
        } else {
            (r * 10 + v) % 97
        };
    }
    r
}

/// `text` with every match of `patterns` replaced by [`MASK`], and how many there were; `None`
/// when nothing matched (the text goes on as it is).
pub fn scrub(text: &[u8], patterns: Patterns) -> Option<(Vec<u8>, u32)> {
    let mut out: Option<Vec<u8>> = None;
    let (mut copied, mut i, mut n) = (0, 0, 0);
    while i < text.len() {
        let end = None
            .or_else(|| {
                patterns
                    .has(Pattern::Iban)
                    .then(|| iban_at(text, i))
                    .flatten()
            })
            .or_else(|| {
                patterns
                    .has(Pattern::Phone)
                    .then(|| phone_at(text, i))
                    .flatten()
            });
        match end {
            Some(end) => {
                let o = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
                o.extend_from_slice(&text[copied..i]);
                o.extend_from_slice(MASK);
                n += 1;
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    let mut out = out?;
    out.extend_from_slice(&text[copied..]);
    Some((out, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Patterns {
        Patterns::default().with(Pattern::Phone).with(Pattern::Iban)
    }

    fn scrubbed(text: &str) -> String {
        match scrub(text.as_bytes(), all()) {
            Some((out, _)) => String::from_utf8(out).unwrap(),
            None => text.to_string(),
        }
    }

    #[test]
    fn phone_numbers_in_their_usual_spellings_go() {
        for (text, want) in [
            (
                "call me on +33 6 12 34 56 78 please",
                "call me on [redacted] please",
            ),
            ("mobile: 06.12.34.56.78.", "mobile: [redacted]."),
            ("US (415) 555-0100 office", "US [redacted] office"),
            ("tel 0034-612-345-678", "tel [redacted]"),
            ("line1\\n0612345678", "line1\\n[redacted]"),
            ("+4915112345678", "[redacted]"),
        ] {
            assert_eq!(scrubbed(text), want, "{text}");
        }
    }

    #[test]
    fn numbers_that_are_not_phones_stay() {
        for text in [
            "order #100042 and ticket 12345678",
            "on 2026-12-03 10:00 and 2026/12/03 1015",
            "ref AB123456789012",
            "id 1234567890123456789",
            "x0612345678",
            "0612345678x",
        ] {
            assert_eq!(scrubbed(text), text, "{text}");
        }
    }

    #[test]
    fn ibans_go_when_their_check_holds() {
        for (text, want) in [
            (
                "IBAN FR76 3000 6000 0112 3456 7890 189 thanks",
                "IBAN [redacted] thanks",
            ),
            ("pay DE89370400440532013000.", "pay [redacted]."),
            ("GB82 WEST 1234 5698 7654 32", "[redacted]"),
        ] {
            assert_eq!(scrubbed(text), want, "{text}");
        }
        // One digit off: the check fails, the text stays (and no phone hides in it).
        let wrong = "pay DE89370400440532013001 now";
        assert_eq!(scrubbed(wrong), wrong);
    }

    #[test]
    fn only_the_patterns_asked_for_apply_and_matches_are_counted() {
        let text = b"+33 6 12 34 56 78 or DE89370400440532013000";
        let (out, n) = scrub(text, Patterns::default().with(Pattern::Iban)).unwrap();
        assert_eq!((&out[..], n), (&b"+33 6 12 34 56 78 or [redacted]"[..], 1));
        let (out, n) = scrub(text, all()).unwrap();
        assert_eq!((&out[..], n), (&b"[redacted] or [redacted]"[..], 2));
        assert!(scrub(b"nothing here", all()).is_none());
        assert_eq!(all().names(), ["phone", "iban"]);
    }
}
