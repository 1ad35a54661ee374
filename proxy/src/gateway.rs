//! Everything the request path needs, built once from a validated config and shared by all
//! connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;
use vendorgate_certs::{server_config, Alpn, CertError, ReloadableCert};
use vendorgate_policy::Config;

use crate::request_id::RequestIds;
use crate::upstream::Upstream;

pub struct Gateway {
    pub config: Config,
    pub upstream: Upstream,
    pub request_ids: RequestIds,
    pub cert: Arc<ReloadableCert>,
    pub tls: TlsAcceptor,
    pub http: auto::Builder<TokioExecutor>,
    /// True between the listener coming up and shutdown starting: what `/readyz` reports.
    pub ready: AtomicBool,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Self, CertError> {
        let s = &config.server;
        let cert = Arc::new(ReloadableCert::load(&s.tls_cert, &s.tls_key)?);
        let tls = TlsAcceptor::from(Arc::new(server_config(cert.clone(), Alpn::H2AndHttp11)?));

        let mut http = auto::Builder::new(TokioExecutor::new());
        // Config validation guarantees max_header_size ≥ 8 KiB, hyper's floor for this buffer.
        let header_limit = usize::try_from(s.max_header_size.0).unwrap_or(usize::MAX);
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout.0)
            .max_buf_size(header_limit)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(s.max_concurrent_streams)
            .max_header_list_size(u32::try_from(s.max_header_size.0).unwrap_or(u32::MAX))
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20));

        let upstream = Upstream::new(&config.upstream)?;
        Ok(Gateway {
            config,
            upstream,
            request_ids: RequestIds::new(),
            cert,
            tls,
            http,
            ready: AtomicBool::new(false),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
