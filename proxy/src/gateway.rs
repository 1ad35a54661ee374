//! Everything the request path needs, built once from a validated config and shared by all
//! connections. The policy part ([`Active`]) is swapped whole on reload, so a request sees either the
//! old policy or the new one, never a mix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use vendorgate_certs::{server_config, Alpn, CertError, ReloadableCert};
use vendorgate_policy::Config;

use crate::credential::{authorization, CredentialError};
use crate::downloads::Downloads;
use crate::identity::{KeySource, KeyStore, KeysError, TokenCache};
use crate::links::{Links, Public};
use crate::metrics::Metrics;
use crate::otel::Otel;
use crate::request_id::RequestIds;
use crate::state::StateStore;
use crate::trail::refusals::{Refusals, Refused};
use crate::trail::Trail;
use crate::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::SetupError),
    #[error("upstream.identity_header {0:?} is not a valid header name")]
    IdentityHeader(String),
    #[error("{0}: {1:?} is not a valid header name")]
    HeaderName(&'static str, String),
}

/// The reloadable part: the policy and what it needs to decide.
pub struct Active {
    pub config: Config,
    pub keys: Arc<KeyStore>,
    /// `Authorization` to send upstream, if a credential is configured.
    pub credential: Option<HeaderValue>,
    pub identity_header: Option<HeaderName>,
    /// `config.version`, shared into every decision record without copying it per request.
    pub version: Arc<str>,
    /// The upstream's origins, found in its responses and rewritten (see [`crate::links`]).
    pub links: Arc<Links>,
    /// `server.public_url`'s origin; `None`: each request's own.
    pub public_origin: Option<Public>,
    /// Request headers never sent upstream, response headers never sent to the agent.
    pub strip_request: Vec<HeaderName>,
    pub strip_response: Vec<HeaderName>,
}

/// Request headers that never reach the upstream, whatever the config says: a session with the
/// SaaS (`Cookie`), acting as another user (`X-On-Behalf-Of`, honoured by Zendesk for OAuth
/// credentials with the impersonate scope), and `Accept-Encoding` (links are rewritten in plain
/// bodies only, so the upstream is asked for no compression).
const STRIP_REQUEST: [&str; 3] = ["cookie", "x-on-behalf-of", "accept-encoding"];
/// Response headers that never reach the agent: a session cookie for the proxy's service account
/// would let the agent use the SaaS directly.
const STRIP_RESPONSE: [&str; 1] = ["set-cookie"];

fn header_names(
    builtin: &[&str],
    configured: &[String],
    key: &'static str,
) -> Result<Vec<HeaderName>, BuildError> {
    let mut names = Vec::new();
    for name in builtin
        .iter()
        .copied()
        .chain(configured.iter().map(String::as_str))
    {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError::HeaderName(key, name.to_string()))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

impl Active {
    /// Builds from `config`, keeping `previous`'s key store when the key source is unchanged (so a
    /// policy reload does not forget keys fetched from an IdP that is down right now).
    pub fn build(config: Config, previous: Option<&Active>) -> Result<Active, BuildError> {
        let source = KeySource::from_config(&config.identity);
        let keys = match previous {
            Some(p)
                if Some(p.keys.source()) == source.as_ref()
                    && p.config.identity.ca_bundle == config.identity.ca_bundle
                    && !matches!(source, Some(KeySource::File(_))) =>
            {
                p.keys.clone()
            }
            _ => {
                let store = KeyStore::new(&config.identity)?;
                store.spawn_refresh();
                store
            }
        };
        let credential = config
            .upstream
            .credential
            .as_ref()
            .map(authorization)
            .transpose()?;
        let identity_header = config
            .upstream
            .identity_header
            .as_ref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| BuildError::IdentityHeader(h.clone()))
            })
            .transpose()?;
        let u = &config.upstream;
        let origins: Vec<String> = std::iter::once(&u.url)
            .chain(&u.link_origins)
            .map(|o| o.origin())
            .collect();
        let links = Arc::new(Links::new(origins.iter().map(String::as_str)));
        let public_origin = config
            .server
            .public_url
            .as_ref()
            .map(|p| Public::new(&p.0.origin()));
        let strip_request = header_names(
            &STRIP_REQUEST,
            &u.strip_request_headers,
            "upstream.strip_request_headers",
        )?;
        let strip_response = header_names(
            &STRIP_RESPONSE,
            &u.strip_response_headers,
            "upstream.strip_response_headers",
        )?;
        Ok(Active {
            links,
            public_origin,
            strip_request,
            strip_response,
            version: Arc::from(config.version.as_str()),
            config,
            keys,
            credential,
            identity_header,
        })
    }
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
        let downloads = Downloads::new(
            &config.upstream.redirect_hosts,
            config.upstream.ca_bundle.as_deref(),
        )?;
        let tokens = TokenCache::new(config.identity.token_cache_entries);
        let state = StateStore::new(&config.state);
        let trail = Trail::start(&config.trail);
        let refusals = Refusals::new(config.trail.refusal_interval.0);
        let metrics = Arc::new(Metrics::default());
        let otel = config
            .otel
            .as_ref()
            .map(|o| Otel::start(o, metrics.clone()))
            .transpose()?;
        let active = Active::build(config.clone(), None)?;
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
