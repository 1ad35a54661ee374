//! Every account's live behaviour, for the detectors: one [`vendorgate_policy::detect::Tracker`]
//! per account (the same code `vendorgate simulate` runs), and each vendor's peer pool.
//!
//! The request path holds an [`AccountActivity`] (found once per verified token and kept with
//! it): a request costs one uncontended lock and a few comparisons; response bytes are counted as
//! they stream, so a bulk pull trips mid-response. Findings go out on a channel to the gateway's
//! dispatcher (trail record, metric, webhook, lock) and never wait for it.
//!
//! **Bounded**: at most [`MAX_ACCOUNTS`] accounts are followed (the one seen longest ago is
//! forgotten first); an account's history is at most 21 KiB (typically about 6 KiB).
//!
//! **Kept across restarts**: alone, [`Activity::save`] writes every account's history to a file
//! beside the trail (atomically), and [`Activity::load`] reads it at start.
//!
//! **Shared** (`state.backend = "redis"`): each account's hours live in a Redis hash. Every second
//! each replica adds what it counted ([`Activity::take_unflushed`]) and gets the hour's totals
//! across replicas back, which its tracker then judges ([`AccountActivity::merge`]); an account
//! new to a replica takes its past hours from Redis ([`AccountActivity::adopt`]). A thief spread
//! over replicas is judged on the whole, at most a second late.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use vendorgate_policy::detect::{DetectRules, Finding, History, PeerPool, Tracker, Usage};

/// Accounts followed at most.
pub const MAX_ACCOUNTS: usize = 100_000;

/// A finding and whose it is, as the dispatcher gets it.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub vendor: Arc<str>,
    pub account: Arc<str>,
    pub client_ip: Option<IpAddr>,
    pub finding: Finding,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The tracker, and (shared) what it counted that Redis has not yet been told, by hour.
struct Live {
    tracker: Tracker,
    unflushed: Vec<(u32, Usage)>,
}

/// One account's tracker, with what it needs at hand.
pub struct AccountActivity {
    live: Mutex<Live>,
    /// Shared: counts are waiting to go to Redis.
    pending: AtomicBool,
    /// Shared: its past hours are still to be read from Redis.
    unadopted: AtomicBool,
    shared: bool,
    pool: Arc<Mutex<PeerPool>>,
    pub vendor: Arc<str>,
    pub account: Arc<str>,
    zone: TimeZone,
    /// When it was last touched (seconds), for eviction.
    touched: AtomicU64,
    /// Where findings go (`None`: nowhere, in the simulation the caller reads them).
    out: Option<tokio::sync::mpsc::Sender<Anomaly>>,
    /// Findings that could not be handed over (the dispatcher far behind).
    dropped: Arc<AtomicU64>,
}

impl AccountActivity {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes counts for Redis (shared only).
    fn unflushed(&self, live: &mut Live, delta: Usage) {
        if !self.shared {
            return;
        }
        let hour = live.tracker.hour();
        self.keep_for_redis(live, hour, delta);
    }

