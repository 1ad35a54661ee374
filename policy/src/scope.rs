//! Record scoping: which of the SaaS's records a vendor may receive at all, judged by the records'
//! own fields. "northwind-bpo sees tickets of groups 360004 and 360005, brand 1200 only": a ticket
//! outside that is never handed to its agents, whatever route returned it.
//!
//! Redaction bounds which *fields* leave; a scope bounds which *records* do. The scope is judged
//! on a record as the upstream returned it (the proxy holds each record until its end, see the
//! proxy's `redact` scanner), so a record is judged by what it says of itself, not by what the
//! request asked for: a search, a list, an export and a direct fetch are judged alike.
//!
//! Fail closed: a record that lacks a field the scope constrains (no `group_id`, a `null` one) is
//! outside it; a record whose scope fields cannot be read is outside it.

use serde::Deserialize;

/// The resource a scope judges. Zendesk's tickets for now: the records at `ticket` (one record),
/// `tickets[]` (lists, `show_many`, incremental exports) and `results[]` (search) of a response.
pub const RESOURCES: &[&str] = &["tickets"];

/// The root keys whose value is one record.
pub const SINGLE_KEYS: &[&[u8]] = &[b"ticket"];

/// The root keys whose value is a list of records.
pub const LIST_KEYS: &[&[u8]] = &[b"tickets", b"results"];

/// What a scope reads of a record (any other field is skipped unread).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecordFields {
    #[serde(default)]
    pub group_id: Option<u64>,
    #[serde(default)]
    pub brand_id: Option<u64>,
    #[serde(default)]
    pub organization_id: Option<u64>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl RecordFields {
    /// The fields of a record's JSON text; `None` when it is not a readable record (outside any
    /// scope). The record's own members are read and the rest skipped without being parsed
    /// ([`quick`]); a record that reader does not take in its stride (an escape in a key or a
    /// tag) goes to `serde_json`, whose answer is the reference.
    pub fn read(json: &[u8]) -> Option<Self> {
        match quick::read(json) {
            quick::Read::Fields(fields) => Some(fields),
            quick::Read::Unreadable => None,
            quick::Read::Unsure => serde_json::from_slice(json).ok(),
        }
    }
}

/// A reader of a record's scope fields that walks only its top-level members: a scope reads four
/// fields of a ticket of a few KiB, and parsing the rest (as `serde_json` would, to skip it) was
/// most of what scoping cost.
mod quick {
    use super::RecordFields;

    pub enum Read {
        Fields(RecordFields),
        /// What `serde_json` would refuse too (a wrong type, a duplicate field, not an object).
        Unreadable,
        /// Escapes where a field's name or a tag is: let `serde_json` decide.
        Unsure,
    }

