//! Verified tokens, keyed by a hash of the token (the token itself is never stored), kept until
//! their `exp`.
//!
//! Sharded so concurrent requests on different tokens rarely meet on a lock; each lock is held for
//! a hash-map operation only, never across an await. A full shard evicts its oldest entry (FIFO):
//! constant time per insert, where sweeping a full shard for expired entries on every miss made
//! each new token cost a scan of thousands of live ones.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use http::HeaderValue;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use vendorgate_policy::{ByteRule, Policy, VerifiedToken};

use crate::headers::encoded_value;
use crate::limits::{byte_key, rate_key, session_key};
use crate::state::cells::{CounterCell, RateCell, SessionCell, Slot};
use crate::trail::chain::sha256_hex;
use crate::trail::record::token_object;

const SHARDS: usize = 16;

/// A verified token as the request path keeps it: the claims, the policy they were resolved under,
/// and what every request's decision record would otherwise derive from them again.
pub struct Identity {
    pub token: VerifiedToken,
    /// The `version` of the policy that resolved `token.vendor`, compared by pointer: an entry made
    /// under the previous policy is a miss, even one inserted just after a reload cleared the cache.
    policy: Arc<str>,
    /// The decision record's `token` object (the `jti` already hashed): the same for every request
    /// of the token, so written once.
    pub record_token: String,
    /// `vendor/account`, encoded for `upstream.identity_header`.
    pub who: HeaderValue,
    /// The session's state key, made once per token (see [`crate::limits::session_key`]).
    pub session_key: String,
    /// The state key of each of the policy's rate limits (by index) for this token's account.
    /// Valid because an identity only serves the policy that made it.
    pub rate_keys: Vec<Arc<str>>,
    /// The same for the egress and ingress caps (keys without the window).
    egress_keys: Vec<Arc<str>>,
    ingress_keys: Vec<Arc<str>>,
    /// The in-memory state this identity has reached, so its next requests skip the lookups.
    pub cells: Cells,
}

/// Where an identity keeps its in-memory state cells once found (see [`crate::state::cells`]).
/// Indexed like the policy's rules.
#[derive(Default)]
pub struct Cells {
    pub session: Slot<SessionCell>,
    pub rates: Vec<Slot<RateCell>>,
    egress: Vec<Slot<CounterCell>>,
    ingress: Vec<Slot<CounterCell>>,
    /// This account's series in the egress-bytes metric.
    pub egress_metric: Slot<AtomicU64>,
}

impl Identity {
    /// `token` as verified under `policy` (whose version is `version`); `prefix` is the state
    /// keys' prefix and `hash` the token's cache key.
    pub fn new(
        token: VerifiedToken,
        version: Arc<str>,
        policy: &Policy,
        prefix: &str,
        hash: u128,
    ) -> Self {
        let vendor = policy
            .vendors
            .get(token.vendor)
            .map_or("", |v| v.id.as_str());
        let jti_sha256 = token.jti.as_ref().map(|j| sha256_hex(j.as_bytes()));
        let who = encoded_value(&[vendor, "/", &token.account].concat());
        let record_token = token_object(
            &token.iss,
            token.sub.as_deref(),
            &token.amr,
            jti_sha256.as_deref(),
        );
        let session_key = session_key(prefix, vendor, &token, hash);
        let account = &token.account;
        let rate_keys = policy
            .rate_rules
            .iter()
            .map(|rule| rate_key(prefix, rule, vendor, account))
            .collect();
        let byte_keys = |ingress: bool, rules: &[ByteRule]| -> Vec<Arc<str>> {
            rules
                .iter()
                .map(|rule| byte_key(prefix, ingress, rule, vendor, account))
                .collect()
        };
        let egress_keys = byte_keys(false, &policy.egress_rules);
        let ingress_keys = byte_keys(true, &policy.ingress_rules);
        let cells = Cells {
            rates: slots(policy.rate_rules.len()),
            egress: slots(egress_keys.len()),
            ingress: slots(ingress_keys.len()),
            ..Cells::default()
        };
        Identity {
            token,
            policy: version,
            record_token,
            who,
            session_key,
            rate_keys,
            egress_keys,
            ingress_keys,
            cells,
        }
    }

