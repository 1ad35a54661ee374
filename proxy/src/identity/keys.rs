//! The IdP's signing keys: from a file, a JWKS URL or OIDC discovery.
//!
//! The last good key set is kept whatever happens to the IdP afterwards: an IdP outage must not lock
//! every agent out of work they are already signed in to. Only when no key set was ever obtained is
//! every request refused (`identity_keys_unavailable`): the proxy cannot tell a good token from a
//! forged one, so it fails closed. A token naming an unknown `kid` (the IdP rotated its keys) makes
//! the store fetch again, at most once per `jwks_min_refetch`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Mutex;
use tokio::time::Instant;
use vendorgate_certs::CertError;
use vendorgate_policy::config::Identity;
use vendorgate_policy::KeySet;

use super::fetch::{self, FetchClient};
use crate::http_client::side_client;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
    Discovery(String),
}

impl KeySource {
    pub fn from_config(id: &Identity) -> Option<Self> {
        if let Some(p) = &id.jwks_file {
            return Some(KeySource::File(p.clone()));
        }
        if let Some(u) = &id.jwks_url {
            return Some(KeySource::Url(u.get_ref().clone()));
        }
        id.discovery_url
            .as_ref()
            .map(|u| KeySource::Discovery(u.get_ref().clone()))
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Url(u) => write!(f, "JWKS {u}"),
            KeySource::Discovery(u) => write!(f, "OIDC discovery at {u}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: cannot read the JWKS: {cause}")]
    Read {
        path: PathBuf,
        /// Not `source`: the message already says it, and a chain would say it twice.
        cause: std::io::Error,
    },
    #[error("{origin}: {detail}")]
    Invalid { origin: String, detail: String },
    #[error(transparent)]
    Tls(#[from] CertError),
}

pub struct KeyStore {
    source: KeySource,
    keys: ArcSwapOption<KeySet>,
    client: Option<FetchClient>,
    refresh: Duration,
    min_refetch: Duration,
    /// When the last fetch started; also serialises fetches (single flight).
    last_fetch: Mutex<Option<Instant>>,
}

impl KeyStore {
    /// A file source is read now and must be valid (a config mistake should stop startup, not
    /// refuse every request later). A URL source starts empty and fills from the background task.
    pub fn new(id: &Identity) -> Result<Arc<Self>, KeysError> {
        let source = KeySource::from_config(id).ok_or_else(|| KeysError::Invalid {
            origin: "identity".into(),
            detail: "no key source configured".into(),
        })?;
        let client = match source {
            KeySource::File(_) => None,
            _ => Some(side_client(id.ca_bundle.as_deref())?),
        };
        let store = Arc::new(KeyStore {
            source,
            keys: ArcSwapOption::empty(),
            client,
            refresh: id.jwks_refresh.0,
            min_refetch: id.jwks_min_refetch.0,
            last_fetch: Mutex::new(None),
        });
        if let KeySource::File(path) = &store.source {
            store.keys.store(Some(Arc::new(read_file(path)?)));
        }
        Ok(store)
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Keeps a URL source fresh: fetches now, then every `jwks_refresh` (every few seconds while it
    /// has never succeeded). Runs until the store is dropped.
    pub fn spawn_refresh(self: &Arc<Self>) {
        if matches!(self.source, KeySource::File(_)) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(store) = weak.upgrade() else { return };
                let ok = store.fetch_now().await;
                let wait = if ok || store.current().is_some() {
                    store.refresh
                } else {
                    Duration::from_secs(2)
                };
                drop(store);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// A token named a key we do not hold: fetch again unless we did so very recently. Returns
    /// whether the key set may have changed.
    pub async fn refetch_for_unknown_key(&self) -> bool {
        if matches!(self.source, KeySource::File(_)) {
            return false;
        }
        {
            let last = self.last_fetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return false;
            }
        }
        self.fetch_now().await
    }

    /// One fetch, serialised with any other. On failure the current key set stays.
    async fn fetch_now(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        let Some(client) = &self.client else {
            return false;
        };
        let result = match &self.source {
            KeySource::File(_) => return false,
            KeySource::Url(url) => fetch_jwks(client, url).await,
            KeySource::Discovery(issuer) => match discover(client, issuer).await {
                Ok(jwks_uri) => fetch_jwks(client, &jwks_uri).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(set) => {
                tracing::info!(source = %self.source, keys = set.len(), skipped = set.skipped, "IdP key set loaded");
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Err(e) => {
                let kept = self.current().map_or(0, |k| k.len());
                tracing::error!(source = %self.source, keys_kept = kept, "IdP key set fetch failed: {e}");
                false
            }
        }
    }
}

fn read_file(path: &std::path::Path) -> Result<KeySet, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|cause| KeysError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    KeySet::from_jwks(&text).map_err(|e| KeysError::Invalid {
        origin: path.display().to_string(),
        detail: e.to_string(),
    })
}

async fn fetch_jwks(client: &FetchClient, url: &str) -> Result<KeySet, String> {
    let text = fetch::get_text(client, url).await?;
    KeySet::from_jwks(&text).map_err(|e| format!("{url}: {e}"))
}

async fn discover(client: &FetchClient, issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let text = fetch::get_text(client, &url).await?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))?;
    doc.get("jwks_uri")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{url}: no jwks_uri"))
}
