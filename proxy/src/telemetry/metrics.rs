//! Counters and a latency histogram, exposed as Prometheus text at the admin `/metrics`.
//!
//! Written by hand rather than with a metrics crate: a handful of families, and the exposition
//! format is simple and stable. Label values are escaped as the format requires.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::trail::refusals::Refusal;
use crate::trail::schema::Abandoned;
use std::time::Duration;

pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A count per label value. foldhash: looked up on every request, keyed by names from the policy
/// and from verified tokens.
type PerKey = HashMap<String, u64, RandomState>;

/// A counter per label value, each its own allocation so a holder can count without the map's lock.
type Series = HashMap<String, Arc<AtomicU64>, RandomState>;

/// What every request counts, kept per shard.
///
/// Why shards: every request counts a decision, a latency bucket and a sum. Kept once for the
/// process, each of those is a cache line the two cores pass back and forth on every request (a
/// lock, then the atomics); a thread counts into its own shard instead, and a scrape adds the
/// shards up. Aligned so two shards never share a line.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    /// (allowed, reason) → vendor → requests (nested so lookups borrow `&str`). The lock is this
    /// thread's in practice: taken without contention.
    requests: Mutex<HashMap<(bool, &'static str), PerKey, RandomState>>,
    /// Requests per latency bucket (not cumulative: one increment a request), the last past the
    /// largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    /// Requests begun ([`Metrics::begun`]); less those observed, the requests in flight.
    begun: AtomicU64,
}

/// Enough for the runtime's workers on the machines this runs on; more threads share shards,
/// which stays correct (every count is atomic or locked), just slower.
const SHARDS: usize = 16;

/// The shard of the calling thread: threads take shards in turn as they first count.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
    INDEX.with(|i| *i)
}

/// An account's series in the egress-bytes metric, kept with its cached identity once found:
/// the account is read to find it only once.
#[derive(Default)]
pub struct AccountSeries(OnceLock<Arc<AtomicU64>>);

pub struct Metrics {
    shards: Box<[Shard]>,
    /// vendor → account → bytes (nested so lookups borrow `&str` instead of building keys). A
    /// series is reached through the request's identity once found (see [`Metrics::observe`]).
    egress: Mutex<HashMap<String, Series, RandomState>>,
    connections_open: AtomicU64,
    connections_parked: AtomicU64,
    /// Connections refused before any request reached the pipeline, by [`Refusal`].
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Requests let go before their response ended: by the client, by shutdown.
    abandoned: [AtomicU64; 2],
    /// Policy reloads: [succeeded, failed].
    pub reloads: [AtomicU64; 2],
    /// Request headers with `_` in their names, dropped (`server.underscore_headers`).
    underscore_dropped: AtomicU64,
    /// Detector findings, by detector (volume, new_network, unusual_hour, breadth) and action
    /// (alert, lock).
    anomalies: [[AtomicU64; 2]; 4],
    /// Parent records looked up for a scope (`routes.parent`): [cache, upstream, failed].
    parent_lookups: [AtomicU64; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            egress: Mutex::default(),
            connections_open: AtomicU64::default(),
            connections_parked: AtomicU64::default(),
            refused: Default::default(),
            abandoned: Default::default(),
            reloads: Default::default(),
            underscore_dropped: AtomicU64::default(),
            anomalies: Default::default(),
            parent_lookups: Default::default(),
        }
    }
}

/// The detectors as the anomaly metric labels them.
const DETECTORS: [&str; 4] = ["volume", "new_network", "unusual_hour", "breadth"];

