//! Bodies in both directions, streamed frame by frame: nothing here ever holds a whole body.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::conn::InFlight;
use crate::metering::{CapReached, Meter};
use crate::trail::record::Draft;
use crate::upstream::Lease;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Raised inside the upload stream when it passes the configured limit. hyper does not always carry
/// it back out (an HTTP/2 upstream sees a stream reset), so the body also raises an [`Overflow`]
/// flag that the pipeline checks to answer 413.
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
    overflow: Option<Overflow>,
    meter: Option<Meter>,
    held: Option<Bytes>,
    cut: bool,
    /// Bytes forwarded upstream, for the decision record.
    forwarded: Option<Arc<AtomicU64>>,
    /// Keeps the agent's connection busy while the upload streams, even once the response has
    /// gone out (an upstream may answer before reading the whole body): a connection that looked
    /// idle would park or idle out and cut the upload.
    _in_flight: Option<InFlight>,
}

/// Set when a [`RequestBody`] passed its size limit (`.0`) or its ingress budget (`.1`); shared
/// with the pipeline.
#[derive(Clone, Default)]
pub struct Overflow(Arc<AtomicBool>, Arc<AtomicBool>);

impl Overflow {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn ingress_cap(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("ingress byte cap reached")]
pub struct IngressCapReached;

impl RequestBody {
    /// The body, and an overflow flag when there is a body to overflow (none is allocated for the
    /// common empty GET).
    pub fn new(inner: Incoming, limit: u64) -> (Self, Option<Overflow>) {
        let overflow = (!inner.is_end_stream()).then(Overflow::default);
        let body = RequestBody {
            inner,
            limit,
            seen: 0,
            overflow: overflow.clone(),
            meter: None,
            held: None,
            cut: false,
            forwarded: None,
            _in_flight: None,
        };
        (body, overflow)
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

    /// Counts the upload against an ingress budget (and raises the overflow flag when it runs out).
    pub fn metered(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
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
            None => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.seen += data.len() as u64;
                        if this.seen > this.limit {
                            if let Some(flag) = &this.overflow {
                                flag.0.store(true, Ordering::Relaxed);
                            }
                            let limit = this.limit;
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                        }
                        data
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
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
                if let Some(flag) = &this.overflow {
                    flag.1.store(true, Ordering::Relaxed);
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
    Upstream(Incoming),
    /// The upstream body counted against an egress budget; `held` is a chunk waiting for budget.
    Metered {
        body: Incoming,
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

    pub fn upstream(body: Incoming, lease: Option<Lease>) -> Self {
        ProxyBody {
            kind: Kind::Upstream(body),
            _in_flight: None,
            draft: None,
            lease,
            sent: 0,
            cut: false,
        }
    }

    pub fn metered(body: Incoming, meter: Meter, lease: Option<Lease>) -> Self {
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

    pub fn recording(mut self, draft: Draft) -> Self {
        self.draft = Some(Box::new(draft));
        self
    }

    /// The body is over: record it, and hand the upstream connection back if the upstream's
    /// response was read to its end (otherwise the lease is dropped and the connection closed).
    fn seal(&mut self, completed: bool) {
        if let Some(draft) = self.draft.take() {
            draft.finish(self.sent, completed, self.cut);
        }
        if let Some(lease) = self.lease.take() {
            if completed {
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
        // Dropped before its end: the client went away, or hyper gave up on the transfer.
        let ended = !self.cut && self.inner_end_stream();
        self.seal(ended);
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
                    self.seal(true);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if e.downcast_ref::<CapReached>().is_some() {
                    self.cut = true;
                }
                self.seal(false);
            }
            Poll::Ready(None) => self.seal(true),
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
            Kind::Upstream(body) => Pin::new(body)
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
                    None => match ready!(Pin::new(&mut *body).poll_frame(cx)) {
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
