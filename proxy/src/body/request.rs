//! The request body on its way to the upstream: size limit, read timeout, ingress metering, and
//! what became of the upload, streamed frame by frame.

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
use crate::metering::Meter;

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
    /// The client's body; `None` for a request of the proxy's own (a side request's empty body).
    inner: Option<Incoming>,
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
            inner: Some(inner),
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

    /// An empty body, for a request the proxy makes itself on the upstream's connections.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            limit: 0,
            seen: 0,
            upload: None,
            meter: None,
            held: None,
            cut: false,
            forwarded: None,
            read_timeout: Duration::ZERO,
            timer: None,
            _in_flight: None,
        }
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
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
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
        !self.cut && self.held.is_none() && self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
