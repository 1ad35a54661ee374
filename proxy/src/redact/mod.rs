//! Field redaction as a JSON body streams: the values at a vendor's redacted paths (see
//! [`vendorgate_policy::fields`]) are replaced by `"[redacted]"`, or removed with their key, or
//! (free-text patterns, [`vendorgate_policy::patterns`]) kept with what matches in them replaced,
//! before any byte of them reaches the agent. With a record scope, the same pass withholds the
//! records outside it ([`records`]).
//!
//! A byte-at-a-time scanner keeps where it is in the body (the keys and array elements on the way
//! down, and a small lexical state), so a chunk boundary can fall anywhere: inside a key, a string,
//! an escape, a number. What it holds back between chunks is bounded: the member being read
//! (its comma and key, at most [`MAX_KEY_LEN`] bytes of key; past that no path can match and the
//! key goes on at once). Everything else is passed on as it is scanned. Memory per body: the path
//! (its keys) and that one member.
//!
//! A body that is not JSON as far as the scanner can tell is refused ([`Cut::Malformed`]): passing it on
//! unscanned could hand over exactly what the redaction is for. The caller ends the body there.
//!
//! Keys are compared as spelled between the quotes; a key written with escapes (`"em\u0061il"`)
//! does not match `email`. Zendesk writes plain ASCII keys. The inside of a string value is not
//! checked for raw control characters (nothing of where a value ends depends on them): the
//! scanner jumps from one quote or backslash to the next, which is most of its speed.

use std::sync::Arc;

use bytes::BytesMut;
use vendorgate_policy::fields::{RedactMode, Redaction, Segment, MAX_KEY_LEN};

mod paths;
pub mod records;

use paths::{Paths, SetId};
use records::{Place, Records, Single};
use vendorgate_policy::scope::{Outside, RecordScope};

/// A byte of a number or of `true`/`false`/`null` (what ends one is any other byte).
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// Where the next `"` or `\` is in `rest` (its length if none). Most of a ticket's strings and
/// keys are short: the first bytes are looked at by hand, since a vector search costs more to
/// start than that; a long one (a description, a comment's body) goes to `memchr`.
fn string_end(rest: &[u8]) -> usize {
    let head = rest.len().min(24);
    match rest[..head].iter().position(|&b| b == b'"' || b == b'\\') {
        Some(i) => i,
        None => head + memchr::memchr2(b'"', b'\\', &rest[head..]).unwrap_or(rest.len() - head),
    }
}

/// The segment of a value starting now: its member's key, or an array element.
fn segment_of<'a>(stack: &[Container], key: &'a [u8]) -> Segment<'a> {
    match stack.last() {
        Some(Container::Object) => Segment::Key(key),
        _ => Segment::Element,
    }
}

/// Deepest nesting a body may have: past it the body is refused (an attacker's `[[[[…` would
/// otherwise grow the scanner's path without bound). Zendesk's bodies nest a handful of levels.
pub const MAX_DEPTH: usize = 256;

/// What replaces a redacted value.
pub const REDACTED: &[u8] = b"\"[redacted]\"";

/// Why a body was cut where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error(
        "the response body is not JSON at byte {0}; it was cut there rather than passed on unredacted"
    )]
    Malformed(u64),
    #[error(
        "a record of the response body is longer than {0} bytes; it was cut rather than passed on unjudged"
    )]
    RecordTooLarge(usize),
    #[error(
        "a string scanned for patterns is longer than {0} bytes; it was cut rather than passed on unscanned"
    )]
    StringTooLarge(usize),
}

/// Longest string value held while it is scanned for free-text patterns.
pub const MAX_SCRUBBED: usize = 1024 * 1024;

/// Inside the scanner: the byte being looked at is not JSON (its offset is added where the byte's
/// position is known, in [`Redactor::push`]).
#[derive(Debug)]
struct Bad;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// A value is due (the root, after `:`).
    Value,
    /// Just after `[`: a value or `]`.
    ArrayStart,
    /// Just after `{`: a key or `}`.
    ObjectStart,
    /// After `,` in an object: a key.
    NextKey,
    /// Inside a key.
    Key { escaped: bool },
    /// After a key: `:`.
    Colon,
    /// Inside a string value.
    Str { escaped: bool },
    /// Inside a string value held to be scanned for patterns (its text in `scrub`).
    Scrub { escaped: bool },
    /// Inside a number or `true`/`false`/`null`.
    Literal,
    /// The root's `count`, after a list that lost records: its digits held, to be written less
    /// what was withheld (see [`records`]).
    Count,
    /// After a value: `,` or the container's end.
    After,
    /// The root value has ended: only whitespace may follow.
    Done,
    /// Dropping a value (and, removing, what leads to it).
    Skip(Skip),
}

/// Where a dropped value's skipping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Before the value: a removed member's `:` and the whitespace around it.
    Lead,
    /// A bare literal: it ends at a delimiter, which is not part of it.
    Literal,
    /// A string (`depth` 0) or a container with `depth` open inside it, perhaps inside one of its
    /// strings.
    Nested {
        depth: u32,
        in_str: bool,
        escaped: bool,
    },
}

