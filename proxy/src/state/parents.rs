//! Parent records' scope fields (`routes.parent`, see `pipeline::parent`), briefly remembered so a
//! ticket's comments, page after page, cost one side request to the upstream, not one each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use vendorgate_policy::scope::RecordFields;

/// How long a parent's fields are trusted: a ticket moved to another group is seen within this.
pub const TTL: Duration = Duration::from_secs(60);

/// Parents remembered at most; past it the cache starts again empty.
const CAPACITY: usize = 100_000;

/// Parent records' scope fields, by resource and id, with when they stop being trusted.
#[derive(Default)]
pub struct Parents {
    cache: Mutex<HashMap<(String, String), (RecordFields, u64)>>,
}

impl Parents {
    pub fn get(&self, resource: &str, id: &str, now_ms: u64) -> Option<RecordFields> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (fields, until) = cache.get(&(resource.to_string(), id.to_string()))?;
        (*until > now_ms).then(|| fields.clone())
    }

    pub fn put(&self, resource: &str, id: &str, fields: RecordFields, now_ms: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CAPACITY {
            cache.retain(|_, (_, until)| *until > now_ms);
            if cache.len() >= CAPACITY {
                cache.clear();
            }
        }
        let until = now_ms + TTL.as_millis() as u64;
        cache.insert((resource.to_string(), id.to_string()), (fields, until));
    }
}
