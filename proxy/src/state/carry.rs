//! What a replica decided from its own memory while Redis was away (`on_state_error = "local"`),
//! carried into Redis once it answers again, so the shared state knows what happened meanwhile.
//!
//! Without it an outage is forgotten when Redis returns: the requests and bytes a replica admitted
//! locally never count against the shared limits (an account that spent its whole export budget
//! during the outage gets it all again), and a session kept alive locally is found idle in Redis
//! (its last touch there is from before the outage) and every agent active through a long outage
//! is signed out at once.
//!
//! Kept only on the fallback path, which a healthy Redis never takes: the request path pays
//! nothing for it otherwise. Carried, each kind is added to what Redis holds, never replacing it
//! (other replicas went on, or fell back too):
//! - a rate limit: its theoretical arrival time advances by one interval per request admitted
//!   (the GCRA step without the check: those requests happened);
//! - a byte counter: the bytes leased less those given back, added to its window's key;
//! - a session: its last touch moves forward to the latest local one, unless Redis found it idle.
//!
//! The bound this gives: during an outage each replica enforces every limit on its own, so an
//! account can get up to R times a limit across R replicas; after it, the shared counters hold the
//! sum and refuse until it is paid back. A step that reached Redis but was answered too late
//! (Redis paused, a partition healing) is both applied there and carried: it counts twice, which
//! refuses sooner and never admits more. Sessions are judged at the request's time, so a late
//! touch does no harm (see the session script in [`super::redis`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use redis::Script;

use super::{Counter, StateError};

/// Advances a rate limit's TAT by ARGV[2] intervals of ARGV[1] µs from max(TAT, now); a negative
/// count moves it back (requests a replica leased and gave back unused, see [`super::leases`]).
const CARRY_RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[2])
if n >= 0 and tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1]) * n
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return 0
";

/// Adds ARGV[1] bytes (may be negative) to a counter that lives until ARGV[2] (ms since the epoch).
const CARRY_BYTES: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v <= 0 then redis.call('DEL', KEYS[1]) else redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 0
";

/// Moves a session's last touch forward to ARGV[1] (ms) unless it is dead; keeps it ARGV[2] ms.
const CARRY_SESSION: &str = r"
local v = redis.call('HMGET', KEYS[1], 'last', 'dead')
if v[2] then return 0 end
if (not v[1]) or tonumber(v[1]) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
";

#[derive(Default, Clone)]
struct Held {
    /// Key → (interval µs, requests admitted; negative: given back).
    rates: HashMap<String, (u64, i64)>,
    /// Windowed key → (bytes, window end in ms since the epoch).
    bytes: HashMap<String, (i64, u64)>,
    /// Key → (last touch ms, TTL ms).
    sessions: HashMap<String, (u64, u64)>,
}

/// One thing to carry: a rate limit's requests (key, interval µs, count), a counter's bytes (key,
/// amount, window end), a session's last touch (key, last ms, TTL ms).
enum Fact {
    Rate(String, u64, i64),
    Bytes(String, i64, u64),
    Session(String, u64, u64),
}

impl Held {
    fn len(&self) -> usize {
        self.rates.len() + self.bytes.len() + self.sessions.len()
    }

    fn facts(self) -> impl Iterator<Item = Fact> {
        let rates = self
            .rates
            .into_iter()
            .map(|(k, (i, n))| Fact::Rate(k, i, n));
        let bytes = self
            .bytes
            .into_iter()
            .map(|(k, (b, u))| Fact::Bytes(k, b, u));
        let sessions = self
            .sessions
            .into_iter()
            .map(|(k, (l, t))| Fact::Session(k, l, t));
        rates.chain(bytes).chain(sessions)
    }