/// Where the bytes that go on as they are go: a run of the chunk, copied in one piece when
/// something else must be written or a byte is held or dropped, rather than byte by byte.
struct Emit<'a> {
    chunk: &'a [u8],
    /// Where the run of bytes passed on (and not yet copied) begins.
    run: usize,
    /// The byte being looked at.
    pos: usize,
    out: &'a mut BytesMut,
}

impl Emit<'_> {
    /// The current byte goes on as it is (it joins the run).
    fn pass(&mut self) {}

    /// Copies the run up to the current byte.
    fn flush(&mut self) {
        if self.run < self.pos {
            self.out.extend_from_slice(&self.chunk[self.run..self.pos]);
        }
        self.run = self.run.max(self.pos);
    }

    /// The current byte does not go on as it is (held, or dropped).
    fn withhold(&mut self) {
        self.flush();
        self.run = self.pos + 1;
    }

    /// Writes `bytes` where the current byte stands, before it.
    fn write(&mut self, bytes: &[u8]) {
        self.flush();
        self.out.extend_from_slice(bytes);
    }
}

pub struct Redactor {
    /// Some field is removed (not replaced): members are held until their key is known.
    removing: bool,
    lex: Lex,
    stack: Vec<Container>,
    /// Where the fields' paths stand ([`paths`]).
    paths: Paths,
    /// The set of each open container below the root's, the innermost last (the root's first).
    depths: Vec<SetId>,
    /// The key being read (none past [`MAX_KEY_LEN`]: `key_whole` false).
    key: Vec<u8>,
    key_whole: bool,
    /// The member being read and not yet passed on (its comma, whitespace and key), removing.
    held: Vec<u8>,
    /// A removed member was its object's first: the comma after it goes too.
    drop_comma: bool,
    /// Values redacted, per field (by index into `fields`).
    pub counts: Vec<u64>,
    /// The vendor's record scope, when it has one on this route ([`records`]).
    records: Option<Box<Records>>,
    /// The byte just stepped closed a record: it is judged once the byte is in the output.
    record_closed: bool,
    /// The root `count`'s digits being read ([`Lex::Count`]).
    count: Vec<u8>,
    /// The string being scanned for patterns ([`Lex::Scrub`]), and its field.
    scrub: Vec<u8>,
    scrub_field: usize,
    /// Bytes of the body before the chunk being scanned (for [`Cut::Malformed`]'s offset).
    offset: u64,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Redactor {
    pub fn new(fields: Arc<[Redaction]>) -> Self {
        let n = fields.len();
        let removing = fields.iter().any(|f| f.mode == RedactMode::Remove);
        let (paths, root) = Paths::new(fields);
        Redactor {
            removing,
            paths,
            depths: vec![root],
            lex: Lex::Value,
            stack: Vec::new(),
            key: Vec::new(),
            key_whole: true,
            held: Vec::new(),
            drop_comma: false,
            counts: vec![0; n],
            records: None,
            record_closed: false,
            count: Vec::new(),
            scrub: Vec::new(),
            scrub_field: 0,
            offset: 0,
        }
    }

    /// Also withholds the records outside `scope` ([`records`]).
    pub fn scoping(mut self, scope: Arc<RecordScope>) -> Self {
        self.records = Some(Box::new(Records::new(scope)));
        self
    }

    /// The verdict on the body's single record, if it has one.
    pub fn single(&self) -> &Single {
        self.records.as_ref().map_or(&Single::None, |r| &r.single)
    }

    /// With a scope: records passed on, withheld, and why the first withheld one was.
    pub fn scope_counts(&self) -> Option<(u64, u64, Option<&Outside>)> {
        let r = self.records.as_ref()?;
        Some((r.kept, r.withheld, r.first_outside.as_ref()))
    }

    /// For the decision record, with a scope: `{"kept":2,"withheld":3,"first":"…"}`.
    pub fn scope_summary(&self) -> Option<String> {
        let (kept, withheld, first) = self.scope_counts()?;
        let mut v = serde_json::json!({"kept": kept, "withheld": withheld});
        if let Some(first) = first {
            v["first"] = first.to_string().into();
        }
        Some(v.to_string())
    }

    /// Whether it takes any field out (it may only scope).
    pub fn redacts(&self) -> bool {
        !self.paths.fields().is_empty()
    }

    /// The scanner is at a root member's value, or at a record list's elements: where records
    /// begin and end, so the byte-at-a-time path runs there.
    fn at_record_level(&self) -> bool {
        self.records.is_some() && self.stack.len() <= 2
    }

    /// A container opens at the value starting now: the set for inside it, from the set outside.
    fn descend(&mut self) -> Result<(), Bad> {
        let segment = segment_of(&self.stack, &self.key);
        let from = self.depths.last().copied().unwrap_or(0);
        let to = self.paths.down(from, segment).map_err(|_| Bad)?;
        self.depths.push(to);
        Ok(())
    }

    fn ascend(&mut self) {
        if self.depths.len() > 1 {
            self.depths.pop();
        }
    }

    /// For the decision record: each field (as the policy spells it) and how many values it took,
    /// as a JSON object; the fields that took none are left out.
    pub fn summary(&self) -> String {
        let mut map = serde_json::Map::new();
        for (field, n) in self.paths.fields().iter().zip(&self.counts) {
            if *n > 0 {
                let key = field.path.as_str().to_string();
                let before = map
                    .get(&key)
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                map.insert(key, (before + n).into());
            }
        }
        serde_json::Value::Object(map).to_string()
    }

    /// The field that the value about to start at `segment` is, if any, and its mode (see
    /// [`Paths::field_at`]).
    fn field_at(&self, segment: Segment<'_>) -> Option<(usize, RedactMode)> {
        let at = self.depths.last().copied().unwrap_or(0);
        self.paths.field_at(at, segment)
    }

    /// Scans `chunk`, appending what the agent may receive to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Cut> {
        out.reserve(chunk.len());
        if let Some(r) = self.records.as_mut() {
            r.chunk_start(out.len());
        }
        let mut e = Emit {
            chunk,
            run: 0,
            pos: 0,
            out,
        };
        while e.pos < chunk.len() {
            if !self.removing && !self.stack.is_empty() && !self.at_record_level() {
                self.glide(&mut e);
                if e.pos >= chunk.len() {
                    break;
                }
            }
            // Most of a body is the inside of strings: go to the next quote or backslash at once
            // (passed on, or dropped with the value being skipped).
            match self.lex {
                Lex::Str { escaped: false }
                | Lex::Skip(Skip::Nested {
                    in_str: true,
                    escaped: false,
                    ..
                }) => {
                    let rest = &chunk[e.pos..];
                    let n = string_end(rest);
                    if n > 0 {
                        if matches!(self.lex, Lex::Skip(_)) {
                            e.run = e.pos + n;
                        }
                        e.pos += n;
                        continue;
                    }
                }
                // A string held for its patterns: into the text, withheld.
                Lex::Scrub { escaped: false } => {
                    let rest = &chunk[e.pos..];
                    let n = string_end(rest);
                    if n > 0 {
                        self.scrub.extend_from_slice(&rest[..n]);
                        if self.scrub.len() > MAX_SCRUBBED {
                            return Err(Cut::StringTooLarge(MAX_SCRUBBED));
                        }
                        e.withhold();
                        e.run = e.pos + n;
                        e.pos += n;
                        continue;
                    }
                }
                // A key, into the key being read (and held, removing), while it may still match.
                Lex::Key { escaped: false } if self.key_whole => {
                    let rest = &chunk[e.pos..];
                    let n = string_end(rest);
                    if n > 0 && self.key.len() + n <= MAX_KEY_LEN {
                        let run = &rest[..n];
                        self.key.extend_from_slice(run);
                        if self.removing {
                            self.held.extend_from_slice(run);
                            e.run = e.pos + n;
                        }
                        e.pos += n;
                        continue;
                    }
                }
                // A number or literal, passed on.
                Lex::Literal => {
                    let n = chunk[e.pos..]
                        .iter()
                        .take_while(|&&b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
                        })
                        .count();
                    if n > 0 {
                        e.pos += n;
                        continue;
                    }
                }
                _ => {}
            }
            let b = chunk[e.pos];
            // `again`: the byte ended a literal and must be looked at once more as what follows it.
            let again = self
                .step(b, &mut e)
                .map_err(|Bad| Cut::Malformed(self.offset + e.pos as u64))?;
            if !again {
                e.pos += 1;
            }
            if std::mem::take(&mut self.record_closed) {
                e.flush();
                if let Some(r) = self.records.as_mut() {
                    r.close(e.out).map_err(Cut::RecordTooLarge)?;
                }
            }
        }
        e.flush();
        if let Some(r) = self.records.as_mut() {
            r.chunk_end(out).map_err(Cut::RecordTooLarge)?;
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// The plain run of a body in one go, without a byte-at-a-time dispatch on the state (that
    /// dispatch is most of the scanner's cost): whitespace, `:`, a string or literal value no
    /// field ends at, `,`, the next key, for as long as each comes in its plain form. Whatever
    /// else comes (a container, a value to redact, an escape, an end, the chunk's end) is left to
    /// [`Redactor::step`], in the state reached. Only inside a container and not removing (a
    /// removed member's lead-in is held), so every byte here is passed on as it is.
    fn glide(&mut self, e: &mut Emit<'_>) {
        let c = e.chunk;
        let mut p = e.pos;
        while matches!(
            self.lex,
            Lex::Colon
                | Lex::Value
                | Lex::ArrayStart
                | Lex::After
                | Lex::ObjectStart
                | Lex::NextKey
        ) {
            while p < c.len() && is_ws(c[p]) {
                p += 1;
            }
            if p == c.len() {
                break;
            }
            let b = c[p];
            match self.lex {
                Lex::Colon if b == b':' => {
                    p += 1;
                    self.lex = Lex::Value;
                }
                Lex::Value | Lex::ArrayStart
                    if b == b'"' || matches!(b, b'-' | b'0'..=b'9' | b't' | b'f' | b'n') =>
                {
                    if self.field_at(segment_of(&self.stack, &self.key)).is_some() {
                        break;
                    }
                    p += 1;
                    if b == b'"' {
                        let n = string_end(&c[p..]);
                        if p + n < c.len() && c[p + n] == b'"' {
                            p += n + 1;
                            self.lex = Lex::After;
                        } else {
                            p += n;
                            self.lex = Lex::Str { escaped: false };
                            break;
                        }
                    } else {
                        while p < c.len() && is_literal_byte(c[p]) {
                            p += 1;
                        }
                        if p == c.len() {
                            self.lex = Lex::Literal;
                            break;
                        }
                        self.lex = Lex::After;
                    }
                }
                Lex::After if b == b',' => {
                    p += 1;
                    self.lex = match self.stack.last() {
                        Some(Container::Object) => Lex::NextKey,
                        _ => Lex::Value,
                    };
                }
                Lex::ObjectStart | Lex::NextKey if b == b'"' => {
                    p += 1;
                    self.key.clear();
                    self.key_whole = true;
                    let n = string_end(&c[p..]);
                    if p + n < c.len() && c[p + n] == b'"' && n <= MAX_KEY_LEN {
                        self.key.extend_from_slice(&c[p..p + n]);
                        p += n + 1;
                        self.lex = Lex::Colon;
                    } else {
                        self.lex = Lex::Key { escaped: false };
                        break;
                    }
                }
                _ => break,
            }
        }
        e.pos = p;
    }

    /// The body has ended: it must have been whole.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), Cut> {
        if self.lex == Lex::Literal && self.stack.is_empty() {
            self.lex = Lex::Done;
        }
        out.extend_from_slice(&std::mem::take(&mut self.held));
        match self.lex {
            Lex::Done => Ok(()),
            _ => Err(Cut::Malformed(self.offset)),
        }
    }

