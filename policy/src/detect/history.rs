//! An account's past hours, and the thresholds an hour is judged by.
//!
//! **Size**: only hours with activity are kept, for four weeks ([`HOURS_KEPT`]): 32 bytes each, so
//! at most 21 KiB per account and about 6 KiB for an agent on 45-hour weeks. A vendor's
//! [`PeerPool`] keeps at most [`PEER_SAMPLES`] hours (256 KiB).

use std::collections::VecDeque;

use super::stats::{median_mad, value_at_z};
use super::{DetectRules, Metric, Usage};

/// Four weeks of hours.
pub const HOURS_KEPT: u32 = 28 * 24;

/// Hours of one vendor's mature accounts kept as the baseline of its new ones.
pub const PEER_SAMPLES: usize = 8192;

/// One past hour with activity; saved as `[hour, local_how, requests, exports, bytes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "BucketRow", into = "BucketRow")]
struct Bucket {
    /// Hours since the epoch (UTC).
    hour: u32,
    /// Hour of the week in the account's local time (Monday 00:00 = 0), so "the same hour last
    /// week" means the same wall-clock hour across a daylight-saving change.
    local_how: u8,
    usage: Usage,
}

type BucketRow = (u32, u8, u64, u64, u64);

impl From<BucketRow> for Bucket {
    fn from((hour, local_how, requests, exports, bytes): BucketRow) -> Self {
        Bucket {
            hour,
            local_how,
            usage: Usage {
                requests,
                exports,
                bytes,
            },
        }
    }
}

impl From<Bucket> for BucketRow {
    fn from(b: Bucket) -> Self {
        let u = b.usage;
        (b.hour, b.local_how, u.requests, u.exports, u.bytes)
    }
}

/// An account's hours with activity, for four weeks.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    buckets: VecDeque<Bucket>,
    /// The first hour it was seen (its age decides whether it has a baseline of its own).
    first_hour: Option<u32>,
}

/// What an hour is judged by, worked out when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Per metric: the total that alerts, and that locks (`u64::MAX`: never).
    pub alert: [u64; 3],
    pub lock: [u64; 3],
    /// Per metric: the baseline's median and floored spread (for the finding's detail).
    pub median: [u64; 3],
    pub spread: [f64; 3],
    /// The baseline is the vendor's peers' (the account is too new for its own), or none at all.
    pub from_peers: bool,
    /// The account has history enough for its own baseline (and for the network and hour
    /// detectors).
    pub mature: bool,
    /// A mature account that has not worked at this local hour of day in four weeks.
    pub unusual_hour: bool,
}

impl Thresholds {
    /// Nothing fires: no baseline yet.
    pub fn none() -> Self {
        Thresholds {
            alert: [u64::MAX; 3],
            lock: [u64::MAX; 3],
            median: [0; 3],
            spread: [0.0; 3],
            from_peers: false,
            mature: false,
            unusual_hour: false,
        }
    }

    fn from_sample(samples: &[Usage], rules: &DetectRules) -> Self {
        let mut t = Thresholds::none();
        if samples.is_empty() {
            return t;
        }
        let v = &rules.volume;
        for m in Metric::ALL {
            let i = m.index();
            let mut values: Vec<u64> = samples.iter().map(|u| u.get(m)).collect();
            let (median, mad) = median_mad(&mut values);
            let spread = (mad as f64)
                .max(v.spread_ratio * median as f64)
                .max(v.spread_floor[i]);
            t.median[i] = median;
            t.spread[i] = spread;
            t.alert[i] = value_at_z(median, spread, v.alert_z).max(v.minimum[i]);
            t.lock[i] = value_at_z(median, spread, v.lock_z).max(v.lock_minimum[i]);
        }
        t
    }
}

impl History {
    /// Keeps a finished hour (one with activity) and forgets what is past four weeks.
    pub fn push(&mut self, hour: u32, local_how: u8, usage: Usage) {
        self.first_hour.get_or_insert(hour);
        if !usage.is_empty() {
            self.buckets.push_back(Bucket {
                hour,
                local_how,
                usage,
            });
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.hour + HOURS_KEPT <= hour)
        {
            self.buckets.pop_front();
        }
    }

    /// Takes back the hour under way if it was saved with the history (see
    /// [`crate::detect::Tracker::history_with_current`]).
    pub fn take_hour(&mut self, hour: u32) -> Option<Usage> {
        if self.buckets.back().is_some_and(|b| b.hour == hour) {
            return self.buckets.pop_back().map(|b| b.usage);
        }
        None
    }

    /// Notes that the account was seen at `hour` (its age counts from its first hour).
    pub fn seen(&mut self, hour: u32) {
        self.first_hour = Some(self.first_hour.map_or(hour, |f| f.min(hour)));
    }

    /// The hours kept (hour, usage), oldest first.
    pub fn hours(&self) -> Vec<(u32, Usage)> {
        self.buckets.iter().map(|b| (b.hour, b.usage)).collect()
    }

    /// Hours with activity kept.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whether the account is old enough at `hour` for a baseline of its own.
    pub fn mature(&self, hour: u32, rules: &DetectRules) -> bool {
        let needed = (rules.maturity.as_secs() / 3600) as u32;
        self.first_hour.is_some_and(|f| hour >= f + needed)
    }