    fn add(&mut self, fact: Fact) {
        match fact {
            Fact::Rate(k, i, n) => {
                self.rates.insert(k, (i, n));
            }
            Fact::Bytes(k, b, u) => {
                self.bytes.insert(k, (b, u));
            }
            Fact::Session(k, l, t) => {
                self.sessions.insert(k, (l, t));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.rates.is_empty() && self.bytes.is_empty() && self.sessions.is_empty()
    }

    /// What to hold again after a flush whose outcome is unknown (it failed, or its answer was
    /// lost, after Redis may have applied it): what was admitted (carried twice, it refuses
    /// sooner) but not what was given back (given back twice, it would admit more than the limit);
    /// a give-back lost this way leaves the limit that much stricter until its window ends.
    fn unsure(mut self) -> Held {
        self.rates.retain(|_, (_, n)| *n > 0);
        self.bytes.retain(|_, (b, _)| *b > 0);
        self
    }

    /// Puts back what could not be carried, under what was held meanwhile.
    fn merge(&mut self, other: Held) {
        for (k, (interval, n)) in other.rates {
            let e = self.rates.entry(k).or_insert((interval, 0));
            e.1 += n;
        }
        for (k, (b, until)) in other.bytes {
            let e = self.bytes.entry(k).or_insert((0, until));
            e.0 += b;
        }
        for (k, (last, ttl)) in other.sessions {
            let e = self.sessions.entry(k).or_insert((last, ttl));
            e.0 = e.0.max(last);
        }
    }
}

/// Bounds what is held while Redis stays away: past it, the oldest kind of fact is simply
/// counted as lost (a very long outage with a very large fleet of accounts).
const MAX_KEYS: usize = 200_000;

pub struct Carry {
    held: Mutex<Held>,
    /// Something is held: the flusher's check without the lock.
    pending: AtomicBool,
    rate: Script,
    bytes: Script,
    session: Script,
}

impl Default for Carry {
    fn default() -> Self {
        Carry {
            held: Mutex::default(),
            pending: AtomicBool::new(false),
            rate: Script::new(CARRY_RATE),
            bytes: Script::new(CARRY_BYTES),
            session: Script::new(CARRY_SESSION),
        }
    }
}

impl Carry {
    fn with(&self, f: impl FnOnce(&mut Held)) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let size = held.rates.len() + held.bytes.len() + held.sessions.len();
        if size < MAX_KEYS {
            f(&mut held);
            self.pending.store(true, Ordering::Relaxed);
        }
    }

    /// A request admitted locally under a rate limit.
    pub fn rate(&self, key: &str, interval_us: u64) {
        self.rates(key, interval_us, 1);
    }

    /// `n` requests admitted locally under a rate limit (negative: leased and given back).
    pub fn rates(&self, key: &str, interval_us: u64, n: i64) {
        self.with(|h| {
            h.rates.entry(key.to_string()).or_insert((interval_us, 0)).1 += n;
        });
    }

    /// Bytes leased (positive) or given back (negative) locally on each counter.
    pub fn bytes(&self, counters: &[Counter], amount: i64) {
        if amount == 0 {
            return;
        }
        self.with(|h| {
            for c in counters {
                h.bytes
                    .entry(c.windowed_key())
                    .or_insert((0, c.reset_at_ms))
                    .0 += amount;
            }
        });
    }

    /// Bytes leased (positive) or given back (negative) on one counter's windowed key, whose
    /// window ends at `until_ms`.
    pub fn bytes_at(&self, windowed_key: String, until_ms: u64, amount: i64) {
        if amount == 0 {
            return;
        }
        self.with(|h| h.bytes.entry(windowed_key).or_insert((0, until_ms)).0 += amount);
    }

    /// A session touched locally at `now_ms`.
    pub fn session(&self, key: &str, now_ms: u64, ttl_ms: u64) {
        self.with(|h| {
            let e = h
                .sessions
                .entry(key.to_string())
                .or_insert((now_ms, ttl_ms));
            e.0 = e.0.max(now_ms);
        });
    }

    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Carries everything held into Redis in one transaction, waiting up to `limit`; on failure
    /// it is all held again for the next try. Returns how many keys were carried.
    pub async fn flush(
        &self,
        conn: &mut super::link::Conn,
        limit: std::time::Duration,
    ) -> Result<usize, StateError> {
        let held = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            self.pending.store(false, Ordering::Relaxed);
            std::mem::take(&mut *held)
        };
        if held.is_empty() {
            return Ok(0);
        }
        if conn.is_cluster() {
            return self.flush_each(conn, held, limit).await;
        }
        // One transaction: carried all or not at all (a reply lost or late after EXEC would carry
        // it twice on the retry, which errs toward refusing).
        let mut pipe = redis::pipe();
        pipe.atomic();
        for script in [&self.rate, &self.bytes, &self.session] {
            pipe.load_script(script).ignore();
        }
        let keys = held.len();
        for fact in held.clone().facts() {
            pipe.invoke_script(&self.invocation(&fact)).ignore();
        }
        let err = match tokio::time::timeout(limit, pipe.query_async::<()>(conn)).await {
            Ok(Ok(())) => return Ok(keys),
            Ok(Err(e)) => StateError::Unavailable(e.to_string()),
            Err(_) => StateError::Timeout,
        };
        self.with(|h| h.merge(held.unsure()));
        Err(err)
    }

    /// The script call that carries `fact`.
    fn invocation(&self, fact: &Fact) -> redis::ScriptInvocation<'_> {
        match fact {
            Fact::Rate(key, interval, n) => {
                let mut inv = self.rate.key(key);
                inv.arg(*interval).arg(*n);
                inv
            }
            Fact::Bytes(key, amount, until) => {
                let mut inv = self.bytes.key(key);
                inv.arg(*amount).arg(*until);
                inv
            }
            Fact::Session(key, last, ttl) => {
                let mut inv = self.session.key(key);
                inv.arg(*last).arg((*ttl).max(1));
                inv
            }
        }
    }

    /// The flush in a Redis Cluster, where a transaction cannot span slots: each fact is its own
    /// script call (each atomic), all sent at once; those that fail are held again, alone.
    async fn flush_each(
        &self,
        conn: &super::link::Conn,
        held: Held,
        limit: std::time::Duration,
    ) -> Result<usize, StateError> {
        let keys = held.len();
        // Should no answer come in time, nothing is known of any of them.
        let unsure = held.clone();
        let calls = held.facts().map(|fact| {
            let mut conn = conn.clone();
            async move {
                let done = self.invocation(&fact).invoke_async::<()>(&mut conn).await;
                let mut left = Held::default();
                if done.is_err() {
                    left.add(fact);
                }
                left
            }
        });
        let all = futures_util::future::join_all(calls);
        let failed = match tokio::time::timeout(limit, all).await {
            Ok(results) => results.into_iter().fold(Held::default(), |mut acc, h| {
                acc.merge(h);
                acc
            }),
            Err(_) => {
                self.with(|h| h.merge(unsure.unsure()));
                return Err(StateError::Timeout);
            }
        };
        if failed.is_empty() {
            return Ok(keys);
        }
        self.with(|h| h.merge(failed.unsure()));
        Err(StateError::Unavailable(
            "some facts were not carried".into(),
        ))
    }
}
