//! Where the redacted fields' paths stand as the scanner goes down a body, built as it is needed:
//! a small automaton over path segments, the same idea as a regex engine's lazy DFA.
//!
//! A depth's *set* is every (field, step) pair its values are at, the `**` steps taken both ways.
//! Going down into a container moves from the set outside to the set inside, by the container's
//! segment (its key, or an array element). Computing that move walks every field's steps; a body
//! makes the same few moves over and over (each ticket of a list goes down into `requester`,
//! `tags`, `via` from the same set), so each set is computed once, given an id, and each move
//! remembered: after the first record, going down is a lookup.

use std::collections::HashMap;
use std::sync::Arc;

use vendorgate_policy::fields::{RedactMode, Redaction, Segment, Step};

/// Most distinct sets one body may reach. Real field lists reach a handful; a body that reaches
/// more is refused rather than let grow the table (see [`TooManySets`]).
pub const MAX_SETS: usize = 4096;

/// Most moves remembered; past it a move is computed each time (correct, slower).
const MAX_MOVES: usize = 1024;

/// A set's id.
pub type SetId = u32;

/// The body reached more than [`MAX_SETS`] distinct sets.
#[derive(Debug)]
pub struct TooManySets;

pub struct Paths {
    fields: Arc<[Redaction]>,
    sets: Vec<Set>,
    index: HashMap<Box<[(u16, u8)]>, SetId>,
    moves: Vec<Move>,
}

struct Set {
    states: Box<[(u16, u8)]>,
    finals: Finals,
}

/// A remembered move: from a set, down by a key (or an element: `None`), to a set.
struct Move {
    from: SetId,
    key: Option<Box<[u8]>>,
    to: SetId,
}

impl Move {
    fn is(&self, from: SetId, segment: Segment<'_>) -> bool {
        self.from == from
            && match (&self.key, segment) {
                (Some(k), Segment::Key(s)) => **k == *s,
                (None, Segment::Element) => true,
                _ => false,
            }
    }
}

/// Which segments could end a field in one set: the first bytes and lengths of the keys that are
/// some field's last step there, `*`, `[]`. Most members are ruled out by it at a glance.
#[derive(Debug, Clone, Copy, Default)]
struct Finals {
    first: [u64; 4],
    /// The lengths of those keys (bit 63: 63 or longer).
    lens: u64,
    any_key: bool,
    element: bool,
}

impl Finals {
    fn of(fields: &[Redaction], states: &[(u16, u8)]) -> Self {
        let mut finals = Finals::default();
        for &(f, i) in states {
            let steps = fields[usize::from(f)].path.steps();
            if usize::from(i) + 1 != steps.len() {
                continue;
            }
            match &steps[usize::from(i)] {
                Step::Key(k) => {
                    if let Some(&b) = k.as_bytes().first() {
                        finals.first[usize::from(b >> 6)] |= 1 << (b & 63);
                    }
                    finals.lens |= 1 << k.len().min(63);
                }
                Step::AnyKey => finals.any_key = true,
                Step::Element => finals.element = true,
                Step::AnyDepth => {}
            }
        }
        finals
    }

    /// Whether some field might end at `segment` (false: none does).
    fn may_end(&self, segment: Segment<'_>) -> bool {
        match segment {
            Segment::Key(k) => {
                self.any_key
                    || (self.lens >> k.len().min(63) & 1 == 1
                        && k.first()
                            .is_some_and(|&b| self.first[usize::from(b >> 6)] >> (b & 63) & 1 == 1))
            }
            Segment::Element => self.element,
        }
    }
}

/// Adds (field, step) to `states`, and past a `**` the step after it too (`**` may stand for
/// nothing).
fn reach(fields: &[Redaction], states: &mut Vec<(u16, u8)>, field: usize, step: usize) {
    let steps = fields[field].path.steps();
    if step >= steps.len() {
        return;
    }
    let state = (field as u16, step as u8);
    if states.contains(&state) {
        return;
    }
    states.push(state);
    if steps[step] == Step::AnyDepth {
        reach(fields, states, field, step + 1);
    }
}

impl Paths {
    /// The paths, and the id of the set inside a body's root container.
    pub fn new(fields: Arc<[Redaction]>) -> (Self, SetId) {
        let mut states = Vec::new();
        for f in 0..fields.len().min(usize::from(u16::MAX)) {
            reach(&fields, &mut states, f, 0);
        }
        let mut paths = Paths {
            fields,
            sets: Vec::new(),
            index: HashMap::new(),
            moves: Vec::new(),
        };
        let root = paths.intern(states).unwrap_or(0);
        (paths, root)
    }

    pub fn fields(&self) -> &Arc<[Redaction]> {
        &self.fields
    }

    fn intern(&mut self, mut states: Vec<(u16, u8)>) -> Result<SetId, TooManySets> {
        states.sort_unstable();
        if let Some(&id) = self.index.get(states.as_slice()) {
            return Ok(id);
        }
        if self.sets.len() >= MAX_SETS {
            return Err(TooManySets);
        }
        let id = self.sets.len() as SetId;
        let states: Box<[(u16, u8)]> = states.into();
        let finals = Finals::of(&self.fields, &states);
        self.index.insert(states.clone(), id);
        self.sets.push(Set { states, finals });
        Ok(id)
    }

    /// The set inside a container that opens at `segment` of set `from`.
    pub fn down(&mut self, from: SetId, segment: Segment<'_>) -> Result<SetId, TooManySets> {
        if let Some(m) = self.moves.iter().find(|m| m.is(from, segment)) {
            return Ok(m.to);
        }
        let mut states = Vec::new();
        for &(f, i) in self.sets[from as usize].states.iter() {
            let (f, i) = (usize::from(f), usize::from(i));
            let step = &self.fields[f].path.steps()[i];
            if *step == Step::AnyDepth {
                // `**` takes this segment and stays.
                reach(&self.fields, &mut states, f, i);
            } else if step.takes(segment) {
                reach(&self.fields, &mut states, f, i + 1);
            }
        }
        let to = self.intern(states)?;
        if self.moves.len() < MAX_MOVES {
            let key = match segment {
                Segment::Key(k) => Some(k.into()),
                Segment::Element => None,
            };
            self.moves.push(Move { from, key, to });
        }
        Ok(to)
    }

    /// The field that ends at `segment` of set `at`, if any, and how it is taken out. When fields
    /// of several modes end there, the strongest acts: a removal (the member goes), then a
    /// replacement, then a scan for patterns; among one mode, the first field named.
    pub fn field_at(&self, at: SetId, segment: Segment<'_>) -> Option<(usize, RedactMode)> {
        let set = &self.sets[at as usize];
        if !set.finals.may_end(segment) {
            return None;
        }
        let rank = |mode| match mode {
            RedactMode::Remove => 0,
            RedactMode::Replace => 1,
            RedactMode::Scrub => 2,
        };
        set.states
            .iter()
            .filter_map(|&(f, i)| {
                let field = &self.fields[usize::from(f)];
                let steps = field.path.steps();
                let i = usize::from(i);
                (i + 1 == steps.len() && steps[i].takes(segment))
                    .then_some((usize::from(f), field.mode))
            })
            .min_by_key(|&(f, mode)| (rank(mode), f))
    }
}
