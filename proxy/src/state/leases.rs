//! Redis mode: the share of the shared limits this replica holds, so that most requests are
//! decided without a round trip to Redis.
//!
//! Asking Redis on every request (a session touch, a step per rate limit, a look at each byte
//! budget, then a lease for the body) cost five round trips and halved the throughput. Instead,
//! as byte budgets were already leased per body, every shared limit is leased in small batches
//! and spent here:
//!
//! - **Rate limits:** a [`TokenPool`] per limiter key holds requests taken from the shared GCRA
//!   (one script takes up to n steps at once, [`vendorgate_policy::gcra_take`]). A pool's batch
//!   starts at one and doubles each time it is used up within [`TOKEN_HOLD`], up to
//!   [`max_batch`] (an eighth of the burst, at most 64); tokens left when the hold ends go back.
//!   While a batch is being leased, other requests for the same key take exactly one each, so a
//!   replica never holds more than `max_batch - 1` unspent requests of a key. **Bound:** across
//!   R replicas a limit admits at most R × (max_batch − 1) requests more than its GCRA would in
//!   any interval (never more: every token was taken from the shared state when leased, and is
//!   only spent later); a limit whose burst is under 16 is exact (batches of one).
//! - **Byte budgets:** a [`BytePool`] per counter and window holds bytes leased from it, a slice
//!   at a time ([`slice_of`]: a 32nd of the cap, at most 1 MiB); a body's meter draws from the
//!   pools and gives back to them. Never more than the cap is spent across replicas (every byte
//!   was leased before it was sent); what is held and unspent (at most a slice per counter and
//!   replica) is refused to the others until it goes back, after [`BYTE_HOLD`] unused.
//! - **Sessions:** a [`SessionLease`] per session: a replica that confirmed the session with
//!   Redis decides its idle timeout itself while its own last request is within it, and writes its
//!   touches behind, every [`SETTLE_EVERY`] (see [`super::StateStore`]). Redis judges a session
//!   idle only past the timeout and [`SESSION_GRACE`], for touches not written yet; the lease is
//!   confirmed with Redis again every half idle timeout. **Precision:** a session idles out
//!   between its timeout and the timeout plus [`SESSION_GRACE`] after its last request, on every
//!   replica.
//!
//! Redis not answering stops all of it at once (the store's health flag, see
//! [`super::StateStore::healthy`]): each request then asks Redis and `on_state_error` decides as
//! before. A replica notices within [`SETTLE_EVERY`] (its heartbeat) or at its next failed call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vendorgate_policy::GcraOutcome;

use super::cells::{lock, Evictable, Registry};
use super::Counter;

/// How long leased requests may wait to be spent before they go back.
pub const TOKEN_HOLD: Duration = Duration::from_secs(1);
/// How long leased bytes may wait unused before they go back.
pub const BYTE_HOLD: Duration = Duration::from_secs(2);
/// The heartbeat: session touches written behind and unused leases given back this often, and a
/// replica whose Redis stopped answering notices within it.
pub const SETTLE_EVERY: Duration = Duration::from_millis(250);
/// Added to the idle timeout when Redis judges a session: touches not yet written behind.
pub const SESSION_GRACE: Duration = Duration::from_secs(1);
/// How long a batch lease may be awaited before another request may lease a batch.
const LEASING_FOR: Duration = Duration::from_secs(5);
/// The largest slice of a byte budget leased at once beyond what a body needs.
pub const MAX_SLICE: u64 = 1024 * 1024;

/// The largest batch of requests leased at once from a rate limit of `burst`.
pub fn max_batch(burst: u32) -> u32 {
    (burst / 8).clamp(1, 64)
}

/// The slice of a byte cap of `max` leased beyond a body's need.
pub fn slice_of(max: u64) -> u64 {
    (max / 32).clamp(1, MAX_SLICE)
}

// ---------------------------------------------------------------------------------------------
// Rate limits

struct Tokens {
    held: u32,
    /// The limiter's emission interval (µs), to give held requests back.
    interval_us: u64,
    until_us: u64,
    batch: u32,
    /// A batch is being leased until then (µs): a request abandoned while it waited for Redis
    /// never says what it got, and must not keep the pool at batches of one.
    leasing_until_us: u64,
    /// The burst Redis had left after the last lease (for the `RateLimit` header).
    remaining: u32,
}

