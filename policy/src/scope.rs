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
    pub id: Option<serde_json::Value>,
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
    /// scope).
    pub fn read(json: &[u8]) -> Option<Self> {
        serde_json::from_slice(json).ok()
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
