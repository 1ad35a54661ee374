//! Serving one accepted connection: TLS, then HTTP/1.1 or HTTP/2 by ALPN, until the client closes,
//! the connection idles out, or shutdown drains it.
//!
//! HTTP/1.1 connections are *parked* between requests. hyper allocates a connection's buffers (a
//! read buffer that grows to 16 KiB, an 8 KiB header buffer) when it starts serving and frees them
//! only when the connection ends; with thousands of agents' keep-alive connections sitting idle
//! that was most of the proxy's memory. So as soon as a keep-alive connection has nothing to do,
//! its hyper connection ends ([`crate::edge::client_io`]) and only the TLS session stays, without its
//! record buffers ([`crate::edge::tls_stream`]), waiting for the next bytes; those start a fresh hyper
//! connection, replayed to it first. HTTP/2 connections cannot park (the codec keeps state between
//! requests), so their TLS buffers are freed whenever a read waits instead.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::body::response::ProxyBody;
use crate::conn::{ConnInfo, InFlight};
use crate::edge::client_io::ClientIo;
use crate::edge::tls_stream::{self, TlsStream};
use crate::gateway::Gateway;
use crate::pipeline;
use crate::trail::refusals::{Refusal, Refused};

/// Boxed: moved between the parked and served states, and a task keeps a slot for every place it
/// is held across an await; a box is 8 bytes, the stream over 1 KiB.
type Tls = Box<TlsStream>;
type Io = TokioIo<ClientIo<Tls>>;

/// What a client speaking HTTP/2 with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1.1 connection stays quiet before it parks. Parking and waking cost a few
/// microseconds, so a busy agent's connection keeps its hyper state between requests; an idle
/// one gives it up soon after.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// How long a closing connection gets to deliver its TLS close_notify.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The request pipeline as hyper calls it.
#[derive(Clone)]
struct Proxy {
    gw: &'static Gateway,
    info: Arc<ConnInfo>,
}

type Handled = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    // Boxed: hyper keeps a slot sized for this future in every connection. The request future is
    // several KiB; a box is 16 bytes.
    type Future = Handled;

    fn call(&self, req: Request<Incoming>) -> Handled {
        let in_flight = InFlight::begin(self.info.clone());
        Box::pin(pipeline::handle(self.gw, in_flight, req))
    }
}

/// Spawned as it is, without a wrapping block, and itself an `async` block rather than an `async
/// fn`: either of those would keep a second copy of every argument in the task for the
/// connection's whole life. `slot` is the connection limit's permit, given back when the
/// connection ends.
#[allow(clippy::manual_async_fn)] // see above
pub fn serve_connection(
    gw: &'static Gateway,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        // Borrowed, not moved into a local: that keeps the permit in the block (held until the
        // connection ends) without a second copy of it in the task.
        let _slot = &slot;
        let _ = tcp.set_nodelay(true);
        // The futures awaited here are boxed: a task is as large as its largest state, for its whole
        // life, and a parked connection should not keep room for a handshake or a hyper connection.
        let Some(mut tls) = Box::pin(handshake(gw, tcp, peer)).await else {
            return;
        };
        let _open = gw.metrics.connection_open();
        let info = Arc::new(ConnInfo::new(peer));
        let proxy = Proxy {
            gw,
            info: info.clone(),
        };
        let (h2, replay) = match tls.alpn_protocol() {
            Some(b"h2") => (true, Bytes::new()),
            Some(_) => (false, Bytes::new()),
            // No ALPN: HTTP/2 only with prior knowledge, recognised by its preface.
            None => match sniff(gw, &info, &mut tls, &mut shutdown).await {
                Some(first) => (first.starts_with(H2_PREFACE), first),
                None => return close(tls).await,
            },
        };
        if h2 {
            tls.release_while_waiting();
            let io = TokioIo::new(ClientIo::h2(tls, replay));
            let mut conn = Box::pin(gw.h2.serve_connection(io, proxy));
            let served = Box::pin(drive(gw, &info, &mut conn, None, &mut shutdown)).await;
            if let Some(Err(e)) = &served {
                note_refusal(gw, &info, "2", e, None);
            }
        } else {
            serve_h1(gw, &info, tls, proxy, replay, &mut shutdown).await;
        }
    }
}

