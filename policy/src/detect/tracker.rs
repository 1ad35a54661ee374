//! One account, followed live: the current hour's running totals against thresholds fixed when
//! the hour began, the networks it came from, and the records it fetched lately.
//!
//! Each finding fires once: a volume level once per hour and metric, a network once, the unusual
//! hour once per hour, breadth once per window. What the finding makes happen (a record, a lock) is
//! the caller's.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::history::{History, PeerPool, Thresholds};
use super::{human_bytes, Action, DetectRules, Detector, Finding, Metric, Usage};

/// Networks remembered per account (the least recently seen goes first).
const NETWORKS_KEPT: usize = 32;

/// One account's live state.
#[derive(Debug, Clone)]
pub struct Tracker {
    history: History,
    /// The current hour (hours since the epoch) and its local hour of the week.
    hour: u32,
    local_how: u8,
    current: Usage,
    thresholds: Thresholds,
    /// Findings already made this hour: volume levels (bit 2·metric for alert, +1 for lock), the
    /// unusual hour (bit 6).
    fired: u8,
    /// /24 or /48 networks seen, with the hour last seen.
    networks: Vec<(u64, u32)>,
    /// The breadth window's index and the distinct records fetched in it (capped at the
    /// threshold: it fires once there).
    window: u64,
    records: HashSet<u64>,
}

const UNUSUAL_FIRED: u8 = 1 << 6;
const BREADTH_FIRED: u8 = 1 << 7;

/// The local hour of the week (Monday 00:00 = 0) at `now` in `zone`.
pub fn local_how(now: u64, zone: &TimeZone) -> u8 {
    let instant = i64::try_from(now)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::MAX);
    let local = zone.to_datetime(instant);
    (local.weekday().to_monday_zero_offset() as u8) * 24 + local.hour() as u8
}

/// The records a request names, hashed: each numeric path segment with the collection before it
/// (`tickets/123`), and each id of an `ids=` list (`show_many`).
pub fn record_ids(path: &str, query: Option<&str>) -> Vec<u64> {
    let hash = |collection: &str, id: &str| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (collection, id).hash(&mut h);
        h.finish()
    };
    let mut out = Vec::new();
    let mut collection = "";
    for s in path.split('/').filter(|s| !s.is_empty()) {
        let s = s.strip_suffix(".json").unwrap_or(s);
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            out.push(hash(collection, s));
        } else {
            collection = s;
        }
    }
    if let Some(q) = query {
        for (k, v) in q.split('&').filter_map(|kv| kv.split_once('=')) {
            if k == "ids" {
                out.extend(
                    v.split(['%', ','])
                        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                        .map(|id| hash(collection, id)),
                );
            }
        }
    }
    out
}

fn lock(peers: &Mutex<PeerPool>) -> std::sync::MutexGuard<'_, PeerPool> {
    peers.lock().unwrap_or_else(|p| p.into_inner())
}

/// The network a source address counts as: its /24 (IPv4) or /48 (IPv6).
fn network(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (1 << 63) | (u128::from(v6) >> 80) as u64,
    }
}

