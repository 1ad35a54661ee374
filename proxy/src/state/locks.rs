//! The locks in force on this proxy, and every response stream in flight, so that a new lock both
//! refuses the next request of its target (through [`vendorgate_policy::Policy::decide`], which
//! reads [`Locks::current`]) and cuts the target's streams already under way.
//!
//! **Persisted:** the set is written to a small JSON file (atomically: a temporary file, fsync,
//! rename) before a change takes effect, and read at start; a file that cannot be read stops the
//! start rather than let the proxy run without the locks it was given (fail closed).
//!
//! **Shared** (`state.backend = "redis"`): the locks live in a Redis hash with a version counter; a
//! change is one script (write, bump the version, publish it). Every replica follows the channel
//! and also checks the version every second (a missed message is caught), fetching the set when it
//! moved: a lock made on one replica cuts streams on all of them within a second. The file is then
//! this replica's last-known copy. While Redis cannot confirm the list for longer than
//! [`STALE_AFTER`], `locks.on_state_error = "strict"` refuses everyone (the set says `unknown`) and
//! `"last_known"` keeps deciding with the copy; either way it is logged.
//!
//! **Cutting:** each allowed response registers a [`Watched`] entry (its client address and who it
//! is). A new lock walks the entries, marks those it matches and wakes their bodies, which end the
//! stream at once (an HTTP/1.1 connection closed short, an HTTP/2 stream reset). A body that is
//! waiting for the upstream is woken, so an idle stream is cut as fast as a busy one.

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
use redis::aio::ConnectionManager;
use redis::Script;
use vendorgate_policy::config::OnLockStateError;
use vendorgate_policy::{Lock, LockSet, Reason, Subject};

/// How long the shared list may go unconfirmed before `strict` refuses everyone.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// KEYS: hash, version. ARGV: id, lock JSON, channel. Returns the new version.
const ADD: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], v)
return v
";

/// KEYS: hash, version. ARGV: id, channel. Returns 1 if this call removed it.
const REMOVE: &str = r"
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n == 1 then
  local v = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[2], v)
end
return n
";

#[derive(Debug, thiserror::Error)]
pub enum LocksError {
    #[error("lock state file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("writing the lock state file {path}: {cause}")]
    Write { path: PathBuf, cause: String },
    #[error("locks in redis: {0}")]
    Shared(String),
}

/// The locks' home in Redis, when they are shared.
struct Shared {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    hash: String,
    version_key: String,
    channel: String,
    timeout: Duration,
    /// The version last fetched (-1: none yet).
    seen: std::sync::atomic::AtomicI64,
    /// When Redis last confirmed the list.
    confirmed: Mutex<Option<Instant>>,
    add: Script,
    remove: Script,
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
        }
    }
}

const SHARDS: usize = 16;

pub struct Locks {
    current: ArcSwap<LockSet>,
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
    async fn conn(&self) -> Result<ConnectionManager, LocksError> {
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| LocksError::Shared(e.to_string()))?;
        self.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, LocksError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| LocksError::Shared("no answer in time".into()))?
            .map_err(|e| LocksError::Shared(e.to_string()))
    }

    /// The list, if its version moved since it was last fetched.
    async fn fetch(&self) -> Result<Option<LockSet>, LocksError> {
        let mut conn = self.conn().await?;
        let fail = |e: redis::RedisError| LocksError::Shared(e.to_string());
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
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&self.hash)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            let mut locks = Vec::with_capacity(all.len());
            for (id, json) in all {
                match serde_json::from_str::<Lock>(&json) {
                    Ok(lock) => locks.push(lock),
                    Err(e) => tracing::error!(lock = %id, "a lock in redis is unreadable: {e}"),
                }
            }
            locks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            self.seen.store(version, Ordering::Relaxed);
            Ok(Some(LockSet {
                locks,
                unknown: false,
            }))
        };
        tokio::time::timeout(self.timeout * 2, query)
            .await
            .map_err(|_| LocksError::Shared("no answer in time".into()))?
    }
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