    /// The thresholds for `hour` (local hour of the week `local_how`, local hour of day
    /// `local_how % 24`): the account's own baseline when it is mature, else the vendor's peers'.
    ///
    /// The own baseline is the same local hour of the week in each of the last four weeks the
    /// account existed (a week without activity then counts as zero) together with the hours of
    /// the last day that had activity: the weekly rhythm, and how busy the account is lately.
    pub fn thresholds(
        &self,
        hour: u32,
        local_how: u8,
        peers: &PeerPool,
        rules: &DetectRules,
    ) -> Thresholds {
        if !self.mature(hour, rules) {
            let mut t = Thresholds::from_sample(&peers.sample(hour), rules);
            t.from_peers = true;
            return t;
        }
        let first = self.first_hour.unwrap_or(hour);
        let mut sample = Vec::with_capacity(32);
        for week in 1..=4u32 {
            let Some(then) = hour.checked_sub(week * 168) else {
                break;
            };
            if then + 1 < first {
                break;
            }
            // The bucket in the week's 3-hour neighbourhood with this local hour of the week
            // (a daylight-saving change moves it by an hour); none: a quiet hour, zero.
            let found = self
                .buckets
                .iter()
                .rev()
                .skip_while(|b| b.hour > then + 1)
                .take_while(|b| b.hour + 1 >= then)
                .find(|b| b.local_how == local_how);
            sample.push(found.map(|b| b.usage).unwrap_or_default());
        }
        sample.extend(
            self.buckets
                .iter()
                .rev()
                .take_while(|b| b.hour + 24 >= hour)
                .map(|b| b.usage),
        );
        let mut t = Thresholds::from_sample(&sample, rules);
        t.mature = true;
        let hod = local_how % 24;
        t.unusual_hour = !self
            .buckets
            .iter()
            .any(|b| b.local_how % 24 == hod && b.usage.requests > 0);
        t
    }
}

/// A vendor's recent hours from its mature accounts: what a new account is compared with.
#[derive(Debug, Clone, Default)]
pub struct PeerPool {
    hours: VecDeque<(u32, Usage)>,
}

impl PeerPool {
    /// A mature account's finished hour (with activity).
    pub fn offer(&mut self, hour: u32, usage: Usage) {
        if usage.is_empty() {
            return;
        }
        self.hours.push_back((hour, usage));
        while self.hours.len() > PEER_SAMPLES {
            self.hours.pop_front();
        }
    }

    /// The peers' hours of the last week before `hour`.
    fn sample(&self, hour: u32) -> Vec<Usage> {
        self.hours
            .iter()
            .filter(|(h, _)| h + 168 >= hour && *h < hour)
            .map(|(_, u)| *u)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> DetectRules {
        DetectRules {
            enabled: true,
            ..DetectRules::default()
        }
    }

    fn work(requests: u64) -> Usage {
        Usage {
            requests,
            exports: 0,
            bytes: requests * 10_000,
        }
    }

    /// Five weeks of 09:00–17:00 on weekdays, `requests` an hour.
    fn shift_worker(requests: u64) -> (History, u32) {
        let mut h = History::default();
        let start = 1_000_000 / 168 * 168; // a Monday 00:00 in hour-of-week terms
        for hour in start..start + 5 * 168 {
            let how = ((hour - start) % 168) as u8;
            let (day, hod) = (how / 24, how % 24);
            let usage = if day < 5 && (9..17).contains(&hod) {
                work(requests)
            } else {
                Usage::default()
            };
            h.push(hour, how, usage);
        }
        (h, start + 5 * 168)
    }

    #[test]
    fn a_mature_account_is_judged_by_its_own_hours() {
        let rules = rules();
        let (h, now) = shift_worker(40);
        // Four weeks kept, one dropped: 4 × 5 × 8 hours.
        assert_eq!(h.len(), 160);
        // Monday 10:00 of week six.
        let t = h.thresholds(now + 10, 10, &PeerPool::default(), &rules);
        assert!(t.mature && !t.from_peers && !t.unusual_hour);
        assert_eq!(t.median[0], 40);
        // Spread floored at 10 (a quarter of the median): alert past 40 + 3.5·10/0.6745 ≈ 92, but
        // never below the minimum of 100 requests.
        assert_eq!(t.alert[0], 100);
        assert_eq!(t.spread[0], 10.0);
        // Bytes: 400 kB a normal hour; the floors hold the thresholds at 16 and 64 MiB.
        assert_eq!((t.alert[2], t.lock[2]), (16 << 20, 64 << 20));
        // 03:00 on a Tuesday: never worked at 03:00.
        let night = h.thresholds(now + 24 + 3, 24 + 3, &PeerPool::default(), &rules);
        assert!(night.unusual_hour);
    }

    #[test]
    fn a_busy_account_gets_thresholds_above_its_busy_hours() {
        let rules = rules();
        let (h, now) = shift_worker(1000);
        let t = h.thresholds(now + 10, 10, &PeerPool::default(), &rules);
        assert_eq!(t.median[0], 1000);
        // Spread 250 (a quarter): alert at 1000 + 3.5·250/0.6745, lock at 1000 + 10·250/0.6745.
        assert_eq!(t.alert[0], 2298);
        assert_eq!(t.lock[0], 4707);
    }

    #[test]
    fn a_new_account_is_judged_by_its_vendors_peers() {
        let rules = rules();
        let mut peers = PeerPool::default();
        for hour in 0..100 {
            peers.offer(5_000 + hour, work(500));
        }
        let mut newbie = History::default();
        newbie.seen(5_100);
        let t = newbie.thresholds(5_100, 10, &peers, &rules);
        assert!(t.from_peers && !t.mature && !t.unusual_hour);
        assert_eq!(t.median[0], 500);
        // No peers at all: nothing fires on volume.
        let t = newbie.thresholds(5_100, 10, &PeerPool::default(), &rules);
        assert_eq!(t.alert, [u64::MAX; 3]);
    }
}
