//! Bodies in both directions, streamed frame by frame: nothing here ever holds a whole body.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::conn::InFlight;
use crate::links::Rewriter;
use crate::metering::{CapReached, Meter};
use crate::trail::record::{Draft, Ending};
use crate::upstream::Lease;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Raised inside the upload stream when it passes the configured limit. hyper does not always carry
/// it back out (an HTTP/2 upstream sees a stream reset), so the body also records it in its
/// [`UploadStatus`], which the pipeline checks to answer 413.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The agent's request body on its way upstream, cut off once it passes `limit` bytes (for uploads
/// without a `Content-Length`, or that lie about it).
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    upload: Option<UploadStatus>,
    meter: Option<Meter>,
    held: Option<Bytes>,
    cut: bool,
    /// Bytes forwarded upstream, for the decision record.
    forwarded: Option<Arc<AtomicU64>>,
    /// How long the client may keep the upstream waiting for the next bytes, and the timer for it,
    /// made the first time the client is slower than the upstream (most bodies never are).
    read_timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Keeps the agent's connection busy while the upload streams, even once the response has
    /// gone out (an upstream may answer before reading the whole body): a connection that looked
    /// idle would park or idle out and cut the upload.
    _in_flight: Option<InFlight>,
}

/// Why a [`RequestBody`] stopped short, shared with the pipeline: the upstream's error does not
/// always carry it (an HTTP/2 upstream sees only a stream reset).
#[derive(Clone, Default)]
pub struct UploadStatus(Arc<UploadFlags>);

#[derive(Default)]
pub struct UploadFlags {
    too_large: AtomicBool,
    ingress_cap: AtomicBool,
    client_gone: AtomicBool,
    timed_out: AtomicBool,
}

impl UploadStatus {
    /// It passed the size limit.
    pub fn too_large(&self) -> bool {
        self.0.too_large.load(Ordering::Relaxed)
    }

    /// It ran out of ingress budget.
    pub fn ingress_cap(&self) -> bool {
        self.0.ingress_cap.load(Ordering::Relaxed)
    }

    /// The client stopped sending it: it closed or reset the connection or the stream mid-body.
    pub fn client_gone(&self) -> bool {
        self.0.client_gone.load(Ordering::Relaxed)
    }

    /// The client sent nothing for `server.body_read_timeout` while the upstream waited.
    pub fn timed_out(&self) -> bool {
        self.0.timed_out.load(Ordering::Relaxed)
    }
}

/// Raised inside the upload stream when the client sends nothing for `server.body_read_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no request body bytes for {0:?}")]
pub struct BodyReadTimeout(pub Duration);

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("ingress byte cap reached")]
pub struct IngressCapReached;

impl RequestBody {
    /// The body, and its status when there is a body (none is allocated for the common empty
    /// GET).
    pub fn new(
        inner: Incoming,
        limit: u64,
        read_timeout: Duration,
    ) -> (Self, Option<UploadStatus>) {
        let upload = (!inner.is_end_stream()).then(UploadStatus::default);
        let body = RequestBody {
            inner,
            limit,
            seen: 0,
            upload: upload.clone(),
            meter: None,
            held: None,
            cut: false,
            forwarded: None,
            read_timeout,
            timer: None,
            _in_flight: None,
        };
        (body, upload)
    }

    /// Counts what is forwarded into `counter`.
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.forwarded = Some(counter);
        self
    }

    /// Holds the connection busy until the upload is over (see the field).
    pub fn holding(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
    }

    /// Counts the upload against an ingress budget (and records it in the status when it runs out).
    pub fn metered(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }
}

/// A frame of the client's body as hyper gives it: `None` at its end.
type ClientFrame = Option<Result<Frame<Bytes>, hyper::Error>>;

