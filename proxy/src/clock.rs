//! The wall clock, read in the units the proxy counts in. A request reads it once, when it
//! arrives (`Draft::at`), and every check decides as of that time.

use std::time::SystemTime;

pub fn now_ms() -> u64 {
    epoch_ms(SystemTime::now())
}

/// Microseconds since the epoch: the rate limiter's unit (a rule may allow more than one request
/// a millisecond).
pub fn epoch_us(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds since the epoch, the unit every state operation takes its time in.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