    /// One byte. Returns true when the byte must be stepped again (it closed a literal).
    fn step(&mut self, b: u8, e: &mut Emit<'_>) -> Result<bool, Bad> {
        let bad = Bad;
        match self.lex {
            Lex::Value | Lex::ArrayStart => {
                if is_ws(b) {
                    e.pass();
                    return Ok(false);
                }
                if self.lex == Lex::ArrayStart && b == b']' {
                    e.pass();
                    self.close(Container::Array)?;
                    return Ok(false);
                }
                self.start_value(b, e)?;
            }
            Lex::ObjectStart | Lex::NextKey => {
                if is_ws(b) {
                    self.emit_or_hold(b, e);
                } else if b == b'"' {
                    self.key.clear();
                    self.key_whole = true;
                    self.emit_or_hold(b, e);
                    self.lex = Lex::Key { escaped: false };
                } else if b == b'}' && self.lex == Lex::ObjectStart {
                    e.pass();
                    self.close(Container::Object)?;
                } else {
                    return Err(bad);
                }
            }
            Lex::Key { escaped } => {
                if !escaped && b == b'"' {
                    self.emit_or_hold(b, e);
                    self.lex = Lex::Colon;
                    self.key_done(e);
                    return Ok(false);
                }
                self.lex = Lex::Key {
                    escaped: !escaped && b == b'\\',
                };
                if self.key_whole {
                    self.key.push(b);
                    if self.key.len() > MAX_KEY_LEN {
                        // No field can be this long: the member goes on unheld.
                        self.key_whole = false;
                        e.write(&std::mem::take(&mut self.held));
                    }
                }
                self.emit_or_hold(b, e);
            }
            Lex::Colon => {
                if is_ws(b) {
                    e.pass();
                } else if b == b':' {
                    e.pass();
                    self.lex = Lex::Value;
                } else {
                    return Err(bad);
                }
            }
            Lex::Str { escaped } => {
                e.pass();
                self.lex = if !escaped && b == b'"' {
                    Lex::After
                } else {
                    Lex::Str {
                        escaped: !escaped && b == b'\\',
                    }
                };
                if self.lex == Lex::After {
                    self.value_done();
                }
            }
            Lex::Literal => {
                if is_literal_byte(b) {
                    e.pass();
                } else {
                    self.lex = Lex::After;
                    self.value_done();
                    return Ok(true);
                }
            }
            Lex::After => {
                if is_ws(b) {
                    e.pass();
                    return Ok(false);
                }
                match (b, self.stack.last()) {
                    (b',', Some(Container::Object)) => {
                        if std::mem::take(&mut self.drop_comma) {
                            // The member before was removed and was the first: so is this comma.
                            e.withhold();
                        } else if self.removing {
                            e.withhold();
                            self.held.push(b);
                        } else {
                            e.pass();
                        }
                        self.lex = Lex::NextKey;
                    }
                    (b',', Some(Container::Array)) => {
                        if self.in_record_list() {
                            // The scanner writes the list's commas (see `records`).
                            e.withhold();
                        } else {
                            e.pass();
                        }
                        self.lex = Lex::Value;
                    }
                    (b'}', Some(Container::Object)) => {
                        self.drop_comma = false;
                        e.pass();
                        self.close(Container::Object)?;
                    }
                    (b']', Some(Container::Array)) => {
                        e.pass();
                        self.close(Container::Array)?;
                    }
                    _ => return Err(bad),
                }
            }
            Lex::Scrub { escaped } => {
                e.withhold();
                if !escaped && b == b'"' {
                    self.scrubbed(e);
                    self.lex = Lex::After;
                    return Ok(false);
                }
                if self.scrub.len() < MAX_SCRUBBED {
                    self.scrub.push(b);
                }
                self.lex = Lex::Scrub {
                    escaped: !escaped && b == b'\\',
                };
            }
            Lex::Count => {
                if is_literal_byte(b) {
                    e.withhold();
                    if self.count.len() < 32 {
                        self.count.push(b);
                    }
                    return Ok(false);
                }
                let withheld = self.records.as_ref().map_or(0, |r| r.withheld);
                let text = std::str::from_utf8(&self.count).unwrap_or("");
                match text.parse::<u64>() {
                    Ok(n) => e.write(n.saturating_sub(withheld).to_string().as_bytes()),
                    Err(_) => e.write(&self.count),
                }
                self.lex = Lex::After;
                return Ok(true);
            }
            Lex::Done => {
                if !is_ws(b) {
                    return Err(bad);
                }
                e.pass();
            }
            Lex::Skip(skip) => return self.skip(b, e, skip),
        }
        Ok(false)
    }

