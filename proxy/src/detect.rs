//! What the detectors' findings make happen (see [`vendorgate_policy::detect`] for the detectors
//! and [`crate::state::activity`] for where they run): each is a trail record of kind anomaly and a
//! metric; a `lock` finding also locks the account (the detector named as its creator, with
//! `detect.lock_ttl`); a webhook, when configured, gets each as JSON, retried, never in a
//! request's way. Histories are saved beside the trail every minute and at shutdown, or shared
//! through Redis every second (see [`crate::state::activity`]).

use std::time::Duration;

use http::{header, Method, Request};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};
use vendorgate_policy::detect::Action;
use vendorgate_policy::{Lock, LockTarget};

use crate::gateway::{baselines_file, Gateway};
use crate::state::activity::Anomaly;

/// Attempts per webhook delivery, and the wait before the second (doubling).
const WEBHOOK_ATTEMPTS: u32 = 3;
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);

/// Runs the dispatcher and the saver until the process ends.
pub async fn run(gw: &'static Gateway) {
    let Some(mut found) = gw
        .anomalies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let dispatch = async {
        while let Some(anomaly) = found.recv().await {
            handle(gw, anomaly).await;
        }
    };
    let save = async {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            save(gw);
        }
    };
    tokio::join!(dispatch, save, share(gw));
}

/// Shared state (Redis): every second, the file's histories not yet imported go there, accounts
/// new here take their past hours from there, and what was counted here is added there, the
/// hour's totals across replicas coming back to be judged.
async fn share(gw: &'static Gateway) {
    let Some(redis) = gw.state.redis() else {
        return;
    };
    if gw.active.load().config.detect.is_none() {
        return;
    }
    let prefix = &gw.config.state.key_prefix;
    let key = |vendor: &str, account: &str| format!("{prefix}:usage:{vendor}:{account}");
    let mut imports = gw.activity.take_loaded();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = crate::clock::now_ms() / 1000;
        let rules = gw.active.load().config.policy.detect.clone();
        let mut left = Vec::new();
        for (vendor, account, history) in imports {
            if redis
                .usage_import(&key(&vendor, &account), &history.hours())
                .await
                .is_err()
            {
                left.push((vendor, account, history));
            }
        }
        imports = left;
        for a in gw.activity.take_unadopted() {
            match redis
                .usage_history(&a.usage_key(prefix), (now / 3600) as u32)
                .await
            {
                Ok(past) => a.adopt(past, &rules),
                Err(_) => a.retry_adopt(),
            }
        }
        let batch = gw.activity.take_unflushed();
        if batch.is_empty() {
            continue;
        }
        let keys: Vec<String> = batch.iter().map(|(a, _, _)| a.usage_key(prefix)).collect();
        let rows: Vec<_> = batch
            .iter()
            .zip(&keys)
            .map(|((_, hour, u), k)| (k.as_str(), *hour, *u))
            .collect();
        match redis.usage_add(&rows).await {
            Ok(totals) => {
                for ((a, hour, _), total) in batch.iter().zip(totals) {
                    a.merge(*hour, total, now, &rules);
                }
            }
            Err(e) => {
                tracing::debug!("detect: sharing counts: {e}");
                for (a, hour, u) in batch {
                    a.give_back(hour, u);
                }
            }
        }
    }
}

/// Writes every account's history beside the trail (when detection is on and the hours are not
/// kept in Redis).
pub fn save(gw: &Gateway) {
    if gw.active.load().config.detect.is_none() || gw.activity.is_empty() || gw.activity.is_shared()
    {
        return;
    }
    let path = baselines_file(&gw.config);
    if let Err(e) = gw.activity.save(&path) {
        tracing::error!("saving baselines to {}: {e}", path.display());
    }
}

/// The finding as the record and the webhook carry it.
fn describe(a: &Anomaly, lock: Option<&str>) -> Value {
    let f = &a.finding;
    let mut v = json!({
        "detector": f.detector.to_string(),
        "action": f.action.as_str(),
        "vendor": &*a.vendor,
        "account": &*a.account,
        "value": f.value,
        "threshold": f.threshold,
        "detail": f.detail,
        "at": crate::trail::time::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(a.at)),
    });
    if let Some((median, spread, peers)) = f.baseline {
        v["baseline"] = json!({"median": median, "spread": spread, "peers": peers});
    }
    if let Some(ip) = a.client_ip {
        v["client_ip"] = json!(ip.to_canonical().to_string());
    }
    if let Some(id) = lock {
        v["lock"] = json!(id);
    }
    v
}

async fn handle(gw: &'static Gateway, a: Anomaly) {
    let f = &a.finding;
    let locking = f.action == Action::Lock;
    gw.metrics.anomaly(f.detector.as_str(), locking);
    tracing::warn!(vendor = %a.vendor, account = %a.account, detector = %f.detector, action = f.action.as_str(), "{}", f.detail);
    let lock_id = locking.then(|| crate::admin::new_id("lk"));
    let detail = describe(&a, lock_id.as_deref());
    let trail: &'static crate::trail::Trail = &gw.trail;
    if !trail
        .record_anomaly(&a.vendor, &a.account, a.client_ip, detail.clone())
        .await
    {
        tracing::error!("an anomaly could not be recorded: {detail}");
    }
    if let Some(id) = lock_id {
        let rules = &gw.active.load().config.policy.detect;
        let lock = Lock {
            id,
            target: LockTarget::Account(a.account.to_string()),
            message: format!("detector {}: {}", f.detector, f.detail),
            created_by: format!("detector:{}", f.detector),
            created_at: a.at,
            expires_at: Some(a.at + rules.lock_ttl.as_secs().max(1)),
            revocation: false,
        };
        if let Err(code) = crate::admin::impose(gw, None, "lock", lock).await {
            tracing::error!("the detector's lock could not be made: {code}");
        }
    }
    if let Some(hook) = gw
        .active
        .load()
        .config
        .detect
        .as_ref()
        .and_then(|d| d.webhook.clone())
    {
        tokio::spawn(deliver(hook, detail));
    }
}

/// POSTs `detail` to the webhook: up to three attempts, half a second then a second apart; a
/// 2xx answer is delivered. Failures are logged, never retried past that.
async fn deliver(hook: vendorgate_policy::config::Webhook, detail: Value) {
    let client = match crate::http_client::side_client::<Full<Bytes>>(hook.ca_bundle.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("detect.webhook: {e}");
            return;
        }
    };
    let timeout = hook.timeout.map_or(Duration::from_secs(5), |t| t.0);
    let body = Bytes::from(json!({"anomaly": detail}).to_string());
    let mut wait = WEBHOOK_BACKOFF;
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let req = Request::builder()
            .method(Method::POST)
            .uri(hook.url.get_ref())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "vendorgate")
            .body(Full::new(body.clone()));
        let Ok(req) = req else {
            tracing::error!("detect.webhook: {:?} is not a URL", hook.url.get_ref());
            return;
        };
        match tokio::time::timeout(timeout, client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return,
            Ok(Ok(resp)) => {
                tracing::warn!(
                    attempt,
                    status = resp.status().as_u16(),
                    "detect.webhook refused"
                )
            }
            Ok(Err(e)) => tracing::warn!(attempt, "detect.webhook: {e}"),
            Err(_) => tracing::warn!(attempt, "detect.webhook: no answer in {timeout:?}"),
        }
        if attempt < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::error!("detect.webhook: not delivered after {WEBHOOK_ATTEMPTS} attempts");
}
