//! State in Redis, shared by every replica. Each operation is one Lua script, so it is atomic on
//! the server; keys carry TTLs so windows and sessions expire on their own. Time comes from Redis
//! (`TIME`), so replicas whose clocks drift still agree on windows and rate-limit arrival times.
//!
//! The connection is a multiplexed `ConnectionManager` (pipelined, reconnecting by itself), made in
//! the background: the proxy starts, and recovers, whether or not Redis is up at that moment.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::Script;
use vendorgate_policy::{GcraOutcome, RateRule};

use super::link::{Conn, Target};
use super::{Counter, SessionOutcome, StateError};

/// `vendorgate_policy::session_step`, in milliseconds. ARGV: idle (ms), TTL (ms), and optionally
/// the time (ms; else Redis's own). Returns 1 when refused.
///
/// The proxy passes the request's own time: a touch that reaches Redis late (sent while Redis was
/// paused or cut off, answered after the caller gave up and decided locally) is then judged at
/// the moment it was made, and never moves the last touch backwards. Judged at Redis's time on
/// arrival, such a touch would find the session idle for the length of the outage and sign the
/// agent out. Replicas' clocks need only agree to well within the idle timeout (minutes).
const SESSION: &str = r"
local now
if ARGV[3] then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local v = redis.call('HMGET', KEYS[1], 'last', 'dead')
if v[2] then return 1 end
if v[1] and (now - tonumber(v[1])) > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'dead', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if (not v[1]) or tonumber(v[1]) < now then redis.call('HSET', KEYS[1], 'last', now) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
";

/// Up to ARGV[3] GCRA steps at once, as `vendorgate_policy::gcra_take`, in microseconds (Redis
/// TIME's resolution; Lua's doubles hold them exactly), after giving back ARGV[4] steps taken
/// earlier and not used (a replica's expired lease, see `super::leases`). ARGV: interval (µs),
/// burst, steps wanted, steps given back, and optionally the time (µs; else Redis's own).
/// Returns {granted, retry_after_ms, remaining}.
const GCRA_TAKE: &str = r"
local now
if ARGV[5] then now = tonumber(ARGV[5]) else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - back * interval
if tat < now then tat = now end
local allow_at = tat - interval * (burst - 1)
local n = 0
if now >= allow_at then
  n = math.floor((now - allow_at) / interval) + 1
  if n > want then n = want end
end
local new_tat = tat + interval * n
if n > 0 or back > 0 then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
if n == 0 and want > 0 then return {0, math.ceil((allow_at - now) / 1000), 0} end
local rem = burst - math.ceil((new_tat - now) / interval)
if rem < 0 then rem = 0 end
return {n, 0, rem}
";

/// Each counter leased on its own (a replica's pools, see `super::leases`). KEYS: counters.
/// ARGV, three per counter: bytes asked, its max, its TTL (ms). Returns, per counter, the bytes
/// granted and what it has left after them.
const LEASE_EACH: &str = r"
local out = {}
for i = 1, #KEYS do
  local ask = tonumber(ARGV[3 * i - 2])
  local max = tonumber(ARGV[3 * i - 1])
  local left = max - tonumber(redis.call('GET', KEYS[i]) or '0')
  local grant = ask
  if left < grant then grant = left end
  if grant < 0 then grant = 0 end
  if grant > 0 then
    redis.call('INCRBY', KEYS[i], grant)
    redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
  end
  left = left - grant
  if left < 0 then left = 0 end
  out[2 * i - 1] = grant
  out[2 * i] = left
end
return out
";

/// KEYS: counters. ARGV[1]: bytes wanted; ARGV[1+i]: max of counter i; ARGV[1+n+i]: its TTL (ms).
const LEASE: &str = r"
local n = #KEYS
local grant = tonumber(ARGV[1])
for i = 1, n do
  local rem = tonumber(ARGV[1 + i]) - tonumber(redis.call('GET', KEYS[i]) or '0')
  if rem < grant then grant = rem end
end
if grant <= 0 then return 0 end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], grant)
  redis.call('PEXPIRE', KEYS[i], ARGV[1 + n + i])
end
return grant
";

const RELEASE: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], ARGV[1]) end
end
return 0
";

const REMAINING: &str = r"
local out = {}
for i = 1, #KEYS do
  local rem = tonumber(ARGV[i]) - tonumber(redis.call('GET', KEYS[i]) or '0')
  if rem < 0 then rem = 0 end
  out[i] = rem
end
return out
";

struct Scripts {
    session: Script,
    gcra: Script,
    lease: Script,
    lease_each: Script,
    release: Script,
    remaining: Script,
}

