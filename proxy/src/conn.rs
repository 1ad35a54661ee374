//! Per-connection facts and activity: who is on the other end, and whether the connection is busy.
//!
//! hyper closes connections on protocol errors and timeouts it knows about, but has no notion of "no
//! request for a minute" that works the same for HTTP/1.1 and HTTP/2. The connection task watches this
//! instead and shuts idle connections down gracefully.
//!
//! It also times HTTP/1.1 request heads itself. hyper runs its header timer from the end of the
//! previous response, so an agent's keep-alive connection would be closed after
//! `header_read_timeout` (seconds) rather than `idle_timeout`. Here the timer starts at the first
//! byte of a request instead ([`crate::edge::client_io`]), and hyper's own is only a backstop.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What is known about a downstream connection once its TLS handshake is done.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned back into IPv4, so IP rules
    /// written for IPv4 match on dual-stack listeners.
    pub peer_ip: IpAddr,
    pub activity: Activity,
    /// Woken when the first byte of a request head arrives on an idle connection and the
    /// connection task's timer is set too late for that head's deadline, so that it sets it
    /// earlier. On a busy connection the timer is already due sooner (it checks for parking every
    /// fraction of a second), so most heads wake nothing.
    pub head_started: Notify,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr) -> Self {
        ConnInfo {
            peer,
            peer_ip: peer.ip().to_canonical(),
            activity: Activity::new(),
            head_started: Notify::new(),
        }
    }
}

#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Requests begun on the connection so far.
    requests: AtomicU64,
    /// Milliseconds after `start` at which the connection last went quiet or got a request.
    last_ms: AtomicU64,
    /// 1 + milliseconds after `start` at which bytes arrived with nothing in flight (a request
    /// head has begun); 0 when none is pending.
    head_since: AtomicU64,
    /// Bytes arrived while a request was in flight: a body still coming, or pipelined requests
    /// that hyper may hold half-read. Cleared when the next request begins.
    early_bytes: AtomicBool,
    /// The connection has been quiet long enough to park at hyper's next read (HTTP/1.1).
    park_wanted: AtomicBool,
    /// A head that begins before this (milliseconds after `start`) is due before the connection
    /// task's timer fires, so it must wake the task; `u64::MAX` while no timer is set.
    head_wake_before: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            early_bytes: AtomicBool::new(false),
            park_wanted: AtomicBool::new(false),
            head_wake_before: AtomicU64::new(u64::MAX),
        }
    }

    /// Requests begun on the connection so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Notes bytes read from the client. True for the first bytes of a request head on an idle
    /// connection whose deadline comes before the connection task's timer (see
    /// [`Activity::timer_set`]): the task must wake to bring its timer forward.
    pub(crate) fn bytes_arrived(&self) -> bool {
        // Cheap checks first: this runs on every read, and only the first byte of a head needs
        // the clock.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            self.early_bytes.store(true, Ordering::Relaxed);
            return false;
        }
        if self.head_since.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let ms = self.start.elapsed().as_millis() as u64;
        self.head_since
            .compare_exchange(0, ms + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            && ms < self.head_wake_before.load(Ordering::Acquire)
    }

    /// Records when the connection task's timer fires (`None`: no timer), for a request head of
    /// `head_timeout` to tell whether it must wake the task. A timer due at `at` serves every head
    /// that begins at or after `at - head_timeout`: their deadlines are no earlier.
    pub fn timer_set(&self, at: Option<Instant>, head_timeout: Duration) {
        let before = at.map_or(u64::MAX, |at| {
            // Rounded up: a head beginning in the same millisecond wakes the task rather than risk
            // a deadline a fraction of a millisecond before the timer.
            let at_ms = at
                .saturating_duration_since(self.start)
                .as_micros()
                .div_ceil(1000);
            u64::try_from(at_ms)
                .unwrap_or(u64::MAX)
                .saturating_sub(head_timeout.as_millis() as u64)
        });
        self.head_wake_before.store(before, Ordering::Release);
    }

    /// Nothing in flight, no request head begun, and nothing read since the last request began
    /// that hyper could still hold: an HTTP/1.1 connection whose hyper side is empty.
    pub(crate) fn is_between_requests(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
            && !self.early_bytes.load(Ordering::Relaxed)
    }

    /// Whether an HTTP/1.1 connection may park now: asked to, and still between requests.
    pub(crate) fn may_park(&self) -> bool {
        self.park_wanted.load(Ordering::Relaxed) && self.is_between_requests()
    }

    /// When the connection will have been quiet (between requests) for `quiet` and should park.
    /// While a request or a head is under way that is at least `quiet` from now; the caller checks
    /// again then. `None` once it has been asked to, and when it cannot park before its next
    /// request (bytes arrived that hyper may still hold): no timer for a connection that only
    /// its next request can change.
    pub fn park_deadline(&self, quiet: Duration) -> Option<Instant> {
        if self.park_wanted.load(Ordering::Relaxed) {
            return None;
        }
        if self.in_flight.load(Ordering::Acquire) > 0
            || self.head_since.load(Ordering::Acquire) != 0
        {
            return Some(Instant::now() + quiet);
        }
        if self.early_bytes.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.since_last(quiet))
    }

    pub fn is_quiet_for(&self, quiet: Duration) -> bool {
        self.is_between_requests() && Instant::now() >= self.since_last(quiet)
    }

    /// Asks the connection to park at hyper's next read, if it is still between requests then.
    pub fn want_park(&self) {
        self.park_wanted.store(true, Ordering::Relaxed);
    }

    /// When the pending request head (if any) must have arrived whole.
    pub fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.start + Duration::from_millis(ms - 1) + timeout),
        }
    }

    /// `after` past the moment the connection last went quiet or got a request.
    fn since_last(&self, after: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + after
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
        self.since_last(idle)
    }

    pub fn is_idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}

