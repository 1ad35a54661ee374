//! HTTP/2 attacks, written frame by frame over real TLS as an attacker's client would: the rapid
//! reset (CVE-2023-44487: open streams and cancel them at once, so the server does the work and the
//! client none) and the CONTINUATION flood (a header block that never ends). Each must end the
//! attacker's connection without the upstream doing the work, and leave the proxy serving others.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vendorgate_certs::Alpn;

use crate::support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET of `path` with the token, in HPACK without indexing (literal names and values).
fn request_block(path: &str, token: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87]; // :method GET, :scheme https (static table)
    let mut literal = |name: &str, value: &str| {
        b.push(0x00);
        for s in [name, value] {
            assert!(s.len() < 127);
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
    };
    literal(":path", path);
    literal(":authority", "localhost");
    let auth = format!("Bearer {token}");
    // A value over 126 bytes: the length as an HPACK integer with a 7-bit prefix.
    b.push(0x00);
    b.push(13);
    b.extend_from_slice(b"authorization");
    let mut n = auth.len();
    b.push(0x7f);
    n -= 127;
    while n >= 128 {
        b.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    b.push(n as u8);
    b.extend_from_slice(auth.as_bytes());
    b
}

/// Reads until the connection ends (or `limit` passes); whether a GOAWAY came, and its code.
async fn read_to_end<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<u32> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
    // Walk the frames for a GOAWAY.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= buf.len() {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        if buf[at + 3] == GOAWAY && at + 9 + 8 <= buf.len() {
            let p = &buf[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    goaway
}

async fn h2_connect(
    pki: &Pki,
    proxy: &Proxy,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(pki.client_tls(Alpn::H2)));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    tls
}

#[tokio::test]
async fn a_rapid_reset_flood_ends_the_connection_and_the_upstream_does_little() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let mut tls = h2_connect(&pki, &proxy).await;
    // 20,000 requests for a slow upstream answer, each cancelled as soon as it is sent, written
    // in batches so the proxy sees them as fast as it can read.
    let block = request_block("/__mock/slow?ms=500", &proxy.token);
    let mut sent = 0u32;
    'flood: for batch in 0..100u32 {
        let mut out = Vec::new();
        for i in 0..200u32 {
            let stream = 1 + 2 * (batch * 200 + i);
            out.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
            out.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes())); // CANCEL
        }
        if tls.write_all(&out).await.is_err() {
            break 'flood;
        }
        sent += 200;
    }
    let goaway = read_to_end(&mut tls, Duration::from_secs(10)).await;
    // Ended by the proxy: a GOAWAY (ENHANCE_YOUR_CALM, 0xb, or a protocol error), or the
    // connection closed before the flood was over.
    assert!(
        goaway.is_some() || sent < 20_000,
        "the flood ran its course: {sent} streams"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = upstream.request_count();
    assert!(
        reached < 2_000,
        "{reached} of {sent} cancelled requests reached the upstream"
    );

    // Others are still served.
    let client = client(&pki, Http::Two);
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 200);
    stop(&mut proxy).await;
    eprintln!(
        "rapid reset: {sent} streams sent, GOAWAY {goaway:?}, {reached} reached the upstream"
    );
}

#[tokio::test]
async fn a_continuation_flood_ends_the_connection_before_it_costs_memory() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream));
    let mut tls = h2_connect(&pki, &proxy).await;
    // A HEADERS frame without END_HEADERS, then CONTINUATION frames of 16 KiB of header block
    // forever (literal headers "x-a: aaaa…", never ending the block): up to 64 MiB.
    let block = request_block("/api/v2/tickets/1", &proxy.token);
    tls.write_all(&frame(HEADERS, END_STREAM, 1, &block))
        .await
        .unwrap();
    let mut junk = Vec::new();
    while junk.len() < 16_000 {
        junk.extend_from_slice(&[0x00, 3, b'x', b'-', b'a', 100]);
        junk.extend_from_slice(&[b'a'; 100]);
    }
    let cont = frame(CONTINUATION, 0, 1, &junk);
    let mut written = 0usize;
    while written < 64 << 20 {
        if tls.write_all(&cont).await.is_err() {
            break;
        }
        written += cont.len();
    }
    let ended_early = written < 64 << 20;
    let goaway = read_to_end(&mut tls, Duration::from_secs(10)).await;
    assert!(
        ended_early || goaway.is_some(),
        "the proxy took {written} bytes of one header block"
    );
    assert!(
        written < 8 << 20,
        "{written} bytes taken before the connection ended"
    );
    assert_eq!(upstream.request_count(), 0);
    let client = client(&pki, Http::Two);
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 200);
    stop(&mut proxy).await;
    eprintln!("continuation flood: {written} bytes written, GOAWAY {goaway:?}");
}