pub struct RedisState {
    conn: Arc<ArcSwapOption<Conn>>,
    scripts: Scripts,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl RedisState {
    /// Starts connecting in the background, retrying until Redis answers.
    pub fn connect(target: Target) -> Self {
        let conn: Arc<ArcSwapOption<Conn>> = Arc::new(ArcSwapOption::empty());
        let slot = conn.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                loop {
                    match target.connect().await {
                        Ok(conn) => {
                            tracing::info!(cluster = conn.is_cluster(), "connected to redis");
                            slot.store(Some(Arc::new(conn)));
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("redis not reachable yet: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        RedisState {
            conn,
            scripts: Scripts {
                session: Script::new(SESSION),
                gcra: Script::new(GCRA_TAKE),
                lease: Script::new(LEASE),
                lease_each: Script::new(LEASE_EACH),
                release: Script::new(RELEASE),
                remaining: Script::new(REMAINING),
            },
        }
    }

    /// Whether the first connection has been made (until then every operation fails).
    pub fn connected(&self) -> bool {
        self.conn.load().is_some()
    }

    pub(super) fn conn(&self) -> Result<Conn, StateError> {
        self.conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or_else(|| StateError::Unavailable("not connected to redis".into()))
    }
}

/// The operations, each one script. Time is Redis's (`TIME`) unless a caller gives its own
/// (`at`: the conformance test, which drives the scripts and the pure functions with one clock).
impl RedisState {
    /// Records activity on a session unless it has been idle for more than `idle_ms`; the record
    /// is kept `ttl_ms`.
    pub async fn touch_session(
        &self,
        key: &str,
        idle_ms: u64,
        ttl_ms: u64,
        at_ms: Option<u64>,
    ) -> Result<SessionOutcome, StateError> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.session.key(key);
        inv.arg(idle_ms).arg(ttl_ms.max(1));
        if let Some(now) = at_ms {
            inv.arg(now);
        }
        let dead: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if dead == 1 {
            SessionOutcome::IdleExpired
        } else {
            SessionOutcome::Active
        })
    }

    /// One GCRA step for `key` under `rule`.
    pub async fn rate(
        &self,
        rule: &RateRule,
        key: &str,
        at_us: Option<u64>,
    ) -> Result<GcraOutcome, StateError> {
        Ok(self.rate_take(rule, key, 1, 0, at_us).await?.1)
    }

    /// Up to `want` GCRA steps for `key` under `rule` at once, after giving back `give_back`
    /// taken earlier and unused. Returns how many were granted, and the outcome for the first
    /// (allowed when any was; the burst left after all of them).
    pub async fn rate_take(
        &self,
        rule: &RateRule,
        key: &str,
        want: u32,
        give_back: u32,
        at_us: Option<u64>,
    ) -> Result<(u32, GcraOutcome), StateError> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.gcra.key(key);
        inv.arg(rule.interval_us())
            .arg(rule.burst.max(1))
            .arg(want)
            .arg(give_back);
        if let Some(now) = at_us {
            inv.arg(now);
        }
        let (granted, retry, remaining): (i64, i64, i64) =
            inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        let outcome = GcraOutcome {
            allowed: granted > 0,
            new_tat: 0,
            retry_after_ms: retry.max(0) as u64,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
        };
        Ok((granted.max(0) as u32, outcome))
    }

    /// Leases `asks[k] = (i, bytes)` from counter `i` of `counters`, each on its own, in one
    /// call. Returns (granted, left after it) per ask.
    pub async fn lease_each(
        &self,
        counters: &[Counter],
        asks: &[(usize, u64)],
        now_ms: u64,
    ) -> Result<Vec<(u64, u64)>, StateError> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.lease_each.prepare_invoke();
        for (i, ask) in asks {
            let c = &counters[*i];
            inv.key(c.windowed_key());
            inv.arg(*ask)
                .arg(c.max)
                .arg(c.reset_at_ms.saturating_sub(now_ms).max(1000));
        }
        let out: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        if out.len() != asks.len() * 2 {
            return Err(StateError::Unavailable(format!(
                "lease: {} values for {} counters",
                out.len(),
                asks.len()
            )));
        }
        Ok(out
            .chunks(2)
            .map(|p| (p[0].max(0) as u64, p[1].max(0) as u64))
            .collect())
    }

    /// `key`'s theoretical arrival time (µs; 0: none), without a step.
    pub async fn rate_tat(&self, key: &str) -> Result<u64, StateError> {
        let mut conn = self.conn()?;
        let tat: Option<u64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(tat.unwrap_or(0))
    }

