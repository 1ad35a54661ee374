//! In-memory state, one cell per key (a session, an account's rate limiter, a byte counter), found
//! two ways: by key in a sharded [`Registry`], and directly through a [`Slot`] in the cached
//! identity that found it once.
//!
//! Why both: with 100,000 active accounts, hashing a key, probing a map and comparing key strings
//! on every request cost about 15 cache misses a request across the session, rate and counter maps.
//! An identity that has met its cells keeps pointers to them, so its next requests go straight to
//! them. The registry stays the one place a key is resolved (every identity of an account reaches
//! the same cell), and what eviction walks.
//!
//! A cell an identity still holds is never evicted: a second cell for the same key would count from
//! zero beside it. Identities are bounded by the token cache, so the registry stays bounded too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use foldhash::fast::RandomState;
use vendorgate_policy::{gcra, session_step, GcraOutcome, SessionRecord, SessionStep};

use super::SessionOutcome;

const SHARDS: usize = 32;

/// Keys here are built by the proxy from verified tokens, never chosen freely by a client:
/// foldhash (seeded per process) rather than SipHash.
type Map<V> = HashMap<String, V, RandomState>;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// FNV-1a of a state key: cheap, and good enough to spread keys over a few shards (here and in
/// [`super::sessions`]).
pub(super) fn key_hash(key: &str) -> usize {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) as usize
}

fn shard_of(key: &str) -> usize {
    key_hash(key) % SHARDS
}

/// Where a cached identity keeps a cell once it has been found (empty until the first request that
/// needs it: an identity never creates state for limits that do not apply to it).
pub struct Slot<C>(OnceLock<Arc<C>>);

impl<C> Default for Slot<C> {
    fn default() -> Self {
        Slot(OnceLock::new())
    }
}

impl<C> Slot<C> {
    /// The cell, if it has been found.
    pub fn get(&self) -> Option<&Arc<C>> {
        self.0.get()
    }

    pub fn get_or_init(&self, find: impl FnOnce() -> Arc<C>) -> &Arc<C> {
        self.0.get_or_init(find)
    }
}

/// Whether a cell holds nothing worth keeping at `now_ms` (expired, or back at its initial state).
pub trait Evictable {
    fn evictable(&self, now_ms: u64) -> bool;
}

/// Cells by key, bounded (per shard) and swept of evictable cells no identity holds.
pub struct Registry<C> {
    shards: Vec<Mutex<Map<Arc<C>>>>,
    per_shard: usize,
}

/// Held only by the registry: no identity can reach it, so removing it loses nothing shared.
/// Clones are made under the shard lock, so the count cannot rise while a sweep looks at it.
fn unheld<C>(cell: &Arc<C>) -> bool {
    Arc::strong_count(cell) == 1
}

impl<C: Evictable> Registry<C> {
    pub fn new(max_keys: usize) -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(16),
        }
    }

    /// The cell for `key`, made by `make` if there is none.
    pub fn get(&self, key: &str, now_ms: u64, make: impl FnOnce() -> C) -> Arc<C> {
        let mut shard = lock(&self.shards[shard_of(key)]);
        if let Some(cell) = shard.get(key) {
            return cell.clone();
        }
        if shard.len() >= self.per_shard {
            // Full: evictable cells first, then any one nobody holds (bounded memory beats perfect
            // recall; the cost is one session or counter restarting).
            shard.retain(|_, c| !(unheld(c) && c.evictable(now_ms)));
            if shard.len() >= self.per_shard {
                if let Some(k) = shard
                    .iter()
                    .find(|(_, c)| unheld(c))
                    .map(|(k, _)| k.clone())
                {
                    shard.remove(&k);
                }
            }
        }
        let cell = Arc::new(make());
        shard.insert(key.to_string(), cell.clone());
        cell
    }

    /// The cell for `key` if there is one.
    pub fn find(&self, key: &str) -> Option<Arc<C>> {
        lock(&self.shards[shard_of(key)]).get(key).cloned()
    }

    /// Drops the evictable cells no identity holds.
    pub fn evict(&self, now_ms: u64) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.retain(|_, c| !(unheld(c) && c.evictable(now_ms)));
            shard.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

struct Session {
    record: SessionRecord,
    expires_ms: u64,
}

/// One session's activity. Starts expired: the first touch begins it.
pub struct SessionCell(Mutex<Session>);

impl Default for SessionCell {
    fn default() -> Self {
        SessionCell(Mutex::new(Session {
            record: SessionRecord {
                last_ms: 0,
                dead: false,
            },
            expires_ms: 0,
        }))
    }
}

impl SessionCell {
    /// [`session_step`] on this cell's record, writing what it says: the record is kept for
    /// `ttl_ms` from an active or idled-out touch (an idled-out session stays refused until then).
    pub fn touch(&self, now_ms: u64, idle_ms: u64, ttl_ms: u64) -> SessionOutcome {
        let mut s = lock(&self.0);
        let live = (s.expires_ms > now_ms).then_some(s.record);
        let step = session_step(live, now_ms, idle_ms);
        match step {
            SessionStep::Active => {
                s.record = SessionRecord {
                    last_ms: now_ms,
                    dead: false,
                };
                s.expires_ms = now_ms + ttl_ms;
            }
            SessionStep::IdledOut => {
                s.record.dead = true;
                s.expires_ms = now_ms + ttl_ms;
            }
            SessionStep::Dead => {}
        }
        SessionOutcome::from(step)
    }
}

