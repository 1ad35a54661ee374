//! The operators' listener: `/healthz` (the process is alive) and `/readyz` (it should get traffic).
//!
//! Plain HTTP on loopback by default: it exposes no vendor data, and a load balancer or kubelet on the
//! same host or pod is the only intended caller.

use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use std::sync::atomic::Ordering;

use crate::gateway::Gateway;
use crate::telemetry::metrics::Gauges;

pub async fn serve(listener: TcpListener, gw: &'static Gateway) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| async move {
                Ok::<_, std::convert::Infallible>(route(gw, req).await)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn route(gw: &Gateway, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#.into(),
        );
    }
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/readyz" => readiness(gw).await,
        "/metrics" => {
            let status = &gw.trail.status;
            let (token_cache_hits, token_cache_misses) = gw.tokens.stats();
            let gauges = Gauges {
                trail_written: status.written.load(Ordering::Relaxed),
                trail_unrecorded: gw.trail.dropped.load(Ordering::Relaxed),
                trail_queue_depth: gw.trail.queue_depth(gw.config.trail.queue) as u64,
                trail_head_seq: status.head_seq.load(Ordering::Relaxed),
                trail_writable: status.healthy.load(Ordering::Relaxed),
                state_errors: gw.state.error_count(),
                token_cache_hits,
                token_cache_misses,
                token_cache_entries: gw.tokens.len() as u64,
            };
            let mut resp = Response::new(Full::new(Bytes::from(gw.metrics.render(&gauges))));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into()),
    }
}

/// Ready when the proxy listener is serving (not starting, not draining) and the upstream's name
/// resolves: without that, every request would fail with 502 and traffic is better sent elsewhere.
async fn readiness(gw: &Gateway) -> Response<Full<Bytes>> {
    if !gw.is_ready() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not_ready","reason":"draining"}"#.into(),
        );
    }
    let url = &gw.config.upstream.url;
    let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(_) => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
            None => not_resolvable(),
        },
        _ => not_resolvable(),
    }
}

fn not_resolvable() -> Response<Full<Bytes>> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"status":"not_ready","reason":"upstream_unresolvable"}"#.into(),
    )
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