fn network_text(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

impl Tracker {
    /// An account first seen at `now`.
    pub fn new(now: u64, zone: &TimeZone, peers: &Mutex<PeerPool>, rules: &DetectRules) -> Self {
        Tracker::with_history(History::default(), now, zone, peers, rules)
    }

    /// An account whose `history` was kept (saved by [`Tracker::history_with_current`]): the
    /// hour under way resumes where it was if it is still this hour.
    pub fn with_history(
        mut history: History,
        now: u64,
        zone: &TimeZone,
        peers: &Mutex<PeerPool>,
        rules: &DetectRules,
    ) -> Self {
        let hour = (now / 3600) as u32;
        let current = history.take_hour(hour).unwrap_or_default();
        history.seen(hour);
        let local_how = local_how(now, zone);
        let thresholds = history.thresholds(hour, local_how, &lock(peers), rules);
        Tracker {
            history,
            hour,
            local_how,
            current,
            thresholds,
            fired: 0,
            networks: Vec::new(),
            window: 0,
            records: HashSet::new(),
        }
    }

    /// The history with the hour under way as its last hour: what is saved.
    pub fn history_with_current(&self) -> History {
        let mut h = self.history.clone();
        h.push(self.hour, self.local_how, self.current);
        h
    }

    /// The hour being counted (hours since the epoch).
    pub fn hour(&self) -> u32 {
        self.hour
    }

    /// What every replica counted in `hour` (shared through the state backend, with what this one
    /// counted since it last said) becomes the hour's total, and is judged: a thief spread over
    /// replicas is judged on the whole.
    pub fn merge(&mut self, hour: u32, total: Usage, rules: &DetectRules) -> Vec<Finding> {
        if hour != self.hour {
            return Vec::new();
        }
        let c = &mut self.current;
        c.requests = c.requests.max(total.requests);
        c.exports = c.exports.max(total.exports);
        c.bytes = c.bytes.max(total.bytes);
        let mut found = Vec::new();
        for m in Metric::ALL {
            self.volume(m, rules, &mut found);
        }
        found
    }

    /// Takes the account's past hours as the state backend keeps them (`past`: hour, usage; any
    /// order, the hour under way left out) in place of what this replica has seen, and works out
    /// the current hour's thresholds again.
    pub fn adopt(
        &mut self,
        mut past: Vec<(u32, Usage)>,
        zone: &TimeZone,
        peers: &Mutex<PeerPool>,
        rules: &DetectRules,
    ) {
        past.sort_by_key(|(h, _)| *h);
        let mut history = History::default();
        for (hour, usage) in past.into_iter().filter(|(h, _)| *h < self.hour) {
            history.push(hour, local_how(u64::from(hour) * 3600, zone), usage);
        }
        history.seen(self.hour);
        self.history = history;
        self.thresholds = self
            .history
            .thresholds(self.hour, self.local_how, &lock(peers), rules);
    }

    /// The hour's running totals.
    pub fn current(&self) -> Usage {
        self.current
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Moves to the hour of `now` if it has changed: the finished hour goes into the history
    /// (and, for a mature account, the vendor's peer pool), and the new hour's thresholds are
    /// worked out. Quiet hours in between count as nothing. The vendor's pool is locked only
    /// here, once an hour per account.
    fn roll(&mut self, now: u64, zone: &TimeZone, peers: &Mutex<PeerPool>, rules: &DetectRules) {
        let hour = (now / 3600) as u32;
        if hour <= self.hour {
            return;
        }
        let mut peers = lock(peers);
        let finished = std::mem::take(&mut self.current);
        if self.history.mature(self.hour, rules) {
            peers.offer(self.hour, finished);
        }
        self.history.push(self.hour, self.local_how, finished);
        self.hour = hour;
        self.local_how = local_how(now, zone);
        self.thresholds = self.history.thresholds(hour, self.local_how, &peers, rules);
        self.fired = 0;
    }

    /// A request allowed at `now` from `ip`: counted (`export`: its class is an export class),
    /// and judged. `records` are its [`record_ids`].
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        now: u64,
        zone: &TimeZone,
        peers: &Mutex<PeerPool>,
        rules: &DetectRules,
        export: bool,
        ip: IpAddr,
        records: &[u64],
    ) -> Vec<Finding> {
        self.roll(now, zone, peers, rules);
        let mut found = Vec::new();
        self.current.requests += 1;
        self.volume(Metric::Requests, rules, &mut found);
        if export {
            self.current.exports += 1;
            self.volume(Metric::Exports, rules, &mut found);
        }
        self.network(ip, rules, &mut found);
        if rules.unusual_hour != Action::Off
            && self.thresholds.unusual_hour
            && self.fired & UNUSUAL_FIRED == 0
            && self.current.requests >= rules.unusual_min_requests
        {
            self.fired |= UNUSUAL_FIRED;
            found.push(Finding {
                detector: Detector::UnusualHour,
                action: rules.unusual_hour,
                value: self.current.requests,
                threshold: rules.unusual_min_requests,
                baseline: None,
                detail: format!(
                    "{} requests at local hour {:02}:00, an hour it has not worked in 4 weeks",
                    self.current.requests,
                    self.local_how % 24
                ),
            });
        }
        self.breadth(now, records, rules, &mut found);
        found
    }

    /// Response bytes sent at `now`: counted, and judged.
    pub fn bytes(
        &mut self,
        now: u64,
        n: u64,
        zone: &TimeZone,
        peers: &Mutex<PeerPool>,
        rules: &DetectRules,
    ) -> Option<Finding> {
        self.roll(now, zone, peers, rules);
        self.current.bytes += n;
        let mut found = Vec::new();
        self.volume(Metric::Bytes, rules, &mut found);
        found.pop()
    }

    /// The volume detector for one metric: the highest level passed that has not fired yet.
    fn volume(&mut self, m: Metric, rules: &DetectRules, found: &mut Vec<Finding>) {
        let action = rules.volume.action;
        if action == Action::Off {
            return;
        }
        let i = m as usize;
        let x = self.current.get(m);
        let t = &self.thresholds;
        let level = if action == Action::Lock && x > t.lock[i] {
            Some((Action::Lock, t.lock[i]))
        } else if x > t.alert[i] {
            Some((Action::Alert, t.alert[i]))
        } else {
            None
        };
        let Some((level, threshold)) = level else {
            return;
        };
        let bit = 1 << (2 * i + usize::from(level == Action::Lock));
        if self.fired & bit != 0 {
            return;
        }
        // Locking implies the alert: neither fires again this hour.
        self.fired |= bit | (1 << (2 * i));
        let (median, spread) = (t.median[i], t.spread[i]);
        let show = |v: u64| match m {
            Metric::Bytes => human_bytes(v),
            _ => v.to_string(),
        };
        let whose = if t.from_peers {
            "its vendor's peers"
        } else {
            "its own"
        };
        found.push(Finding {
            detector: Detector::Volume(m),
            action: level,
            value: x,
            threshold,
            baseline: Some((median, spread, t.from_peers)),
            detail: format!(
                "{} this hour {} > {} (baseline {whose}: median {}, z {:.1})",
                m.as_str(),
                show(x),
                show(threshold),
                show(median),
                super::z_score(x, median, spread)
            ),
        });
    }

    fn network(&mut self, ip: IpAddr, rules: &DetectRules, found: &mut Vec<Finding>) {
        let net = network(ip);
        if let Some(seen) = self.networks.iter_mut().find(|(n, _)| *n == net) {
            seen.1 = self.hour;
            return;
        }
        let known = !self.networks.is_empty();
        if self.networks.len() >= NETWORKS_KEPT {
            let oldest = (0..self.networks.len())
                .min_by_key(|&i| self.networks[i].1)
                .unwrap_or(0);
            self.networks.swap_remove(oldest);
        }
        self.networks.push((net, self.hour));
        if rules.new_network != Action::Off && known && self.thresholds.mature {
            found.push(Finding {
                detector: Detector::NewNetwork,
                action: rules.new_network,
                value: 1,
                threshold: 0,
                baseline: None,
                detail: format!(
                    "a request from {}, a network never seen for this account",
                    network_text(ip)
                ),
            });
        }
    }

    fn breadth(
        &mut self,
        now: u64,
        records: &[u64],
        rules: &DetectRules,
        found: &mut Vec<Finding>,
    ) {
        if rules.breadth == Action::Off || records.is_empty() {
            return;
        }
        let window = now / rules.breadth_window.as_secs().max(1);
        if window != self.window {
            self.window = window;
            self.records.clear();
            self.fired &= !BREADTH_FIRED;
        }
        if self.fired & BREADTH_FIRED != 0 {
            return;
        }
        for r in records {
            self.records.insert(*r);
        }
        let distinct = self.records.len() as u64;
        if distinct >= rules.breadth_distinct {
            self.fired |= BREADTH_FIRED;
            self.records = HashSet::new();
            found.push(Finding {
                detector: Detector::Breadth,
                action: rules.breadth,
                value: distinct,
                threshold: rules.breadth_distinct,
                baseline: None,
                detail: format!(
                    "{distinct} distinct records fetched within {}s",
                    rules.breadth_window.as_secs()
                ),
            });
        }
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

    const MONDAY: u64 = 1_797_206_400; // 2026-12-14T00:00:00Z, a Monday

    /// An account that worked Monday–Friday 09:00–17:00 UTC for two weeks, 40 requests and
    /// 40 × 20 kB an hour, from one office network; the time after.
    fn veteran() -> (Tracker, Mutex<PeerPool>, u64) {
        let rules = rules();
        let zone = TimeZone::UTC;
        let peers = Mutex::new(PeerPool::default());
        let mut t = Tracker::new(MONDAY, &zone, &peers, &rules);
        let office: IpAddr = "203.0.113.9".parse().unwrap();
        for day in 0..14u64 {
            if day % 7 >= 5 {
                continue;
            }
            for hour in 9..17u64 {
                for minute in 0..40u64 {
                    let now = MONDAY + day * 86_400 + hour * 3600 + minute * 90;
                    let f = t.request(now, &zone, &peers, &rules, false, office, &[]);
                    assert!(f.is_empty(), "{f:?}");
                    assert!(t.bytes(now, 20_000, &zone, &peers, &rules).is_none());
                }
            }
        }
        (t, peers, MONDAY + 14 * 86_400)
    }

    #[test]
    fn a_bulk_pull_locks_mid_hour_and_a_busier_hour_only_alerts() {
        let rules = rules();
        let zone = TimeZone::UTC;
        let (mut t, peers, monday) = veteran();
        let office: IpAddr = "203.0.113.9".parse().unwrap();
        // Monday 10:00 of week three: a normal start, then a bulk export, 2.5 MiB a page.
        let start = monday + 10 * 3600;
        let mut sent = 0u64;
        let mut locked = None;
        for page in 0..100u64 {
            let now = start + page * 6;
            let f = t.request(now, &zone, &peers, &rules, true, office, &[]);
            let mut all: Vec<Finding> = f;
            all.extend(t.bytes(now, 2_500_000, &zone, &peers, &rules));
            sent += 2_500_000;
            if let Some(lock) = all.iter().find(|f| f.action == Action::Lock) {
                locked = Some((page, sent, lock.clone()));
                break;
            }
        }
        let (page, sent, finding) = locked.expect("the bulk pull was never locked");
        // Exports (10 an hour at least) or bytes (20 MiB) lock it within the first minute.
        assert!(page * 6 <= 60, "locked after {}s", page * 6);
        assert!(sent < 50 << 20, "{sent} bytes left first");
        assert!(
            matches!(finding.detector, Detector::Volume(_)),
            "{finding:?}"
        );
        assert!(
            finding.detail.contains("baseline its own"),
            "{}",
            finding.detail
        );
    }

    #[test]
    fn work_at_an_hour_never_worked_is_flagged_once_it_is_more_than_a_stray_request() {
        let rules = rules();
        let zone = TimeZone::UTC;
        let (mut t, peers, monday) = veteran();
        let office: IpAddr = "203.0.113.9".parse().unwrap();
        let night = monday + 3 * 3600;
        let mut fired = Vec::new();
        for i in 0..30u64 {
            let f = t.request(night + i * 60, &zone, &peers, &rules, false, office, &[]);
            fired.extend(f.into_iter().map(|f| (i, f.detector)));
        }
        assert_eq!(fired, [(19, Detector::UnusualHour)]);
        // A new network is flagged once.
        let cafe: IpAddr = "198.51.100.7".parse().unwrap();
        let now = monday + 10 * 3600;
        let f = t.request(now, &zone, &peers, &rules, false, cafe, &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].detector, Detector::NewNetwork);
        assert!(f[0].detail.contains("198.51.100.0/24"));
        assert!(t
            .request(now + 1, &zone, &peers, &rules, false, cafe, &[])
            .is_empty());
    }

    #[test]
    fn breadth_counts_distinct_records_in_a_window() {
        let rules = DetectRules {
            breadth_distinct: 50,
            ..rules()
        };
        let zone = TimeZone::UTC;
        let peers = Mutex::new(PeerPool::default());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let mut t = Tracker::new(MONDAY, &zone, &peers, &rules);
        // The same ticket over and over: one record.
        for i in 0..100 {
            let ids = record_ids("/api/v2/tickets/7.json", None);
            assert!(t
                .request(MONDAY + i, &zone, &peers, &rules, false, ip, &ids)
                .is_empty());
        }
        // 48 users by show_many (49 records with the ticket), then one more ticket: 50.
        let ids: Vec<String> = (1..=48).map(|i| i.to_string()).collect();
        let query = format!("ids={}", ids.join(","));
        let many = record_ids("/api/v2/users/show_many.json", Some(&query));
        assert_eq!(many.len(), 48);
        assert!(t
            .request(MONDAY + 200, &zone, &peers, &rules, false, ip, &many)
            .is_empty());
        let f = t.request(
            MONDAY + 201,
            &zone,
            &peers,
            &rules,
            false,
            ip,
            &record_ids("/api/v2/tickets/8", None),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].detector, Detector::Breadth);
        // Ticket 7 and user 7 are different records.
        assert_ne!(
            record_ids("/api/v2/tickets/7", None),
            record_ids("/api/v2/users/7", None)
        );
    }

    #[test]
    fn local_hours_follow_the_zone() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        // Monday 00:30 UTC is Monday 01:30 in Paris (CET).
        assert_eq!(local_how(MONDAY + 1800, &paris), 1);
        assert_eq!(local_how(MONDAY + 1800, &TimeZone::UTC), 0);
        // Sunday 23:30 UTC.
        assert_eq!(local_how(MONDAY - 1800, &TimeZone::UTC), 167);
    }
}