impl Locks {
    /// The locks persisted in `file` (none if it does not exist yet); `None`: not persisted.
    pub fn load(file: Option<PathBuf>) -> Result<Self, LocksError> {
        let set = match &file {
            Some(path) => read(path)?,
            None => LockSet::default(),
        };
        Ok(Locks {
            current: ArcSwap::from_pointee(set),
            file,
            shared: None,
            on_error: OnLockStateError::Strict,
            change: tokio::sync::Mutex::new(()),
            streams: Arc::default(),
        })
    }

    /// Locks shared through Redis at `url`, keys under `prefix`; `file` keeps the last-known copy.
    /// Until Redis first confirms the list, `strict` refuses everyone.
    pub fn shared(
        file: PathBuf,
        url: &str,
        prefix: &str,
        timeout: Duration,
        on_error: OnLockStateError,
    ) -> Result<Self, LocksError> {
        let mut locks = Locks::load(Some(file))?;
        let client = redis::Client::open(url).map_err(|e| LocksError::Shared(e.to_string()))?;
        locks.on_error = on_error;
        locks.shared = Some(Shared {
            client,
            conn: ArcSwapOption::empty(),
            hash: format!("{prefix}:locks"),
            version_key: format!("{prefix}:locks:version"),
            channel: format!("{prefix}:locks:changed"),
            timeout,
            seen: std::sync::atomic::AtomicI64::new(-1),
            confirmed: Mutex::new(None),
            add: Script::new(ADD),
            remove: Script::new(REMOVE),
        });
        if on_error == OnLockStateError::Strict {
            let mut set = LockSet::clone(&locks.current.load());
            set.unknown = true;
            locks.current.store(Arc::new(set));
        }
        Ok(locks)
    }

    /// The locks in force now (what a request is decided against).
    pub fn current(&self) -> arc_swap::Guard<Arc<LockSet>> {
        self.current.load()
    }

    /// Puts `lock` in force: persisted first (in Redis, or the file), then seen by every new
    /// request, then every stream of its target in flight is cut. Returns how many streams were
    /// cut here (other replicas cut theirs as they learn of it).
    pub async fn add(&self, lock: Lock) -> Result<usize, LocksError> {
        let _one = self.change.lock().await;
        if let Some(shared) = &self.shared {
            let json =
                serde_json::to_string(&lock).map_err(|e| LocksError::Shared(e.to_string()))?;
            let mut inv = shared.add.prepare_invoke();
            inv.key(&shared.hash)
                .key(&shared.version_key)
                .arg(&lock.id)
                .arg(json)
                .arg(&shared.channel);
            let _: i64 = shared.run(inv).await?;
            return self.refresh_held().await;
        }
        let mut set = LockSet::clone(&self.current.load());
        set.locks.push(lock.clone());
        self.persist(&set)?;
        self.current.store(Arc::new(set));
        Ok(self.cut(&lock))
    }

    /// Removes the lock with `id`; `None` if there is none (or another replica removed it first).
    pub async fn remove(&self, id: &str) -> Result<Option<Lock>, LocksError> {
        let _one = self.change.lock().await;
        let found = self
            .current
            .load()
            .locks
            .iter()
            .find(|l| l.id == id)
            .cloned();
        if let Some(shared) = &self.shared {
            let mut inv = shared.remove.prepare_invoke();
            inv.key(&shared.hash)
                .key(&shared.version_key)
                .arg(id)
                .arg(&shared.channel);
            let removed: i64 = shared.run(inv).await?;
            self.refresh_held().await?;
            return Ok(found.filter(|_| removed == 1));
        }
        let Some(lock) = found else { return Ok(None) };
        let mut set = LockSet::clone(&self.current.load());
        set.locks.retain(|l| l.id != id);
        self.persist(&set)?;
        self.current.store(Arc::new(set));
        Ok(Some(lock))
    }

    /// The locks in force now that have expired by `now` (seconds).
    pub fn due(&self, now: u64) -> Vec<Lock> {
        self.current.load().expired(now).cloned().collect()
    }