    struct Cursor<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Cursor<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }

        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            let hit = self.peek() == Some(c);
            self.i += usize::from(hit);
            hit
        }

        /// A string's raw text (the opening quote eaten), and whether it has escapes.
        fn string(&mut self) -> Option<(&[u8], bool)> {
            let start = self.i;
            let mut escaped = false;
            loop {
                let rest = &self.b[self.i..];
                // Most of a ticket's strings are short: a look by hand before a vector search.
                let head = rest.len().min(24);
                let n = match rest[..head].iter().position(|&b| b == b'"' || b == b'\\') {
                    Some(n) => n,
                    None => head + memchr::memchr2(b'"', b'\\', &rest[head..])?,
                };
                self.i += n;
                if self.b[self.i] == b'"' {
                    self.i += 1;
                    return Some((&self.b[start..self.i - 1], escaped));
                }
                escaped = true;
                self.i += 2;
                if self.i > self.b.len() {
                    return None;
                }
            }
        }

        /// Skips one value.
        fn skip(&mut self) -> Option<()> {
            self.ws();
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    self.string().map(|_| ())
                }
                b'{' | b'[' => {
                    let mut depth = 0usize;
                    loop {
                        let at = self.b[self.i..]
                            .iter()
                            .position(|b| matches!(b, b'"' | b'{' | b'[' | b']' | b'}'))?;
                        self.i += at;
                        match self.b[self.i] {
                            b'"' => {
                                self.i += 1;
                                self.string()?;
                            }
                            b'{' | b'[' => {
                                depth += 1;
                                self.i += 1;
                            }
                            _ => {
                                depth = depth.checked_sub(1)?;
                                self.i += 1;
                                if depth == 0 {
                                    return Some(());
                                }
                            }
                        }
                    }
                }
                _ => {
                    let start = self.i;
                    while self.i < self.b.len()
                        && (self.b[self.i].is_ascii_alphanumeric()
                            || matches!(self.b[self.i], b'-' | b'+' | b'.'))
                    {
                        self.i += 1;
                    }
                    (self.i > start).then_some(())
                }
            }
        }

        /// `null`, or an integer that fits a u64 (as serde reads an `Option<u64>`).
        fn number(&mut self) -> Result<Option<u64>, ()> {
            self.ws();
            let start = self.i;
            self.skip().ok_or(())?;
            let text = &self.b[start..self.i];
            if text == b"null" {
                return Ok(None);
            }
            if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .map(Some)
                .ok_or(())
        }
    }

    pub fn read(json: &[u8]) -> Read {
        let mut c = Cursor { b: json, i: 0 };
        let mut fields = RecordFields::default();
        let mut seen = [false; 4];
        if !c.eat(b'{') {
            // serde reads a struct from an array too: its call.
            return Read::Unsure;
        }
        if c.eat(b'}') {
            return Read::Fields(fields);
        }
        loop {
            if !c.eat(b'"') {
                return Read::Unreadable;
            }
            let Some((key, escaped)) = c.string() else {
                return Read::Unreadable;
            };
            if escaped {
                return Read::Unsure;
            }
            let slot = ["group_id", "brand_id", "organization_id", "tags"]
                .iter()
                .position(|k| k.as_bytes() == key);
            if !c.eat(b':') {
                return Read::Unreadable;
            }
            if let Some(slot) = slot {
                if std::mem::replace(&mut seen[slot], true) {
                    return Read::Unreadable;
                }
            }
            let ok = match slot {
                Some(0..=2) => match c.number() {
                    Ok(n) => {
                        match slot {
                            Some(0) => fields.group_id = n,
                            Some(1) => fields.brand_id = n,
                            _ => fields.organization_id = n,
                        }
                        true
                    }
                    // Not a plain integer or null (`-0`, `7.0`, a string…): serde's call.
                    Err(()) => return Read::Unsure,
                },
                Some(_) => match tags(&mut c) {
                    Some(Ok(t)) => {
                        fields.tags = t;
                        true
                    }
                    Some(Err(())) => return Read::Unsure,
                    None => return Read::Unsure,
                },
                None => c.skip().is_some(),
            };
            if !ok {
                return Read::Unreadable;
            }
            if c.eat(b',') {
                continue;
            }
            if !c.eat(b'}') {
                return Read::Unreadable;
            }
            c.ws();
            return if c.i == c.b.len() {
                Read::Fields(fields)
            } else {
                Read::Unreadable
            };
        }
    }

    /// `tags`: `null` or an array of strings. `Some(Err)`: a tag has escapes (unsure); `None`:
    /// not that shape.
    #[allow(clippy::type_complexity)]
    fn tags(c: &mut Cursor<'_>) -> Option<Result<Option<Vec<String>>, ()>> {
        c.ws();
        if c.b[c.i..].starts_with(b"null") {
            c.i += 4;
            return Some(Ok(None));
        }
        if !c.eat(b'[') {
            return None;
        }
        let mut tags = Vec::new();
        if c.eat(b']') {
            return Some(Ok(Some(tags)));
        }
        loop {
            if !c.eat(b'"') {
                return None;
            }
            let (raw, escaped) = c.string()?;
            if escaped {
                return Some(Err(()));
            }
            tags.push(String::from_utf8(raw.to_vec()).ok()?);
            if c.eat(b',') {
                continue;
            }
            return c.eat(b']').then_some(Ok(Some(tags)));
        }
    }
}

/// Where the upstream serves one record of `resource` (for a parent's side request), if `id` is
/// one: Zendesk's ids are numbers, and anything else is no record (and so outside any scope).
pub fn record_path(resource: &str, id: &str) -> Option<String> {
    let numeric = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    match resource {
        "tickets" if numeric => Some(format!("/api/v2/tickets/{id}.json")),
        _ => None,
    }
}

/// The record in a body that holds one (`{"ticket": {…}}`), read for its scope fields.
pub fn read_single(json: &[u8]) -> Option<RecordFields> {
    #[derive(Deserialize)]
    struct Single {
        ticket: RecordFields,
    }
    serde_json::from_slice::<Single>(json)
        .ok()
        .map(|s| s.ticket)
}

/// A vendor's scope over tickets: each listed field must hold one of its values (an empty list
/// does not constrain); `tags`: the record carries at least one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordScope {
    pub group_id: Vec<u64>,
    pub brand_id: Vec<u64>,
    pub organization_id: Vec<u64>,
    pub tags: Vec<String>,
}

/// Why a record is outside a scope: the field, and the value the record has (names and numbers
/// only, for the decision record; never the record's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside {
    pub field: &'static str,
    /// The record's value, as JSON (`null` when it has none).
    pub value: String,
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} is outside the scope", self.field, self.value)
    }
}

fn number(field: &'static str, allowed: &[u64], value: Option<u64>) -> Result<(), Outside> {
    if allowed.is_empty() || value.is_some_and(|v| allowed.contains(&v)) {
        return Ok(());
    }
    Err(Outside {
        field,
        value: value.map_or_else(|| "null".into(), |v| v.to_string()),
    })
}

