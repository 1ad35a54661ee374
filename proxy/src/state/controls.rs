//! The controls in force on this proxy (locks and just-in-time grants, [`Controls`]), and every
//! response stream in flight, so that a new lock both refuses the next request of its target
//! (through [`vendorgate_policy::Policy::decide`], which reads [`ControlStore::current`]) and cuts
//! the target's streams already under way, and a grant that ends cuts what it was streaming.
//!
//! **Persisted:** the set is written to a small JSON file (atomically: a temporary file, fsync,
//! rename) before a change takes effect, and read at start; a file that cannot be read stops the
//! start rather than let the proxy run without the locks it was given (fail closed).
//!
//! **Shared** (`state.backend = "redis"`): locks and grants live in two Redis hashes with one
//! version counter; a change is one script (compare, write, bump the version, publish it), so two
//! replicas changing the same grant at once cannot both win. Every replica follows the channel and
//! also checks the version every second (a missed message is caught), fetching the set when it
//! moved: a lock made on one replica cuts streams on all of them within a second. The file is then
//! this replica's last-known copy. While Redis cannot confirm the list for longer than
//! [`STALE_AFTER`], `locks.on_state_error = "strict"` refuses everyone (the set says `unknown`) and
//! `"last_known"` keeps deciding with the copy; either way it is logged.
//!
//! **Cutting:** each allowed response registers a [`Watched`] entry (its client address, who it
//! is, and the grant that allowed it, if one did). A new lock walks the entries, marks those it
//! matches and wakes their bodies, which end the stream at once (an HTTP/1.1 connection closed
//! short, an HTTP/2 stream reset); so does a grant leaving the set (expired or revoked), for the
//! streams it allowed. A body that is waiting for the upstream is woken, so an idle stream is cut
//! as fast as a busy one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;

use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use atomic_waker::AtomicWaker;
use futures_util::StreamExt;
use redis::Script;

use super::link::{Conn, Target};
use vendorgate_policy::config::OnLockStateError;
use vendorgate_policy::{Controls, Grant, GrantState, Lock, Reason, Subject};

/// How long the shared list may go unconfirmed before `strict` refuses everyone.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// One change to a hash entry, if it still holds what the caller saw. KEYS: hash, version. ARGV:
/// id, expected (`*`: whatever is there; empty: nothing), new JSON (empty: delete), channel.
/// Returns 1 if it changed something (and bumped and published the version), else 0.
const CHANGE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] ~= '*' and (cur or '') ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  if not cur then
    return 0
  end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], v)
return 1
";

/// What a change expects to find: anything, nothing, or this exact entry.
enum Expect<'a> {
    Anything,
    Nothing,
    Exactly(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlsError {
    #[error("lock and grant state file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("writing the lock and grant state file {path}: {cause}")]
    Write { path: PathBuf, cause: String },
    #[error("locks and grants in redis: {0}")]
    Shared(String),
}

/// The controls' home in Redis, when they are shared.
struct Shared {
    target: Target,
    conn: ArcSwapOption<Conn>,
    /// `{prefix}:locks` and `{prefix}:grants`: id → JSON.
    locks_hash: String,
    grants_hash: String,
    version_key: String,
    channel: String,
    timeout: Duration,
    /// The version last fetched (-1: none yet).
    seen: std::sync::atomic::AtomicI64,
    /// When Redis last confirmed the list.
    confirmed: Mutex<Option<Instant>>,
    change: Script,
}

/// Who a stream in flight is, for the locks: implemented by the cached identity, so the registry
/// holds a pointer it already has rather than copies of its strings.
pub trait Who: Send + Sync {
    fn vendor(&self) -> &str;
    fn account(&self) -> &str;
    fn sid(&self) -> Option<&str>;
    fn jti(&self) -> Option<&str>;
}

struct Stream {
    client_ip: IpAddr,
    who: Arc<dyn Who>,
    /// The grant that allowed it, if one did.
    grant: Option<Box<str>>,
    /// The lock that cut it, and the refusal it means, once one has.
    cut_by: OnceLock<(String, Reason)>,
    waker: AtomicWaker,
}

impl Stream {
    fn subject(&self) -> Subject<'_> {
        Subject {
            client_ip: self.client_ip,
            vendor: Some(self.who.vendor()),
            account: Some(self.who.account()),
            sid: self.who.sid(),
            jti: self.who.jti(),
            grant: self.grant.as_deref(),
        }
    }
}

