//! The pooled client to the SaaS upstream, and what its failures mean for the agent.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use vendorgate_certs::{client_config, Alpn, CertError};
use vendorgate_policy::config::Upstream as UpstreamConfig;

use crate::body::{BodyTooLarge, RequestBody};
use crate::errors::ProxyError;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// One pool per (upstream, thread): a request and the upstream connection that carries it are
    /// driven by the same thread, instead of hopping between runtime workers on every exchange.
    static CLIENTS: RefCell<Vec<(usize, UpstreamClient)>> = const { RefCell::new(Vec::new()) };
}

/// The upstream as the request path needs it: pooled clients and the pieces of every forwarded URI.
pub struct Upstream {
    id: usize,
    tls: rustls::ClientConfig,
    settings: UpstreamConfig,
    /// `scheme://authority`, prefixed to each request's path and query.
    pub origin: String,
    pub response_timeout: std::time::Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, CertError> {
        let mut tls = client_config(config.ca_bundle.as_deref(), Alpn::Http11)?;
        // hyper-rustls sets ALPN itself from enable_http1/enable_http2 (and panics if it is preset).
        tls.alpn_protocols.clear();

        Ok(Upstream {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tls,
            settings: config.clone(),
            origin: config.url.origin(),
            response_timeout: config.response_timeout.0,
        })
    }

    /// This thread's pooled client (made on first use).
    pub fn client(&self) -> UpstreamClient {
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some((_, c)) = clients.iter().find(|(id, _)| *id == self.id) {
                return c.clone();
            }
            let c = self.build();
            clients.push((self.id, c.clone()));
            c
        })
    }

    fn build(&self) -> UpstreamClient {
        let config = &self.settings;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.0));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1();
        let https = if config.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.wrap_connector(http)
        };
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout.0)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https)
    }

    /// The upstream URI for a request: the upstream's origin, the normalized path that was
    /// authorized (so the upstream acts on exactly what the policy judged), and the query as it
    /// arrived.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut text = String::with_capacity(
            self.origin.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        text.push_str(&self.origin);
        text.push_str(path);
        if let Some(q) = query {
            text.push('?');
            text.push_str(q);
        }
        Ok(Uri::try_from(text)?)
    }
}

/// Maps a client failure to what the agent is told. The causes are searched because hyper wraps them
/// (a timed-out connect, a rustls alert, our own upload limit) a few layers deep.
pub fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    let causes = causes(err);
    if let Some(limit) = causes.iter().find_map(|e| e.downcast_ref::<BodyTooLarge>()) {
        return ProxyError::RequestBodyTooLarge { limit: limit.limit };
    }
    if causes
        .iter()
        .any(|e| e.downcast_ref::<rustls::Error>().is_some())
    {
        return ProxyError::UpstreamTls(describe(err));
    }
    if err.is_connect() {
        let timed_out = causes.iter().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        tracing::debug!("upstream connect failed: {err:?}");
        return if timed_out {
            ProxyError::UpstreamConnectTimeout
        } else {
            ProxyError::UpstreamUnreachable(describe(err))
        };
    }
    // The agent's own upload broke off (it disconnected or reset the stream).
    let hyper_errors = || {
        causes
            .iter()
            .filter_map(|e| e.downcast_ref::<hyper::Error>())
    };
    if hyper_errors().any(|h| h.is_user()) && hyper_errors().any(|h| h.is_incomplete_message()) {
        return ProxyError::RequestBodyIncomplete(describe(err));
    }
    ProxyError::UpstreamProtocol(describe(err))
}

/// Every error in the chain, including the one `source()` walks past: an `io::Error`'s `source()` is
/// its inner error's source, skipping the inner error itself (where rustls puts its alerts).
fn causes<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e);
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            out.extend(causes(inner));
        }
        next = e.source();
    }
    out
}

/// The whole chain on one line, for operators' logs.
fn describe(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}
