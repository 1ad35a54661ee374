//! Per-connection facts and activity: who is on the other end, and whether the connection is busy.
//!
//! hyper closes connections on protocol errors and timeouts it knows about, but has no notion of "no
//! request for a minute" that works the same for HTTP/1.1 and HTTP/2. The connection task watches this
//! instead and shuts idle connections down gracefully.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What is known about a downstream connection once its TLS handshake is done.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned back into IPv4, so IP rules
    /// written for IPv4 match on dual-stack listeners.
    pub peer_ip: IpAddr,
    pub activity: Activity,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr) -> Self {
        ConnInfo {
            peer,
            peer_ip: peer.ip().to_canonical(),
            activity: Activity::new(),
        }
    }
}

#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` at which the connection last went quiet or got a request.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection will have been idle for `idle`, given what is in flight now. With a
    /// request in flight that is at least `idle` from now; the caller checks again then.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    pub fn is_idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}

/// Marks one request as in flight on its connection until dropped (with the response body).
pub struct InFlight(Arc<ConnInfo>);

impl InFlight {
    pub fn begin(conn: Arc<ConnInfo>) -> Self {
        conn.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.activity.touch();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.touch();
        self.0.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