async fn handshake(gw: &'static Gateway, tcp: TcpStream, peer: SocketAddr) -> Option<Tls> {
    let timeout = gw.config.server.tls_handshake_timeout.0;
    let (kind, detail) =
        match tokio::time::timeout(timeout, tls_stream::accept(gw.tls.clone(), tcp)).await {
            Ok(Ok(tls)) => return Some(Box::new(tls)),
            Ok(Err(e)) => (Refusal::TlsHandshakeFailed, e.to_string()),
            Err(_) => (
                Refusal::TlsHandshakeTimeout,
                "server.tls_handshake_timeout".to_string(),
            ),
        };
    tracing::debug!(client.ip = %peer.ip(), "TLS handshake: {}: {detail}", kind.as_str());
    gw.refused(&Refused {
        peer,
        kind,
        http_version: None,
        detail: &detail,
        head: None,
    });
    None
}

/// What a hyper connection's error says about the client, when it is a refusal worth a record:
/// a head its parser refused (hyper has answered 400, 414, 431 or 505 already), a head that took
/// too long, or an HTTP/2 protocol violation the codec closed the connection for. A client that
/// merely went away is none of these.
fn refusal_of(e: &hyper::Error) -> Option<Refusal> {
    if e.is_parse_too_large() {
        return Some(Refusal::RequestHeadTooLarge);
    }
    if e.is_parse() || e.is_parse_version_h2() {
        return Some(Refusal::RequestMalformed);
    }
    if e.is_timeout() {
        return Some(Refusal::RequestHeadTimeout);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            let violation = h2.is_library() && h2.reason() != Some(h2::Reason::NO_ERROR);
            return violation.then_some(Refusal::Http2ProtocolError);
        }
        source = s.source();
    }
    None
}

/// HTTP/1.1: serve until the connection goes quiet, park, wake on the next bytes, repeat. An
/// `async` block for the reason [`serve_connection`] is one.
#[allow(clippy::manual_async_fn)]
fn serve_h1<'a>(
    gw: &'a Gateway,
    info: &'a Arc<ConnInfo>,
    mut tls: Tls,
    mut proxy: Proxy,
    mut replay: Bytes,
    shutdown: &'a mut watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        loop {
            if replay.is_empty() {
                match next_bytes(gw, info, &mut tls, shutdown).await {
                    Some(bytes) => replay = bytes,
                    None => return close(tls).await,
                }
            }
            // The first bytes this hyper connection reads, kept (a reference count, no copy) in
            // case its first request head is refused: the record then shows its request line.
            let first_bytes = replay.clone();
            let requests_before = info.activity.requests();
            let io = TokioIo::new(ClientIo::h1(tls, info.clone(), std::mem::take(&mut replay)));
            // Boxed so that a parked connection's task does not keep room for it.
            let mut conn = Box::new(h1_builder(gw, shutdown).serve_connection(io, proxy));
            let served = Box::pin(drive(gw, info, &mut conn, Some(PARK_AFTER), shutdown)).await;
            let head = (info.activity.requests() == requests_before && !first_bytes.is_empty())
                .then_some(&first_bytes[..]);
            match &served {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    note_refusal(gw, info, "1.1", e, head);
                    if refusal_of(e).is_some() {
                        // hyper has answered (400, 414, 431…): let the answer reach the client.
                        let tls = conn.into_parts().io.into_inner().into_inner();
                        return linger(tls).await;
                    }
                    return;
                }
                None => {
                    return gw.refused(&Refused {
                        peer: info.peer,
                        kind: Refusal::RequestHeadTimeout,
                        http_version: Some("1.1"),
                        detail: "server.header_read_timeout",
                        head,
                    })
                }
            }
            let parts = conn.into_parts();
            let io = parts.io.into_inner();
            if !io.parked() {
                // hyper finished the connection (the client asked to close, or it was drained).
                return close(io.into_inner()).await;
            }
            // Parked. A shutdown or idle timeout that came meanwhile ends it in `next_bytes`.
            tls = io.into_inner();
            proxy = parts.service;
        }
    }
}

