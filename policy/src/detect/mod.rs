//! Detect: per-account behavioural baselines, checked on every request, so a bulk pull trips
//! mid-hour rather than when some bucket closes.
//!
//! The pieces, all pure (time is an input): [`Usage`] counts an hour (requests, export-class
//! requests, response bytes); [`History`] keeps an account's hours for four weeks; [`Tracker`]
//! follows one account live, judging the running total of the current hour against thresholds
//! worked out once when the hour starts (so a request costs a few comparisons); [`PeerPool`] is a
//! vendor's recent hours, the baseline of accounts too new to have their own. The proxy runs a
//! `Tracker` per account, and `vendorgate simulate` runs the very same code on synthetic traffic
//! with a virtual clock.
//!
//! Detectors, each with its action (`alert`, `lock` or `off`, see [`DetectRules`]):
//! - **volume**, per metric: the current hour's running total far above the account's baseline
//!   (modified z-score over the same hour-of-week of the last four weeks and the active hours of
//!   the last day, with a floor on the spread and an absolute minimum, see [`Thresholds`]);
//! - **new network**: a source network (/24, /48) never seen for the account;
//! - **unusual hour**: work at a local hour of day the account has not worked in four weeks;
//! - **breadth**: many distinct records (tickets, users) fetched in a short window.

mod history;
mod stats;
mod tracker;

pub use history::{History, PeerPool, Thresholds, HOURS_KEPT};
/// The zone an account's hours are read in (the policy's time zone type).
pub use jiff::tz::TimeZone;
pub use stats::{median, median_mad, value_at_z, z_score, Z_SCALE};
pub use tracker::{local_how, record_ids, Tracker};

use std::fmt;
use std::time::Duration;

/// One hour of an account's activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub requests: u64,
    pub exports: u64,
    pub bytes: u64,
}

impl Usage {
    pub fn get(&self, m: Metric) -> u64 {
        match m {
            Metric::Requests => self.requests,
            Metric::Exports => self.exports,
            Metric::Bytes => self.bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.exports == 0 && self.bytes == 0
    }
}

/// What the volume detector counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Requests,
    Exports,
    Bytes,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Requests, Metric::Exports, Metric::Bytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Exports => "exports",
            Metric::Bytes => "bytes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a detector does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Off,
    /// A trail record of kind anomaly, a metric, and the webhook if one is set.
    Alert,
    /// All of that, and a lock on the account (the detector named, its own TTL).
    Lock,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Alert => "alert",
            Action::Lock => "lock",
        }
    }
}

/// Which detector fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Volume(Metric),
    NewNetwork,
    UnusualHour,
    Breadth,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Volume(_) => "volume",
            Detector::NewNetwork => "new_network",
            Detector::UnusualHour => "unusual_hour",
            Detector::Breadth => "breadth",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detector::Volume(m) => write!(f, "volume.{}", m.as_str()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A detector fired: what it saw, against what, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub detector: Detector,
    pub action: Action,
    /// What was counted (this hour's total, distinct records in the window, requests at the hour).
    pub value: u64,
    /// The value it had to pass.
    pub threshold: u64,
    /// The baseline it was judged against (volume): median, spread (the floored MAD), and
    /// whether it was the vendor's peers' (the account is too new for its own).
    pub baseline: Option<(u64, f64, bool)>,
    /// Why, for people: `"bytes this hour 25.0 MiB > 20.0 MiB (median 2.1 MiB, z 12.3)"`.
    pub detail: String,
}

/// `[detect]`, compiled.
#[derive(Debug, Clone)]
pub struct DetectRules {
    /// Off: no tracking at all (the default until a policy asks for it).
    pub enabled: bool,
    /// Bit i set: class i counts as an export.
    pub export_classes: u128,
    pub volume: VolumeRules,
    pub new_network: Action,
    pub unusual_hour: Action,
    /// Requests at an unusual hour before it fires (one stray request is not a pattern).
    pub unusual_min_requests: u64,
    pub breadth: Action,
    /// Distinct records in one window that fire it.
    pub breadth_distinct: u64,
    pub breadth_window: Duration,
    /// How long a detector's lock holds.
    pub lock_ttl: Duration,
    /// History younger than this: compared with the vendor's peers, no new-network or
    /// unusual-hour findings.
    pub maturity: Duration,
}

#[derive(Debug, Clone)]
pub struct VolumeRules {
    pub action: Action,
    /// Modified z-score that alerts, and (with `action = lock`) that locks.
    pub alert_z: f64,
    pub lock_z: f64,
    /// Below these, no alert fires however quiet the baseline (requests, exports, bytes)…
    pub minimum: [u64; 3],
    /// …and no lock below these.
    pub lock_minimum: [u64; 3],
    /// The spread (MAD) is at least this (absolute, per metric)…
    pub spread_floor: [f64; 3],
    /// …and at least this fraction of the median.
    pub spread_ratio: f64,
}

impl Default for DetectRules {
    /// The defaults, and why (README "Detect: baselines"): alert at the Iglewicz–Hoaglin 3.5, lock
    /// only far beyond it (z 10) so a busy day alerts but does not stop work; a spread of at least
    /// a quarter of the median, so a very regular account is not flagged for a 2× day; minimums
    /// that a normal agent's hour does not reach: alerts from 100 requests, 5 exports, 16 MiB;
    /// locks from 400 requests, 8 exports (48 s of a full-speed incremental export, 10 pages a
    /// minute) and 64 MiB (more than Zendesk's largest attachment, 50 MB, so one download of a
    /// big file cannot lock an agent out). `vendorgate simulate` measures what these cost.
    fn default() -> Self {
        DetectRules {
            enabled: false,
            export_classes: 0,
            volume: VolumeRules {
                action: Action::Lock,
                alert_z: 3.5,
                lock_z: 10.0,
                minimum: [100, 5, 16 << 20],
                lock_minimum: [400, 8, 64 << 20],
                spread_floor: [10.0, 0.5, 1_048_576.0],
                spread_ratio: 0.25,
            },
            new_network: Action::Alert,
            unusual_hour: Action::Alert,
            unusual_min_requests: 20,
            breadth: Action::Alert,
            breadth_distinct: 300,
            breadth_window: Duration::from_secs(600),
            lock_ttl: Duration::from_secs(4 * 3600),
            maturity: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Bytes as people read them: `25.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
