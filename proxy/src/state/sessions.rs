//! The live sessions this replica has seen: who, since when, from where, how much. What an
//! operator lists in an incident (`GET /v1/sessions`) before revoking one. Kept in memory per
//! replica (each replica lists the sessions it served); a cached identity reaches its session's
//! entry through a slot, so a request updates a few counters without a lookup.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::cells::key_hash;

/// At most this many addresses are kept per session (the first ones seen).
const MAX_ADDRESSES: usize = 8;
/// Sessions listed at most; past it the oldest one made is forgotten (its identity keeps counting
/// into it, it is only no longer listed). Constant time: every new token can be a new session, and
/// a scan on insert made each one cost the whole map.
const MAX_SESSIONS: usize = 100_000;
const SHARDS: usize = 16;

pub struct Session {
    vendor: Box<str>,
    account: Box<str>,
    /// The token's `sid`, else its `jti`: what a revocation names. `None`: neither claim.
    id: Option<Box<str>>,
    since_ms: u64,
    last_ms: AtomicU64,
    requests: AtomicU64,
    bytes_out: AtomicU64,
    addresses: Mutex<Vec<IpAddr>>,
}

/// A session as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub vendor: String,
    pub account: String,
    pub session: Option<String>,
    pub since: String,
    pub last_seen: String,
    pub addresses: Vec<String>,
    pub requests: u64,
    pub bytes_out: u64,
}

impl Session {
    /// A request of the session, allowed at `now_ms` from `ip`.
    pub fn seen(&self, now_ms: u64, ip: IpAddr) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if addresses.len() < MAX_ADDRESSES && !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }

    /// Response bytes sent to the session's agent.
    pub fn sent(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    fn view(&self) -> SessionView {
        let at = |ms: u64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            crate::trail::time::rfc3339(t)
        };
        SessionView {
            vendor: self.vendor.to_string(),
            account: self.account.to_string(),
            session: self.id.as_deref().map(str::to_string),
            since: at(self.since_ms),
            last_seen: at(self.last_ms.load(Ordering::Relaxed)),
            addresses: self
                .addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(IpAddr::to_string)
                .collect(),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct Shard {
    by_key: HashMap<Box<str>, Arc<Session>>,
    /// Keys in the order made, for eviction.
    order: VecDeque<Box<str>>,
}

#[derive(Default)]
pub struct Sessions {
    shards: [Mutex<Shard>; SHARDS],
}

impl Sessions {
    /// The entry of the session under `key` (its state key), made at its first request.
    pub fn entry(
        &self,
        key: &str,
        vendor: &str,
        account: &str,
        id: Option<&str>,
        now_ms: u64,
    ) -> Arc<Session> {
        let mut shard = self.shards[key_hash(key) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shard.by_key.get(key) {
            return s.clone();
        }
        if shard.order.len() >= MAX_SESSIONS / SHARDS {
            if let Some(oldest) = shard.order.pop_front() {
                shard.by_key.remove(&oldest);
            }
        }
        let session = Arc::new(Session {
            vendor: vendor.into(),
            account: account.into(),
            id: id.map(Into::into),
            since_ms: now_ms,
            last_ms: AtomicU64::new(now_ms),
            requests: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            addresses: Mutex::new(Vec::new()),
        });
        shard.by_key.insert(key.into(), session.clone());
        shard.order.push_back(key.into());
        session
    }

    /// The sessions seen within `window_ms` of `now_ms`, most recent first, optionally only an
    /// account's or a vendor's.
    pub fn list(
        &self,
        now_ms: u64,
        window_ms: u64,
        account: Option<&str>,
        vendor: Option<&str>,
    ) -> Vec<SessionView> {
        let mut live: Vec<Arc<Session>> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            live.extend(
                shard
                    .by_key
                    .values()
                    .filter(|s| {
                        now_ms.saturating_sub(s.last_ms.load(Ordering::Relaxed)) <= window_ms
                    })
                    .filter(|s| account.is_none_or(|a| &*s.account == a))
                    .filter(|s| vendor.is_none_or(|v| &*s.vendor == v))
                    .cloned(),
            );
        }
        live.sort_by_key(|s| std::cmp::Reverse(s.last_ms.load(Ordering::Relaxed)));
        live.into_iter().map(|s| s.view()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_counts_its_requests_bytes_and_addresses() {
        let sessions = Sessions::default();
        let s = sessions.entry("k", "acme", "agent-7", Some("sid-1"), 1_000);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        s.seen(2_000, ip);
        s.seen(3_000, ip);
        s.sent(2048);
        assert!(Arc::ptr_eq(&s, &sessions.entry("k", "x", "y", None, 9_000)));
        let listed = sessions.list(4_000, 10_000, Some("agent-7"), None);
        assert_eq!(listed.len(), 1);
        let v = &listed[0];
        assert_eq!((v.requests, v.bytes_out), (2, 2048));
        assert_eq!(v.addresses, ["127.0.0.2"]);
        assert_eq!(v.session.as_deref(), Some("sid-1"));
        assert!(
            sessions.list(100_000, 10_000, None, None).is_empty(),
            "idle"
        );
        assert!(sessions
            .list(4_000, 10_000, Some("agent-8"), None)
            .is_empty());
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_the_oldest_first() {
        let sessions = Sessions::default();
        for i in 0..MAX_SESSIONS + 5_000 {
            sessions.entry(&format!("k{i}"), "acme", &format!("a{i}"), None, 1_000);
        }
        let listed = sessions.list(1_000, 10_000, None, None);
        assert!(listed.len() <= MAX_SESSIONS, "{}", listed.len());
        assert!(
            sessions.list(1_000, 10_000, Some("a0"), None).is_empty(),
            "the oldest stayed"
        );
        let last = format!("a{}", MAX_SESSIONS + 4_999);
        assert_eq!(sessions.list(1_000, 10_000, Some(&last), None).len(), 1);
    }
}
