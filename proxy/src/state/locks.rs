//! The locks in force on this proxy, and every response stream in flight, so that a new lock both
//! refuses the next request of its target (through [`vendorgate_policy::Policy::decide`], which
//! reads [`Locks::current`]) and cuts the target's streams already under way.
//!
//! **Persisted:** the set is written to a small JSON file (atomically: a temporary file, fsync,
//! rename) before a change takes effect, and read at start; a file that cannot be read stops the
//! start rather than let the proxy run without the locks it was given (fail closed).
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

use arc_swap::ArcSwap;
use atomic_waker::AtomicWaker;
use vendorgate_policy::{Lock, LockSet, Subject};

#[derive(Debug, thiserror::Error)]
pub enum LocksError {
    #[error("lock state file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("writing the lock state file {path}: {cause}")]
    Write { path: PathBuf, cause: String },
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
    /// The lock that cut it, once one has.
    cut_by: OnceLock<String>,
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
    /// Changes are made one at a time: read, persist, swap.
    change: Mutex<()>,
    streams: Arc<Streams>,
}

#[derive(Default)]
struct Streams {
    shards: [Mutex<HashMap<u64, Arc<Stream>>>; SHARDS],
    next: AtomicU64,
}

/// A response stream's entry in the registry, removed when the body is dropped.
pub struct Watched {
    stream: Arc<Stream>,
    id: u64,
    streams: Arc<Streams>,
}

impl Watched {
    /// The id of the lock that cut this stream, if one has.
    pub fn cut_by(&self) -> Option<&str> {
        self.stream.cut_by.get().map(String::as_str)
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
            change: Mutex::new(()),
            streams: Arc::default(),
        })
    }

    /// The locks in force now (what a request is decided against).
    pub fn current(&self) -> arc_swap::Guard<Arc<LockSet>> {
        self.current.load()
    }

    /// Puts `lock` in force: persisted first, then seen by every new request, then every stream
    /// of its target in flight is cut. Returns how many streams were cut.
    pub fn add(&self, lock: Lock) -> Result<usize, LocksError> {
        let _one = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let mut set = LockSet::clone(&self.current.load());
        set.locks.push(lock.clone());
        self.persist(&set)?;
        self.current.store(Arc::new(set));
        Ok(self.cut(&lock))
    }

    /// Removes the lock with `id`; `None` if there is none.
    pub fn remove(&self, id: &str) -> Result<Option<Lock>, LocksError> {
        self.remove_where(|l| l.id == id).map(|mut gone| gone.pop())
    }

    /// Removes the locks that have expired by `now` (seconds), returning them.
    pub fn expire(&self, now: u64) -> Result<Vec<Lock>, LocksError> {
        if self.current.load().expired(now).next().is_none() {
            return Ok(Vec::new());
        }
        self.remove_where(|l| !l.in_force(now))
    }

    fn remove_where(&self, gone: impl Fn(&Lock) -> bool) -> Result<Vec<Lock>, LocksError> {
        let _one = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let mut set = LockSet::clone(&self.current.load());
        let (removed, kept): (Vec<Lock>, Vec<Lock>) = set.locks.drain(..).partition(gone);
        if removed.is_empty() {
            return Ok(removed);
        }
        set.locks = kept;
        self.persist(&set)?;
        self.current.store(Arc::new(set));
        Ok(removed)
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
                let _ = stream.cut_by.set(lock.id.clone());
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
                if lock.matches(&stream.subject()) && stream.cut_by.set(lock.id.clone()).is_ok() {
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
        }
    }

    #[test]
    fn a_lock_cuts_its_targets_streams_persists_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.json");
        let locks = Locks::load(Some(file.clone())).unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let seven = locks.watch(ip, Arc::new(Agent("agent-7")));
        let eight = locks.watch(ip, Arc::new(Agent("agent-8")));
        assert_eq!(locks.add(lock("lk_1", "agent-7", None)).unwrap(), 1);
        assert_eq!(seven.cut_by(), Some("lk_1"));
        assert_eq!(eight.cut_by(), None);
        // A stream that starts after the lock is cut as it registers.
        assert_eq!(
            locks.watch(ip, Arc::new(Agent("agent-7"))).cut_by(),
            Some("lk_1")
        );
        drop((seven, eight));
        assert_eq!(locks.streams(), 0);
        // Read back from the file by a new process.
        locks.add(lock("lk_2", "agent-9", Some(100))).unwrap();
        let again = Locks::load(Some(file.clone())).unwrap();
        assert_eq!(again.current().locks.len(), 2);
        assert_eq!(
            again
                .expire(100)
                .unwrap()
                .iter()
                .map(|l| l.id.as_str())
                .collect::<Vec<_>>(),
            ["lk_2"]
        );
        assert_eq!(again.remove("lk_1").unwrap().unwrap().id, "lk_1");
        assert!(Locks::load(Some(file.clone()))
            .unwrap()
            .current()
            .is_empty());
        // A file that is not a lock set stops the start.
        std::fs::write(&file, "{not json").unwrap();
        assert!(Locks::load(Some(file)).is_err());
    }
}
