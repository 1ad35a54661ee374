//! The decision trail: exactly one record per request (allowed or denied) and per refused
//! connection, written when the request ends so it holds the final byte counts, chained so that
//! altering, deleting, reordering or truncating records shows.
//!
//! Records go through a bounded queue to a dedicated writer thread. A request takes its place in
//! the queue *before* it proceeds ([`Trail::reserve`]): with `on_log_failure = "deny"` (the default),
//! a request that could not be recorded, because the queue is full or the log unwritable, is
//! refused, so nothing happens that the trail does not show. With `"allow"` it proceeds, and the
//! missing record is counted and logged.

pub mod chain;
mod json;
pub mod record;
pub mod time;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::throttle::LogThrottle;
use vendorgate_policy::config::{OnLogFailure, Trail as TrailConfig, TrailSink};

pub use writer::{rotated_name, WriterStatus};

/// One record on its way to the writer; the permit is its place in the queue.
pub struct Entry {
    pub fields: String,
    _permit: Option<OwnedSemaphorePermit>,
}

pub struct Trail {
    sink: TrailSink,
    on_failure: OnLogFailure,
    room: Arc<Semaphore>,
    tx: Mutex<Option<Sender<Entry>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    pub status: Arc<WriterStatus>,
    pub dropped: AtomicU64,
    log_throttle: LogThrottle,
}

/// A reserved place in the trail. Submitting it sends the record; dropping it unsent (which the
/// request path never does) just frees the place.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    tx: Option<Sender<Entry>>,
}

impl Slot {
    pub fn submit(self, fields: String) {
        if let Some(tx) = self.tx {
            let _ = tx.send(Entry {
                fields,
                _permit: self.permit,
            });
        }
    }

    /// False for the placeholder handed out when a record is being dropped (`allow`) or the
    /// trail is off.
    pub fn is_recorded(&self) -> bool {
        self.tx.is_some()
    }
}

impl Trail {
    pub fn start(config: &TrailConfig) -> Arc<Trail> {
        let status = Arc::new(WriterStatus::default());
        let (tx, rx) = channel();
        let writer = if config.sink == TrailSink::Off {
            None
        } else {
            let w = writer::Writer::new(config.clone(), status.clone());
            Some(
                std::thread::Builder::new()
                    .name("vendorgate-trail".into())
                    .spawn(move || w.run(rx))
                    .expect("spawning the decision-log writer thread"),
            )
        };
        Arc::new(Trail {
            sink: config.sink,
            on_failure: config.on_log_failure,
            room: Arc::new(Semaphore::new(config.queue.max(1))),
            tx: Mutex::new(writer.as_ref().map(|_| tx)),
            writer: Mutex::new(writer),
            status,
            dropped: AtomicU64::new(0),
            log_throttle: LogThrottle::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink != TrailSink::Off
    }

    fn sender(&self) -> Option<Sender<Entry>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A place in the queue for this request's record, waiting up to a second for room.
    /// `Err(())` means: refuse the request (`on_log_failure = "deny"`).
    pub async fn reserve(&self) -> Result<Slot, ()> {
        if !self.enabled() {
            return Ok(Slot {
                permit: None,
                tx: None,
            });
        }
        let healthy = self.status.healthy.load(Ordering::Relaxed);
        let permit = if !healthy {
            None
        } else if let Ok(p) = self.room.clone().try_acquire_owned() {
            // The common case: room in the queue, no timer needed.
            Some(p)
        } else {
            tokio::time::timeout(Duration::from_secs(1), self.room.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        };
        match (permit, self.sender()) {
            (Some(permit), Some(tx)) => Ok(Slot {
                permit: Some(permit),
                tx: Some(tx),
            }),
            _ => {
                self.count_drop(healthy);
                match self.on_failure {
                    OnLogFailure::Deny => Err(()),
                    OnLogFailure::Allow => Ok(Slot {
                        permit: None,
                        tx: None,
                    }),
                }
            }
        }
    }

    /// A record that is not worth refusing anything over (a failed TLS handshake): recorded when
    /// there is room, counted when not.
    pub fn try_submit(&self, fields: String) {
        if !self.enabled() {
            return;
        }
        match (self.room.clone().try_acquire_owned(), self.sender()) {
            (Ok(permit), Some(tx)) => Slot {
                permit: Some(permit),
                tx: Some(tx),
            }
            .submit(fields),
            _ => self.count_drop(self.status.healthy.load(Ordering::Relaxed)),
        }
    }

    fn count_drop(&self, healthy: bool) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.log_throttle.allow() {
            tracing::error!(
                unrecorded = n,
                writable = healthy,
                on_log_failure = ?self.on_failure,
                "a decision could not be recorded"
            );
        }
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.room.available_permits())
    }

    /// Stops taking records and waits for the writer to write everything queued.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}