const SHARDS: usize = 16;

pub struct ControlStore {
    current: ArcSwap<Controls>,
    file: Option<PathBuf>,
    shared: Option<Shared>,
    on_error: OnLockStateError,
    /// Changes are made one at a time: read, persist, swap.
    change: tokio::sync::Mutex<()>,
    streams: Arc<Streams>,
}

#[derive(Default)]
struct Streams {
    shards: [Mutex<HashMap<u64, Arc<Stream>>>; SHARDS],
    next: AtomicU64,
}

impl Shared {
    async fn conn(&self) -> Result<Conn, ControlsError> {
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let conn = self
            .target
            .connect()
            .await
            .map_err(|e| ControlsError::Shared(e.to_string()))?;
        self.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, ControlsError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| ControlsError::Shared("no answer in time".into()))?
            .map_err(|e| ControlsError::Shared(e.to_string()))
    }

    /// Runs [`CHANGE`] on `hash`: true if it changed something.
    async fn change(
        &self,
        hash: &str,
        id: &str,
        expect: Expect<'_>,
        new: Option<&str>,
    ) -> Result<bool, ControlsError> {
        let expected = match expect {
            Expect::Anything => "*",
            Expect::Nothing => "",
            Expect::Exactly(json) => json,
        };
        let mut inv = self.change.prepare_invoke();
        inv.key(hash)
            .key(&self.version_key)
            .arg(id)
            .arg(expected)
            .arg(new.unwrap_or(""))
            .arg(&self.channel);
        let changed: i64 = self.run(inv).await?;
        Ok(changed == 1)
    }

    /// The set, if its version moved since it was last fetched.
    async fn fetch(&self) -> Result<Option<Controls>, ControlsError> {
        let mut conn = self.conn().await?;
        let fail = |e: redis::RedisError| ControlsError::Shared(e.to_string());
        let query = async {
            let version: Option<i64> = redis::cmd("GET")
                .arg(&self.version_key)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            let version = version.unwrap_or(0);
            if version == self.seen.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let (locks, grants): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(&self.locks_hash)
                .cmd("HGETALL")
                .arg(&self.grants_hash)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            let mut locks: Vec<Lock> = parse_all(locks, "lock");
            locks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            let mut grants: Vec<Grant> = parse_all(grants, "grant");
            grants.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
            self.seen.store(version, Ordering::Relaxed);
            Ok(Some(Controls {
                locks,
                grants,
                unknown: false,
            }))
        };
        tokio::time::timeout(self.timeout * 2, query)
            .await
            .map_err(|_| ControlsError::Shared("no answer in time".into()))?
    }
}

/// The entries of a hash that parse; one that does not is logged and left out.
fn parse_all<T: serde::de::DeserializeOwned>(all: HashMap<String, String>, what: &str) -> Vec<T> {
    all.into_iter()
        .filter_map(|(id, json)| match serde_json::from_str(&json) {
            Ok(item) => Some(item),
            Err(e) => {
                tracing::error!(id = %id, "a {what} in redis is unreadable: {e}");
                None
            }
        })
        .collect()
}

/// A response stream's entry in the registry, removed when the body is dropped.
pub struct Watched {
    stream: Arc<Stream>,
    id: u64,
    streams: Arc<Streams>,
}

