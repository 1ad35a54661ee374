//! The mock's listener: TLS (or plain, for benchmarks that want a bare origin), HTTP/1.1 and HTTP/2.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::routes;

/// What the mock serves.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Records in one page of an incremental export when the client does not ask (`per_page`).
    pub export_page_size: u64,
    /// Tickets (and users) an incremental export walks through before `end_of_stream`.
    pub export_total: u64,
    /// Tickets that exist for show/list endpoints (ids 1..=tickets_total).
    pub tickets_total: u64,
    /// Users that exist (ids 1..=users_total).
    pub users_total: u64,
    /// When set, `/api/v2` answers 401 unless `Authorization` is exactly this value, as Zendesk
    /// does for a missing or wrong credential.
    pub require_authorization: Option<String>,
    /// A JWKS document served at `/__mock/jwks` (with OIDC discovery at
    /// `/.well-known/openid-configuration`), so the mock can stand in for an IdP.
    pub jwks: Option<String>,
    /// Keep the `X-Request-Id` of every request received (not only the recent ones), so a test can
    /// check each against the decision trail. Off by default: the demo and benchmarks send millions.
    pub keep_request_ids: bool,
    /// Where attachment downloads redirect to (`https://host:port`, a second mock standing in for
    /// `*.zdusercontent.com`); unset: this mock's own `/files/`.
    pub files_origin: Option<String>,
    /// Bytes of every attachment.
    pub attachment_bytes: u64,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            export_page_size: 100,
            export_total: 1_000,
            tickets_total: 1_186,
            users_total: 500,
            require_authorization: None,
            jwks: None,
            keep_request_ids: false,
            files_origin: None,
            attachment_bytes: 300_000,
        }
    }
}

/// One request as the upstream saw it, so tests can assert what the proxy sent (or that it sent
/// nothing at all).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
}

pub(crate) struct Shared {
    pub options: MockOptions,
    pub jwks: Mutex<Option<String>>,
    pub requests: AtomicU64,
    /// Connections accepted, and those still open, so tests can see how a client pools.
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub recent: Mutex<VecDeque<RecordedRequest>>,
    /// Every request's `X-Request-Id`, with [`MockOptions::keep_request_ids`].
    pub request_ids: Mutex<Vec<String>>,
    pub filler: Bytes,
    pub static_2k: Bytes,
    pub static_1m: Bytes,
}

const RECENT: usize = 256;

impl Shared {
    pub fn record(&self, req: &http::request::Parts) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.options.keep_request_ids {
            let id = req
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok());
            self.request_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id.unwrap_or("").to_string());
        }
        let rec = RecordedRequest {
            method: req.method.to_string(),
            path_and_query: req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.path().to_string(), |p| p.to_string()),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(rec);
    }
}

/// A running mock. Dropping it stops accepting; [`MockUpstream::stop`] also waits for the listener.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Binds `bind` (use port 0 for an ephemeral port) and serves until stopped. With `tls`, serves
    /// HTTPS with whatever ALPN the config offers; without, plain HTTP/1.1 and h2c.
    pub async fn start(
        bind: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        options: MockOptions,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            jwks: Mutex::new(options.jwks.clone()),
            options,
            requests: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            request_ids: Mutex::default(),
            filler: routes::filler_chunk(),
            static_2k: routes::static_json(2 * 1024),
            static_1m: routes::static_json(1024 * 1024),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            tls.map(TlsAcceptor::from),
            shared.clone(),
            rx,
        ));
        Ok(MockUpstream {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests reached the mock since it started.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted since the mock started.
    /// Every request's `X-Request-Id` so far (with [`MockOptions::keep_request_ids`]).
    pub fn request_ids(&self) -> Vec<String> {
        self.shared
            .request_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// TCP connections open right now.
    pub fn connections_open(&self) -> u64 {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// The most recent requests (up to 256), oldest first.
    pub fn recent(&self) -> Vec<RecordedRequest> {
        let recent = self.shared.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    /// Replaces the served JWKS (`None`: the endpoints answer 503, like an IdP outage).
    pub fn set_jwks(&self, jwks: Option<String>) {
        *self.shared.jwks.lock().unwrap_or_else(|p| p.into_inner()) = jwks;
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let open = OpenConnection::new(shared.clone());
        let tls = tls.clone();
        let shared = shared.clone();
        let builder = builder.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _open = open;
            let svc = service_fn(move |req| routes::handle(shared.clone(), req));
            // Connections end with the mock: a stopped upstream must look stopped to the proxy.
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), svc) => {}
                        _ = conn_shutdown.changed() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(tcp), svc) => {}
                        _ = conn_shutdown.changed() => {}
                    }
                }
            }
        });
    }
}

/// Counts a connection as open for as long as its task holds this.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(shared)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
