//! Per-connection facts and activity: who is on the other end, and whether the connection is busy.
//!
//! hyper closes connections on protocol errors and timeouts it knows about, but has no notion of "no
//! request for a minute" that works the same for HTTP/1.1 and HTTP/2. The connection task watches this
//! instead and shuts idle connections down gracefully.
//!
//! It also times HTTP/1.1 request heads itself. hyper runs its header timer from the end of the
//! previous response, so an agent's keep-alive connection would be closed after
//! `header_read_timeout` (seconds) rather than `idle_timeout`. Here the timer starts at the first
//! byte of a request instead ([`HeadWatch`]), and hyper's own is only a backstop.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    /// Woken when the first byte of a request head arrives on an idle connection, so that the
    /// connection task can start the header timer.
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
    /// Milliseconds after `start` at which the connection last went quiet or got a request.
    last_ms: AtomicU64,
    /// 1 + milliseconds after `start` at which bytes arrived with nothing in flight (a request
    /// head has begun); 0 when none is pending.
    head_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        }
    }

    /// Notes the first bytes of a request head on an idle connection. True the first time.
    fn head_bytes_arrived(&self) -> bool {
        // Cheap checks first: this runs on every read, and only the first byte of a head needs
        // the clock.
        if self.in_flight.load(Ordering::Acquire) > 0
            || self.head_since.load(Ordering::Relaxed) != 0
        {
            return false;
        }
        let ms = self.start.elapsed().as_millis() as u64 + 1;
        self.head_since
            .compare_exchange(0, ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
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
        conn.activity.head_since.store(0, Ordering::Release);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.touch();
        self.0.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The downstream stream as hyper reads it, noting when a request head begins (HTTP/1.1 only: an
/// HTTP/2 connection exchanges frames while idle).
pub struct HeadWatch<T> {
    inner: T,
    info: Option<Arc<ConnInfo>>,
}

impl<T> HeadWatch<T> {
    /// `info` is `None` for connections whose heads are not timed (HTTP/2).
    pub fn new(inner: T, info: Option<Arc<ConnInfo>>) -> Self {
        HeadWatch { inner, info }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadWatch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(info)) = (&polled, &this.info) {
            if buf.filled().len() > before && info.activity.head_bytes_arrived() {
                info.head_started.notify_one();
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadWatch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