impl Evictable for SessionCell {
    fn evictable(&self, now_ms: u64) -> bool {
        lock(&self.0).expires_ms <= now_ms
    }
}

/// Bytes counted in the current window of one byte counter.
pub(super) struct Used {
    pub bytes: u64,
    pub expires_ms: u64,
}

/// One byte counter. Its window is its expiry: a counter past it counts from zero again.
pub struct CounterCell {
    /// The registry's key for it (without the window).
    pub key: Arc<str>,
    pub(super) used: Mutex<Used>,
}

impl CounterCell {
    pub fn new(key: Arc<str>) -> Self {
        CounterCell {
            key,
            used: Mutex::new(Used {
                bytes: 0,
                expires_ms: 0,
            }),
        }
    }
}

impl Used {
    /// Bytes counted in the window that is current at `now_ms`.
    pub fn at(&self, now_ms: u64) -> u64 {
        if self.expires_ms > now_ms {
            self.bytes
        } else {
            0
        }
    }

    /// Adds `grant`, starting a fresh window ending at `reset_at_ms` if the old one is over.
    pub fn charge(&mut self, grant: u64, now_ms: u64, reset_at_ms: u64) {
        if self.expires_ms <= now_ms {
            self.bytes = 0;
            self.expires_ms = reset_at_ms;
        }
        self.bytes += grant;
    }
}

impl Evictable for CounterCell {
    fn evictable(&self, now_ms: u64) -> bool {
        lock(&self.used).expires_ms <= now_ms
    }
}

/// One key's GCRA state under one rate rule: its theoretical arrival time, in microseconds since
/// the epoch (0: never used).
#[derive(Default)]
pub struct RateCell {
    tat_us: AtomicU64,
}

impl RateCell {
    /// The theoretical arrival time (µs since the epoch; 0: never used).
    pub fn tat(&self) -> u64 {
        self.tat_us.load(Ordering::Acquire)
    }

    /// One [`gcra`] step at the request's time. Lock-free: a request that loses a race to store
    /// its new TAT steps again from the winner's.
    pub fn step(&self, interval_us: u64, burst: u32, now_us: u64) -> GcraOutcome {
        let mut tat = self.tat_us.load(Ordering::Acquire);
        loop {
            let outcome = gcra(tat, now_us, interval_us, burst);
            if !outcome.allowed {
                return outcome;
            }
            match self.tat_us.compare_exchange_weak(
                tat,
                outcome.new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return outcome,
                Err(current) => tat = current,
            }
        }
    }
}

impl Evictable for RateCell {
    /// Once its TAT has passed, the key is back at full burst: forgetting it changes nothing.
    fn evictable(&self, now_ms: u64) -> bool {
        self.tat_us.load(Ordering::Relaxed) <= now_ms.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_an_identity_holds_is_never_evicted_and_stays_the_keys_cell() {
        let reg: Registry<CounterCell> = Registry::new(16);
        let held = Slot::default();
        let counter = || CounterCell::new(Arc::from("k"));
        let cell = held.get_or_init(|| reg.get("k", 0, counter));
        lock(&cell.used).charge(5, 0, 1000);
        // Long expired, and the shards are swept: the held cell stays, and a lookup by key
        // still reaches it rather than a fresh one.
        reg.evict(10_000);
        assert!(Arc::ptr_eq(cell, &reg.get("k", 10_000, counter)));
        // Unheld and expired: gone.
        reg.get("other", 0, counter);
        lock(&reg.find("other").unwrap().used).charge(1, 0, 1000);
        reg.evict(10_000);
        assert!(reg.find("other").is_none());
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn a_full_shard_makes_room_only_from_cells_nobody_holds() {
        let reg: Registry<SessionCell> = Registry::new(1);
        // One shard holds at most 16: fill one shard's worth of keys that land together.
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("s{i}"))
            .filter(|k| shard_of(k) == shard_of("s0"))
            .take(40)
            .collect();
        let held: Vec<Arc<SessionCell>> = keys[..16]
            .iter()
            .map(|k| reg.get(k, 0, SessionCell::default))
            .collect();
        for h in &held {
            assert_eq!(h.touch(0, 1000, 60_000), SessionOutcome::Active);
        }
        // Every cell is held and live: the shard grows rather than drop one.
        reg.get(&keys[16], 0, SessionCell::default);
        assert_eq!(reg.len(), 17);
        for k in &keys[..16] {
            assert!(Arc::ptr_eq(
                &reg.find(k).unwrap(),
                &held[keys.iter().position(|x| x == k).unwrap()]
            ));
        }
        // keys[16] is held by nobody: the next new key takes its place.
        reg.get(&keys[17], 0, SessionCell::default);
        assert_eq!(reg.len(), 17);
        assert!(reg.find(&keys[16]).is_none());
    }
}