/// Counts and records a connection's end when it was a refusal ([`refusal_of`]).
fn note_refusal(
    gw: &Gateway,
    info: &ConnInfo,
    http_version: &'static str,
    e: &hyper::Error,
    head: Option<&[u8]>,
) {
    if let Some(kind) = refusal_of(e) {
        gw.refused(&Refused {
            peer: info.peer,
            kind,
            http_version: Some(http_version),
            detail: &e.to_string(),
            head,
        });
    }
}

/// Waits, parked, for the first bytes of the next request. `None` when the client closed or the
/// connection idled out, or when shutdown began and `server.shutdown_idle_wait` passed with
/// nothing sent: until then a request its client may be sending as the proxy stops is still
/// taken (and, the connection being built by [`h1_builder`] then, answered with
/// `Connection: close`).
async fn next_bytes(
    gw: &Gateway,
    info: &ConnInfo,
    tls: &mut Tls,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Bytes> {
    let idle_at = info.activity.idle_deadline(gw.config.server.idle_timeout.0);
    let _parked = gw.metrics.connection_parked();
    tls.release_buffers();
    crate::edge::memory::note_park();
    if !*shutdown.borrow_and_update() {
        tokio::select! {
            read = poll_fn(|cx| read_some(tls, cx)) => return read.ok().filter(|b| !b.is_empty()),
            _ = tokio::time::sleep_until(idle_at) => return None,
            _ = shutdown.changed() => {}
        }
    }
    let last_call = tokio::time::Instant::now() + gw.config.server.shutdown_idle_wait();
    tokio::select! {
        read = poll_fn(|cx| read_some(tls, cx)) => read.ok().filter(|b| !b.is_empty()),
        _ = tokio::time::sleep_until(idle_at.min(last_call)) => None,
    }
}

/// The HTTP/1.1 settings for a connection's next hyper connection: once shutdown has begun,
/// without keep-alive, so the one request it takes is answered with `Connection: close` and the
/// connection ends there.
fn h1_builder<'a>(
    gw: &'a Gateway,
    shutdown: &watch::Receiver<bool>,
) -> std::borrow::Cow<'a, http1::Builder> {
    if *shutdown.borrow() {
        let mut closing = gw.h1.clone();
        closing.keep_alive(false);
        std::borrow::Cow::Owned(closing)
    } else {
        std::borrow::Cow::Borrowed(&gw.h1)
    }
}

/// Reads what the client has sent, through TLS. The buffer lives only for this poll, so a parked
/// connection's task holds none.
fn read_some(tls: &mut Tls, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
    let mut chunk = [0u8; 4096];
    let mut buf = ReadBuf::new(&mut chunk);
    ready!(Pin::new(tls).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled())))
}

/// Reads until the bytes are either the HTTP/2 preface or cannot become it.
async fn sniff(
    gw: &Gateway,
    info: &ConnInfo,
    tls: &mut Tls,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Bytes> {
    let mut first = BytesMut::new();
    while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
        first.extend_from_slice(&next_bytes(gw, info, tls, shutdown).await?);
    }
    Some(first.freeze())
}

/// How long, and how much, a refused client may still send before its connection is closed.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Closes a connection whose request head was refused, then reads and discards what the client
/// still sends before letting it go (nginx's lingering close). Closed at once with its bytes unread, the kernel
/// answers with a TCP reset, and a reset can destroy the refusal (a 431, say) before the client
/// reads it. Reads until the client stops (end of input), [`LINGER`] passes or [`LINGER_BYTES`]
/// have come.
async fn linger(mut tls: Tls) {
    // The answer is whole: say so first (close_notify and FIN), then drain.
    let _ = tokio::time::timeout(CLOSE_GRACE, tls.shutdown()).await;
    let until = tokio::time::Instant::now() + LINGER;
    let mut left = LINGER_BYTES;
    while let Ok(Ok(bytes)) =
        tokio::time::timeout_at(until, poll_fn(|cx| read_some(&mut tls, cx))).await
    {
        if bytes.is_empty() || bytes.len() >= left {
            break;
        }
        left -= bytes.len();
    }
}

/// Sends close_notify and the TCP FIN, giving a client that does not read a moment, not forever.
async fn close(mut tls: Tls) {
    let _ = tokio::time::timeout(CLOSE_GRACE, tls.shutdown()).await;
}

