//! Everything the request path needs, built once from a validated config and shared by all
//! connections. The policy part ([`Active`]) is swapped whole on reload, so a request sees either the
//! old policy or the new one, never a mix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use vendorgate_certs::{server_config, Alpn, CertError, ReloadableCert};
use vendorgate_policy::Config;

use crate::active::{Active, ActiveError};
use crate::downloads::Downloads;
use crate::identity::TokenCache;
use crate::state::controls::ControlStore;
use crate::state::StateStore;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otel::Otel;
use crate::telemetry::request_id::RequestIds;
use crate::trail::record::Observers;
use crate::trail::refusals::{Refusals, Refused};
use crate::trail::Trail;
use crate::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error(transparent)]
    Policy(#[from] ActiveError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::SetupError),
    #[error(transparent)]
    Controls(#[from] crate::state::controls::ControlsError),
    #[error(transparent)]
    Redis(#[from] crate::state::link::LinkError),
    #[error(transparent)]
    Otel(#[from] crate::telemetry::otel::OtelError),
}

pub struct Gateway {
    /// The config the listeners were started with (addresses, limits, upstream connection).
    pub config: Config,
    pub active: ArcSwap<Active>,
    pub tokens: TokenCache,
    /// Sessions, rate limits and byte counters (startup config: a backend change needs a restart).
    pub state: Arc<StateStore>,
    /// The decision trail (startup config: a sink change needs a restart).
    pub trail: Arc<Trail>,
    /// Refusals before the pipeline, waiting to be written as aggregated records.
    pub refusals: Refusals,
    pub metrics: Arc<Metrics>,
    pub otel: Option<Arc<Otel>>,
    pub upstream: Upstream,
    /// Redirects to other hosts the proxy follows itself (startup config).
    pub downloads: Downloads,
    /// Parent records' scope fields (`routes.parent`), briefly remembered.
    pub parents: crate::state::parents::Parents,
    /// The locks and grants in force, and the streams they may cut.
    pub controls: ControlStore,
    /// The live sessions this replica serves.
    pub sessions: crate::state::sessions::Sessions,
    /// Every account's behaviour, for the detectors, and where their findings wait for the
    /// dispatcher ([`crate::detect`]).
    pub activity: crate::state::activity::Activity,
    pub anomalies:
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::state::activity::Anomaly>>>,
    /// The file the config was read from, for reloads (set by `vendorgate run`).
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    pub request_ids: RequestIds,
    pub cert: Arc<ReloadableCert>,
    pub tls: Arc<rustls::ServerConfig>,
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
    /// True between the listener coming up and shutdown starting: what `/readyz` reports.
    pub ready: AtomicBool,
    /// Set when the shutdown grace has run out and the connections still busy are being cut, so
    /// that the records of the requests cut say so rather than blaming their clients.
    cutting: AtomicBool,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Self, BuildError> {
        let s = &config.server;
        let cert = Arc::new(ReloadableCert::load(&s.tls_cert, &s.tls_key)?);
        let tls = Arc::new(server_config(cert.clone(), Alpn::H2AndHttp11)?);

        let mut h1 = http1::Builder::new();
        // Config validation guarantees max_header_size ≥ 8 KiB, hyper's floor for this buffer.
        let header_limit = usize::try_from(s.max_header_size.0).unwrap_or(usize::MAX);
        h1.timer(TokioTimer::new())
            // A backstop only: the connection task times request heads from their first byte
            // (see `conn`). hyper's timer also runs while a keep-alive connection is idle, so it
            // must not be shorter than the idle timeout.
            .header_read_timeout(s.header_read_timeout.0.max(s.idle_timeout.0))
            .max_buf_size(header_limit)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(s.max_concurrent_streams)
            .max_header_list_size(u32::try_from(s.max_header_size.0).unwrap_or(u32::MAX))
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20));

        let upstream = Upstream::new(&config.upstream)?;
        let redis = crate::state::link::Target::from_config(&config.state)?;
        let state = StateStore::new(&config.state, redis.clone());
        let controls = match redis {
            Some(target) => ControlStore::shared(
                controls_file(&config),
                target,
                &state.prefix.shared(),
                config.state.timeout.0,
                config.locks.on_state_error,
            )?,
            None => ControlStore::load(Some(controls_file(&config)))?,
        };
        let downloads = Downloads::new(
            &config.upstream.redirect_hosts,
            config.upstream.ca_bundle.as_deref(),
        )?;
        let tokens = TokenCache::new(config.identity.token_cache_entries);
        let trail = Trail::start(&config.trail);
        let refusals = Refusals::new(config.trail.refusal_interval.0);
        let metrics = Arc::new(Metrics::default());
        let otel = crate::telemetry::otel::wanted(&config)
            .map(|o| Otel::start(&o, metrics.clone()))
            .transpose()?;
        if let Some(copies) = otel.as_ref().and_then(|o| o.decision_copies()) {
            let _ = trail.status.copies.set(copies);
        }
        let active = Active::build(config.clone(), None)?;
        let (found, anomalies) = tokio::sync::mpsc::channel(4096);
        let mut activity = crate::state::activity::Activity::new(Some(found));
        if state.redis().is_some() {
            activity = activity.shared();
        }
        if config.detect.is_some() {
            match activity.load(&baselines_file(&config)) {
                Ok(n) if n > 0 => tracing::info!(accounts = n, "baselines read"),
                Ok(_) => {}
                // Not fatal: detection starts again from nothing, and says so.
                Err(e) => tracing::error!("baselines file unreadable, starting without: {e}"),
            }
        }
        Ok(Gateway {
            config,
            active: ArcSwap::from_pointee(active),
            tokens,
            state,
            refusals,
            trail,
            metrics,
            otel,
            upstream,
            downloads,
            parents: Default::default(),
            controls,
            sessions: Default::default(),
            activity,
            anomalies: std::sync::Mutex::new(Some(anomalies)),
            config_path: std::sync::OnceLock::new(),
            request_ids: RequestIds::new(),
            cert,
            tls,
            h1,
            h2,
            ready: AtomicBool::new(false),
            cutting: AtomicBool::new(false),
        })
    }

    /// A connection or request head refused before the pipeline: counted now, recorded with the
    /// others from the same address when its window closes ([`Gateway::write_refusals`]).
    pub fn refused(&self, r: &Refused<'_>) {
        self.metrics.refused(r.kind);
        if self.trail.enabled() {
            self.refusals.note(r);
        }
    }

    /// Writes the refusal windows that are due (all of them with `all`, at shutdown).
    pub fn write_refusals(&'static self, all: bool) {
        let version = self.active.load().version.clone();
        for record in self.refusals.due(std::time::Instant::now(), all, &version) {
            self.trail.try_submit(record);
        }
    }

    /// The shutdown grace is over: what is still in flight is being cut.
    pub fn start_cutting(&self) {
        self.cutting.store(true, Ordering::Relaxed);
    }

    pub fn is_cutting(&self) -> bool {
        self.cutting.load(Ordering::Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Swaps in a new policy. On error nothing changes. Settings that only take effect at startup
    /// (listen addresses, limits, upstream connection) are reported, not applied.
    pub fn reload(&self, config: Config) -> Result<Vec<&'static str>, BuildError> {
        let current = self.active.load_full();
        let next = Active::build(config, Some(&current))?;
        let mut needs_restart = Vec::new();
        let (old, new) = (&self.config, &next.config);
        if format!("{:?}", old.server) != format!("{:?}", new.server) {
            needs_restart.push("server");
        }
        if old.admin.listen.get_ref() != new.admin.listen.get_ref() {
            needs_restart.push("admin");
        }
        if old.upstream.url != new.upstream.url || old.upstream.ca_bundle != new.upstream.ca_bundle
        {
            needs_restart.push("upstream.url/ca_bundle");
        }
        if old.upstream.redirect_hosts != new.upstream.redirect_hosts {
            needs_restart.push("upstream.redirect_hosts");
        }
        self.active.store(Arc::new(next));
        self.tokens.clear();
        Ok(needs_restart)
    }
}

impl Observers for Gateway {
    fn cutting(&self) -> bool {
        self.is_cutting()
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn otel(&self) -> Option<&Otel> {
        self.otel.as_deref()
    }
}

/// Where accounts' hourly histories are kept across restarts: `baselines.json` beside the trail.
pub fn baselines_file(config: &Config) -> std::path::PathBuf {
    config.trail.path.with_file_name("baselines.json")
}

/// Where the locks and grants are kept: `controls.json` beside the decision trail.
pub fn controls_file(config: &Config) -> std::path::PathBuf {
    config.trail.path.with_file_name("controls.json")
}
