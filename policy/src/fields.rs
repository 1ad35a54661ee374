//! Paths to fields inside JSON response bodies: which values a vendor must never receive
//! (redaction), and later which fields decide whether a record is in a vendor's scope.
//!
//! The syntax follows the shape of the SaaS's bodies, written the way a reader of its API docs
//! would point at a field:
//! - `tickets[].requester.email`: keys separated by dots; `[]` after a key means every element of
//!   the array it holds;
//! - `*` stands for any one key: `*.requester.phone` reaches `ticket.requester.phone` and
//!   `request.requester.phone`;
//! - `**` stands for any depth, keys and array elements alike, including none: `**.phone` reaches
//!   every `phone` anywhere in the body.
//!
//! Keys are compared as the body spells them between the quotes (no unescaping: Zendesk's keys are
//! plain ASCII). A path may not end in `[]` or `**`: it names a field, not a record or a subtree.

use std::fmt;
use std::str::FromStr;

/// How a redacted field leaves a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactMode {
    /// The value becomes `"[redacted]"`; the key stays, so clients that expect it still find it.
    #[default]
    Replace,
    /// The member goes, key and all.
    Remove,
    /// A string value stays, the vendor's free-text patterns in it replaced (set by `patterns`,
    /// never written as a mode).
    #[serde(skip)]
    Scrub,
}

impl RedactMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedactMode::Replace => "replace",
            RedactMode::Remove => "remove",
            RedactMode::Scrub => "scrub",
        }
    }
}

/// A field a vendor never receives, and how it is taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    pub path: FieldPath,
    pub mode: RedactMode,
    /// With [`RedactMode::Scrub`]: what is looked for in the value's text.
    pub patterns: crate::patterns::Patterns,
}

impl Redaction {
    /// A field replaced or removed whole.
    pub fn new(path: FieldPath, mode: RedactMode) -> Self {
        Redaction {
            path,
            mode,
            patterns: Default::default(),
        }
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    /// `*`: any one key.
    AnyKey,
    /// `[]`: any one array element.
    Element,
    /// `**`: any run of keys and elements, empty included.
    AnyDepth,
}

/// Where a value sits in a body, as the scanner walks it: the key of each object member and each
/// array element on the way down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Key(&'a [u8]),
    Element,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    steps: Vec<Step>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    #[error("a field path cannot be empty")]
    Empty,
    #[error("{0:?}: an empty key (two dots, or a dot at an end)")]
    EmptyKey(String),
    #[error("{0:?}: {1:?} is not allowed in a key (keys are letters, digits, `_`, `-`, `$`, `@`)")]
    BadCharacter(String, char),
    #[error("{0:?}: a path ends at a field, not at `[]` or `**`")]
    EndsInWildcard(String),
    #[error("{0:?}: `[]` follows a key (`tickets[]`)")]
    StrayElement(String),
    #[error("{0:?}: longer than 32 steps")]
    TooDeep(String),
    #[error("{0:?}: a key longer than 128 characters")]
    KeyTooLong(String),
}

/// Longest key a path may name: the scanner stops collecting a body's key past this, since no path
/// could match it.
pub const MAX_KEY_LEN: usize = 128;