    /// Whether the shared store is where expiries are settled: then only the replica whose
    /// removal succeeds records one (see [`Locks::remove`]); alone, it is recorded first.
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
                match shared.client.get_async_pubsub().await {
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

    async fn refresh_held(&self) -> Result<usize, LocksError> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        match shared.fetch().await {
            Ok(fetched) => {
                *shared.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                let Some(set) = fetched else {
                    if self.current.load().unknown {
                        let mut set = LockSet::clone(&self.current.load());
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
                    let mut set = LockSet::clone(&self.current.load());
                    set.unknown = true;
                    self.current.store(Arc::new(set));
                }
                Err(e)
            }
        }
    }

    /// Puts a fetched list in force: streams of locks new here are cut; the file keeps a copy.
    fn apply(&self, set: LockSet) -> usize {
        let old = self.current.load_full();
        let mut cut = 0;
        for lock in &set.locks {
            if !old.locks.iter().any(|l| l.id == lock.id) {
                cut += self.cut(lock);
            }
        }
        if let Err(e) = self.persist(&set) {
            tracing::warn!("keeping the last-known locks: {e}");
        }
        self.current.store(Arc::new(set));
        cut
    }

    /// Registers a response stream for cutting. `now` is checked against the locks once more: a
    /// lock made between the decision and this registration still cuts the stream.
    pub fn watch(&self, client_ip: IpAddr, who: Arc<dyn Who>) -> Watched {
        let streams = &self.streams;
        let id = streams.next.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(Stream {
            client_ip,
            who,
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
        Watched {
            stream,
            id,
            streams: self.streams.clone(),
        }
    }

    /// Marks and wakes every stream in flight that `lock` targets.
    fn cut(&self, lock: &Lock) -> usize {
        let mut cut = 0;
        for shard in &self.streams.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for stream in shard.values() {
                if lock.matches(&stream.subject())
                    && stream.cut_by.set((lock.id.clone(), lock.reason())).is_ok()
                {
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

    fn persist(&self, set: &LockSet) -> Result<(), LocksError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let fail = |cause: std::io::Error| LocksError::Write {
            path: path.clone(),
            cause: cause.to_string(),
        };
        let text = serde_json::to_string_pretty(set).map_err(|e| fail(e.into()))?;
        write_atomically(path, text.as_bytes()).map_err(fail)
    }
}

fn read(path: &Path) -> Result<LockSet, LocksError> {
    let fail = |cause: String| LocksError::Read {
        path: path.to_path_buf(),
        cause,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| fail(e.to_string())),
        // Nothing was ever written there: no locks (making one will then say why it cannot be kept).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(LockSet::default())
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// A temporary file beside `path`, synced, renamed over it, and the directory synced: a crash
/// leaves the old set or the new one, never half of either.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
    use vendorgate_policy::LockTarget;

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
        let file = dir.path().join("locks.json");
        let locks = Locks::load(Some(file.clone())).unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let seven = locks.watch(ip, Arc::new(Agent("agent-7")));
        let eight = locks.watch(ip, Arc::new(Agent("agent-8")));
        assert_eq!(locks.add(lock("lk_1", "agent-7", None)).await.unwrap(), 1);
        assert_eq!(seven.cut_by(), Some(("lk_1", Reason::Locked)));
        assert_eq!(eight.cut_by(), None);
        // A stream that starts after the lock is cut as it registers.
        assert_eq!(
            locks.watch(ip, Arc::new(Agent("agent-7"))).cut_by(),
            Some(("lk_1", Reason::Locked))
        );
        drop((seven, eight));
        assert_eq!(locks.streams(), 0);
        // Read back from the file by a new process.
        locks.add(lock("lk_2", "agent-9", Some(100))).await.unwrap();
        let again = Locks::load(Some(file.clone())).unwrap();
        assert_eq!(again.current().locks.len(), 2);
        let due: Vec<String> = again.due(100).into_iter().map(|l| l.id).collect();
        assert_eq!(due, ["lk_2"]);
        assert_eq!(again.remove("lk_2").await.unwrap().unwrap().id, "lk_2");
        assert_eq!(again.remove("lk_1").await.unwrap().unwrap().id, "lk_1");
        assert!(again.remove("lk_1").await.unwrap().is_none());
        assert!(Locks::load(Some(file.clone()))
            .unwrap()
            .current()
            .is_empty());
        // A file that is not a lock set stops the start.
        std::fs::write(&file, "{not json").unwrap();
        assert!(Locks::load(Some(file)).is_err());
    }
}