impl RecordScope {
    /// Whether the scope constrains anything (a scope without conditions is a config error).
    pub fn is_empty(&self) -> bool {
        self.group_id.is_empty()
            && self.brand_id.is_empty()
            && self.organization_id.is_empty()
            && self.tags.is_empty()
    }

    /// Judges a record; `Err` names the first field that puts it outside.
    pub fn judge(&self, record: &RecordFields) -> Result<(), Outside> {
        number("group_id", &self.group_id, record.group_id)?;
        number("brand_id", &self.brand_id, record.brand_id)?;
        number(
            "organization_id",
            &self.organization_id,
            record.organization_id,
        )?;
        if !self.tags.is_empty() {
            let tags = record.tags.as_deref().unwrap_or_default();
            if !tags.iter().any(|t| self.tags.contains(t)) {
                return Err(Outside {
                    field: "tags",
                    value: serde_json::to_string(tags).unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// Judges a record's JSON text: unreadable is outside.
    pub fn judge_json(&self, json: &[u8]) -> Result<(), Outside> {
        match RecordFields::read(json) {
            Some(record) => self.judge(&record),
            None => Err(Outside {
                field: "record",
                value: "unreadable".into(),
            }),
        }
    }

    /// How the scope reads, for `explain` and the rule of a refusal.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        for (name, values) in [
            ("group_id", &self.group_id),
            ("brand_id", &self.brand_id),
            ("organization_id", &self.organization_id),
        ] {
            if !values.is_empty() {
                parts.push(format!("{name} in [{}]", list(values)));
            }
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags any of {:?}", self.tags));
        }
        format!("tickets where {}", parts.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> RecordScope {
        RecordScope {
            group_id: vec![360004, 360005],
            brand_id: vec![1200],
            ..RecordScope::default()
        }
    }

    #[test]
    fn a_record_is_inside_when_every_listed_field_holds_one_of_its_values() {
        let s = scope();
        assert_eq!(
            s.judge_json(br#"{"id":1,"group_id":360004,"brand_id":1200,"tags":["x"]}"#),
            Ok(())
        );
        assert_eq!(
            s.judge_json(br#"{"id":1,"group_id":360001,"brand_id":1200}"#),
            Err(Outside {
                field: "group_id",
                value: "360001".into()
            })
        );
        assert_eq!(
            s.judge_json(br#"{"id":1,"group_id":360005,"brand_id":7}"#)
                .unwrap_err()
                .field,
            "brand_id"
        );
    }

    #[test]
    fn a_missing_or_null_field_or_an_unreadable_record_is_outside() {
        let s = scope();
        for json in [
            &br#"{"id":1,"brand_id":1200}"#[..],
            br#"{"id":1,"group_id":null,"brand_id":1200}"#,
            br#"{"id":1,"group_id":"360004","brand_id":1200}"#,
            br#"[1,2]"#,
            br#"{"id":1,"group_id":360004"#,
        ] {
            assert!(
                s.judge_json(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn the_quick_reader_reads_what_serde_reads() {
        for json in [
            &br#"{"id": 1, "url": "x\"}", "via": {"a": [1, {"b": "]}"}]}, "group_id": 360004, "brand_id": 1200, "tags": ["a", "b"], "organization_id": null}"#[..],
            br#"{}"#,
            br#" { "group_id" : 7 } "#,
            br#"{"group_id": 7, "group_id": 8}"#,
            br#"{"group_id": -7}"#,
            br#"{"group_id": 7.0}"#,
            br#"{"group_id": "7"}"#,
            br#"{"group_id": 99999999999999999999999}"#,
            br#"{"tags": null, "brand_id": 1}"#,
            br#"{"tags": ["a\u0062"]}"#,
            br#"{"tags": [1]}"#,
            br#"{"gro\u0075p_id": 5}"#,
            br#"{"id": "abc", "group_id": 1} x"#,
            br#"[1]"#,
            br#"{"a": [1, 2}"#,
            br#"{"group_id": 7"#,
        ] {
            let serde = serde_json::from_slice::<RecordFields>(json).ok();
            let quick = RecordFields::read(json);
            assert_eq!(
                format!("{quick:?}"),
                format!("{serde:?}"),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn tags_take_any_one_of_theirs() {
        let s = RecordScope {
            tags: vec!["vip".into(), "fr".into()],
            ..RecordScope::default()
        };
        assert_eq!(s.judge_json(br#"{"tags":["a","fr"]}"#), Ok(()));
        assert_eq!(
            s.judge_json(br#"{"tags":["a"]}"#).unwrap_err().field,
            "tags"
        );
        assert_eq!(s.judge_json(br#"{"id":3}"#).unwrap_err().field, "tags");
        assert_eq!(s.describe(), "tickets where tags any of [\"vip\", \"fr\"]");
        assert_eq!(
            scope().describe(),
            "tickets where group_id in [360004, 360005] and brand_id in [1200]"
        );
    }
}
