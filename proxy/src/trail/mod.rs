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
pub mod refusals;
pub mod schema;
pub mod time;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::telemetry::throttle::LogThrottle;
use vendorgate_policy::config::{OnLogFailure, Trail as TrailConfig, TrailSink};

pub use writer::{rotated_name, WriterStatus};

/// One record on its way to the writer; the permit is its place in the queue.
pub struct Entry {
    pub fields: String,
    _permit: Option<SemaphorePermit<'static>>,
}

/// Every request reserves and submits through here, from both cores: what it touches on the way
/// is what the two cores must pass between them. So the trail lives as long as the process (see
/// [`crate::edge::server::start`]) and a request borrows it, its queue place included, instead of
/// cloning reference counts; and the sender is read without a lock.
pub struct Trail {
    sink: TrailSink,
    on_failure: OnLogFailure,
    room: Semaphore,
    /// Taken away by [`Trail::close`]: the writer finishes once the last sender is gone.
    tx: ArcSwapOption<Sender<Entry>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    pub status: Arc<WriterStatus>,
    pub dropped: AtomicU64,
    log_throttle: LogThrottle,
}

/// A reserved place in the trail. Submitting it sends the record; dropping it unsent (which the
/// request path never does) just frees the place.
pub struct Slot {
    permit: Option<SemaphorePermit<'static>>,
    /// `None` for the placeholder handed out when a record is being dropped (`allow`) or the
    /// trail is off.
    trail: Option<&'static Trail>,
}

impl Slot {
    pub fn submit(self, fields: String) {
        let Some(trail) = self.trail else { return };
        let entry = Entry {
            fields,
            _permit: self.permit,
        };
        match &*trail.tx.load() {
            Some(tx) => {
                let _ = tx.send(entry);
            }
            // Closed after this place was reserved: only a connection outliving the shutdown
            // grace gets here.
            None => trail.count_drop(false),
        }
    }

    pub fn is_recorded(&self) -> bool {
        self.trail.is_some()
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
            room: Semaphore::new(config.queue.max(1)),
            tx: ArcSwapOption::new(writer.as_ref().map(|_| Arc::new(tx))),
            writer: Mutex::new(writer),
            status,
            dropped: AtomicU64::new(0),
            log_throttle: LogThrottle::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink != TrailSink::Off
    }

    fn open(&self) -> bool {
        self.tx.load().is_some()
    }

    /// A place in the queue for this request's record, waiting up to a second for room.
    /// `Err(())` means: refuse the request (`on_log_failure = "deny"`).
    pub async fn reserve(&'static self) -> Result<Slot, ()> {
        let unrecorded = Slot {
            permit: None,
            trail: None,
        };
        if !self.enabled() {
            return Ok(unrecorded);
        }
        let healthy = self.status.healthy.load(Ordering::Relaxed);
        let permit = if !healthy {
            None
        } else if let Ok(p) = self.room.try_acquire() {
            // The common case: room in the queue, no timer needed.
            Some(p)
        } else {
            tokio::time::timeout(Duration::from_secs(1), self.room.acquire())
                .await
                .ok()
                .and_then(Result::ok)
        };
        match permit {
            Some(permit) if self.open() => Ok(Slot {
                permit: Some(permit),
                trail: Some(self),
            }),
            _ => {
                self.count_drop(healthy);
                match self.on_failure {
                    OnLogFailure::Deny => Err(()),
                    OnLogFailure::Allow => Ok(unrecorded),
                }
            }
        }
    }

    /// An operator's act or the locks' own change, as a record in the chain (see
    /// [`schema::admin_event`]); false if it could not be queued (the act should then not be
    /// taken, with `on_log_failure = "deny"`).
    pub async fn record_event(
        &'static self,
        action: &str,
        by: &str,
        source: Option<std::net::IpAddr>,
        allowed: bool,
        detail: serde_json::Value,
    ) -> bool {
        self.record_now(|at| schema::admin_event(at, action, by, source, allowed, detail))
            .await
    }

    /// A detector's finding as a record (see [`schema::anomaly_event`]); false if it could not be
    /// queued.
    pub async fn record_anomaly(
        &'static self,
        vendor: &str,
        account: &str,
        source: Option<std::net::IpAddr>,
        detail: serde_json::Value,
    ) -> bool {
        self.record_now(|at| schema::anomaly_event(at, vendor, account, source, detail))
            .await
    }

    /// Waits for room, then queues the record `make` writes for the present moment; false if it
    /// could not be queued.
    async fn record_now(&'static self, make: impl FnOnce(std::time::SystemTime) -> String) -> bool {
        if !self.enabled() {
            return true;
        }
        match self.reserve().await {
            Ok(slot) => {
                slot.submit(make(std::time::SystemTime::now()));
                true
            }
            Err(()) => false,
        }
    }

    /// A record that is not worth refusing anything over (a failed TLS handshake): recorded when
    /// there is room, counted when not.
    pub fn try_submit(&'static self, fields: String) {
        if !self.enabled() {
            return;
        }
        match self.room.try_acquire() {
            Ok(permit) if self.open() => Slot {
                permit: Some(permit),
                trail: Some(self),
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
        self.tx.store(None);
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}