/// A hyper connection as [`drive`] runs it.
trait Served {
    fn poll_served(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;
    /// Finish what is in flight, then close.
    fn drain(&mut self, info: &ConnInfo);
}

impl Served for Box<http1::Connection<Io, Proxy>> {
    fn poll_served(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        // Without shutdown: a parked connection's stream is handed back open.
        self.poll_without_shutdown(cx)
    }

    /// A request under way: hyper answers it with `Connection: close` and ends. Between requests
    /// hyper would close at once, and a request the client is sending at that moment would be
    /// lost; the connection parks instead, and [`next_bytes`] gives it its last call.
    fn drain(&mut self, info: &ConnInfo) {
        if info.activity.is_between_requests() {
            info.activity.want_park();
        } else {
            Pin::new(&mut **self).graceful_shutdown();
        }
    }
}

impl Served for Pin<Box<http2::Connection<Io, Proxy, TokioExecutor>>> {
    fn poll_served(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.as_mut().poll(cx)
    }

    /// GOAWAY, twice (h2 sends the last stream id only after a PING round trip), so the client
    /// knows which of its streams were taken.
    fn drain(&mut self, _: &ConnInfo) {
        self.as_mut().graceful_shutdown();
    }
}

/// Runs a hyper connection until it ends (or parks, after `park_after` of quiet), draining it when
/// it idles out or shutdown begins. `None` when it was dropped because a request head did not
/// arrive in time (slowloris).
async fn drive(
    gw: &Gateway,
    info: &ConnInfo,
    conn: &mut impl Served,
    park_after: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<hyper::Result<()>> {
    let idle = gw.config.server.idle_timeout.0;
    let head_timeout = gw.config.server.header_read_timeout.0;
    let mut draining = *shutdown.borrow_and_update();
    if draining {
        conn.drain(info);
    }
    // The timer, the shutdown signal and the head notification are made once and kept across
    // turns of the loop: making them anew each turn registered a timer and two waiters per
    // request. The timer is set again only when something is due before it; when it fires early,
    // every deadline is checked and it is set for the next.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    let mut timer = pin!(timer);
    let mut timer_at: Option<tokio::time::Instant> = None;
    let mut shutdown_changed = pin!(shutdown.changed());
    let mut head_started = pin!(info.head_started.notified());
    loop {
        let idle_at = (!draining).then(|| info.activity.idle_deadline(idle));
        let head_at = info.activity.head_deadline(head_timeout);
        let park_at = park_after.and_then(|quiet| info.activity.park_deadline(quiet));
        let due = [idle_at, head_at, park_at].into_iter().flatten().min();
        if let Some(at) = due.filter(|&at| timer_at.is_none_or(|set| at < set)) {
            timer.as_mut().reset(at);
            timer_at = Some(at);
        } else if due.is_none() {
            timer_at = None;
        }
        info.activity.timer_set(timer_at, head_timeout);
        tokio::select! {
            biased;
            result = poll_fn(|cx| conn.poll_served(cx)) => {
                if let Err(e) = &result {
                    tracing::debug!(client.ip = %info.peer_ip, "connection ended: {e}");
                }
                return Some(result);
            }
            _ = shutdown_changed.as_mut(), if !draining => {
                draining = true;
                conn.drain(info);
            }
            _ = timer.as_mut(), if timer_at.is_some() => {
                timer_at = None;
                let now = tokio::time::Instant::now();
                // A request head started and has not arrived whole in time (slowloris): drop it.
                if info.activity.head_deadline(head_timeout).is_some_and(|at| at <= now) {
                    tracing::debug!(client.ip = %info.peer_ip, "request head not received in time");
                    return None;
                }
                if !draining && info.activity.is_idle_for(idle) {
                    draining = true;
                    conn.drain(info);
                }
                // Asked here, done by hyper's next read: the loop polls the connection again.
                if park_after.is_some_and(|quiet| info.activity.is_quiet_for(quiet)) {
                    info.activity.want_park();
                }
            }
            _ = head_started.as_mut() => {
                head_started.set(info.head_started.notified());
            }
        }
    }
}