    /// Takes up to `want` bytes from every counter at once (see [`super::MemoryState::lease_now`]).
    pub async fn lease(
        &self,
        counters: &[Counter],
        want: u64,
        now_ms: u64,
    ) -> Result<u64, StateError> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.lease.prepare_invoke();
        for c in counters {
            inv.key(c.windowed_key());
        }
        inv.arg(want);
        for c in counters {
            inv.arg(c.max);
        }
        for c in counters {
            inv.arg(c.reset_at_ms.saturating_sub(now_ms).max(1000));
        }
        let grant: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(grant.max(0) as u64)
    }

    /// Gives back bytes leased but not sent.
    pub async fn release(&self, counters: &[Counter], amount: u64) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let mut inv = self.scripts.release.prepare_invoke();
        for c in counters {
            inv.key(c.windowed_key());
        }
        inv.arg(amount);
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// The remaining budget of each counter, in order (its window is in its key).
    pub async fn remaining(&self, counters: &[Counter]) -> Result<Vec<u64>, StateError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let mut inv = self.scripts.remaining.prepare_invoke();
        for c in counters {
            inv.key(c.windowed_key());
        }
        for c in counters {
            inv.arg(c.max);
        }
        let rem: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(rem.into_iter().map(|r| r.max(0) as u64).collect())
    }

    /// Adds each account's counts for an hour to its shared hash (`key`: fields `{hour}:r`, `:e`,
    /// `:b`), forgets the hour four weeks before, keeps the hash 29 days; one round trip for all.
    /// Returns the hour's totals across replicas, in order.
    pub async fn usage_add(
        &self,
        batch: &[(&str, u32, vendorgate_policy::detect::Usage)],
    ) -> Result<Vec<vendorgate_policy::detect::Usage>, StateError> {
        let mut conn = self.conn()?;
        let totals: Vec<u64> = if conn.is_cluster() {
            // A pipeline may not span slots in a cluster: one per account, all at once.
            let calls = batch.iter().map(|(key, hour, u)| {
                let mut pipe = redis::pipe();
                add_usage(&mut pipe, key, *hour, u);
                let mut conn = conn.clone();
                async move { pipe.query_async::<Vec<u64>>(&mut conn).await }
            });
            let mut all = Vec::with_capacity(batch.len() * 3);
            for one in futures_util::future::join_all(calls).await {
                all.extend(one.map_err(unavailable)?);
            }
            all
        } else {
            let mut pipe = redis::pipe();
            for (key, hour, u) in batch {
                add_usage(&mut pipe, key, *hour, u);
            }
            pipe.query_async(&mut conn).await.map_err(unavailable)?
        };
        Ok(totals
            .chunks(3)
            .map(|t| vendorgate_policy::detect::Usage {
                requests: t[0],
                exports: t.get(1).copied().unwrap_or(0),
                bytes: t.get(2).copied().unwrap_or(0),
            })
            .collect())
    }

    /// An account's shared hours (hour → usage), the ones past four weeks removed as it reads.
    pub async fn usage_history(
        &self,
        key: &str,
        now_hour: u32,
    ) -> Result<Vec<(u32, vendorgate_policy::detect::Usage)>, StateError> {
        let mut conn = self.conn()?;
        let fields: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut hours: std::collections::BTreeMap<u32, vendorgate_policy::detect::Usage> =
            Default::default();
        let mut stale = Vec::new();
        for (field, n) in fields {
            let Some((hour, metric)) = field.split_once(':') else {
                continue;
            };
            let Ok(hour) = hour.parse::<u32>() else {
                continue;
            };
            if hour + vendorgate_policy::detect::HOURS_KEPT <= now_hour {
                stale.push(field);
                continue;
            }
            let u = hours.entry(hour).or_default();
            match metric {
                "r" => u.requests = n,
                "e" => u.exports = n,
                "b" => u.bytes = n,
                _ => {}
            }
        }
        if !stale.is_empty() {
            let _: Result<i64, _> = redis::cmd("HDEL")
                .arg(key)
                .arg(stale)
                .query_async(&mut conn)
                .await;
        }
        Ok(hours.into_iter().collect())
    }

    /// Writes hours an account's history lacks (`HSETNX`: what is already shared wins, so every
    /// replica may import the same file).
    pub async fn usage_import(
        &self,
        key: &str,
        hours: &[(u32, vendorgate_policy::detect::Usage)],
    ) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        for (hour, u) in hours {
            for (m, n) in [("r", u.requests), ("e", u.exports), ("b", u.bytes)] {
                pipe.cmd("HSETNX")
                    .arg(key)
                    .arg(format!("{hour}:{m}"))
                    .arg(n)
                    .ignore();
            }
        }
        pipe.cmd("PEXPIRE").arg(key).arg(USAGE_TTL_MS).ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }
}

/// How long an account's shared hours outlive its last activity: the four weeks they serve, and a
/// day.
const USAGE_TTL_MS: u64 = 29 * 86_400_000;

/// An account's counts for an hour added to its hash, the hour four weeks before forgotten, the
/// hash kept 29 days: three totals answered.
fn add_usage(
    pipe: &mut redis::Pipeline,
    key: &str,
    hour: u32,
    u: &vendorgate_policy::detect::Usage,
) {
    for (m, n) in [("r", u.requests), ("e", u.exports), ("b", u.bytes)] {
        pipe.cmd("HINCRBY")
            .arg(key)
            .arg(format!("{hour}:{m}"))
            .arg(n);
    }
    let old = hour.saturating_sub(vendorgate_policy::detect::HOURS_KEPT);
    pipe.cmd("HDEL")
        .arg(key)
        .arg(format!("{old}:r"))
        .arg(format!("{old}:e"))
        .arg(format!("{old}:b"))
        .ignore();
    pipe.cmd("PEXPIRE").arg(key).arg(USAGE_TTL_MS).ignore();
}