impl Metrics {
    /// A detector's finding, counted by detector and action.
    pub fn anomaly(&self, detector: &str, lock: bool) {
        if let Some(i) = DETECTORS.iter().position(|d| *d == detector) {
            self.anomalies[i][usize::from(lock)].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The latency histogram added up over the shards.
struct Histogram {
    /// Per bucket, the last past the largest bound.
    buckets: [u64; BUCKETS.len() + 1],
    sum_micros: u64,
}

impl Histogram {
    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Holds a gauge one higher for as long as it lives.
pub struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The value for `key`, created if new: the key's `String` is built only for a new series.
fn slot<'a, V: Default>(map: &'a mut HashMap<String, V, RandomState>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Extra gauges the metrics do not own (trail and state), read at scrape time.
pub struct Gauges {
    pub trail_written: u64,
    pub trail_unrecorded: u64,
    pub trail_queue_depth: u64,
    pub trail_head_seq: u64,
    pub trail_writable: bool,
    pub state_errors: u64,
    /// Calls to the shared state (Redis) so far, and whether it answers now.
    pub state_calls: u64,
    pub state_healthy: bool,
    /// Decision records not copied to the OTLP log export (its queue full).
    pub otel_decisions_dropped: u64,
    /// OTLP export requests the collector accepted, and those it refused or never answered.
    pub otel_exports: u64,
    pub otel_export_failures: u64,
    pub token_cache_hits: u64,
    pub token_cache_misses: u64,
    pub token_cache_entries: u64,
    /// Connections to the upstream, pooled or busy.
    pub upstream_connections_open: u64,
}

impl Metrics {
    /// A client connection past its TLS handshake.
    pub fn connection_open(&self) -> Held<'_> {
        Held::new(&self.connections_open)
    }

    /// An HTTP/1.1 connection waiting for a request without HTTP state (parked).
    pub fn connection_parked(&self) -> Held<'_> {
        Held::new(&self.connections_parked)
    }

    /// The request's identity keeps its account's egress series: found once, then counted without
    /// taking the metrics lock.
    /// Counts one refusal before the pipeline (every one, however few records they make).
    pub fn refused(&self, kind: Refusal) {
        self.refused[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn underscore_headers_dropped(&self, n: usize) {
        if n > 0 {
            self.underscore_dropped
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// A parent record's scope fields, from the cache (`"cache"`), a side request
    /// (`"upstream"`), or not at all (`"failed"`).
    pub fn parent_lookup(&self, source: &str) {
        let i = match source {
            "cache" => 0,
            "upstream" => 1,
            _ => 2,
        };
        self.parent_lookups[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn abandoned(&self, by: Abandoned) {
        self.abandoned[by as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One request, at its start: every request begun is observed once at its end, so the two
    /// counts differ by the requests in flight, which return to zero when all is quiet (a request
    /// that never ended would show here).
    pub fn begun(&self) {
        self.shards[shard_index()]
            .begun
            .fetch_add(1, Ordering::Relaxed);
    }

    fn in_flight(&self) -> u64 {
        // Observed first: a request is begun before it is observed, so this never goes below zero.
        let observed = self.histogram().count();
        let begun: u64 = self
            .shards
            .iter()
            .map(|s| s.begun.load(Ordering::Relaxed))
            .sum();
        begun.saturating_sub(observed)
    }

    /// One request, at its end. `account` is its account's series and name, once known.
    pub fn observe(
        &self,
        allowed: bool,
        reason: &'static str,
        vendor: Option<&str>,
        account: Option<(&AccountSeries, &str)>,
        bytes_out: u64,
        took: Duration,
    ) {
        let vendor = vendor.unwrap_or("");
        let shard = &self.shards[shard_index()];
        {
            let mut requests = shard.requests.lock().unwrap_or_else(|p| p.into_inner());
            *slot(requests.entry((allowed, reason)).or_default(), vendor) += 1;
        }
        if allowed && bytes_out > 0 {
            // The account is read only to find the series: the identity keeps it after that.
            match account {
                Some((series, account)) => series
                    .0
                    .get_or_init(|| self.egress_series(vendor, account))
                    .fetch_add(bytes_out, Ordering::Relaxed),
                None => self
                    .egress_series(vendor, "")
                    .fetch_add(bytes_out, Ordering::Relaxed),
            };
        }
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard
            .sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn histogram(&self) -> Histogram {
        let mut h = Histogram {
            buckets: [0; BUCKETS.len() + 1],
            sum_micros: 0,
        };
        for shard in &self.shards {
            for (total, b) in h.buckets.iter_mut().zip(&shard.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            h.sum_micros += shard.sum_micros.load(Ordering::Relaxed);
        }
        h
    }

    pub fn request_rows(&self) -> Vec<((bool, &'static str, String), u64)> {
        let mut totals: HashMap<(bool, &'static str, String), u64> = HashMap::new();
        for shard in &self.shards {
            let requests = shard.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((allowed, reason), vendors) in requests.iter() {
                for (vendor, n) in vendors {
                    *totals
                        .entry((*allowed, *reason, vendor.clone()))
                        .or_default() += n;
                }
            }
        }
        let mut rows: Vec<_> = totals.into_iter().collect();
        rows.sort();
        rows
    }

    fn egress_series(&self, vendor: &str, account: &str) -> Arc<AtomicU64> {
        let mut egress = self.egress.lock().unwrap_or_else(|p| p.into_inner());
        slot(slot(&mut egress, vendor), account).clone()
    }

    pub fn egress_rows(&self) -> Vec<((String, String), u64)> {
        let egress = self.egress.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<_> = egress
            .iter()
            .flat_map(|(v, accounts)| {
                accounts
                    .iter()
                    .map(move |(a, n)| ((v.clone(), a.clone()), n.load(Ordering::Relaxed)))
            })
            .collect();
        rows.sort();
        rows
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP vendorgate_requests_total Requests decided, by decision, reason and vendor.\n# TYPE vendorgate_requests_total counter\n");
        for ((allowed, reason, vendor), n) in self.request_rows() {
            let decision = if allowed { "allow" } else { "deny" };
            let _ = writeln!(out, "vendorgate_requests_total{{decision=\"{decision}\",reason=\"{reason}\",vendor=\"{}\"}} {n}", escape(&vendor));
        }
        out.push_str("# HELP vendorgate_egress_bytes_total Response bytes sent to agents, by vendor and account.\n# TYPE vendorgate_egress_bytes_total counter\n");
        for ((vendor, account), n) in self.egress_rows() {
            let _ = writeln!(
                out,
                "vendorgate_egress_bytes_total{{vendor=\"{}\",account=\"{}\"}} {n}",
                escape(&vendor),
                escape(&account)
            );
        }
        out.push_str("# HELP vendorgate_request_duration_seconds Time from request to the end of the response body.\n# TYPE vendorgate_request_duration_seconds histogram\n");
        let histogram = self.histogram();
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(&histogram.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "vendorgate_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = histogram.count();
        let _ = writeln!(
            out,
            "vendorgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "vendorgate_request_duration_seconds_sum {}",
            histogram.sum_micros as f64 / 1e6
        );
        let _ = writeln!(out, "vendorgate_request_duration_seconds_count {count}");
        out.push_str("# HELP vendorgate_connection_refusals_total Connections and request heads refused before the pipeline (TLS handshake, HTTP parser, head timeout), by kind.\n# TYPE vendorgate_connection_refusals_total counter\n");
        for kind in Refusal::ALL {
            let n = self.refused[kind as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "vendorgate_connection_refusals_total{{kind=\"{}\"}} {n}",
                kind.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP vendorgate_underscore_headers_dropped_total Request headers with an underscore in their name, dropped before the upstream.\n# TYPE vendorgate_underscore_headers_dropped_total counter\nvendorgate_underscore_headers_dropped_total {}",
            self.underscore_dropped.load(Ordering::Relaxed)
        );
        out.push_str("# HELP vendorgate_scope_parent_lookups_total Parent records read for a vendor's scope (a ticket's comments, its update), by where from.\n# TYPE vendorgate_scope_parent_lookups_total counter\n");
        for (i, source) in ["cache", "upstream", "failed"].iter().enumerate() {
            let n = self.parent_lookups[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "vendorgate_scope_parent_lookups_total{{source=\"{source}\"}} {n}"
            );
        }
        out.push_str("# HELP vendorgate_policy_reloads_total Policy reloads (SIGHUP, the admin API, the file watcher), by result.\n# TYPE vendorgate_policy_reloads_total counter\n");
        for (i, result) in ["ok", "failed"].iter().enumerate() {
            let n = self.reloads[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "vendorgate_policy_reloads_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP vendorgate_anomalies_total Detector findings (issue 23's baselines), by detector and action.\n# TYPE vendorgate_anomalies_total counter\n");
        for (i, detector) in DETECTORS.iter().enumerate() {
            for (j, action) in ["alert", "lock"].iter().enumerate() {
                let n = self.anomalies[i][j].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "vendorgate_anomalies_total{{detector=\"{detector}\",action=\"{action}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP vendorgate_requests_abandoned_total Requests let go before their response ended, by who let go.\n# TYPE vendorgate_requests_abandoned_total counter\n");
        for by in [Abandoned::Client, Abandoned::Shutdown] {
            let n = self.abandoned[by as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "vendorgate_requests_abandoned_total{{by=\"{}\"}} {n}",
                by.as_str()
            );
        }
        let gauges: [(&str, &str, &str, u64); 18] = [
            (
                "vendorgate_trail_records_total",
                "counter",
                "Decision records written.",
                g.trail_written,
            ),
            (
                "vendorgate_trail_unrecorded_total",
                "counter",
                "Decisions that could not be recorded.",
                g.trail_unrecorded,
            ),
            (
                "vendorgate_trail_queue_depth",
                "gauge",
                "Records waiting for the writer.",
                g.trail_queue_depth,
            ),
            (
                "vendorgate_trail_head_seq",
                "gauge",
                "Sequence number of the last record written.",
                g.trail_head_seq,
            ),
            (
                "vendorgate_trail_writable",
                "gauge",
                "1 when the decision log accepts writes.",
                u64::from(g.trail_writable),
            ),
            (
                "vendorgate_state_errors_total",
                "counter",
                "Failed operations on the shared state backend.",
                g.state_errors,
            ),
            (
                "vendorgate_state_calls_total",
                "counter",
                "Calls to the shared state made by requests (most are decided from this replica's leases).",
                g.state_calls,
            ),
            (
                "vendorgate_state_healthy",
                "gauge",
                "1 when the shared state answered its last call (always 1 in memory).",
                u64::from(g.state_healthy),
            ),
            (
                "vendorgate_otel_decisions_dropped_total",
                "counter",
                "Decision records not copied to the OTLP log export (its queue full; the file trail has them).",
                g.otel_decisions_dropped,
            ),
            (
                "vendorgate_otel_exports_total",
                "counter",
                "OTLP export requests (batches of spans, metrics or log records) the collector accepted.",
                g.otel_exports,
            ),
            (
                "vendorgate_otel_export_failures_total",
                "counter",
                "OTLP export requests the collector refused or did not answer (their batches are lost).",
                g.otel_export_failures,
            ),
            (
                "vendorgate_token_cache_hits_total",
                "counter",
                "Bearer tokens found verified in the cache (no signature check).",
                g.token_cache_hits,
            ),
            (
                "vendorgate_token_cache_misses_total",
                "counter",
                "Bearer tokens not in the cache: each was checked against the IdP's keys.",
                g.token_cache_misses,
            ),
            (
                "vendorgate_token_cache_entries",
                "gauge",
                "Verified tokens held in the cache.",
                g.token_cache_entries,
            ),
            (
                "vendorgate_connections_open",
                "gauge",
                "Client connections past their TLS handshake.",
                self.connections_open.load(Ordering::Relaxed),
            ),
            (
                "vendorgate_requests_in_flight",
                "gauge",
                "Requests begun and not yet ended (recorded).",
                self.in_flight(),
            ),
            (
                "vendorgate_upstream_connections_open",
                "gauge",
                "Connections to the upstream, idle in the pool or carrying requests.",
                g.upstream_connections_open,
            ),
            (
                "vendorgate_connections_parked",
                "gauge",
                "HTTP/1.1 connections waiting for a request with their HTTP buffers released.",
                self.connections_parked.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            trail_written: 0,
            trail_unrecorded: 0,
            trail_queue_depth: 0,
            trail_head_seq: 0,
            trail_writable: true,
            state_errors: 0,
            state_calls: 0,
            state_healthy: true,
            otel_decisions_dropped: 0,
            otel_exports: 0,
            otel_export_failures: 0,
            token_cache_hits: 0,
            token_cache_misses: 0,
            token_cache_entries: 0,
            upstream_connections_open: 0,
        }
    }

    fn line<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Each thread counts into its own shard; a scrape must still see every request once, with the
    /// histogram's buckets cumulative as Prometheus reads them.
    #[test]
    fn counts_from_many_threads_add_up_in_one_scrape() {
        let metrics = Metrics::default();
        std::thread::scope(|s| {
            for t in 0..(SHARDS + 4) {
                let metrics = &metrics;
                s.spawn(move || {
                    for _ in 0..100 {
                        metrics.observe(
                            true,
                            "allowed",
                            Some("acme"),
                            None,
                            0,
                            Duration::from_micros(500),
                        );
                    }
                    let denied_after = Duration::from_millis(if t % 2 == 0 { 20 } else { 20_000 });
                    metrics.observe(false, "ip_not_allowed", Some("acme"), None, 0, denied_after);
                });
            }
        });
        let threads = (SHARDS + 4) as u64;
        let text = metrics.render(&gauges());
        let allowed = 100 * threads;
        assert_eq!(
            line(&text, "vendorgate_requests_total{decision=\"allow\""),
            format!("vendorgate_requests_total{{decision=\"allow\",reason=\"allowed\",vendor=\"acme\"}} {allowed}")
        );
        assert!(line(&text, "vendorgate_requests_total{decision=\"deny\"")
            .ends_with(&format!(" {threads}")));
        let bucket = |le: &str| {
            line(
                &text,
                &format!("vendorgate_request_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
        };
        assert_eq!(bucket("0.001"), allowed);
        assert_eq!(bucket("0.01"), allowed);
        assert_eq!(bucket("0.025"), allowed + threads / 2);
        assert_eq!(bucket("10"), allowed + threads / 2);
        assert_eq!(bucket("+Inf"), allowed + threads);
        assert_eq!(
            line(&text, "vendorgate_request_duration_seconds_count"),
            format!(
                "vendorgate_request_duration_seconds_count {}",
                allowed + threads
            )
        );
    }
}