/// Requests leased from one shared rate limiter.
pub struct TokenPool {
    key: Box<str>,
    tokens: Mutex<Tokens>,
    /// In the heartbeat's list of pools holding something (see [`Leases::holding`]).
    queued: AtomicBool,
}

impl TokenPool {
    fn new(key: &str) -> Self {
        TokenPool {
            key: key.into(),
            tokens: Mutex::new(Tokens {
                held: 0,
                interval_us: 0,
                until_us: 0,
                batch: 1,
                leasing_until_us: 0,
                remaining: 0,
            }),
            queued: AtomicBool::new(false),
        }
    }
}

/// What a request gets from a [`TokenPool`].
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// One of the held requests: allowed, with the burst left as far as this replica knows.
    Took(GcraOutcome),
    /// Nothing held: lease `want` from Redis, giving back `give_back` expired ones in the same
    /// call. `batch`: this request leases the pool's batch (else exactly one for itself).
    Lease {
        want: u32,
        give_back: u32,
        batch: bool,
    },
}

impl TokenPool {
    pub fn take(&self, now_us: u64, max_batch: u32, interval_us: u64) -> Take {
        let mut t = lock(&self.tokens);
        t.interval_us = interval_us;
        let fresh = now_us < t.until_us;
        if t.held > 0 && fresh {
            t.held -= 1;
            return Take::Took(allowed(t.remaining.saturating_add(t.held)));
        }
        let give_back = std::mem::take(&mut t.held);
        if now_us < t.leasing_until_us {
            return Take::Lease {
                want: 1,
                give_back,
                batch: false,
            };
        }
        // Used up within the hold: the account is busy, lease more at once; left over: less.
        if give_back > 0 {
            t.batch = (t.batch / 2).max(1);
        } else if fresh {
            t.batch *= 2;
        }
        // Also when the rule's burst shrank since (a reload).
        t.batch = t.batch.min(max_batch);
        t.leasing_until_us = now_us + LEASING_FOR.as_micros() as u64;
        Take::Lease {
            want: t.batch,
            give_back,
            batch: true,
        }
    }

    /// What Redis granted for a [`Take::Lease`] (`granted` of it; `None`: the call failed). The
    /// first of the grant is the asking request's; the rest is held.
    pub fn leased(&self, batch: bool, granted: Option<(u32, u32)>, now_us: u64) {
        let mut t = lock(&self.tokens);
        if batch {
            t.leasing_until_us = 0;
        }
        if let Some((granted, remaining)) = granted {
            if granted > 0 {
                t.held += granted - 1;
                t.until_us = now_us + TOKEN_HOLD.as_micros() as u64;
            }
            t.remaining = remaining;
        }
    }

    /// Held requests whose hold has ended, taken out to be given back, with the interval.
    pub fn expired(&self, now_us: u64) -> (u32, u64) {
        let mut t = lock(&self.tokens);
        if t.held > 0 && now_us >= t.until_us && now_us >= t.leasing_until_us {
            t.batch = (t.batch / 2).max(1);
            return (std::mem::take(&mut t.held), t.interval_us);
        }
        (0, 0)
    }

    /// Whether it still holds requests (else it leaves the heartbeat's list).
    fn holds(&self) -> bool {
        let t = lock(&self.tokens);
        let holds = t.held > 0;
        if !holds {
            self.queued.store(false, Ordering::Relaxed);
        }
        holds
    }
}

fn allowed(remaining: u32) -> GcraOutcome {
    GcraOutcome {
        allowed: true,
        new_tat: 0,
        retry_after_ms: 0,
        remaining,
    }
}

impl Evictable for TokenPool {
    fn evictable(&self, now_ms: u64) -> bool {
        let t = lock(&self.tokens);
        let now_us = now_ms.saturating_mul(1000);
        t.held == 0 && t.leasing_until_us <= now_us && t.until_us <= now_us
    }
}

// ---------------------------------------------------------------------------------------------
// Byte budgets

struct Held {
    bytes: u64,
    /// When the bytes go back unless used or topped up (ms since the epoch).
    until_ms: u64,
    /// What the shared counter had left after the last lease (for the up-front check).
    left: u64,
    /// The counter's window end: its key expires then and nothing needs giving back.
    window_end_ms: u64,
}

