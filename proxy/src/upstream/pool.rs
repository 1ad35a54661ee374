//! Idle upstream connections, one pool per (upstream, worker thread).
//!
//! A worker is a single-threaded runtime, so a request, the connection that carries it and the pool
//! that connection returns to all live on one thread: checking a connection out or in is a push or
//! a pop on a thread-local vector, with no lock, no hashing and no task spawned per request.
//!
//! An HTTP/1.1 connection carries one exchange at a time: it leaves the pool for the request and
//! comes back through its [`Lease`] when the response body has been read to its end (a response cut
//! short leaves the connection unusable, and it is closed). It may come back still busy, sending an
//! upload the upstream answered early: it is then passed over until it is ready. An HTTP/2
//! connection is shared: the pool keeps it and every request sends on a clone.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use crate::body::request::RequestBody;

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

struct Pool {
    upstream: usize,
    idle: Vec<Idle>,
    /// The HTTP/2 connection requests share, and when a request last took it.
    shared: Option<Idle2>,
}

struct Idle2 {
    sender: http2::SendRequest<RequestBody>,
    used: Instant,
}

thread_local! {
    static POOLS: RefCell<Vec<Pool>> = const { RefCell::new(Vec::new()) };
}

/// How long an idle connection is kept, and how many.
#[derive(Clone, Copy)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// This thread's pool for `upstream`, made (and its reaper started) on first use. `None` only while
/// the thread is exiting (a body dropped with its runtime then closes its connection instead).
fn with<R>(upstream: usize, limits: Limits, f: impl FnOnce(&mut Pool) -> R) -> Option<R> {
    POOLS
        .try_with(|pools| {
            let mut pools = pools.borrow_mut();
            let i = match pools.iter().position(|p| p.upstream == upstream) {
                Some(i) => i,
                None => {
                    pools.push(Pool {
                        upstream,
                        idle: Vec::new(),
                        shared: None,
                    });
                    if tokio::runtime::Handle::try_current().is_ok() {
                        tokio::spawn(reap(upstream, limits));
                    }
                    pools.len() - 1
                }
            };
            f(&mut pools[i])
        })
        .ok()
}

/// The shared HTTP/2 connection if there is a live one, else the most recently used idle HTTP/1.1
/// connection that is ready for a request (the warmest; the coldest ones are left to expire).
pub fn take(upstream: usize, limits: Limits) -> Option<super::Sender> {
    with(upstream, limits, |pool| {
        if let Some(shared) = &mut pool.shared {
            if !shared.sender.is_closed() {
                shared.used = Instant::now();
                return Some(super::Sender::Http2(shared.sender.clone()));
            }
            pool.shared = None;
        }
        // Newest first. A connection still finishing an exchange (a request body uploading after
        // its response ended) is passed over, not waited for: the next request must not queue
        // behind someone else's upload. It stays for later; dead and expired ones go.
        let mut i = pool.idle.len();
        while i > 0 {
            i -= 1;
            let idle = &pool.idle[i];
            if idle.sender.is_closed() || idle.since.elapsed() >= limits.idle_timeout {
                pool.idle.remove(i);
            } else if idle.sender.is_ready() {
                return Some(super::Sender::Http1(pool.idle.remove(i).sender));
            }
        }
        None
    })
    .flatten()
}

/// Makes a new HTTP/2 connection the one requests share.
pub fn share(upstream: usize, limits: Limits, sender: http2::SendRequest<RequestBody>) {
    let used = Instant::now();
    with(upstream, limits, |pool| {
        pool.shared = Some(Idle2 { sender, used })
    });
}

/// Forgets the shared HTTP/2 connection (it refused a request: closing or gone away).
pub fn unshare(upstream: usize, limits: Limits) {
    with(upstream, limits, |pool| pool.shared = None);
}

/// Every few seconds, closes the connections that have sat idle past the timeout, so a burst's worth
/// of connections does not stay open on the upstream long after the burst.
async fn reap(upstream: usize, limits: Limits) {
    let period =
        (limits.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        with(upstream, limits, |pool| {
            pool.idle
                .retain(|i| !i.sender.is_closed() && i.since.elapsed() < limits.idle_timeout);
            // Streams still running hold clones of the sender: the connection closes once they
            // are done.
            if pool
                .shared
                .as_ref()
                .is_some_and(|s| s.used.elapsed() >= limits.idle_timeout)
            {
                pool.shared = None;
            }
        });
    }
}

/// An HTTP/1.1 connection lent to one exchange. [`Lease::release`] puts it back once the response
/// has been read whole; dropping the lease instead closes the connection.
pub struct Lease {
    sender: http1::SendRequest<RequestBody>,
    upstream: usize,
    limits: Limits,
}

impl Lease {
    pub fn new(sender: http1::SendRequest<RequestBody>, upstream: usize, limits: Limits) -> Self {
        Lease {
            sender,
            upstream,
            limits,
        }
    }

    /// Back to this thread's pool, unless the pool is full or the upstream has closed it.
    pub fn release(self) {
        if self.sender.is_closed() || self.limits.max_idle == 0 {
            return;
        }
        let limits = self.limits;
        with(self.upstream, limits, |pool| {
            if pool.idle.len() < limits.max_idle {
                pool.idle.push(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        });
    }
}
