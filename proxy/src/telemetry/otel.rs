//! OpenTelemetry export over OTLP/HTTP with the JSON encoding: one span per request, carrying the
//! decision, and the request/egress/latency metrics.
//!
//! The wire format (OTLP 1.x, JSON mapping: hex trace and span ids, int64 as strings) is written
//! here directly on top of the proxy's own HTTP client, rather than through the OpenTelemetry SDK
//! and its exporter stack (prost, a second HTTP client, a batch runtime): the proxy only emits, it
//! never samples or propagates through libraries, so the SDK would be weight without function.
//! Spans queue in a bounded channel; when it is full they are dropped and counted, never awaited
//! on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vendorgate_certs::CertError;

use crate::http_client::{side_client, SideClient};
use vendorgate_policy::config::Otel as OtelConfig;

use crate::telemetry::metrics::Metrics;

pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub error: bool,
    pub attributes: Vec<(&'static str, Value)>,
}

pub struct Otel {
    tx: mpsc::Sender<Span>,
    pub dropped: AtomicU64,
    pub exported: Arc<AtomicU64>,
}

type OtlpClient = SideClient<Full<Bytes>>;

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn attribute(key: &str, value: &Value) -> Value {
    let v = match value {
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_u64() || n.is_i64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n}),
        Value::String(s) => json!({"stringValue": s}),
        other => json!({"stringValue": other.to_string()}),
    };
    json!({"key": key, "value": v})
}

impl Otel {
    pub fn start(config: &OtelConfig, metrics: Arc<Metrics>) -> Result<Arc<Otel>, CertError> {
        let client: OtlpClient = side_client(config.ca_bundle.as_deref())?;
        let (tx, rx) = mpsc::channel(8192);
        let exported = Arc::new(AtomicU64::new(0));
        let resource = json!({"attributes": [
            attribute("service.name", &json!(config.service_name)),
            attribute("service.version", &json!(env!("CARGO_PKG_VERSION"))),
        ]});
        tokio::spawn(export_loop(
            client,
            config.endpoint.trim_end_matches('/').to_string(),
            resource,
            config.export_interval.0,
            rx,
            metrics,
            exported.clone(),
        ));
        Ok(Arc::new(Otel {
            tx,
            dropped: AtomicU64::new(0),
            exported,
        }))
    }

    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn post(client: &OtlpClient, url: &str, body: Value) -> Result<(), String> {
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status()))
    }
}

fn span_json(s: &Span) -> Value {
    let mut v = json!({
        "traceId": s.trace_id,
        "spanId": s.span_id,
        "name": s.name,
        "kind": 2,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(s.end),
        "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
        "status": {"code": if s.error { 2 } else { 1 }},
    });
    if let Some(p) = &s.parent_span_id {
        v["parentSpanId"] = json!(p);
    }
    v
}

async fn export_loop(
    client: OtlpClient,
    endpoint: String,
    resource: Value,
    metrics_every: Duration,
    mut rx: mpsc::Receiver<Span>,
    metrics: Arc<Metrics>,
    exported: Arc<AtomicU64>,
) {
    let scope = json!({"name": "vendorgate", "version": env!("CARGO_PKG_VERSION")});
    let started = SystemTime::now();
    let mut next_metrics = tokio::time::Instant::now() + metrics_every;
    let mut batch: Vec<Span> = Vec::new();
    let mut last_error_log = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        let flush_at = tokio::time::Instant::now() + Duration::from_secs(1);
        let open = loop {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= 512 { break true; }
                    }
                    None => break false,
                },
                _ = tokio::time::sleep_until(flush_at) => break true,
            }
        };
        if !batch.is_empty() {
            let body = json!({"resourceSpans": [{
                "resource": resource,
                "scopeSpans": [{"scope": scope, "spans": batch.iter().map(span_json).collect::<Vec<_>>()}],
            }]});
            match post(&client, &format!("{endpoint}/v1/traces"), body).await {
                Ok(()) => {
                    exported.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(e) if last_error_log.elapsed() > Duration::from_secs(10) => {
                    last_error_log = tokio::time::Instant::now();
                    tracing::warn!(
                        "OTLP span export to {endpoint} failed ({} spans lost): {e}",
                        batch.len()
                    );
                }
                Err(_) => {}
            }
            batch.clear();
        }
        if tokio::time::Instant::now() >= next_metrics || !open {
            next_metrics = tokio::time::Instant::now() + metrics_every;
            let body = json!({"resourceMetrics": [{
                "resource": resource,
                "scopeMetrics": [{"scope": scope, "metrics": metrics.otlp(started, SystemTime::now())}],
            }]});
            if let Err(e) = post(&client, &format!("{endpoint}/v1/metrics"), body).await {
                if last_error_log.elapsed() > Duration::from_secs(10) {
                    last_error_log = tokio::time::Instant::now();
                    tracing::warn!("OTLP metrics export to {endpoint} failed: {e}");
                }
            }
        }
        if !open {
            return;
        }
    }
}
