//! The downstream stream as hyper sees it.
//!
//! Three jobs sit here because only the stream sees every byte in both directions:
//! - **Replay.** Bytes read while an HTTP/1.1 connection was parked are handed to the fresh hyper
//!   connection before anything else, so nothing the client sent is lost across a park.
//! - **Head timing.** The first byte of a request head on an idle HTTP/1.1 connection starts the
//!   header timer (see [`crate::conn`]); hyper's own timer runs from the previous response instead.
//! - **Parking.** Once an HTTP/1.1 connection has been quiet for a while ([`crate::edge::serve`] asks),
//!   the next time hyper looks for a request head and none has come, the stream reports a clean end
//!   of input. hyper's connection then finishes and hands the TLS stream back
//!   ([`ClientIo::parked`]), and its read and write buffers (about 24 KiB) are freed while the
//!   agent's connection sits idle; [`crate::edge::serve`] waits for the next bytes itself.
//!
//! Parking only happens when nothing is in flight (an upload counts until its last byte, even when
//! the upstream answered before it), no request head has begun, nothing was read
//! while the last request was in flight (a body still arriving, or pipelined requests that hyper may
//! hold half-read) and everything written has been flushed: hyper is between messages and holds no
//! unparsed bytes. One case gets past these checks: a client pipelining three or more requests whose
//! third arrives split, its remainder later than the second's response. hyper then ends the
//! connection after the complete responses, as on a real close; RFC 9112 §9.3.2 has pipelining
//! clients retry what was not answered.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::ConnInfo;

pub struct ClientIo<T> {
    inner: T,
    replay: Bytes,
    /// HTTP/1.1 only: heads are timed and the connection may park. HTTP/2 exchanges frames (PINGs,
    /// SETTINGS) while idle, so neither applies.
    h1: Option<Arc<ConnInfo>>,
    /// Written to the inner stream and not yet flushed: parking now could strand a response's tail.
    unflushed: bool,
    parked: bool,
}

impl<T> ClientIo<T> {
    /// An HTTP/1.1 connection's stream; `replay` is what was read while it was parked.
    pub fn h1(inner: T, info: Arc<ConnInfo>, replay: Bytes) -> Self {
        ClientIo {
            inner,
            replay,
            h1: Some(info),
            unflushed: false,
            parked: false,
        }
    }

    /// An HTTP/2 connection's stream; `replay` is what was read to recognise it.
    pub fn h2(inner: T, replay: Bytes) -> Self {
        ClientIo {
            inner,
            replay,
            h1: None,
            unflushed: false,
            parked: false,
        }
    }

    /// True when the end of input hyper saw was a park, not the client closing.
    pub fn parked(&self) -> bool {
        self.parked
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn may_park(&self) -> bool {
        !self.unflushed && self.h1.as_ref().is_some_and(|i| i.activity.may_park())
    }

    fn note_bytes(&self) {
        if let Some(info) = &self.h1 {
            if info.activity.bytes_arrived() {
                info.head_started.notify_one();
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            this.note_bytes();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.may_park() => {
                this.parked = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.note_bytes();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.unflushed = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
