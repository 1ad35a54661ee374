//! The agents' side of TLS, as clients other than the test client's defaults negotiate it: TLS 1.2,
//! resumed sessions, a key update in the middle of a keep-alive connection, and records that arrive
//! a byte at a time.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use vendorgate_certs::{load_roots, provider, Alpn};
use vendorgate_mock::MockUpstream;

use crate::support::*;

fn client_for(pki: &Pki, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(load_roots(&pki.files.ca_cert).unwrap())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::in_memory_sessions(16);
    Arc::new(config)
}

/// The proxy in front of the mock, and a token for it.
struct Setup {
    pki: Pki,
    proxy: Proxy,
    token: String,
    /// Held: the mock stops when it is dropped.
    _upstream: MockUpstream,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let token = pki.token();
    Setup {
        pki,
        proxy,
        token,
        _upstream: upstream,
    }
}

async fn connect(proxy: &Proxy, config: &Arc<ClientConfig>) -> TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tls_over(tcp, config).await
}

async fn tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: &Arc<ClientConfig>,
) -> TlsStream<S> {
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config.clone())
        .connect(name, io)
        .await
        .unwrap()
}

/// Sends one byte per write (with Nagle off, one TCP segment each): every TLS record, the
/// handshake's included, reaches the proxy in pieces.
struct Trickle(tokio::net::TcpStream);

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Sends one request for the mock's ticket 9 and reads its response whole (by Content-Length):
/// the status and the body.
async fn ticket<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, token: &str) -> (u16, String) {
    let request = format!(
        "GET /api/v2/tickets/9.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // tokio-rustls may keep sealed records back until a flush (its writes stop early when the
    // socket, or tokio's budget, says wait).
    stream.flush().await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let status = head[9..12].parse().unwrap();
        let length = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse::<usize>().unwrap())
        });
        match length {
            Some(length) if body.len() >= length => return (status, body[..length].to_owned()),
            Some(_) => continue,
            // Chunked (the proxy rewrote the JSON's links, so its length changed).
            None if body.ends_with("0\r\n\r\n") => return (status, dechunk(body)),
            None => continue,
        }
    }
}

/// A chunked HTTP/1.1 body, its chunks put together.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// `ticket`, answered within 10 s with the mock's ticket 9.
async fn expect_ticket<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, token: &str, what: &str) {
    let answered = tokio::time::timeout(Duration::from_secs(10), ticket(stream, token));
    let (status, body) = answered
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"));
    assert_eq!(status, 200, "{what}: {body}");
    assert!(body.contains("\"id\":9"), "{body}");
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_served_and_their_sessions_resumed() {
    let s = setup().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = client_for(&s.pki, version);
        for (round, kind) in [(1, HandshakeKind::Full), (2, HandshakeKind::Resumed)] {
            let mut tls = connect(&s.proxy, &config).await;
            expect_ticket(&mut tls, &s.token, &format!("{version:?} round {round}")).await;
            let conn = tls.get_ref().1;
            assert_eq!(conn.protocol_version(), Some(version.version));
            assert_eq!(
                conn.handshake_kind(),
                Some(kind),
                "{version:?} round {round}"
            );
        }
    }
}

#[tokio::test]
async fn a_client_key_update_is_answered_and_the_connection_goes_on() {
    let s = setup().await;
    let mut tls = connect(&s.proxy, &client_for(&s.pki, &rustls::version::TLS13)).await;
    for round in 0..3 {
        // The proxy must read what follows under the client's new keys, and its key update in
        // answer must reach the client in order with the response.
        tls.get_mut().1.refresh_traffic_keys().unwrap();
        let (status, body) = ticket(&mut tls, &s.token).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
    // And a close_notify ends the connection cleanly: the proxy answers with its own and closes.
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest))
        .await
        .expect("the proxy closes after close_notify");
    assert!(read.is_ok(), "{read:?}");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn records_arriving_a_byte_at_a_time_are_put_together() {
    let s = setup().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let tcp = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut tls = tls_over(Trickle(tcp), &client_for(&s.pki, version)).await;
        // Two requests on the connection: the second's records follow the first's response.
        for round in 0..2 {
            expect_ticket(&mut tls, &s.token, &format!("{version:?} round {round}")).await;
        }
    }
}

/// The seconds left on the served certificate are a metric (the dev certificate is valid 90 days).
#[tokio::test]
async fn the_certificates_expiry_is_a_metric() {
    let pki = Pki::new();
    let upstream = mock(&pki, vendorgate_certs::Alpn::Http11).await;
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let metrics = admin_text(proxy.admin, "/metrics").await;
    let left: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vendorgate_tls_certificate_expiry_seconds "))
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"))
        .parse()
        .unwrap();
    let days = left / 86_400;
    assert!((88..=90).contains(&days), "{left} s");
}
