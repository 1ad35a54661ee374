//! Opening one connection to the upstream: resolve, TCP, TLS when the URL says https, then the
//! HTTP handshake for whichever version ALPN settled on. The connection's I/O runs in a task of its
//! own; what comes back is the handle requests are sent through.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::UpstreamError;
use crate::body::request::RequestBody;

/// Probes on an idle pooled connection, so a middlebox that silently dropped it is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A handle to one upstream connection.
pub enum Sender {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

/// Where and how to connect; fixed for the life of the process (`upstream.url` and `ca_bundle`
/// need a restart).
pub struct Dialer {
    pub host: String,
    pub port: u16,
    /// `None` for plain-HTTP upstreams.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    pub connect_timeout: Duration,
}

impl Dialer {
    /// A new connection, ready for its first request. Everything up to the HTTP handshake counts
    /// against `connect_timeout`.
    pub async fn dial(&self) -> Result<Sender, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))??;
        match stream {
            Opened::Plain(tcp) => handshake(tcp, false).await,
            Opened::Tls(tls) => {
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                handshake(tls, h2).await
            }
        }
    }

    async fn open(&self) -> Result<Opened, UpstreamError> {
        let tcp = self.tcp().await?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Opened::Plain(tcp));
        };
        match connector.connect(name.clone(), tcp).await {
            Ok(tls) => Ok(Opened::Tls(Box::new(tls))),
            // A certificate or protocol problem is a TLS error; a reset or EOF mid-handshake is the
            // upstream being unreachable in all but name.
            Err(e) if is_rustls(&e) => Err(UpstreamError::Tls(e)),
            Err(e) => Err(UpstreamError::Connect {
                addr: format!("{}:{}", self.host, self.port),
                source: e,
            }),
        }
    }

    /// Each resolved address in turn until one accepts.
    async fn tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| UpstreamError::Resolve {
                host: self.host.clone(),
                source,
            })?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)
                        .map_err(|source| UpstreamError::Connect {
                            addr: addr.to_string(),
                            source,
                        })?;
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    // Best effort: a socket without keepalive still works.
                    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                    return Ok(tcp);
                }
                Err(source) => {
                    last = Some(UpstreamError::Connect {
                        addr: addr.to_string(),
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| UpstreamError::Resolve {
            host: self.host.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        }))
    }
}

enum Opened {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

fn is_rustls(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// The HTTP handshake; the connection's task is spawned on the current runtime, which on a worker
/// thread is the thread the requests it carries run on.
async fn handshake<I>(io: I, h2: bool) -> Result<Sender, UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        run(conn, "h2");
        Ok(Sender::Http2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        run(conn, "HTTP/1.1");
        Ok(Sender::Http1(sender))
    }
}

/// Upstream connections whose task is alive: counted so an operator (and the fault tests) can see
/// that a broken or hung connection is let go rather than kept. Counted per connection, not per
/// request.
static OPEN: AtomicU64 = AtomicU64::new(0);

/// Connections to the upstream now open, pooled or busy.
pub fn connections_open() -> u64 {
    OPEN.load(Ordering::Relaxed)
}

/// One count in [`OPEN`] for as long as it lives; in the connection's task, so a task dropped
/// unfinished (its runtime shutting down) gives its count back too.
struct Counted;

impl Counted {
    fn new() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drives a connection's I/O until it closes; how it ended is only of interest when debugging.
fn run<C>(conn: C, version: &'static str)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    let counted = Counted::new();
    tokio::spawn(async move {
        let _counted = counted;
        if let Err(e) = conn.await {
            tracing::debug!("upstream {version} connection ended: {e}");
        }
    });
}