impl FromStr for FieldPath {
    type Err = FieldPathError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(FieldPathError::Empty);
        }
        let mut steps = Vec::new();
        for part in text.split('.') {
            let (name, elements) = match part.find("[]") {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !elements.is_empty() && (name.is_empty() || elements.len() % 2 != 0) {
                return Err(FieldPathError::StrayElement(text.into()));
            }
            if !elements.as_bytes().chunks(2).all(|pair| pair == b"[]") {
                return Err(FieldPathError::StrayElement(text.into()));
            }
            let step = match name {
                "" => return Err(FieldPathError::EmptyKey(text.into())),
                "*" => Step::AnyKey,
                "**" => Step::AnyDepth,
                key => {
                    if let Some(c) = key
                        .chars()
                        .find(|c| !(c.is_ascii_alphanumeric() || "_-$@".contains(*c)))
                    {
                        return Err(FieldPathError::BadCharacter(text.into(), c));
                    }
                    if key.len() > MAX_KEY_LEN {
                        return Err(FieldPathError::KeyTooLong(text.into()));
                    }
                    Step::Key(key.into())
                }
            };
            if step == Step::AnyDepth && !elements.is_empty() {
                return Err(FieldPathError::StrayElement(text.into()));
            }
            steps.push(step);
            steps.extend(std::iter::repeat_n(Step::Element, elements.len() / 2));
        }
        if matches!(steps.last(), Some(Step::Element | Step::AnyDepth)) {
            return Err(FieldPathError::EndsInWildcard(text.into()));
        }
        if steps.len() > 32 {
            return Err(FieldPathError::TooDeep(text.into()));
        }
        Ok(FieldPath {
            steps,
            text: text.into(),
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FieldPath {
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the value at `path` (from the body's root) is this field.
    pub fn matches(&self, path: &[Segment<'_>]) -> bool {
        matches_from(&self.steps, path)
    }
}

/// Glob matching of steps against segments; `**` tries every split. Paths and bodies are shallow
/// (≤ 32 steps, a few levels), so the backtracking stays small.
fn matches_from(steps: &[Step], path: &[Segment<'_>]) -> bool {
    match steps.split_first() {
        None => path.is_empty(),
        Some((Step::AnyDepth, rest)) => {
            (0..=path.len()).any(|skip| matches_from(rest, &path[skip..]))
        }
        Some((step, rest)) => match path.split_first() {
            None => false,
            Some((segment, tail)) => step.takes(*segment) && matches_from(rest, tail),
        },
    }
}

impl Step {
    /// Whether this step takes `segment` as one step down (`**`, which takes any run of segments,
    /// is for the caller: it takes none here).
    pub fn takes(&self, segment: Segment<'_>) -> bool {
        match (self, segment) {
            (Step::Key(k), Segment::Key(s)) => k.as_bytes() == s,
            (Step::AnyKey, Segment::Key(_)) => true,
            (Step::Element, Segment::Element) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> FieldPath {
        p.parse().unwrap()
    }

    fn at<'a>(segments: &[&'a str]) -> Vec<Segment<'a>> {
        segments
            .iter()
            .map(|s| match *s {
                "[]" => Segment::Element,
                k => Segment::Key(k.as_bytes()),
            })
            .collect()
    }

    #[test]
    fn paths_parse_into_steps() {
        assert_eq!(
            path("tickets[].requester.email").steps(),
            &[
                Step::Key("tickets".into()),
                Step::Element,
                Step::Key("requester".into()),
                Step::Key("email".into())
            ]
        );
        assert_eq!(
            path("**.phone").steps(),
            &[Step::AnyDepth, Step::Key("phone".into())]
        );
        assert_eq!(
            path("rows[][].x").steps(),
            &[
                Step::Key("rows".into()),
                Step::Element,
                Step::Element,
                Step::Key("x".into())
            ]
        );
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        for (text, want) in [
            ("", FieldPathError::Empty),
            ("a..b", FieldPathError::EmptyKey("a..b".into())),
            ("a.", FieldPathError::EmptyKey("a.".into())),
            (
                "tickets[]",
                FieldPathError::EndsInWildcard("tickets[]".into()),
            ),
            ("a.**", FieldPathError::EndsInWildcard("a.**".into())),
            ("[].a", FieldPathError::StrayElement("[].a".into())),
            ("a[]x.b", FieldPathError::StrayElement("a[]x.b".into())),
            ("**[].a", FieldPathError::StrayElement("**[].a".into())),
            ("a b", FieldPathError::BadCharacter("a b".into(), ' ')),
            ("a[0].b", FieldPathError::BadCharacter("a[0].b".into(), '[')),
        ] {
            assert_eq!(text.parse::<FieldPath>(), Err(want), "{text}");
        }
    }

    #[test]
    fn matching_follows_keys_elements_and_wildcards() {
        let email = path("tickets[].requester.email");
        assert!(email.matches(&at(&["tickets", "[]", "requester", "email"])));
        assert!(!email.matches(&at(&["tickets", "requester", "email"])));
        assert!(!email.matches(&at(&["tickets", "[]", "requester", "email", "x"])));
        assert!(!email.matches(&at(&["ticket", "requester", "email"])));

        let any = path("*.requester.phone");
        assert!(any.matches(&at(&["ticket", "requester", "phone"])));
        assert!(!any.matches(&at(&["[]", "requester", "phone"])));

        let deep = path("**.phone");
        assert!(deep.matches(&at(&["phone"])));
        assert!(deep.matches(&at(&["users", "[]", "phone"])));
        assert!(deep.matches(&at(&["a", "[]", "[]", "b", "phone"])));
        assert!(!deep.matches(&at(&["users", "[]", "phones"])));

        let middle = path("users[].**.value");
        assert!(middle.matches(&at(&["users", "[]", "value"])));
        assert!(middle.matches(&at(&["users", "[]", "fields", "[]", "value"])));
        assert!(!middle.matches(&at(&["groups", "[]", "value"])));
    }
}