    /// Adds `delta` to what goes to Redis for `hour` at the next flush.
    fn keep_for_redis(&self, live: &mut Live, hour: u32, delta: Usage) {
        match live.unflushed.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, u)) => add(u, delta),
            None => live.unflushed.push((hour, delta)),
        }
        self.pending.store(true, Ordering::Relaxed);
    }

    /// The hour's totals across replicas (`total`, as Redis answered a flush) with what this one
    /// counted since: judged.
    pub fn merge(&self, hour: u32, total: Usage, at: u64, rules: &DetectRules) {
        let found = {
            let mut live = self.live();
            let mut total = total;
            for (_, u) in live.unflushed.iter().filter(|(h, _)| *h == hour) {
                add(&mut total, *u);
            }
            live.tracker.merge(hour, total, rules)
        };
        for f in &found {
            self.send(f, None, at);
        }
    }

    /// Counts a flush could not deliver, kept for the next.
    pub fn give_back(&self, hour: u32, delta: Usage) {
        let mut live = self.live();
        self.keep_for_redis(&mut live, hour, delta);
    }

    /// The account's past hours from Redis replace what this replica had seen of it.
    pub fn adopt(&self, past: Vec<(u32, Usage)>, rules: &DetectRules) {
        let mut live = self.live();
        live.tracker.adopt(past, &self.zone, &self.pool, rules);
    }

    /// Its past hours could not be read: try again.
    pub fn retry_adopt(&self) {
        self.unadopted.store(true, Ordering::Relaxed);
    }

    /// Its key in Redis.
    pub fn usage_key(&self, prefix: &str) -> String {
        format!("{prefix}:usage:{}:{}", self.vendor, self.account)
    }

    /// An allowed request at `now` (seconds): judged, and any findings sent on (and returned).
    pub fn request(
        &self,
        now: u64,
        rules: &DetectRules,
        export: bool,
        ip: IpAddr,
        records: &[u64],
    ) -> Vec<Finding> {
        self.touched.store(now, Ordering::Relaxed);
        let found = {
            let mut live = self.live();
            let found = live
                .tracker
                .request(now, &self.zone, &self.pool, rules, export, ip, records);
            let delta = Usage {
                requests: 1,
                exports: u64::from(export),
                bytes: 0,
            };
            self.unflushed(&mut live, delta);
            found
        };
        for f in &found {
            self.send(f, Some(ip), now);
        }
        found
    }

    /// `n` response bytes sent at `now`.
    pub fn bytes(&self, now: u64, n: u64, rules: &DetectRules) -> Option<Finding> {
        let found = {
            let mut live = self.live();
            let found = live.tracker.bytes(now, n, &self.zone, &self.pool, rules);
            let delta = Usage {
                requests: 0,
                exports: 0,
                bytes: n,
            };
            self.unflushed(&mut live, delta);
            found
        };
        if let Some(f) = &found {
            self.send(f, None, now);
        }
        found
    }

    fn send(&self, finding: &Finding, client_ip: Option<IpAddr>, at: u64) {
        let Some(out) = &self.out else { return };
        let anomaly = Anomaly {
            vendor: self.vendor.clone(),
            account: self.account.clone(),
            client_ip,
            finding: finding.clone(),
            at,
        };
        if out.try_send(anomaly).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An account by (vendor, account).
type AccountKey = (Arc<str>, Arc<str>);

/// All accounts' trackers and the vendors' pools.
pub struct Activity {
    accounts: Mutex<HashMap<AccountKey, Arc<AccountActivity>>>,
    pools: Mutex<HashMap<Arc<str>, Arc<Mutex<PeerPool>>>>,
    /// Histories read from the file at start, handed to each account when it first appears.
    loaded: Mutex<HashMap<(String, String), History>>,
    out: Option<tokio::sync::mpsc::Sender<Anomaly>>,
    pub dropped: Arc<AtomicU64>,
    /// Hours are shared through Redis.
    shared: bool,
}

fn add(to: &mut Usage, u: Usage) {
    to.requests += u.requests;
    to.exports += u.exports;
    to.bytes += u.bytes;
}

/// The file's form: each account's history.
#[derive(Serialize, Deserialize, Default)]
struct Saved {
    accounts: Vec<SavedAccount>,
}

#[derive(Serialize, Deserialize)]
struct SavedAccount {
    vendor: String,
    account: String,
    history: History,
}

impl Activity {
    /// Findings go to `out` (`None`: only returned, as the simulation wants).
    pub fn new(out: Option<tokio::sync::mpsc::Sender<Anomaly>>) -> Self {
        Activity {
            accounts: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            out,
            dropped: Arc::default(),
            shared: false,
        }
    }

    /// Hours shared through Redis (see the module's doc).
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    fn all(&self) -> Vec<Arc<AccountActivity>> {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The counts waiting for Redis, taken: (account, hour, counts).
    pub fn take_unflushed(&self) -> Vec<(Arc<AccountActivity>, u32, Usage)> {
        let mut out = Vec::new();
        for a in self.all() {
            if a.pending.swap(false, Ordering::Relaxed) {
                let taken = std::mem::take(&mut a.live().unflushed);
                out.extend(taken.into_iter().map(|(h, u)| (a.clone(), h, u)));
            }
        }
        out
    }

    /// Accounts whose past hours are still to be read from Redis.
    pub fn take_unadopted(&self) -> Vec<Arc<AccountActivity>> {
        self.all()
            .into_iter()
            .filter(|a| a.unadopted.swap(false, Ordering::Relaxed))
            .collect()
    }

    /// The histories read from the file, taken (to be written to Redis once).
    pub fn take_loaded(&self) -> Vec<(String, String, History)> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.drain().map(|((v, a), h)| (v, a, h)).collect()
    }

    /// The account's activity, made on first sight (with its saved history, if any).
    pub fn account(
        &self,
        vendor: &str,
        account: &str,
        zone: &TimeZone,
        now: u64,
        rules: &DetectRules,
    ) -> Arc<AccountActivity> {
        let key: AccountKey = (vendor.into(), account.into());
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = accounts.get(&key) {
            return found.clone();
        }
        if accounts.len() >= MAX_ACCOUNTS {
            let oldest = accounts
                .iter()
                .min_by_key(|(_, a)| a.touched.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                accounts.remove(&k);
            }
        }
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.0.clone())
            .or_default()
            .clone();
        // Shared, the file's histories go to Redis and come back from there.
        let saved = if self.shared {
            None
        } else {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(vendor.to_string(), account.to_string()))
        };
        let tracker = match saved {
            Some(history) => Tracker::with_history(history, now, zone, &pool, rules),
            None => Tracker::new(now, zone, &pool, rules),
        };
        let made = Arc::new(AccountActivity {
            live: Mutex::new(Live {
                tracker,
                unflushed: Vec::new(),
            }),
            pending: AtomicBool::new(false),
            unadopted: AtomicBool::new(self.shared),
            shared: self.shared,
            pool,
            vendor: key.0.clone(),
            account: key.1.clone(),
            zone: zone.clone(),
            touched: AtomicU64::new(now),
            out: self.out.clone(),
            dropped: self.dropped.clone(),
        });
        accounts.insert(key, made.clone());
        made
    }

    /// Accounts followed now.
    pub fn len(&self) -> usize {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads histories saved by [`Activity::save`]; a missing file is no history.
    pub fn load(&self, path: &Path) -> std::io::Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let n = saved.accounts.len();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        for a in saved.accounts {
            loaded.insert((a.vendor, a.account), a.history);
        }
        Ok(n)
    }

    /// Writes every account's history (with the hour under way) to `path`, atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<usize> {
        let mut saved = Saved::default();
        {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            for ((vendor, account), history) in loaded.iter() {
                saved.accounts.push(SavedAccount {
                    vendor: vendor.clone(),
                    account: account.clone(),
                    history: history.clone(),
                });
            }
        }
        let accounts: Vec<Arc<AccountActivity>> = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for a in accounts {
            saved.accounts.push(SavedAccount {
                vendor: a.vendor.to_string(),
                account: a.account.to_string(),
                history: a.live().tracker.history_with_current(),
            });
        }
        let text = serde_json::to_string(&saved)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        crate::state::controls::write_atomically(path, text.as_bytes())?;
        Ok(saved.accounts.len())
    }
}
