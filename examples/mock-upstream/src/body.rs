//! Response bodies: small JSON documents, or a generated stream of any length that is never held
//! in memory whole (it repeats one shared chunk).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

pub enum MockBody {
    Full(Option<Bytes>),
    /// `sized: false` hides the length, so HTTP/1.1 sends it chunked (no `Content-Length`).
    Repeat {
        chunk: Bytes,
        remaining: u64,
        sized: bool,
    },
    /// `head`, then `chunk` `repeats` times, then `tail`, each its own frame, the length declared:
    /// a JSON list of any length (a chunk of records ending in a comma, repeated) never held whole.
    Framed {
        head: Option<Bytes>,
        chunk: Bytes,
        repeats: u64,
        tail: Option<Bytes>,
        remaining: u64,
    },
    /// These pieces, each its own frame, `gap` apart (so a proxy reads them separately), with
    /// their total length declared.
    Paced {
        parts: std::collections::VecDeque<Bytes>,
        gap: std::time::Duration,
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
        remaining: u64,
    },
}

impl MockBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        MockBody::Full(None)
    }

    /// `parts` sent one frame each, `gap` apart.
    pub fn paced(parts: Vec<Bytes>, gap: std::time::Duration) -> Self {
        MockBody::Paced {
            remaining: parts.iter().map(|p| p.len() as u64).sum(),
            parts: parts.into(),
            gap,
            wait: None,
        }
    }

    /// `head`, `chunk` × `repeats`, `tail`.
    pub fn framed(head: Bytes, chunk: Bytes, repeats: u64, tail: Bytes) -> Self {
        MockBody::Framed {
            remaining: (head.len() + tail.len()) as u64 + chunk.len() as u64 * repeats,
            head: Some(head),
            chunk,
            repeats,
            tail: Some(tail),
        }
    }

    /// `total` bytes made of `chunk` repeated (the last piece cut short).
    pub fn repeat(chunk: Bytes, total: u64, sized: bool) -> Self {
        MockBody::Repeat {
            chunk,
            remaining: total,
            sized,
        }
    }
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            MockBody::Paced {
                parts,
                gap,
                wait,
                remaining,
            } => {
                if let Some(w) = wait {
                    std::task::ready!(std::future::Future::poll(w.as_mut(), cx));
                }
                let Some(part) = parts.pop_front() else {
                    return Poll::Ready(None);
                };
                *wait = Some(Box::pin(tokio::time::sleep(*gap)));
                *remaining -= part.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(part))))
            }
            MockBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            MockBody::Framed {
                head,
                chunk,
                repeats,
                tail,
                remaining,
            } => {
                let part = match head.take() {
                    Some(h) => h,
                    None if *repeats > 0 => {
                        *repeats -= 1;
                        chunk.clone()
                    }
                    None => match tail.take() {
                        Some(t) => t,
                        None => return Poll::Ready(None),
                    },
                };
                *remaining -= part.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(part))))
            }
            MockBody::Repeat {
                chunk, remaining, ..
            } => {
                if *remaining == 0 || chunk.is_empty() {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(chunk.len() as u64);
                *remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(chunk.slice(..n as usize)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(data) => data.is_none(),
            MockBody::Repeat { remaining, .. }
            | MockBody::Paced { remaining, .. }
            | MockBody::Framed { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            MockBody::Paced { remaining, .. } | MockBody::Framed { remaining, .. } => {
                SizeHint::with_exact(*remaining)
            }
            MockBody::Repeat {
                remaining, sized, ..
            } => {
                if *sized {
                    SizeHint::with_exact(*remaining)
                } else {
                    SizeHint::default()
                }
            }
        }
    }
}
