//! Verified tokens, keyed by a hash of the token (the token itself is never stored), kept until
//! their `exp`.
//!
//! Sharded so concurrent requests on different tokens rarely meet on a lock; each lock is held for
//! a hash-map operation only, never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vendorgate_policy::VerifiedToken;

const SHARDS: usize = 16;

pub struct TokenCache {
    shards: Vec<Mutex<HashMap<u128, Arc<VerifiedToken>>>>,
    per_shard: usize,
}

/// 128 bits of SHA-256: collisions are out of reach, and the map key stays small.
pub fn token_key(token: &str) -> u128 {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    u128::from_le_bytes(bytes)
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: u128) -> &Mutex<HashMap<u128, Arc<VerifiedToken>>> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// A verified token still within its `exp`.
    pub fn get(&self, key: u128, now: u64) -> Option<Arc<VerifiedToken>> {
        let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(&key).filter(|t| t.exp >= now).cloned()
    }

    pub fn insert(&self, key: u128, token: Arc<VerifiedToken>, now: u64) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, t| t.exp >= now);
            // Still full of live tokens: drop an arbitrary one. A cache miss costs one signature
            // check, so bounded memory wins over perfect recall.
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key, token);
    }

    /// Forgets everything: a new policy may map the same token to another vendor.
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
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
        })
    }

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let cache = TokenCache::new(32);
        cache.insert(token_key("t1"), token(100), 50);
        assert!(cache.get(token_key("t1"), 99).is_some());
        assert!(cache.get(token_key("t1"), 101).is_none());
        assert!(cache.get(token_key("t2"), 50).is_none());
        for i in 0..1000 {
            cache.insert(token_key(&format!("tok{i}")), token(10_000), 50);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        cache.clear();
        assert!(cache.is_empty());
    }
}