/// Marks one request as in flight on its connection until dropped (with the response body).
pub struct InFlight(Arc<ConnInfo>);

impl InFlight {
    /// The connection the request is on.
    pub fn conn(&self) -> &Arc<ConnInfo> {
        &self.0
    }

    pub fn begin(conn: Arc<ConnInfo>) -> Self {
        conn.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.activity.requests.fetch_add(1, Ordering::Relaxed);
        conn.activity.touch();
        conn.activity.head_since.store(0, Ordering::Release);
        conn.activity.early_bytes.store(false, Ordering::Relaxed);
        conn.activity.park_wanted.store(false, Ordering::Relaxed);
        InFlight(conn)
    }

    /// A second hold for the same request, for a part of it that can outlive the response (its
    /// upload): the connection counts as busy until both are dropped.
    pub fn also(&self) -> Self {
        self.0.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.touch();
        self.0.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(250);

    fn conn() -> Arc<ConnInfo> {
        Arc::new(ConnInfo::new(SocketAddr::from(([127, 0, 0, 1], 40000))))
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_parks_only_when_asked_and_between_requests() {
        let c = conn();
        let a = &c.activity;
        assert_eq!(a.park_deadline(QUIET), Some(a.start + QUIET));
        assert!(!a.may_park(), "not before it is asked");
        tokio::time::advance(QUIET).await;
        assert!(a.is_quiet_for(QUIET));
        a.want_park();
        assert!(a.may_park());
        assert_eq!(a.park_deadline(QUIET), None, "asked once");

        // A request beginning takes the request back.
        let req = InFlight::begin(c.clone());
        assert!(!a.may_park());
        drop(req);
        assert!(!a.may_park());
        assert!(
            !a.is_quiet_for(QUIET),
            "quiet counts from the request's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_wakes_the_connection_task_only_when_its_timer_is_set_too_late() {
        let head_timeout = Duration::from_secs(10);
        let begin_head = |c: &Arc<ConnInfo>| {
            let woke = c.activity.bytes_arrived();
            drop(InFlight::begin(c.clone()));
            woke
        };
        let c = conn();
        let start = c.activity.start;
        assert!(begin_head(&c), "no timer set yet: the task must hear of it");

        // Due for a park check in 250 ms, long before any head's deadline.
        c.activity.timer_set(Some(start + QUIET), head_timeout);
        assert!(!begin_head(&c));

        // Only the idle timeout is set: a head now is due long before it.
        c.activity
            .timer_set(Some(start + Duration::from_secs(60)), head_timeout);
        assert!(begin_head(&c));
        tokio::time::advance(Duration::from_millis(49_999)).await;
        assert!(begin_head(&c), "due a millisecond before the timer");
        // Once the timer is within a header timeout of now, a head is due no earlier.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!begin_head(&c));

        c.activity.timer_set(None, head_timeout);
        assert!(begin_head(&c), "no timer: every head wakes it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_begun_head_or_bytes_read_mid_request_keep_it_awake() {
        let c = conn();
        let a = &c.activity;
        // The first bytes of a head: the header timer runs, and no park until the request.
        assert!(a.bytes_arrived());
        a.want_park();
        assert!(!a.may_park());
        assert_eq!(a.park_deadline(QUIET), None, "already asked");

        // Bytes read while a request is in flight may be a pipelined request hyper holds.
        let req = InFlight::begin(c.clone());
        assert!(
            !a.bytes_arrived(),
            "mid-request bytes start no header timer"
        );
        drop(req);
        tokio::time::advance(QUIET * 4).await;
        assert!(!a.is_quiet_for(QUIET));
        a.want_park();
        assert!(!a.may_park());
        let next = InFlight::begin(c.clone());
        drop(next);
        assert!(
            a.park_deadline(QUIET).is_some(),
            "the next request clears them"
        );
    }
}