/// Bytes leased from one shared counter in one window.
pub struct BytePool {
    /// The counter's key in Redis (with its window).
    key: String,
    held: Mutex<Held>,
    /// In the heartbeat's list of pools holding something (see [`Leases::holding`]).
    queued: AtomicBool,
}

impl BytePool {
    fn new(key: String, window_end_ms: u64) -> Self {
        BytePool {
            key,
            held: Mutex::new(Held {
                bytes: 0,
                until_ms: 0,
                left: 0,
                window_end_ms,
            }),
            queued: AtomicBool::new(false),
        }
    }

    /// The counter's key in Redis, with its window.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes up to `want` of the held bytes.
    pub fn take(&self, want: u64) -> u64 {
        let mut h = lock(&self.held);
        let n = h.bytes.min(want);
        h.bytes -= n;
        n
    }

    /// Puts bytes (back) in the pool: unused by a body, or leased beyond its need.
    pub fn put(&self, bytes: u64, now_ms: u64) {
        if bytes == 0 {
            return;
        }
        let mut h = lock(&self.held);
        h.bytes += bytes;
        h.until_ms = now_ms + BYTE_HOLD.as_millis() as u64;
    }

    fn leased(&self, surplus: u64, left: u64, now_ms: u64) {
        self.put(surplus, now_ms);
        lock(&self.held).left = left;
    }

    /// Held bytes, and the shared counter's remainder as last seen.
    pub fn standing(&self) -> (u64, u64) {
        let h = lock(&self.held);
        (h.bytes, h.left)
    }

    /// Held bytes past their hold (and their window still open), taken out to be given back,
    /// with the window's end.
    pub fn expired(&self, now_ms: u64) -> (u64, u64) {
        let mut h = lock(&self.held);
        if h.bytes > 0 && now_ms >= h.until_ms {
            let n = std::mem::take(&mut h.bytes);
            if now_ms < h.window_end_ms {
                return (n, h.window_end_ms);
            }
        }
        (0, 0)
    }

    /// Whether it still holds bytes (else it leaves the heartbeat's list).
    fn holds(&self) -> bool {
        let holds = lock(&self.held).bytes > 0;
        if !holds {
            self.queued.store(false, Ordering::Relaxed);
        }
        holds
    }
}