impl Watched {
    /// The id of the lock that cut this stream, and its refusal (`locked`, `session_revoked`).
    pub fn cut_by(&self) -> Option<(&str, Reason)> {
        self.stream.cut_by.get().map(|(id, r)| (id.as_str(), *r))
    }

    /// The rule that cut it, for the request's record: the lock's, or the grant's that ended (the
    /// two ways a stream is cut here, told apart by the refusal each means).
    pub fn cut_rule(&self) -> Option<String> {
        let (id, reason) = self.cut_by()?;
        Some(match reason {
            Reason::ClassNotPermitted => format!("grants[{id}]: ended, stream cut"),
            _ => format!("locks[{id}]: stream cut"),
        })
    }

    /// Wake `waker` when a lock cuts the stream.
    pub fn register(&self, waker: &Waker) {
        self.stream.waker.register(waker);
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let shard = &self.streams.shards[self.id as usize % SHARDS];
        shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl ControlStore {
    /// The controls persisted in `file` (none if it does not exist yet); `None`: not persisted.
    pub fn load(file: Option<PathBuf>) -> Result<Self, ControlsError> {
        let set = match &file {
            Some(path) => read(path)?,
            None => Controls::default(),
        };
        Ok(ControlStore {
            current: ArcSwap::from_pointee(set),
            file,
            shared: None,
            on_error: OnLockStateError::Strict,
            change: tokio::sync::Mutex::new(()),
            streams: Arc::default(),
        })
    }

    /// Controls shared through Redis at `target`, keys under `prefix` (one hash tag in a
    /// cluster, see [`super::keys::KeyPrefix::shared`]); `file` keeps the last-known copy. Until
    /// Redis first confirms the list, `strict` refuses everyone.
    pub fn shared(
        file: PathBuf,
        target: Target,
        prefix: &str,
        timeout: Duration,
        on_error: OnLockStateError,
    ) -> Result<Self, ControlsError> {
        let mut store = ControlStore::load(Some(file))?;
        store.on_error = on_error;
        // The version and channel keep the names they had when only locks were shared, so
        // replicas of the release before still follow the locks.
        store.shared = Some(Shared {
            target,
            conn: ArcSwapOption::empty(),
            locks_hash: format!("{prefix}:locks"),
            grants_hash: format!("{prefix}:grants"),
            version_key: format!("{prefix}:locks:version"),
            channel: format!("{prefix}:locks:changed"),
            timeout,
            seen: std::sync::atomic::AtomicI64::new(-1),
            confirmed: Mutex::new(None),
            change: Script::new(CHANGE),
        });
        if on_error == OnLockStateError::Strict {
            let mut set = Controls::clone(&store.current.load());
            set.unknown = true;
            store.current.store(Arc::new(set));
        }
        Ok(store)
    }

    /// The controls in force now (what a request is decided against).
    pub fn current(&self) -> arc_swap::Guard<Arc<Controls>> {
        self.current.load()
    }

    /// Puts `lock` in force: persisted first (in Redis, or the file), then seen by every new
    /// request, then every stream of its target in flight is cut. Returns how many streams were
    /// cut here (other replicas cut theirs as they learn of it).
    pub async fn add(&self, lock: Lock) -> Result<usize, ControlsError> {
        let json = to_json(&lock)?;
        let _one = self.change.lock().await;
        if let Some(shared) = &self.shared {
            let hash = &shared.locks_hash;
            shared
                .change(hash, &lock.id, Expect::Anything, Some(&json))
                .await?;
            return self.refresh_held().await;
        }
        let mut set = Controls::clone(&self.current.load());
        set.locks.push(lock.clone());
        self.persist(&set)?;
        self.current.store(Arc::new(set));
        Ok(self.cut(&lock))
    }

    /// Removes the lock with `id`; `None` if there is none (or another replica removed it first).
    pub async fn remove(&self, id: &str) -> Result<Option<Lock>, ControlsError> {
        let _one = self.change.lock().await;
        let found = self
            .current
            .load()
            .locks
            .iter()
            .find(|l| l.id == id)
            .cloned();
        if let Some(shared) = &self.shared {
            let hash = &shared.locks_hash;
            let removed = shared.change(hash, id, Expect::Anything, None).await?;
            self.refresh_held().await?;
            return Ok(found.filter(|_| removed));
        }
        let Some(lock) = found else { return Ok(None) };
        let mut set = Controls::clone(&self.current.load());
        set.locks.retain(|l| l.id != id);
        self.persist(&set)?;
        self.current.store(Arc::new(set));
        Ok(Some(lock))
    }

    /// Changes one grant if it is still as the caller saw it (`was`; `None`: absent): puts `new`
    /// in its place, or removes it (`new` is `None`), which cuts the streams it allowed. False if
    /// it had changed meanwhile (here or on another replica), and nothing was done.
    pub async fn change_grant(
        &self,
        was: Option<&Grant>,
        new: Option<&Grant>,
    ) -> Result<bool, ControlsError> {
        let id = match (was, new) {
            (_, Some(g)) | (Some(g), None) => g.id.clone(),
            (None, None) => return Ok(false),
        };
        let new_json = new.map(to_json).transpose()?;
        let _one = self.change.lock().await;
        if let Some(shared) = &self.shared {
            let was_json = was.map(to_json).transpose()?;
            let expect = was_json.as_deref().map_or(Expect::Nothing, Expect::Exactly);
            let hash = &shared.grants_hash;
            let changed = shared
                .change(hash, &id, expect, new_json.as_deref())
                .await?;
            self.refresh_held().await?;
            return Ok(changed);
        }
        let mut set = Controls::clone(&self.current.load());
        if set.grant(&id) != was {
            return Ok(false);
        }
        set.grants.retain(|g| g.id != id);
        if let Some(g) = new {
            set.grants.push(g.clone());
        }
        self.persist(&set)?;
        let old = self.current.swap(Arc::new(set));
        self.cut_ended_grants(&old);
        Ok(true)
    }

    /// The locks in force now that have expired by `now` (seconds).
    pub fn due(&self, now: u64) -> Vec<Lock> {
        self.current.load().expired(now).cloned().collect()
    }

    /// The grants whose time is over by `now` (lapsed unapproved, or expired).
    pub fn grants_due(&self, now: u64) -> Vec<Grant> {
        self.current.load().grants_over(now).cloned().collect()
    }

    /// Whether the shared store is where expiries are settled: then only the replica whose
    /// removal succeeds records one (see [`ControlStore::remove`]); alone, it is recorded first.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Follows the shared list: the channel for changes, and a version check every second for a
    /// missed message or an outage. Runs until the process ends.
    pub async fn follow(&'static self) {
        let Some(shared) = &self.shared else { return };
        let checks = async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                self.refresh().await;
            }
        };
        let messages = async {
            loop {
                let client = shared.target.client().await;
                let pubsub = match client {
                    Ok(client) => client.get_async_pubsub().await,
                    Err(e) => Err(e),
                };
                match pubsub {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&shared.channel).await.is_ok() {
                            let mut stream = pubsub.on_message();
                            while stream.next().await.is_some() {
                                self.refresh().await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!("lock channel: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::join!(checks, messages);
    }

    /// Fetches the shared list if its version moved, applies it (cutting the streams of locks
    /// new here), and keeps count of how long Redis has gone unconfirmed.
    async fn refresh(&self) {
        let _one = self.change.lock().await;
        let _ = self.refresh_held().await;
    }

    async fn refresh_held(&self) -> Result<usize, ControlsError> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        match shared.fetch().await {
            Ok(fetched) => {
                *shared.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                let Some(set) = fetched else {
                    if self.current.load().unknown {
                        let mut set = Controls::clone(&self.current.load());
                        set.unknown = false;
                        self.current.store(Arc::new(set));
                    }
                    return Ok(0);
                };
                Ok(self.apply(set))
            }
            Err(e) => {
                let confirmed = *shared.confirmed.lock().unwrap_or_else(|p| p.into_inner());
                let stale = confirmed.is_none_or(|t| t.elapsed() > STALE_AFTER);
                if stale
                    && self.on_error == OnLockStateError::Strict
                    && !self.current.load().unknown
                {
                    tracing::error!("the lock list cannot be confirmed ({e}): refusing every request (locks.on_state_error = \"strict\")");
                    let mut set = Controls::clone(&self.current.load());
                    set.unknown = true;
                    self.current.store(Arc::new(set));
                }
                Err(e)
            }
        }
    }

    /// Puts a fetched set in force: streams of locks new here are cut, and those of grants that
    /// left it; the file keeps a copy.
    fn apply(&self, set: Controls) -> usize {
        let old = self.current.load_full();
        let mut cut = 0;
        for lock in &set.locks {
            if !old.locks.iter().any(|l| l.id == lock.id) {
                cut += self.cut(lock);
            }
        }
        if let Err(e) = self.persist(&set) {
            tracing::warn!("keeping the last-known locks and grants: {e}");
        }
        self.current.store(Arc::new(set));
        cut + self.cut_ended_grants(&old)
    }

    /// Cuts the streams allowed by grants that were in `old` and are no longer in force: ended
    /// grants take what they were streaming with them (refused as `class_not_permitted`).
    fn cut_ended_grants(&self, old: &Controls) -> usize {
        let now = crate::clock::now_ms() / 1000;
        let current = self.current.load();
        let mut cut = 0;
        for gone in old.grants.iter().filter(|g| {
            current
                .grant(&g.id)
                .is_none_or(|g| g.state(now) != GrantState::Active)
        }) {
            cut += self.cut_where(&gone.id, Reason::ClassNotPermitted, |s| {
                s.grant.as_deref() == Some(gone.id.as_str())
            });
        }
        cut
    }

    /// Registers a response stream for cutting. `now` is checked against the locks once more: a
    /// lock made between the decision and this registration still cuts the stream.
    pub fn watch(&self, client_ip: IpAddr, who: Arc<dyn Who>, grant: Option<&str>) -> Watched {
        let streams = &self.streams;
        let id = streams.next.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(Stream {
            client_ip,
            who,
            grant: grant.map(Box::from),
            cut_by: OnceLock::new(),
            waker: AtomicWaker::new(),
        });
        streams.shards[id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stream.clone());
        let current = self.current.load();
        if !current.is_empty() {
            let now = crate::clock::now_ms() / 1000;
            if let Some(lock) = current.matching(&stream.subject(), now) {
                let _ = stream.cut_by.set((lock.id.clone(), lock.reason()));
            }
        }
        // A grant that ended between the decision and now takes the stream with it.
        if let Some(g) = grant {
            let active = current
                .grant(g)
                .is_some_and(|g| g.state(crate::clock::now_ms() / 1000) == GrantState::Active);
            if !active {
                let _ = stream
                    .cut_by
                    .set((g.to_string(), Reason::ClassNotPermitted));
            }
        }
        Watched {
            stream,
            id,
            streams: self.streams.clone(),
        }
    }

    /// Marks and wakes every stream in flight that `lock` targets.
    fn cut(&self, lock: &Lock) -> usize {
        self.cut_where(&lock.id, lock.reason(), |s| lock.matches(&s.subject()))
    }

    /// Marks every stream in flight that `hit` picks as cut by `by` (a lock's or a grant's id) with
    /// `reason`, and wakes it. Returns how many it cut (one already cut is not counted again).
    fn cut_where(&self, by: &str, reason: Reason, hit: impl Fn(&Stream) -> bool) -> usize {
        let mut cut = 0;
        for shard in &self.streams.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for stream in shard.values() {
                if hit(stream) && stream.cut_by.set((by.to_string(), reason)).is_ok() {
                    stream.waker.wake();
                    cut += 1;
                }
            }
        }
        cut
    }

    /// Streams in flight now.
    pub fn streams(&self) -> usize {
        self.streams
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn persist(&self, set: &Controls) -> Result<(), ControlsError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let fail = |cause: std::io::Error| ControlsError::Write {
            path: path.clone(),
            cause: cause.to_string(),
        };
        let text = serde_json::to_string_pretty(set).map_err(|e| fail(e.into()))?;
        write_atomically(path, text.as_bytes()).map_err(fail)
    }
}

/// What the file was called when it held only locks.
const LEGACY_FILE: &str = "locks.json";

fn to_json<T: serde::Serialize>(item: &T) -> Result<String, ControlsError> {
    serde_json::to_string(item).map_err(|e| ControlsError::Shared(e.to_string()))
}

fn read(path: &Path) -> Result<Controls, ControlsError> {
    let fail = |cause: String| ControlsError::Read {
        path: path.to_path_buf(),
        cause,
    };
    // Before grants, the file held only locks and was called `locks.json`: read it until the
    // first change writes the new one.
    let legacy = path.with_file_name(LEGACY_FILE);
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && legacy.exists() => {
            std::fs::read_to_string(&legacy)
        }
        other => other,
    };
    match text {
        Ok(text) => serde_json::from_str(&text).map_err(|e| fail(e.to_string())),
        // Nothing was ever written there: no locks (making one will then say why it cannot be kept).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Controls::default())
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// A temporary file beside `path`, synced, renamed over it, and the directory synced: a crash
/// leaves the old set or the new one, never half of either.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vendorgate_policy::{Grant, LockTarget};

    use super::*;

    struct Agent(&'static str);

    impl Who for Agent {
        fn vendor(&self) -> &str {
            "acme"
        }
        fn account(&self) -> &str {
            self.0
        }
        fn sid(&self) -> Option<&str> {
            None
        }
        fn jti(&self) -> Option<&str> {
            None
        }
    }

    fn lock(id: &str, account: &str, expires_at: Option<u64>) -> Lock {
        Lock {
            id: id.into(),
            target: LockTarget::Account(account.into()),
            message: "m".into(),
            created_by: "soc".into(),
            created_at: 1,
            expires_at,
            revocation: false,
        }
    }

    #[tokio::test]
    async fn a_lock_cuts_its_targets_streams_persists_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controls.json");
        let locks = ControlStore::load(Some(file.clone())).unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let seven = locks.watch(ip, Arc::new(Agent("agent-7")), None);
        let eight = locks.watch(ip, Arc::new(Agent("agent-8")), None);
        assert_eq!(locks.add(lock("lk_1", "agent-7", None)).await.unwrap(), 1);
        assert_eq!(seven.cut_by(), Some(("lk_1", Reason::Locked)));
        assert_eq!(eight.cut_by(), None);
        // A stream that starts after the lock is cut as it registers.
        assert_eq!(
            locks.watch(ip, Arc::new(Agent("agent-7")), None).cut_by(),
            Some(("lk_1", Reason::Locked))
        );
        drop((seven, eight));
        assert_eq!(locks.streams(), 0);
        // Read back from the file by a new process.
        locks.add(lock("lk_2", "agent-9", Some(100))).await.unwrap();
        let again = ControlStore::load(Some(file.clone())).unwrap();
        assert_eq!(again.current().locks.len(), 2);
        let due: Vec<String> = again.due(100).into_iter().map(|l| l.id).collect();
        assert_eq!(due, ["lk_2"]);
        assert_eq!(again.remove("lk_2").await.unwrap().unwrap().id, "lk_2");
        assert_eq!(again.remove("lk_1").await.unwrap().unwrap().id, "lk_1");
        assert!(again.remove("lk_1").await.unwrap().is_none());
        assert!(ControlStore::load(Some(file.clone()))
            .unwrap()
            .current()
            .is_empty());
        // A file that is not a lock set stops the start.
        std::fs::write(&file, "{not json").unwrap();
        assert!(ControlStore::load(Some(file)).is_err());
    }

    fn grant(id: &str, expires_at: Option<u64>) -> Grant {
        let now = crate::clock::now_ms() / 1000;
        Grant {
            id: id.into(),
            vendor: "acme".into(),
            account: "agent-7".into(),
            classes: vec!["export".into()],
            reason: "report".into(),
            ticket: None,
            requested_by: "lead".into(),
            requested_at: now,
            duration: 3600,
            pending_until: now + 3600,
            approved_by: expires_at.map(|_| "soc".into()),
            approved_at: expires_at.map(|_| now),
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_grant_changes_only_from_what_was_seen_and_takes_its_streams_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controls.json");
        let store = ControlStore::load(Some(file.clone())).unwrap();
        let now = crate::clock::now_ms() / 1000;
        let pending = grant("gr_1", None);
        let active = grant("gr_1", Some(now + 3600));
        // Made once; a second "create" of the same id loses.
        assert!(store.change_grant(None, Some(&pending)).await.unwrap());
        assert!(!store.change_grant(None, Some(&pending)).await.unwrap());
        // Approved from what was seen; approving the stale copy again loses.
        assert!(store
            .change_grant(Some(&pending), Some(&active))
            .await
            .unwrap());
        assert!(!store
            .change_grant(Some(&pending), Some(&active))
            .await
            .unwrap());
        assert_eq!(store.current().grant("gr_1"), Some(&active));
        // Kept across a restart, beside the locks.
        assert_eq!(
            ControlStore::load(Some(file.clone()))
                .unwrap()
                .current()
                .grants,
            std::slice::from_ref(&active)
        );

        // Streams: one the grant allowed, one of the same account without it.
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let granted = store.watch(ip, Arc::new(Agent("agent-7")), Some("gr_1"));
        let plain = store.watch(ip, Arc::new(Agent("agent-7")), None);
        // A grant that is not active cuts the stream it is registered with at once.
        let stale = store.watch(ip, Arc::new(Agent("agent-7")), Some("gr_gone"));
        assert_eq!(stale.cut_by(), Some(("gr_gone", Reason::ClassNotPermitted)));
        // A lock on the grant cuts what it allowed, and only that.
        let lock = Lock {
            target: LockTarget::Grant("gr_1".into()),
            ..lock("lk_g", "unused", None)
        };
        assert_eq!(store.add(lock).await.unwrap(), 1);
        assert_eq!(granted.cut_by(), Some(("lk_g", Reason::Locked)));
        assert_eq!(plain.cut_by(), None);
        store.remove("lk_g").await.unwrap();
        // Ending the grant cuts a stream it allowed.
        let again = store.watch(ip, Arc::new(Agent("agent-7")), Some("gr_1"));
        assert_eq!(again.cut_by(), None);
        assert!(store.change_grant(Some(&active), None).await.unwrap());
        assert_eq!(again.cut_by(), Some(("gr_1", Reason::ClassNotPermitted)));
        assert_eq!(plain.cut_by(), None);
    }

    #[tokio::test]
    async fn the_file_of_the_release_before_is_read_until_the_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let old = serde_json::json!({"locks": [lock("lk_1", "agent-7", None)]});
        std::fs::write(dir.path().join("locks.json"), old.to_string()).unwrap();
        let file = dir.path().join("controls.json");
        let store = ControlStore::load(Some(file.clone())).unwrap();
        assert_eq!(store.current().locks.len(), 1);
        store.add(lock("lk_2", "agent-8", None)).await.unwrap();
        let again = ControlStore::load(Some(file)).unwrap();
        assert_eq!(again.current().locks.len(), 2);
    }
}
