//! Byte budgets counted as bodies stream, cut off when they run out.
//!
//! Counting every chunk against Redis would add a round trip per chunk, so a [`Meter`] leases
//! budget from the shared counters in slices (at most [`SLICE`] at a time, never more than what
//! is left) and spends it locally; whatever is leased but unsent goes back when the body ends or is
//! dropped. Several replicas together therefore never exceed the cap: the lease script hands out
//! only what remains.
//!
//! When the budget runs out mid-body, the bytes still covered go out and the body then fails:
//! hyper aborts the transfer (HTTP/1.1 connection closed short of its length or its last chunk,
//! HTTP/2 stream reset), so the client sees an incomplete transfer, never a silently truncated
//! "complete" one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::state::{Counter, StateStore};

/// The largest lease taken at once.
pub const SLICE: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("byte cap reached after {delivered} bytes")]
pub struct CapReached {
    pub delivered: u64,
}

type LeaseFuture = Pin<Box<dyn Future<Output = u64> + Send>>;

pub struct Meter {
    store: &'static StateStore,
    counters: Vec<Counter>,
    leased: u64,
    exhausted: bool,
    pending: Option<(LeaseFuture, u64)>,
    /// The body's declared length: the first lease takes exactly that, so a small response costs
    /// one lease and nothing to give back.
    expected: Option<u64>,
    /// Bytes let through so far, readable after the body is gone (for the decision record).
    pub delivered: Arc<AtomicU64>,
}

impl Meter {
    pub fn new(store: &'static StateStore, counters: Vec<Counter>) -> Self {
        Meter {
            store,
            counters,
            leased: 0,
            exhausted: false,
            pending: None,
            expected: None,
            delivered: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn expecting(mut self, length: Option<u64>) -> Self {
        self.expected = length;
        self
    }

    /// How many of the next `len` bytes may pass. Less than `len` means the budget is spent and
    /// the body must end in an error after them.
    pub fn poll_admit(&mut self, cx: &mut Context<'_>, len: u64) -> Poll<u64> {
        loop {
            if self.leased >= len {
                self.leased -= len;
                self.delivered.fetch_add(len, Ordering::Relaxed);
                return Poll::Ready(len);
            }
            if self.exhausted {
                let n = std::mem::take(&mut self.leased);
                self.delivered.fetch_add(n, Ordering::Relaxed);
                return Poll::Ready(n);
            }
            if self.pending.is_none() {
                let want = match self.expected.take() {
                    Some(total) => total.max(len - self.leased),
                    None => SLICE.max(len - self.leased),
                };
                if let Some(granted) = self.store.lease_now(&self.counters, want) {
                    self.granted(granted, want);
                    continue;
                }
                let store = self.store;
                let counters = self.counters.clone();
                // A failed lease (state unavailable with on_state_error = "deny") grants nothing:
                // the transfer stops, fail closed.
                let fut = Box::pin(async move { store.lease(&counters, want).await.unwrap_or(0) });
                self.pending = Some((fut, want));
            }
            let Some((fut, want)) = self.pending.as_mut() else {
                continue;
            };
            let want = *want;
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(granted) => {
                    self.pending = None;
                    self.granted(granted, want);
                }
            }
        }
    }

    fn granted(&mut self, granted: u64, want: u64) {
        self.leased += granted;
        if granted < want {
            self.exhausted = true;
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let unused = self.leased;
        if unused == 0 {
            return;
        }
        if self.store.release_now(&self.counters, unused) {
            return;
        }
        let store = self.store;
        let counters = std::mem::take(&mut self.counters);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = store.release(&counters, unused).await;
            });
        }
    }
}
