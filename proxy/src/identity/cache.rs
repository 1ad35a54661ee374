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
use std::sync::{Arc, Mutex, MutexGuard};

use vendorgate_policy::{Policy, Standing, VerifiedToken};

use crate::headers::encoded_value;
use crate::state::account::AccountState;
use crate::state::controls::Who;
use crate::telemetry::metrics::AccountSeries;
use crate::trail::schema::TokenFragments;

const SHARDS: usize = 16;

/// A verified token as the request path keeps it: what identifies (the standing under the policy,
/// `vendor/account` for the identity header, the claims), and beside it, in the same allocation,
/// what other parts keep per token, each part defined by its owner: the account's state handles
/// ([`AccountState`], `state`), its metric series ([`AccountSeries`], `telemetry`) and what its
/// records say of it ([`TokenFragments`], `trail`).
///
/// Why one allocation, laid out in order: with 100,000 active accounts an identity is rarely in
/// cache when its request arrives, and every cache line of it the request reads is a miss (about
/// 250 ns here). `repr(C)` keeps the fields in the order written: the per-request ones first, the
/// claims after, read only to build state keys on a first request or to explain a decision.
#[repr(C)]
pub struct Identity {
    /// The `version` of the policy that resolved `token.vendor`, compared by pointer: an entry made
    /// under the previous policy is a miss, even one inserted just after a reload cleared the cache.
    policy: Arc<str>,
    /// What authorization reads, resolved under that policy.
    pub standing: Standing,
    /// The in-memory state this account has reached, so its next requests skip the lookups.
    pub state: AccountState,
    pub egress_metric: AccountSeries,
    pub record: TokenFragments,
    /// `vendor/account`, encoded for `upstream.identity_header`.
    pub who: HeaderValue,
    /// The vendor's configured id.
    pub vendor: Box<str>,
    pub token: VerifiedToken,
}

/// What a lock matches a stream in flight by.
impl Who for Identity {
    fn vendor(&self) -> &str {
        &self.vendor
    }
    fn account(&self) -> &str {
        &self.token.account
    }
    fn sid(&self) -> Option<&str> {
        self.token.sid.as_deref()
    }
    fn jti(&self) -> Option<&str> {
        self.token.jti.as_deref()
    }
}

impl Identity {
    /// `token` as verified under `policy` (whose version is `version`); `prefix` is the state
    /// keys' prefix and `hash` the token's cache key.
    pub fn new(
        token: VerifiedToken,
        version: Arc<str>,
        policy: &Policy,
        prefix: &crate::state::keys::KeyPrefix,
        hash: u128,
    ) -> Self {
        let vendor = policy
            .vendors
            .get(token.vendor)
            .map_or("", |v| v.id.as_str());
        Identity {
            policy: version,
            standing: policy.standing(&token),
            state: AccountState::new(policy, prefix, &token, hash),
            egress_metric: AccountSeries::default(),
            record: TokenFragments::new(&token),
            who: encoded_value(&[vendor, "/", &token.account].concat()),
            vendor: vendor.into(),
            token,
        }
    }
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
            .filter(|t| t.standing.exp >= now && Arc::ptr_eq(&t.policy, policy))
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
        Arc::new(Identity::new(
            token,
            policy(),
            &Policy::default(),
            &crate::state::keys::KeyPrefix::new("vg", false),
            7,
        ))
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