impl Evictable for BytePool {
    fn evictable(&self, now_ms: u64) -> bool {
        let h = lock(&self.held);
        h.bytes == 0 || h.window_end_ms <= now_ms
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

struct SessionHeld {
    /// When Redis last confirmed the session active (0: never, or idled out).
    confirmed_ms: u64,
    /// This replica's latest request of the session.
    last_ms: u64,
    ttl_ms: u64,
    /// A touch not yet written to Redis.
    dirty: bool,
}

/// One session as this replica holds it.
pub struct SessionLease(Mutex<SessionHeld>);

impl Default for SessionLease {
    fn default() -> Self {
        SessionLease(Mutex::new(SessionHeld {
            confirmed_ms: 0,
            last_ms: 0,
            ttl_ms: 0,
            dirty: false,
        }))
    }
}

impl SessionLease {
    /// Decides a request at `now_ms` here if the lease allows: confirmed by Redis within half the
    /// idle timeout and this replica's last request within the timeout. Returns whether it did
    /// (the session is active), and whether the touch must be queued to be written behind.
    pub fn touch_here(&self, now_ms: u64, idle_ms: u64, ttl_ms: u64) -> (bool, bool) {
        let mut s = lock(&self.0);
        let confirm_every = (idle_ms / 2).max(1);
        if s.confirmed_ms == 0
            || now_ms.saturating_sub(s.last_ms) > idle_ms
            || now_ms.saturating_sub(s.confirmed_ms) > confirm_every
        {
            return (false, false);
        }
        s.last_ms = s.last_ms.max(now_ms);
        s.ttl_ms = ttl_ms;
        let queue = !s.dirty;
        s.dirty = true;
        (true, queue)
    }

    /// What Redis said of a touch at `now_ms`.
    pub fn confirmed(&self, active: bool, now_ms: u64) {
        let mut s = lock(&self.0);
        if active {
            s.confirmed_ms = now_ms;
            s.last_ms = s.last_ms.max(now_ms);
        } else {
            s.confirmed_ms = 0;
        }
    }

    /// The touch to write behind (last request, TTL), marking it written.
    fn written(&self) -> Option<(u64, u64)> {
        let mut s = lock(&self.0);
        std::mem::take(&mut s.dirty).then_some((s.last_ms, s.ttl_ms))
    }
}

impl Evictable for SessionLease {
    fn evictable(&self, now_ms: u64) -> bool {
        let s = lock(&self.0);
        !s.dirty && now_ms.saturating_sub(s.last_ms) > s.ttl_ms
    }
}

// ---------------------------------------------------------------------------------------------

/// What this replica holds of the shared state.
pub struct Leases {
    tokens: Registry<TokenPool>,
    bytes: Registry<BytePool>,
    sessions: Registry<SessionLease>,
    /// Sessions with a touch to write behind.
    dirty: Mutex<Vec<(Arc<str>, Arc<SessionLease>)>>,
    /// The pools that hold something, for the heartbeat to give back what expires: it visits
    /// these, not every pool (100,000 accounts' pools four times a second).
    holding: Mutex<Holding>,
    /// Whether Redis answered the last call (see [`super::StateStore::healthy`]).
    pub healthy: AtomicBool,
}

#[derive(Default)]
struct Holding {
    tokens: Vec<Arc<TokenPool>>,
    bytes: Vec<Arc<BytePool>>,
}

/// Bytes taken from pools for one request, per counter.
pub struct Drawn<'a> {
    leases: &'a Leases,
    pools: Vec<Arc<BytePool>>,
    pub got: Vec<u64>,
    pub counters: &'a [Counter],
}

impl Leases {
    pub fn new(max_keys: usize) -> Self {
        Leases {
            tokens: Registry::new(max_keys),
            bytes: Registry::new(max_keys),
            sessions: Registry::new(max_keys),
            dirty: Mutex::new(Vec::new()),
            holding: Mutex::default(),
            // Unconfirmed until Redis first answers: until then every request asks it.
            healthy: AtomicBool::new(false),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn token_pool(&self, key: &str, now_ms: u64) -> Arc<TokenPool> {
        self.tokens.get(key, now_ms, || TokenPool::new(key))
    }

    /// After a lease into `pool`: on the heartbeat's list if it now holds something.
    pub fn note_tokens(&self, pool: &Arc<TokenPool>) {
        if lock(&pool.tokens).held > 0 && !pool.queued.swap(true, Ordering::Relaxed) {
            lock(&self.holding).tokens.push(pool.clone());
        }
    }

    fn note_bytes(&self, pool: &Arc<BytePool>) {
        if lock(&pool.held).bytes > 0 && !pool.queued.swap(true, Ordering::Relaxed) {
            lock(&self.holding).bytes.push(pool.clone());
        }
    }

    pub fn session(&self, key: &str, now_ms: u64) -> Arc<SessionLease> {
        self.sessions.get(key, now_ms, SessionLease::default)
    }

    pub fn queue_session(&self, key: &str, lease: &Arc<SessionLease>) {
        lock(&self.dirty).push((Arc::from(key), lease.clone()));
    }

    /// The session touches to write behind: (key, last request, TTL).
    pub fn sessions_to_write(&self) -> Vec<(Arc<str>, u64, u64)> {
        std::mem::take(&mut *lock(&self.dirty))
            .into_iter()
            .filter_map(|(k, l)| l.written().map(|(last, ttl)| (k, last, ttl)))
            .collect()
    }

    /// The pool of counter `key` for the window from `window_start` to `window_end`.
    pub fn byte_pool(
        &self,
        key: &str,
        window_start: u64,
        window_end: u64,
        now_ms: u64,
    ) -> Arc<BytePool> {
        let mut n = itoa::Buffer::new();
        let windowed = [key, ":", n.format(window_start)].concat();
        self.bytes.get(&windowed, now_ms, || {
            BytePool::new(windowed.clone(), window_end)
        })
    }

    /// A counter's pool: the one it carries (found once for its request), else by its key.
    fn pool_of(&self, c: &Counter, now_ms: u64) -> Arc<BytePool> {
        match &c.place {
            super::Place::Leased(_, pool) => pool.clone(),
            _ => self.byte_pool(c.key(), c.window_start, c.reset_at_ms, now_ms),
        }
    }

    /// Takes up to `want` bytes for every counter from the pools.
    pub fn draw<'a>(&'a self, counters: &'a [Counter], want: u64, now_ms: u64) -> Drawn<'a> {
        let pools: Vec<Arc<BytePool>> = counters.iter().map(|c| self.pool_of(c, now_ms)).collect();
        let got = pools.iter().map(|p| p.take(want)).collect();
        Drawn {
            leases: self,
            pools,
            got,
            counters,
        }
    }

    /// The bytes the pools hold, and the shared remainders last seen, per counter.
    pub fn standing(&self, counters: &[Counter], now_ms: u64) -> Vec<(u64, u64)> {
        counters
            .iter()
            .map(|c| self.pool_of(c, now_ms).standing())
            .collect()
    }

    /// Puts `amount` back in each counter's pool (a body's unused lease).
    pub fn put_back(&self, counters: &[Counter], amount: u64, now_ms: u64) {
        for c in counters {
            let pool = self.pool_of(c, now_ms);
            pool.put(amount, now_ms);
            self.note_bytes(&pool);
        }
    }

    /// Held requests and bytes past their hold, to give back: (limiter key, requests, interval) and
    /// (counter's windowed key, bytes, window end). Pools that hold nothing more leave the list.
    #[allow(clippy::type_complexity)]
    pub fn expired(&self, now_ms: u64) -> (Vec<(String, u32, u64)>, Vec<(String, u64, u64)>) {
        let Holding {
            tokens: token_pools,
            bytes: byte_pools,
        } = std::mem::take(&mut *lock(&self.holding));
        let mut tokens = Vec::new();
        let mut still = Holding::default();
        for p in token_pools {
            let (n, interval) = p.expired(now_ms.saturating_mul(1000));
            if n > 0 {
                tokens.push((p.key.to_string(), n, interval));
            }
            if p.holds() {
                still.tokens.push(p);
            }
        }
        let mut bytes = Vec::new();
        for p in byte_pools {
            let (n, until) = p.expired(now_ms);
            if n > 0 {
                bytes.push((p.key.clone(), n, until));
            }
            if p.holds() {
                still.bytes.push(p);
            }
        }
        let mut holding = lock(&self.holding);
        holding.tokens.append(&mut still.tokens);
        holding.bytes.append(&mut still.bytes);
        (tokens, bytes)
    }

    pub fn evict(&self, now_ms: u64) {
        self.tokens.evict(now_ms);
        self.bytes.evict(now_ms);
        self.sessions.evict(now_ms);
    }
}

impl Drawn<'_> {
    /// The counters still short of `want`, with what to ask Redis for each: the shortfall and a
    /// slice to hold.
    pub fn short(&self, want: u64) -> Vec<(usize, u64)> {
        self.got
            .iter()
            .enumerate()
            .filter(|(_, g)| **g < want)
            .map(|(i, g)| (i, want - g + slice_of(self.counters[i].max)))
            .collect()
    }

    /// Redis's answer for counter `i`: `granted` bytes (of which what the request still needs is
    /// its, the rest held), and what the counter has left.
    pub fn leased(&mut self, i: usize, want: u64, granted: u64, left: u64, now_ms: u64) {
        let use_now = granted.min(want - self.got[i]);
        self.got[i] += use_now;
        self.pools[i].leased(granted - use_now, left, now_ms);
        self.leases.note_bytes(&self.pools[i]);
    }

    /// Settles the draw: the request gets the least any counter gave; the rest goes back.
    pub fn settle(self, now_ms: u64) -> u64 {
        let granted = self.got.iter().copied().min().unwrap_or(0);
        for (pool, got) in self.pools.iter().zip(&self.got) {
            pool.put(got - granted, now_ms);
            self.leases.note_bytes(pool);
        }
        granted
    }

    /// Everything drawn goes back (a look at the budget, or a call that failed).
    pub fn restore(self, now_ms: u64) {
        for (pool, got) in self.pools.iter().zip(&self.got) {
            pool.put(*got, now_ms);
            self.leases.note_bytes(pool);
        }
    }

    pub fn complete(&self, want: u64) -> bool {
        self.got.iter().all(|g| *g >= want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_pool_leases_bigger_batches_and_an_idle_one_gives_back() {
        let pool = TokenPool::new("k");
        let first = pool.take(0, 8, 1000);
        assert_eq!(
            first,
            Take::Lease {
                want: 1,
                give_back: 0,
                batch: true
            }
        );
        pool.leased(true, Some((1, 9)), 0);
        // Used up within the hold: the next batch is twice as big, and while it is being leased
        // another request of the key leases exactly one.
        let second = pool.take(10, 8, 1000);
        assert_eq!(
            second,
            Take::Lease {
                want: 2,
                give_back: 0,
                batch: true
            }
        );
        assert_eq!(
            pool.take(11, 8, 1000),
            Take::Lease {
                want: 1,
                give_back: 0,
                batch: false
            }
        );
        pool.leased(false, Some((1, 8)), 11);
        pool.leased(true, Some((2, 6)), 12);
        assert!(matches!(pool.take(13, 8, 1000), Take::Took(o) if o.remaining == 6));
        // The batch never grows past the ceiling.
        for _ in 0..10 {
            let Take::Lease { want, .. } = pool.take(20, 8, 1000) else {
                panic!("held nothing")
            };
            assert!(want <= 8);
            pool.leased(true, Some((want, 100)), 20);
            for _ in 1..want {
                assert!(matches!(pool.take(21, 8, 1000), Take::Took(_)));
            }
        }
        // Tokens held past the hold go back, and the batch shrinks.
        let Take::Lease { want, .. } = pool.take(30, 8, 1000) else {
            panic!()
        };
        pool.leased(true, Some((want, 100)), 30);
        assert_eq!(pool.expired(31), (0, 0));
        let hold = TOKEN_HOLD.as_micros() as u64;
        assert_eq!(pool.expired(30 + hold), (want - 1, 1000));
        assert!(pool.evictable(1 + (30 + hold) / 1000));
    }

    #[test]
    fn a_session_is_decided_here_only_within_its_confirmation_and_its_idle_timeout() {
        let lease = SessionLease::default();
        let t = 1_000_000;
        assert_eq!(lease.touch_here(t, 1000, 5000), (false, false));
        lease.confirmed(true, t);
        assert_eq!(lease.touch_here(t + 100, 1000, 5000), (true, true));
        assert_eq!(lease.touch_here(t + 200, 1000, 5000), (true, false));
        assert_eq!(lease.written(), Some((t + 200, 5000)));
        assert_eq!(lease.written(), None);
        // Past half the idle timeout since Redis confirmed it: asked again.
        assert_eq!(lease.touch_here(t + 501, 1000, 5000), (false, false));
        lease.confirmed(true, t + 501);
        // Idle here for longer than the timeout: asked again (another replica may have seen it).
        assert_eq!(lease.touch_here(t + 1600, 1000, 5000), (false, false));
        lease.confirmed(false, t + 1600);
        assert_eq!(lease.touch_here(t + 1601, 1000, 5000), (false, false));
    }

    #[test]
    fn the_heartbeat_gives_back_what_expired_once_and_forgets_empty_pools() {
        let leases = Leases::new(1000);
        let now_ms = 1_000_000;
        let pool = leases.token_pool("vg:rate:r:a:acme:x", now_ms);
        let Take::Lease { want, .. } = pool.take(now_ms * 1000, 8, 500) else {
            panic!()
        };
        pool.leased(true, Some((want, 10)), now_ms * 1000);
        // Used up at once: the next batch is two, one of which stays held.
        assert!(matches!(
            pool.take(now_ms * 1000 + 1, 8, 500),
            Take::Lease { want: 2, .. }
        ));
        pool.leased(true, Some((2, 8)), now_ms * 1000 + 1);
        leases.note_tokens(&pool);
        leases.note_tokens(&pool);
        let counter = Counter {
            place: super::super::Place::Key("vg:egress:e:a:acme:x".into()),
            window_start: 0,
            max: 1 << 20,
            reset_at_ms: now_ms + 3_600_000,
        };
        leases.put_back(std::slice::from_ref(&counter), 700, now_ms);
        assert_eq!(
            leases.expired(now_ms),
            (vec![], vec![]),
            "nothing expired yet"
        );
        let later = now_ms + BYTE_HOLD.as_millis() as u64;
        let (tokens, bytes) = leases.expired(later);
        assert_eq!(tokens, vec![("vg:rate:r:a:acme:x".to_string(), 1, 500)]);
        assert_eq!(
            bytes,
            vec![(counter.windowed_key(), 700, now_ms + 3_600_000)]
        );
        // Given back once; the emptied pools left the list.
        assert_eq!(leases.expired(later + 10_000), (vec![], vec![]));
        assert!(lock(&leases.holding).tokens.is_empty() && lock(&leases.holding).bytes.is_empty());
    }
}