impl RequestBody {
    /// The client's next frame, or a timeout once it has sent nothing for `read_timeout` while
    /// asked. The timer restarts with every frame.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> Poll<Result<ClientFrame, BodyReadTimeout>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let Some(timer) = &mut self.timer {
                let next = tokio::time::Instant::now() + self.read_timeout;
                timer.as_mut().reset(next);
            }
            return Poll::Ready(Ok(frame));
        }
        let timeout = self.read_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(timer.as_mut().poll(cx));
        if let Some(flag) = &self.upload {
            flag.0.timed_out.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Err(BodyReadTimeout(timeout)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.cut {
            return Poll::Ready(Some(Err(Box::new(IngressCapReached))));
        }
        let data = match this.held.take() {
            Some(data) => data,
            None => match ready!(this.poll_client(cx)).map_err(|t| Box::new(t) as BoxError)? {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.seen += data.len() as u64;
                        if this.seen > this.limit {
                            if let Some(flag) = &this.upload {
                                flag.0.too_large.store(true, Ordering::Relaxed);
                            }
                            let limit = this.limit;
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                        }
                        data
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => {
                    if let Some(flag) = &this.upload {
                        flag.0.client_gone.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                None => return Poll::Ready(None),
            },
        };
        let admitted = match this.meter.as_mut() {
            None => data.len() as u64,
            Some(meter) => match meter.poll_admit(cx, data.len() as u64) {
                Poll::Pending => {
                    this.held = Some(data);
                    return Poll::Pending;
                }
                Poll::Ready(n) => n,
            },
        };
        match admitted {
            n if n as usize == data.len() => {
                if let Some(c) = &this.forwarded {
                    c.fetch_add(n, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            _ => {
                // The ingress budget ran out: nothing more goes upstream, and the upload fails.
                this.cut = true;
                if let Some(flag) = &this.upload {
                    flag.0.ingress_cap.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(Box::new(IngressCapReached))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.cut && self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy sends back to the agent: the upstream's streamed body or a small body of its own.
/// It holds the connection's in-flight marker, so a connection counts as busy until the last byte of
/// its response has gone out, not merely until the headers have.
pub struct ProxyBody {
    kind: Kind,
    _in_flight: Option<InFlight>,
    /// This request's decision record, sealed when the body ends or is dropped.
    draft: Option<Box<Draft>>,
    /// The HTTP/1.1 upstream connection this body is read from, returned to the pool at its end.
    lease: Option<Lease>,
    sent: u64,
    cut: bool,
}

enum Kind {
    Upstream(UpstreamBody),
    /// The upstream body counted against an egress budget; `held` is a chunk waiting for budget.
    Metered {
        body: UpstreamBody,
        meter: Meter,
        held: Option<Bytes>,
        cut: bool,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(bytes.into())),
            _in_flight: None,
            draft: None,
            lease: None,
            sent: 0,
            cut: false,
        }
    }

    pub fn upstream(body: UpstreamBody, lease: Option<Lease>) -> Self {
        ProxyBody {
            kind: Kind::Upstream(body),
            _in_flight: None,
            draft: None,
            lease,
            sent: 0,
            cut: false,
        }
    }

    pub fn metered(body: UpstreamBody, meter: Meter, lease: Option<Lease>) -> Self {
        ProxyBody {
            kind: Kind::Metered {
                body,
                meter,
                held: None,
                cut: false,
            },
            _in_flight: None,
            draft: None,
            lease,
            sent: 0,
            cut: false,
        }
    }

    /// The proxy's own body left out (for a HEAD request), its headers kept. An upstream body is
    /// left alone: the upstream client already knows a HEAD answer has none.
    pub fn without_content(mut self) -> Self {
        if let Kind::Full(data) = &mut self.kind {
            *data = None;
        }
        self
    }

    pub fn recording(mut self, draft: Draft) -> Self {
        self.draft = Some(Box::new(draft));
        self
    }

    /// The body is over: record it, and hand the upstream connection back if the upstream's
    /// response was read to its end (otherwise the lease is dropped and the connection closed).
    fn seal(&mut self, ending: Ending) {
        if let Some(draft) = self.draft.take() {
            draft.finish(self.sent, ending);
        }
        if let Some(lease) = self.lease.take() {
            if ending == Ending::Completed {
                lease.release();
            }
        }
    }

    pub fn holding(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, or hyper gave up on the transfer (the
        // connection died, or shutdown cut it).
        let ending = if !self.cut && self.inner_end_stream() {
            Ending::Completed
        } else {
            Ending::Abandoned
        };
        self.seal(ending);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.as_mut().poll_inner(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.sent += d.len() as u64;
                }
                // hyper stops polling a body of known length at its last byte: that is the end.
                if self.inner_end_stream() {
                    self.seal(Ending::Completed);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let ending = if e.downcast_ref::<CapReached>().is_some() {
                    self.cut = true;
                    Ending::CutOff
                } else {
                    Ending::Failed
                };
                self.seal(ending);
            }
            Poll::Ready(None) => self.seal(Ending::Completed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner_size_hint()
    }
}

impl ProxyBody {
    fn poll_inner(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Upstream(body) => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            Kind::Metered {
                body,
                meter,
                held,
                cut,
            } => {
                if *cut {
                    let delivered = meter.delivered.load(Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(CapReached { delivered }))));
                }
                let data = match held.take() {
                    Some(d) => d,
                    None => match ready!(body.poll_frame(cx)) {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(d) => d,
                            Err(frame) => return Poll::Ready(Some(Ok(frame))),
                        },
                        Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                        None => return Poll::Ready(None),
                    },
                };
                match meter.poll_admit(cx, data.len() as u64) {
                    Poll::Pending => {
                        *held = Some(data);
                        Poll::Pending
                    }
                    Poll::Ready(n) if n as usize == data.len() => {
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(n) => {
                        // Send what the budget still covers, then fail the body on the next poll.
                        *cut = true;
                        if n == 0 {
                            let delivered = meter.delivered.load(Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(CapReached { delivered }))));
                        }
                        Poll::Ready(Some(Ok(Frame::data(data.slice(..n as usize)))))
                    }
                }
            }
        }
    }

    fn inner_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Metered {
                body, held, cut, ..
            } => !*cut && held.is_none() && body.is_end_stream(),
        }
    }

    fn inner_size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Upstream(body) | Kind::Metered { body, .. } => body.size_hint(),
        }
    }
}

/// The upstream's response body as the agent gets it: its links rewritten to the proxy's origin
/// when it is JSON ([`crate::links`]), otherwise as it came. The egress meter sits after this, so
/// it counts what the agent receives.
pub struct UpstreamBody {
    inner: Incoming,
    rewriter: Option<Box<Rewriter>>,
    /// Trailers that came while the rewriter held bytes: sent after those.
    trailers: Option<Frame<Bytes>>,
    /// The length may differ from the upstream's: no size to announce.
    resized: bool,
}

impl UpstreamBody {
    pub fn new(inner: Incoming) -> Self {
        UpstreamBody {
            inner,
            rewriter: None,
            trailers: None,
            resized: false,
        }
    }

    /// Rewrites its links with `rewriter`; `resized` when that can change its length.
    pub fn rewriting(mut self, rewriter: Rewriter, resized: bool) -> Self {
        self.rewriter = Some(Box::new(rewriter));
        self.resized = resized;
        self
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(rw) = self.rewriter.as_mut() else {
            return Pin::new(&mut self.inner).poll_frame(cx);
        };
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = rw.push(data);
                        if self.inner.is_end_stream() {
                            // hyper reads no further once a sized body's last byte is in.
                            out = join(out, rw.finish());
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        let rest = rw.finish();
                        if rest.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        self.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let rest = rw.finish();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
            && self.trailers.is_none()
            && !self.rewriter.as_ref().is_some_and(|r| r.is_holding())
    }

    fn size_hint(&self) -> SizeHint {
        if self.resized {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

fn join(a: Bytes, b: Bytes) -> Bytes {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = bytes::BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(&a);
    out.extend_from_slice(&b);
    out.freeze()
}
