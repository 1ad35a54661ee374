//! Record scoping as a body streams ([`vendorgate_policy::scope`]): the records of a response
//! (`ticket`, `tickets[]`, `results[]` at its root) are each held from their first byte to their
//! last, judged whole against the vendor's scope, then passed on or withheld.
//!
//! Why whole: a record's scope fields may come anywhere in it (Zendesk writes `group_id` after
//! the description), and judging a record by what it says of itself, not by where a scanner met
//! it, keeps the judgement one function of the policy crate. Holding is bounded:
//! [`MAX_RECORD`] bytes, past which the body is cut (fail closed; a Zendesk ticket is a few KiB).
//!
//! In a list, the commas are the scanner's, not the upstream's: each kept element is preceded by
//! one if an element was kept before it, so withholding the first, the last or all of them leaves
//! a well-formed list. A single record outside the scope is marked ([`Records::single`]): the
//! response filter refuses the response (403) before its headers go.

use std::sync::Arc;

use vendorgate_policy::scope::{Outside, RecordScope, LIST_KEYS, SINGLE_KEYS};

/// Longest record held while it is judged.
pub const MAX_RECORD: usize = 1024 * 1024;

/// What the root member being read holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Other,
    Single,
    List,
}

/// The verdict on a body's single record (`ticket`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Single {
    /// No single record (yet).
    #[default]
    None,
    /// Being read.
    Pending,
    Inside,
    Outside(Outside),
}

pub(super) struct Records {
    scope: Arc<RecordScope>,
    pub(super) place: Place,
    /// The record being read began at this offset of the current chunk's output (its comma
    /// first, if it has one: `lead` bytes).
    open: Option<usize>,
    lead: usize,
    /// The record's bytes from earlier chunks.
    held: Vec<u8>,
    /// An element of the current list has been passed on (the next one needs a comma).
    kept_any: bool,
    pub(super) kept: u64,
    pub(super) withheld: u64,
    /// Why the first withheld record was (for the decision record).
    pub(super) first_outside: Option<Outside>,
    pub(super) single: Single,
}

impl Records {
    pub(super) fn new(scope: Arc<RecordScope>) -> Self {
        Records {
            scope,
            place: Place::Other,
            open: None,
            lead: 0,
            held: Vec::new(),
            kept_any: false,
            kept: 0,
            withheld: 0,
            first_outside: None,
            single: Single::None,
        }
    }

    /// A root member's value starts: what it holds, by its key.
    pub(super) fn root_member(&mut self, key: &[u8], first: u8) {
        self.place = if SINGLE_KEYS.contains(&key) && first == b'{' {
            Place::Single
        } else if LIST_KEYS.contains(&key) && first == b'[' {
            self.kept_any = false;
            Place::List
        } else {
            Place::Other
        };
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A record begins at the end of the chunk's output (its `{` goes there next). In a list, the
    /// comma it needs goes first, as part of it: withheld, the record takes its comma with it.
    pub(super) fn open(&mut self, out: &mut bytes::BytesMut) {
        self.open = Some(out.len());
        self.lead = usize::from(self.place == Place::List && self.kept_any);
        if self.lead > 0 {
            out.extend_from_slice(b",");
        }
        if self.place == Place::Single {
            self.single = Single::Pending;
        }
    }

    /// A list element that is not a record starts: it is passed on, after a comma if due.
    pub(super) fn other_element(&mut self) -> Option<&'static [u8]> {
        std::mem::replace(&mut self.kept_any, true).then_some(b",")
    }

    /// The chunk's output ends with the record still open: its part moves to `held`.
    /// `Err`: the record is longer than [`MAX_RECORD`].
    pub(super) fn chunk_end(&mut self, out: &mut bytes::BytesMut) -> Result<(), usize> {
        if let Some(at) = self.open {
            self.held.extend_from_slice(&out[at..]);
            out.truncate(at);
            self.open = Some(out.len());
            if self.held.len() > MAX_RECORD {
                return Err(MAX_RECORD);
            }
        }
        Ok(())
    }

    /// A new chunk's output begins at `at`.
    pub(super) fn chunk_start(&mut self, at: usize) {
        if self.open.is_some() {
            self.open = Some(at);
        }
    }

    /// The record has ended (its last byte is in `out`): judged, and passed on or withheld. A
    /// record read within one chunk is judged where it stands in the output and, kept, stays
    /// there; one that spanned chunks is put back together from `held` first. A withheld single
    /// record leaves `null` (the body stays JSON; the response is refused anyway).
    /// `Err`: the record is longer than [`MAX_RECORD`].
    pub(super) fn close(&mut self, out: &mut bytes::BytesMut) -> Result<(), usize> {
        let Some(at) = self.open.take() else {
            return Ok(());
        };
        if self.held.len() + out.len() - at - self.lead > MAX_RECORD {
            return Err(MAX_RECORD);
        }
        let verdict = if self.held.is_empty() {
            self.scope.judge_json(&out[at + self.lead..])
        } else {
            self.held.extend_from_slice(&out[at..]);
            out.truncate(at);
            self.scope.judge_json(&self.held[self.lead..])
        };
        match verdict {
            Ok(()) => {
                out.extend_from_slice(&self.held);
                self.kept_any = true;
                self.kept += 1;
                if self.place == Place::Single {
                    self.single = Single::Inside;
                }
            }
            Err(outside) => {
                out.truncate(at);
                self.withheld += 1;
                if self.place == Place::Single {
                    self.single = Single::Outside(outside.clone());
                    out.extend_from_slice(b"null");
                }
                self.first_outside.get_or_insert(outside);
            }
        }
        self.held.clear();
        Ok(())
    }
}
