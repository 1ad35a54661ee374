//! The client to the SaaS upstream, and what its failures mean for the agent.
//!
//! Built on hyper's connection-level client rather than a generic pooled client: the proxy talks to
//! exactly one origin, so its pool is a per-thread vector (`pool`), and returning a connection
//! costs nothing per request (a generic client spawns a task per HTTP/1.1 exchange to notice when
//! the connection is free again and hashes the origin twice).

mod connect;
mod pool;

use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use vendorgate_certs::{client_config, Alpn, CertError};
use vendorgate_policy::config::{Scheme as UrlScheme, Upstream as UpstreamConfig};

use crate::body::request::{BodyTooLarge, RequestBody};
use crate::errors::ProxyError;
pub use connect::connections_open;
use connect::{Dialer, Sender};
pub use pool::Lease;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("{0}")]
    Exchange(#[source] hyper::Error),
}

/// Why the upstream client could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] CertError),
    #[error("upstream.url: {0:?} is not usable as a TLS server name and HTTP authority")]
    Name(String),
}

impl UpstreamError {
    fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Resolve { .. } | UpstreamError::Connect { .. }
        )
    }
}

/// The upstream as the request path needs it: where to connect, how to pool, and the pieces of
/// every forwarded URI.
pub struct Upstream {
    id: usize,
    dialer: Dialer,
    limits: pool::Limits,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for HTTP/1.1 requests (HTTP/2 carries the authority in the URI).
    host: HeaderValue,
    pub response_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, SetupError> {
        let url = &config.url;
        let tls = match url.scheme {
            UrlScheme::Http => None,
            UrlScheme::Https => {
                let alpn = if config.http2 {
                    Alpn::H2AndHttp11
                } else {
                    Alpn::Http11
                };
                let tls = client_config(config.ca_bundle.as_deref(), alpn)?;
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|_| SetupError::Name(url.host.clone()))?;
                Some((TlsConnector::from(Arc::new(tls)), name))
            }
        };
        let bad_name = || SetupError::Name(url.authority.clone());
        let authority = Authority::try_from(url.authority.as_str()).map_err(|_| bad_name())?;
        Ok(Upstream {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dialer: Dialer {
                host: url.host.clone(),
                port: url.port,
                tls,
                connect_timeout: config.connect_timeout.0,
            },
            limits: pool::Limits {
                idle_timeout: config.pool_idle_timeout.0,
                max_idle: config.pool_max_idle_per_host,
            },
            scheme: match url.scheme {
                UrlScheme::Http => Scheme::HTTP,
                UrlScheme::Https => Scheme::HTTPS,
            },
            host: HeaderValue::from_str(authority.as_str()).map_err(|_| bad_name())?,
            authority,
            response_timeout: config.response_timeout.0,
        })
    }

    /// The path and query sent upstream: the normalized path that was authorized (so the upstream
    /// acts on exactly what the policy judged), and the query as it arrived. When normalizing
    /// changed nothing, the request's own (shared) bytes are reused.
    pub fn path_for(
        &self,
        path: &str,
        original: Option<&PathAndQuery>,
    ) -> Result<PathAndQuery, http::Error> {
        if let Some(same) = original.filter(|pq| pq.path() == path) {
            return Ok(same.clone());
        }
        let Some(q) = original.and_then(PathAndQuery::query) else {
            return Ok(PathAndQuery::try_from(path)?);
        };
        let mut text = String::with_capacity(path.len() + q.len() + 1);
        text.push_str(path);
        text.push('?');
        text.push_str(q);
        Ok(PathAndQuery::try_from(text)?)
    }

    /// Sends `req` (its URI is the path and query from [`Upstream::path_for`]) on a pooled
    /// connection or a new one. A request that a reused connection turned away before sending
    /// anything (the upstream closed it while it sat idle) is retried on the next one, and on a new
    /// connection last, whose refusal is final. The lease, for HTTP/1.1, goes with the response
    /// body.
    ///
    /// An `async` block rather than an `async fn`: a function's future would keep the request
    /// twice (the argument and its working copy), and requests' futures are moved whole.
    #[allow(clippy::manual_async_fn)] // see the doc comment
    pub fn send(
        &self,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Result<(Response<Incoming>, Option<Lease>), UpstreamError>> + '_ {
        async move {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            loop {
                let (sender, reused) = match pool::take(self.id, self.limits) {
                    Some(s) => (s, true),
                    // Boxed: dialing is the rare path, and its state would otherwise widen every
                    // request's future (moved whole at each step) by over a KiB.
                    None => (Box::pin(self.connect()).await?, false),
                };
                let refused = match sender {
                    Sender::Http2(mut tx) => {
                        let mut parts = http::uri::Parts::default();
                        parts.scheme = Some(self.scheme.clone());
                        parts.authority = Some(self.authority.clone());
                        parts.path_and_query = Some(path.clone());
                        // Cannot fail: scheme, authority and path are all present.
                        *req.uri_mut() =
                            Uri::from_parts(parts).expect("scheme, authority and path");
                        match tx.try_send_request(req).await {
                            Ok(resp) => return Ok((resp, None)),
                            Err(mut e) => {
                                let unsent = e.take_message();
                                // A failed stream is that request's problem; a connection that turns
                                // requests away or has closed is everyone's.
                                if unsent.is_some() || tx.is_closed() {
                                    pool::unshare(self.id, self.limits);
                                }
                                (unsent, e.into_error())
                            }
                        }
                    }
                    Sender::Http1(mut tx) => {
                        req.headers_mut().insert(header::HOST, self.host.clone());
                        if let Err(e) = tx.ready().await {
                            if reused {
                                continue;
                            }
                            return Err(UpstreamError::Exchange(e));
                        }
                        match tx.try_send_request(req).await {
                            Ok(resp) => {
                                return Ok((resp, Some(Lease::new(tx, self.id, self.limits))));
                            }
                            Err(mut e) => (e.take_message(), e.into_error()),
                        }
                    }
                };
                match refused {
                    (Some(unsent), _) if reused => req = unsent,
                    (_, error) => return Err(UpstreamError::Exchange(error)),
                }
            }
        }
    }

    /// A new connection; an HTTP/2 one becomes the thread's shared connection.
    async fn connect(&self) -> Result<Sender, UpstreamError> {
        let sender = self.dialer.dial().await?;
        if let Sender::Http2(tx) = &sender {
            pool::share(self.id, self.limits, tx.clone());
        }
        Ok(sender)
    }
}

/// Maps a client failure to what the agent is told. The causes are searched because hyper wraps them
/// (a rustls alert, our own upload limit) a few layers deep.
pub fn classify(err: &UpstreamError) -> ProxyError {
    match err {
        UpstreamError::ConnectTimeout(_) => return ProxyError::UpstreamConnectTimeout,
        UpstreamError::Tls(_) => return ProxyError::UpstreamTls(describe(err)),
        e if e.is_connect() => {
            tracing::debug!("upstream connect failed: {err:?}");
            return ProxyError::UpstreamUnreachable(describe(err));
        }
        _ => {}
    }
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
