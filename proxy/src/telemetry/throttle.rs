//! At most one log line a second for a failure that can repeat on every request (a Redis outage,
//! an unwritable decision log): the first says it, the counters say how often.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct LogThrottle {
    last_ms: AtomicU64,
}

impl LogThrottle {
    /// True for at most one caller a second.
    pub fn allow(&self) -> bool {
        let now = crate::clock::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