    /// One byte of a dropped value. Returns true when the byte must be stepped again (it ended a
    /// literal). A dropped value never sits at the root, so its end is always `After`.
    fn skip(&mut self, b: u8, e: &mut Emit<'_>, skip: Skip) -> Result<bool, Bad> {
        if skip == Skip::Literal && !is_literal_byte(b) {
            self.lex = Lex::After;
            return Ok(true);
        }
        e.withhold();
        let (mut depth, mut in_str, mut escaped) = match skip {
            Skip::Lead if is_ws(b) || b == b':' => return Ok(false),
            Skip::Lead => return self.skip_start(b).map(|()| false),
            Skip::Literal => return Ok(false),
            Skip::Nested {
                depth,
                in_str,
                escaped,
            } => (depth, in_str, escaped),
        };
        let ended = if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            !in_str && depth == 0
        } else {
            match b {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.checked_sub(1).ok_or(Bad)?,
                _ => {}
            }
            depth == 0
        };
        self.lex = if ended {
            Lex::After
        } else {
            Lex::Skip(Skip::Nested {
                depth,
                in_str,
                escaped,
            })
        };
        Ok(false)
    }

    /// The first byte of a value being dropped.
    fn skip_start(&mut self, b: u8) -> Result<(), Bad> {
        let nested = |depth, in_str| Skip::Nested {
            depth,
            in_str,
            escaped: false,
        };
        self.lex = Lex::Skip(match b {
            b'"' => nested(0, true),
            b'{' | b'[' => nested(1, false),
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => Skip::Literal,
            _ => return Err(Bad),
        });
        Ok(())
    }

    /// A value's first byte: redacted, or passed on and entered.
    fn start_value(&mut self, b: u8, e: &mut Emit<'_>) -> Result<(), Bad> {
        let bad = Bad;
        let field = if self.stack.is_empty() {
            None
        } else {
            self.field_at(segment_of(&self.stack, &self.key))
        };
        if let Some((field, RedactMode::Replace)) = field {
            self.counts[field] += 1;
            e.write(REDACTED);
            e.withhold();
            return self.skip_start(b);
        }
        if self.records.is_some() {
            self.record_value_starts(b, e);
        }
        if let (Some((field, RedactMode::Scrub)), b'"') = (field, b) {
            // The opening quote is written with the scanned text.
            e.withhold();
            self.scrub.clear();
            self.scrub_field = field;
            self.lex = Lex::Scrub { escaped: false };
            return Ok(());
        }
        match b {
            b'"' => {
                e.pass();
                self.lex = Lex::Str { escaped: false };
            }
            b'{' | b'[' => {
                e.pass();
                if !self.stack.is_empty() {
                    self.descend()?;
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(bad);
                }
                let (container, lex) = if b == b'{' {
                    (Container::Object, Lex::ObjectStart)
                } else {
                    (Container::Array, Lex::ArrayStart)
                };
                self.stack.push(container);
                self.lex = lex;
            }
            b'0'..=b'9' if self.count_due() => {
                e.withhold();
                self.count.clear();
                self.count.push(b);
                self.lex = Lex::Count;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                e.pass();
                self.lex = Lex::Literal;
            }
            _ => return Err(bad),
        }
        Ok(())
    }

    /// A string held for its patterns has ended: written back, its matches replaced.
    fn scrubbed(&mut self, e: &mut Emit<'_>) {
        let patterns = self.paths.fields()[self.scrub_field].patterns;
        e.write(b"\"");
        match vendorgate_policy::patterns::scrub(&self.scrub, patterns) {
            Some((text, n)) => {
                self.counts[self.scrub_field] += u64::from(n);
                e.write(&text);
            }
            None => e.write(&self.scrub),
        }
        e.write(b"\"");
    }

    /// The value starting is the root's `count` and records were withheld before it.
    fn count_due(&self) -> bool {
        self.stack.as_slice() == [Container::Object]
            && self.key == b"count"
            && self.records.as_ref().is_some_and(|r| r.withheld > 0)
    }

    /// Inside a records list, between its elements (the stack: root object, the list).
    fn in_record_list(&self) -> bool {
        self.stack.len() == 2
            && self
                .records
                .as_ref()
                .is_some_and(|r| r.place == Place::List)
    }

    /// A value starts where records may: a root member's (what it holds, by its key), a record
    /// (`ticket`'s, a list's element), or another element of a records list (its comma).
    fn record_value_starts(&mut self, b: u8, e: &mut Emit<'_>) {
        let in_list = self.in_record_list();
        let root_member = self.stack.as_slice() == [Container::Object];
        let Some(r) = self.records.as_mut() else {
            return;
        };
        if root_member {
            r.root_member(&self.key, b);
            if r.place == Place::Single {
                e.flush();
                r.open(e.out);
            }
        } else if in_list {
            if b == b'{' {
                e.flush();
                r.open(e.out);
            } else if let Some(comma) = r.other_element() {
                e.write(comma);
            }
        }
    }

    /// A key has been read: removing, its member goes or is passed on now.
    fn key_done(&mut self, e: &mut Emit<'_>) {
        if !self.removing {
            return;
        }
        let field = match self.key_whole {
            true => self.field_at(Segment::Key(&self.key)),
            false => None,
        }
        .filter(|&(_, mode)| mode == RedactMode::Remove)
        .map(|(field, _)| field);
        // What follows the key (and the next member's comma and whitespace) is held again.
        self.key_whole = true;
        match field {
            Some(field) => {
                self.counts[field] += 1;
                let had_comma = self.held.first() == Some(&b',');
                self.held.clear();
                if !had_comma {
                    self.drop_comma = true;
                }
                self.lex = Lex::Skip(Skip::Lead);
            }
            None => e.write(&std::mem::take(&mut self.held)),
        }
    }

    /// Held bytes are only ever a member's lead-in while removing; otherwise bytes go straight on.
    fn emit_or_hold(&mut self, b: u8, e: &mut Emit<'_>) {
        if self.removing && self.key_whole {
            e.withhold();
            self.held.push(b);
        } else {
            e.pass();
        }
    }

    /// A scalar value, or a container, has ended.
    fn value_done(&mut self) {
        if self.stack.is_empty() {
            self.lex = Lex::Done;
        }
    }

    fn close(&mut self, container: Container) -> Result<(), Bad> {
        if self.stack.pop() != Some(container) {
            return Err(Bad);
        }
        if let Some(r) = self.records.as_ref().filter(|r| r.is_open()) {
            let level = if r.place == Place::Single { 1 } else { 2 };
            self.record_closed = self.stack.len() == level;
        }
        if !self.stack.is_empty() {
            self.ascend();
        }
        self.lex = if self.stack.is_empty() {
            Lex::Done
        } else {
            Lex::After
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use vendorgate_policy::fields::FieldPath;
    use RedactMode as Mode;

    /// An owned path segment, for the reference redaction.
    enum Seg {
        Key(Vec<u8>),
        Element,
    }

    fn fields(paths: &[&str], mode: Mode) -> Arc<[Redaction]> {
        paths
            .iter()
            .map(|p| Redaction::new(p.parse().unwrap(), mode))
            .collect()
    }

    /// The body redacted, fed in chunks of `size` bytes.
    fn redact(body: &[u8], paths: &[&str], mode: Mode, size: usize) -> Result<Vec<u8>, Cut> {
        let mut r = Redactor::new(fields(paths, mode));
        let mut out = BytesMut::new();
        for chunk in body.chunks(size.max(1)) {
            r.push(chunk, &mut out)?;
        }
        r.finish(&mut out)?;
        Ok(out.to_vec())
    }

    /// What the redaction must give, computed on the parsed body.
    fn expected(
        value: &Value,
        paths: &[FieldPath],
        mode: Mode,
        at: &mut Vec<Seg>,
    ) -> Option<Value> {
        let segments: Vec<Segment<'_>> = at
            .iter()
            .map(|s| match s {
                Seg::Key(k) => Segment::Key(k),
                Seg::Element => Segment::Element,
            })
            .collect();
        if !at.is_empty() && paths.iter().any(|p| p.matches(&segments)) {
            return match mode {
                Mode::Replace => Some(json!("[redacted]")),
                Mode::Remove => None,
                Mode::Scrub => Some(value.clone()),
            };
        }
        Some(match value {
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    at.push(Seg::Key(k.as_bytes().to_vec()));
                    let kept = expected(v, paths, mode, at);
                    at.pop();
                    // An array element matched by a Remove path would be dropped; paths end in keys.
                    if let Some(v) = kept {
                        out.insert(k.clone(), v);
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| {
                        at.push(Seg::Element);
                        let kept = expected(v, paths, mode, at).unwrap_or(json!("[redacted]"));
                        at.pop();
                        kept
                    })
                    .collect(),
            ),
            other => other.clone(),
        })
    }

    const TICKETS: &str = r#"{"tickets": [
        {"id": 1, "subject": "Où est \"ma\" commande ?", "requester": {"name": "Ana", "email": "ana@example.com", "phone": "+33 6 12 34 56 78"}, "tags": ["a", "b"], "via": {"source": {"from": {"address": "ana@example.com"}}}},
        {"email": "top-level@example.com", "id": 2, "requester": {"phone": null, "email": {"nested": [1, {"x": "y"}]}}, "n": -1.5e3}
      ], "users": [{"id": 9, "email": "u@example.com", "photo": null}], "next_page": null, "count": 2}"#;

    #[test]
    fn every_chunking_gives_what_the_parsed_body_gives() {
        let paths = &["tickets[].requester.email", "**.phone", "users[].email"];
        let compiled: Vec<FieldPath> = paths.iter().map(|p| p.parse().unwrap()).collect();
        let parsed: Value = serde_json::from_str(TICKETS).unwrap();
        for mode in [Mode::Replace, Mode::Remove] {
            let want = expected(&parsed, &compiled, mode, &mut Vec::new()).unwrap();
            let whole = redact(TICKETS.as_bytes(), paths, mode, usize::MAX).unwrap();
            let got: Value = serde_json::from_slice(&whole)
                .unwrap_or_else(|e| panic!("{mode:?}: {e}\n{}", String::from_utf8_lossy(&whole)));
            assert_eq!(got, want, "{mode:?}");
            for size in 1..40 {
                assert_eq!(
                    redact(TICKETS.as_bytes(), paths, mode, size).unwrap(),
                    whole,
                    "{mode:?} in chunks of {size}"
                );
            }
        }
    }

    #[test]
    fn replaced_values_keep_their_keys_and_nothing_of_the_value_passes() {
        let out = redact(TICKETS.as_bytes(), &["**.email"], Mode::Replace, 7).unwrap();
        let text = String::from_utf8(out).unwrap();
        for leak in [
            "\"ana@example.com\", \"phone",
            "top-level@",
            "u@example.com",
            "nested",
        ] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        assert_eq!(
            text.matches("\"email\": \"[redacted]\"").count(),
            4,
            "{text}"
        );
        // What is not named passes byte for byte (whitespace included).
        assert!(text.contains(r#""subject": "Où est \"ma\" commande ?""#));
        assert!(text.contains(r#""address": "ana@example.com""#));
    }

    #[test]
    fn removed_members_take_their_commas_with_them() {
        for (body, want) in [
            (r#"{"a":1,"email":"x","b":2}"#, r#"{"a":1,"b":2}"#),
            (r#"{"email":"x","b":2}"#, r#"{"b":2}"#),
            (r#"{"a":1,"email":"x"}"#, r#"{"a":1}"#),
            (r#"{"email":"x"}"#, r#"{}"#),
            (r#"{"email":"x","email":{"y":[1,2]},"b":2}"#, r#"{"b":2}"#),
            (r#"{ "email" : 12 , "b" : true }"#, r#"{  "b" : true }"#),
            (
                r#"[{"email":null},{"a":{"email":"q"}}]"#,
                r#"[{},{"a":{}}]"#,
            ),
        ] {
            for size in 1..=body.len() {
                let got = redact(body.as_bytes(), &["**.email"], Mode::Remove, size).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    want,
                    "{body} in chunks of {size}"
                );
            }
        }
    }

    #[test]
    fn counts_say_how_many_values_each_field_took() {
        let mut r = Redactor::new(fields(&["**.email", "**.phone"], Mode::Replace));
        let mut out = BytesMut::new();
        r.push(TICKETS.as_bytes(), &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(r.counts, vec![4, 2]);
    }

    #[test]
    fn replaced_and_removed_fields_mix_in_one_body() {
        let mixed: Arc<[Redaction]> = Arc::from(vec![
            Redaction::new("**.email".parse().unwrap(), Mode::Replace),
            Redaction::new("**.phone".parse().unwrap(), Mode::Remove),
        ]);
        let body = br#"{"a":{"phone":"1","email":"x","b":[{"email":"y","phone":2}]}}"#;
        for size in 1..body.len() {
            let mut r = Redactor::new(mixed.clone());
            let mut out = BytesMut::new();
            for c in body.chunks(size) {
                r.push(c, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            assert_eq!(
                &out[..],
                br#"{"a":{"email":"[redacted]","b":[{"email":"[redacted]"}]}}"#,
                "{size}"
            );
            assert_eq!(r.counts, vec![2, 2]);
        }
    }

    #[test]
    fn what_is_not_json_is_refused_not_passed_on() {
        for body in [
            "{\"a\": 1,, \"b\": 2}",
            "{\"a\" 1}",
            "[1, 2",
            "{\"email\": \"unterminated",
            "{\"a\": [1}",
            "{\"a\": 1} x",
            "<html>",
        ] {
            for mode in [Mode::Replace, Mode::Remove] {
                assert!(
                    redact(body.as_bytes(), &["**.email"], mode, 3).is_err(),
                    "{body:?} {mode:?}"
                );
            }
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(redact(deep.as_bytes(), &["**.email"], Mode::Replace, 64).is_err());
        // Scalars and whitespace at the root are JSON too.
        for body in ["  42 ", "\"text\"", "null", "[]", "{}"] {
            assert_eq!(
                redact(body.as_bytes(), &["**.email"], Mode::Remove, 2).unwrap(),
                body.as_bytes()
            );
        }
    }

    #[test]
    fn a_key_too_long_for_any_field_passes_unheld() {
        let long = "k".repeat(MAX_KEY_LEN + 50);
        let body = format!(r#"{{"{long}": "v", "email": "x"}}"#);
        for size in [5, body.len()] {
            let got = redact(body.as_bytes(), &["**.email"], Mode::Remove, size).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                format!(r#"{{"{long}": "v"}}"#)
            );
            let got = redact(body.as_bytes(), &["**.email"], Mode::Replace, size).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                format!(r#"{{"{long}": "v", "email": "[redacted]"}}"#)
            );
        }
    }

    fn scope() -> Arc<RecordScope> {
        Arc::new(RecordScope {
            group_id: vec![4, 5],
            ..RecordScope::default()
        })
    }

    /// The body scoped (and redacted by `paths`), fed in chunks of `size` bytes, and the scanner.
    fn scoped(body: &str, paths: &[&str], size: usize) -> (Result<Vec<u8>, Cut>, Redactor) {
        let mut r = Redactor::new(fields(paths, Mode::Replace)).scoping(scope());
        let mut out = BytesMut::new();
        let mut run = || {
            for chunk in body.as_bytes().chunks(size.max(1)) {
                r.push(chunk, &mut out)?;
            }
            r.finish(&mut out)
        };
        let result = run().map(|()| out.to_vec());
        (result, r)
    }

    #[test]
    fn records_outside_the_scope_leave_lists_whole_in_every_chunking() {
        let body = r#"{"tickets": [{"id": 1, "group_id": 9, "x": {"y": [1]}}, {"id": 2, "d": "a,]}", "group_id": 4},
            {"id": 3, "group_id": 5, "email": "e"} , {"id": 4}, 7, {"id": 5, "group_id": 6}],
            "results": [{"id": 6, "group_id": 1}], "users": [{"id": 7, "group_id": 1}], "count": 5}"#;
        let want = serde_json::json!({
            "tickets": [{"id": 2, "d": "a,]}", "group_id": 4},
                        {"id": 3, "group_id": 5, "email": "[redacted]"}, 7],
            "results": [], "users": [{"id": 7, "group_id": 1}], "count": 1});
        let (whole, r) = scoped(body, &["**.email"], usize::MAX);
        let whole = whole.unwrap();
        let got: Value = serde_json::from_slice(&whole)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&whole)));
        assert_eq!(got, want);
        let (kept, withheld, first) = r.scope_counts().unwrap();
        assert_eq!((kept, withheld), (2, 4));
        assert_eq!(
            first.unwrap().to_string(),
            "group_id 9 is outside the scope"
        );
        assert_eq!(r.single(), &Single::None);
        for size in 1..40 {
            assert_eq!(
                scoped(body, &["**.email"], size).0.unwrap(),
                whole,
                "{size}"
            );
        }
    }

    #[test]
    fn a_single_record_is_judged_and_its_sideloads_pass() {
        for (body, single) in [
            (
                r#"{"ticket": {"id": 1, "group_id": 4}, "users": [{"id": 2}]}"#,
                true,
            ),
            (
                r#"{"ticket": {"id": 1, "group_id": 3}, "users": [{"id": 2}]}"#,
                false,
            ),
        ] {
            for size in [1, 3, 64] {
                let (out, r) = scoped(body, &[], size);
                let out: Value = serde_json::from_slice(&out.unwrap()).unwrap();
                assert_eq!(out["users"][0]["id"], 2);
                if single {
                    assert_eq!(r.single(), &Single::Inside);
                    assert_eq!(out["ticket"]["group_id"], 4);
                } else {
                    assert!(matches!(r.single(), Single::Outside(o) if o.field == "group_id"));
                    // Nothing of the record is written (the response is refused anyway).
                    assert!(out["ticket"].is_null());
                }
            }
        }
    }

    #[test]
    fn a_record_longer_than_the_hold_is_cut_not_passed() {
        let body = format!(
            r#"{{"tickets": [{{"id": 1, "description": "{}", "group_id": 4}}]}}"#,
            "x".repeat(records::MAX_RECORD + 10)
        );
        for size in [64 * 1024, body.len()] {
            let (out, _) = scoped(&body, &[], size);
            assert!(
                matches!(out, Err(Cut::RecordTooLarge(records::MAX_RECORD))),
                "{size}"
            );
        }
    }

    #[test]
    fn patterns_in_free_text_are_replaced_and_the_rest_kept_in_every_chunking() {
        use vendorgate_policy::patterns::{Pattern, Patterns};
        let patterns = Patterns::default().with(Pattern::Phone).with(Pattern::Iban);
        let fields: Arc<[Redaction]> = Arc::from(vec![
            Redaction {
                path: "**.description".parse().unwrap(),
                mode: Mode::Scrub,
                patterns,
            },
            Redaction::new("**.email".parse().unwrap(), Mode::Replace),
        ]);
        let body = r#"{"tickets": [{"description": "Call +33 6 12 34 56 78 or pay FR76 3000 6000 0112 3456 7890 189.\nThanks", "email": "a@b", "subject": "+33 6 12 34 56 78"},
            {"description": "order 100042, nothing else", "n": 7}, {"description": 12, "x": "y"}]}"#;
        let want = r#"{"tickets": [{"description": "Call [redacted] or pay [redacted].\nThanks", "email": "[redacted]", "subject": "+33 6 12 34 56 78"},
            {"description": "order 100042, nothing else", "n": 7}, {"description": 12, "x": "y"}]}"#;
        for size in 1..=body.len() {
            let mut r = Redactor::new(fields.clone());
            let mut out = BytesMut::new();
            for c in body.as_bytes().chunks(size) {
                r.push(c, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            assert_eq!(String::from_utf8_lossy(&out), want, "{size}");
            assert_eq!(r.counts, vec![2, 1]);
        }
    }
}
