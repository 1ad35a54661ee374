//! The response body on its way to the agent: the upstream's (link rewriting, egress metering and
//! cut-off) or the proxy's own, sealing the decision record when it ends.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use std::sync::Arc;

use crate::active::Active;
use crate::conn::InFlight;
use crate::links::Rewriter;
use crate::metering::{CapReached, Meter};
use crate::outcome::Outcome;
use crate::redact::Redactor;
use crate::state::activity::AccountActivity;
use crate::state::controls::Watched;
use crate::trail::record::Draft;
use crate::trail::schema::Ending;
use crate::upstream::Lease;

use super::request::BoxError;

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
    /// Its entry among the streams a lock can cut (an allowed upstream response's).
    watched: Option<Watched>,
    /// The account's tracker, counting the bytes as they go (with `[detect]` on), and the policy
    /// generation whose rules judge them.
    detected: Option<(Arc<AccountActivity>, Arc<Active>)>,
}

/// The stream was cut by a lock (see [`crate::state::controls`]).
#[derive(Debug, thiserror::Error)]
#[error("cut by lock {0}")]
pub struct LockCut(pub String);

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
    fn of(kind: Kind, lease: Option<Lease>) -> Self {
        ProxyBody {
            kind,
            _in_flight: None,
            draft: None,
            lease,
            sent: 0,
            cut: false,
            watched: None,
            detected: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::of(Kind::Full(Some(bytes.into())), None)
    }

    pub fn upstream(body: UpstreamBody, lease: Option<Lease>) -> Self {
        Self::of(Kind::Upstream(body), lease)
    }

    pub fn metered(body: UpstreamBody, meter: Meter, lease: Option<Lease>) -> Self {
        let kind = Kind::Metered {
            body,
            meter,
            held: None,
            cut: false,
        };
        Self::of(kind, lease)
    }

    /// The proxy's own body left out (for a HEAD request), its headers kept. An upstream body is
    /// left alone: the upstream client already knows a HEAD answer has none.
    pub fn without_content(mut self) -> Self {
        if let Kind::Full(data) = &mut self.kind {
            *data = None;
        }
        self
    }

    /// Cut when a lock targets the stream: at once if it is sending, woken if it is waiting.
    pub fn watched(mut self, watched: Watched) -> Self {
        self.watched = Some(watched);
        self
    }

    /// Counted by the account's tracker as it streams: a bulk pull trips its detectors mid-body.
    pub fn detected(mut self, activity: Arc<AccountActivity>, active: Arc<Active>) -> Self {
        self.detected = Some((activity, active));
        self
    }

    pub fn recording(mut self, draft: Draft) -> Self {
        self.draft = Some(Box::new(draft));
        self
    }

    /// The body is over: record it, and hand the upstream connection back if the upstream's
    /// response was read to its end (otherwise the lease is dropped and the connection closed).
    fn seal(&mut self, ending: Ending) {
        if let Some(mut draft) = self.draft.take() {
            if let Some(redactor) = self.upstream_body().and_then(|b| b.redactor.as_deref()) {
                if redactor.redacts() {
                    draft.redacted = Some(redactor.summary());
                }
                draft.scoped = join_scope(draft.scoped.take(), redactor.scope_summary());
            }
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
        if let Some((lock, reason)) = self.watched.as_ref().and_then(Watched::cut_by) {
            let lock = lock.to_string();
            self.cut = true;
            let rule = self.watched.as_ref().and_then(Watched::cut_rule);
            if let Some(draft) = self.draft.as_mut() {
                draft.outcome = Outcome::Refused(reason);
                draft.rule = rule.unwrap_or_default();
            }
            self.seal(Ending::CutOff);
            return Poll::Ready(Some(Err(Box::new(LockCut(lock)))));
        }
        let polled = self.as_mut().poll_inner(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    self.sent += n;
                    if let Some((activity, active)) = &self.detected {
                        let now = crate::clock::now_ms() / 1000;
                        activity.bytes(now, n, &active.config.policy.detect);
                    }
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
            Poll::Pending => {
                if let Some(watched) = &self.watched {
                    watched.register(cx.waker());
                }
            }
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
    fn upstream_body(&self) -> Option<&UpstreamBody> {
        match &self.kind {
            Kind::Upstream(body) | Kind::Metered { body, .. } => Some(body),
            Kind::Full(_) => None,
        }
    }

    fn poll_inner(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Upstream(body) => body.poll_frame(cx),
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
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
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

/// The upstream's response body as the agent gets it: a vendor's redacted fields taken out
/// ([`crate::redact`]) and its links rewritten to the proxy's origin when it is JSON
/// ([`crate::links`]), otherwise as it came. The egress meter sits after this, so it counts what
/// the agent receives.
pub struct UpstreamBody {
    inner: Incoming,
    redactor: Option<Box<Redactor>>,
    rewriter: Option<Box<Rewriter>>,
    /// Trailers that came while the rewriter held bytes: sent after those.
    trailers: Option<Frame<Bytes>>,
    /// The length may differ from the upstream's: no size to announce.
    resized: bool,
    /// The transforms have had the body's end.
    finished: bool,
    /// What [`UpstreamBody::read_ahead`] transformed before the headers went: sent first.
    ahead: Option<Bytes>,
    /// The whole body was read ahead: its exact length.
    whole: Option<u64>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming) -> Self {
        UpstreamBody {
            inner,
            redactor: None,
            rewriter: None,
            trailers: None,
            resized: false,
            finished: false,
            ahead: None,
            whole: None,
        }
    }

    /// Reads and transforms the body's first frames before the response's headers go: the first,
    /// then those already arrived, up to `limit` bytes of the upstream's (and, scoping, to the end
    /// of a single record). A body that has ended by then (a page of a list, a record) goes out
    /// with its exact length instead of chunked; one that has not streams on after what was read. Only for a transformed body (a plain one keeps the upstream's length).
    /// Returns the exact length when the whole body was read.
    pub async fn read_ahead(&mut self, limit: usize) -> Result<Option<u64>, BoxError> {
        let mut got = bytes::BytesMut::new();
        let mut read = 0;
        while !self.finished && self.trailers.is_none() && (read < limit || self.deciding()) {
            // The first frame is waited for, and the rest of a single record being judged; past
            // that only what has already arrived is read, so a slow stream is not held back.
            let wait = read == 0 || self.deciding();
            let frame = std::future::poll_fn(|cx| match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending if !wait => Poll::Ready(None::<Option<_>>),
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
            })
            .await;
            let Some(frame) = frame else {
                break;
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        read += data.len();
                        let mut out = self.transform(data)?;
                        if self.inner.is_end_stream() {
                            out = join(out, self.finish()?);
                        }
                        got.extend_from_slice(&out);
                    }
                    Err(trailers) => {
                        got.extend_from_slice(&self.finish()?);
                        self.trailers = Some(trailers);
                    }
                },
                Some(Err(e)) => return Err(Box::new(e)),
                None => got.extend_from_slice(&self.finish()?),
            }
        }
        let len = got.len() as u64;
        self.ahead = Some(got.freeze());
        if self.finished && self.trailers.is_none() {
            self.whole = Some(len);
        }
        Ok(self.whole)
    }

    /// Rewrites its links with `rewriter`; `resized` when that can change its length.
    pub fn rewriting(mut self, rewriter: Rewriter, resized: bool) -> Self {
        self.rewriter = Some(Box::new(rewriter));
        self.resized |= resized;
        self
    }

    /// Takes `redactor`'s fields out of it (its length changes).
    pub fn redacting(mut self, redactor: Redactor) -> Self {
        self.redactor = Some(Box::new(redactor));
        self.resized = true;
        self
    }

    pub fn is_redacting(&self) -> bool {
        self.redactor.is_some()
    }

    /// The redactor reading it (redacting, scoping), if any.
    pub fn redactor(&self) -> Option<&Redactor> {
        self.redactor.as_deref()
    }

    /// The body's single record is being judged: its verdict must come before the headers.
    fn deciding(&self) -> bool {
        self.redactor
            .as_ref()
            .is_some_and(|r| *r.single() == crate::redact::records::Single::Pending)
    }

    /// One chunk through the redactor, then the rewriter.
    fn transform(&mut self, data: Bytes) -> Result<Bytes, BoxError> {
        let data = match self.redactor.as_mut() {
            Some(r) => {
                let mut out = bytes::BytesMut::with_capacity(data.len());
                r.push(&data, &mut out)?;
                out.freeze()
            }
            None => data,
        };
        Ok(match self.rewriter.as_mut() {
            Some(rw) => rw.push(data),
            None => data,
        })
    }

    /// The body's end through both: what they held back (once).
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(Bytes::new());
        }
        let rest = match self.redactor.as_mut() {
            Some(r) => {
                let mut out = bytes::BytesMut::new();
                r.finish(&mut out)?;
                out.freeze()
            }
            None => Bytes::new(),
        };
        Ok(match self.rewriter.as_mut() {
            Some(rw) => join(rw.push(rest), rw.finish()),
            None => rest,
        })
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(ahead) = self.ahead.take().filter(|a| !a.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(ahead))));
        }
        if self.rewriter.is_none() && self.redactor.is_none() {
            return Pin::new(&mut self.inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError)));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = self.transform(data)?;
                        if self.inner.is_end_stream() {
                            // hyper reads no further once a sized body's last byte is in.
                            out = join(out, self.finish()?);
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        let rest = self.finish()?;
                        if rest.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        self.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => {
                    let rest = self.finish()?;
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.as_ref().is_none_or(Bytes::is_empty)
            && self.inner.is_end_stream()
            && self.trailers.is_none()
            && !self.rewriter.as_ref().is_some_and(|r| r.is_holding())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(len) = self.whole {
            let left = self.ahead.as_ref().map_or(0, |a| a.len() as u64);
            SizeHint::with_exact(left.min(len))
        } else if self.resized {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

/// The parent's judgement (made before the request went) and the body's, in one object: both are
/// non-empty objects with keys of their own (`parent`, `lookup`, `inside`; `kept`, `withheld`,
/// `first`), so their members are put side by side as written.
fn join_scope(parent: Option<String>, body: Option<String>) -> Option<String> {
    match (parent, body) {
        (Some(parent), Some(body)) => {
            let members = |o: &str| {
                let o = o.trim();
                o.strip_prefix('{')
                    .and_then(|o| o.strip_suffix('}'))
                    .unwrap_or(o)
                    .to_string()
            };
            Some(format!("{{{},{}}}", members(&parent), members(&body)))
        }
        (parent, body) => parent.or(body),
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