    /// The keys and cell slots of the ingress or egress caps, by rule index.
    pub fn byte_state(&self, ingress: bool) -> (&[Arc<str>], &[Slot<CounterCell>]) {
        if ingress {
            (&self.ingress_keys, &self.cells.ingress)
        } else {
            (&self.egress_keys, &self.cells.egress)
        }
    }
}

fn slots<C>(n: usize) -> Vec<Slot<C>> {
    (0..n).map(|_| Slot::default()).collect()
}

#[derive(Default)]
struct Shard {
    /// Keys are already uniform (a slice of SHA-256); a seeded fast hasher spreads them as well
    /// as SipHash does, for a fraction of the work on every request.
    tokens: HashMap<u128, Arc<Identity>, RandomState>,
    /// Keys in insertion order, for eviction. Holds exactly the keys of `tokens`.
    order: VecDeque<u128>,
    /// Lookups answered from the cache, and lookups that found nothing (each one then costs a
    /// signature check): the ratio tells an operator whether `token_cache_entries` is big enough.
    /// Counted per shard, under the lock already held, so no counter is shared by all requests.
    hits: u64,
    misses: u64,
}

pub struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

/// 128 bits of SHA-256: collisions are out of reach, and the map key stays small.
pub fn token_key(token: &str) -> u128 {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    u128::from_le_bytes(bytes)
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(key as usize) % SHARDS])
    }

    /// A verified token still within its `exp`, resolved under `policy` (the active `version`).
    pub fn get(&self, key: u128, now: u64, policy: &Arc<str>) -> Option<Arc<Identity>> {
        let mut shard = self.shard(key);
        let found = shard
            .tokens
            .get(&key)
            .filter(|t| t.token.exp >= now && Arc::ptr_eq(&t.policy, policy))
            .cloned();
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(h, m), s| {
            let s = lock(s);
            (h + s.hits, m + s.misses)
        })
    }

    pub fn insert(&self, key: u128, token: Arc<Identity>) {
        let mut shard = self.shard(key);
        // Two requests with the same new token may both verify it: the second only refreshes.
        if shard.tokens.insert(key, token).is_some() {
            return;
        }
        shard.order.push_back(key);
        // Full: the oldest goes. Tokens expire in roughly the order they were issued, so the
        // oldest entry is also the likeliest to be dead already; a live one evicted costs one
        // signature check when it comes back.
        while shard.order.len() > self.per_shard {
            if let Some(old) = shard.order.pop_front() {
                shard.tokens.remove(&old);
            }
        }
    }

    /// Forgets everything: a new policy may map the same token to another vendor.
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.tokens.clear();
            shard.order.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tokens.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Arc<str> {
        thread_local!(static POLICY: Arc<str> = Arc::from("sha256:test"));
        POLICY.with(Arc::clone)
    }

    fn token(exp: u64) -> Arc<Identity> {
        let token = VerifiedToken {
            vendor: 0,
            account: "a".into(),
            iss: "i".into(),
            sub: None,
            amr: vec![],
            acr: None,
            auth_time: None,
            iat: None,
            exp,
            sid: None,
            jti: None,
            alg: "ES256".into(),
            kid: None,
        };
        Arc::new(Identity::new(token, policy(), &Policy::default(), "vg", 7))
    }

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let cache = TokenCache::new(32);
        cache.insert(token_key("t1"), token(100));
        assert!(cache.get(token_key("t1"), 99, &policy()).is_some());
        assert!(cache.get(token_key("t1"), 101, &policy()).is_none());
        assert!(cache.get(token_key("t2"), 50, &policy()).is_none());
        for i in 0..1000 {
            cache.insert(token_key(&format!("tok{i}")), token(10_000));
        }
        assert_eq!(cache.len(), 32);
        // The newest stay; the oldest went first.
        assert!(cache.get(token_key("tok999"), 50, &policy()).is_some());
        assert!(cache.get(token_key("tok0"), 50, &policy()).is_none());
        // Inserting a present key again does not make room for it twice.
        cache.insert(token_key("tok999"), token(10_000));
        assert_eq!(cache.len(), 32);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn an_entry_resolved_under_another_policy_is_a_miss() {
        let cache = TokenCache::new(32);
        cache.insert(token_key("t1"), token(100));
        let reloaded: Arc<str> = Arc::from("sha256:test");
        assert!(cache.get(token_key("t1"), 50, &reloaded).is_none());
        assert!(cache.get(token_key("t1"), 50, &policy()).is_some());
    }
}
