//! Reloading the policy without a restart: on SIGHUP, on `POST /v1/reload`, and when the config
//! file changes on disk. The file is parsed and validated whole before anything changes; a bad
//! file keeps the old policy serving, and its error (`file:line:column`) is the answer, a log line
//! and a metric. Requests in flight finish under the policy they started with (each holds its
//! own); no connection is dropped.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::gateway::{BuildError, Gateway};
use crate::settings::{load_config, LoadError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload from (the proxy was started without one)")]
    NoFile,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// A reload that took effect.
#[derive(Debug)]
pub struct Reloaded {
    /// The new policy's version (`sha256:…` of the file).
    pub version: String,
    /// Sections that changed but need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
}

impl Gateway {
    /// Reads the config file again and, if it is valid, puts its policy in force. `why` names
    /// what asked (`SIGHUP`, `admin API`, `file watcher`) for the log.
    pub fn reload_from_file(&self, why: &str) -> Result<Reloaded, ReloadError> {
        let result = self
            .config_path
            .get()
            .ok_or(ReloadError::NoFile)
            .and_then(|path| {
                let config = load_config(path)?;
                let version = config.version.clone();
                let needs_restart = self.reload(config)?;
                Ok(Reloaded {
                    version,
                    needs_restart,
                })
            });
        self.metrics.reloaded(result.is_ok());
        match &result {
            Ok(r) => {
                tracing::info!(version = %r.version, "{why}: policy reloaded");
                for section in &r.needs_restart {
                    tracing::warn!(
                        "{why}: changes to [{section}] take effect only after a restart"
                    );
                }
            }
            Err(e) => {
                tracing::error!("{why}: policy reload failed, keeping the current policy: {e}")
            }
        }
        result
    }
}

/// What identifies a version of the file cheaply: its length and modification time.
fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Watches the config file (checked every second: no platform watcher to configure, and a second
/// is well inside what an operator waits after saving) and reloads when it changes. Each attempt,
/// good or bad, is a record in the trail.
pub async fn watch_config(gw: &'static Gateway) {
    let Some(path) = gw.config_path.get().cloned() else {
        return;
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        let result = gw.reload_from_file("file watcher");
        record(gw, &path, "file watcher", None, &result).await;
    }
}

/// A reload attempt in the trail.
pub async fn record(
    gw: &'static Gateway,
    path: &Path,
    by: &str,
    source: Option<std::net::IpAddr>,
    result: &Result<Reloaded, ReloadError>,
) {
    let trail: &'static crate::trail::Trail = &gw.trail;
    let detail = match result {
        Ok(r) => serde_json::json!({
            "file": path.display().to_string(),
            "policy_version": r.version,
            "needs_restart": r.needs_restart,
        }),
        Err(e) => serde_json::json!({"file": path.display().to_string(), "error": e.to_string()}),
    };
    trail
        .record_event("reload", by, source, result.is_ok(), detail)
        .await;
}
