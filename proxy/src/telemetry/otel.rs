//! OpenTelemetry export through the official crates (`opentelemetry`, `opentelemetry_sdk`,
//! `opentelemetry-otlp`): one span per request carrying the decision, the request, egress and
//! latency metrics, and, opt-in, every decision record as an OTLP log record; over OTLP/HTTP
//! with protobuf (the spec's default, accepted by every collector and back end) or JSON.
//!
//! What `[otel]` does not set comes from the standard variables, read by the SDK as every
//! OpenTelemetry SDK reads them (`OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_,LOGS_}{ENDPOINT,HEADERS,
//! TIMEOUT,COMPRESSION}`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*`, `OTEL_BLRP_*`);
//! `OTEL_SDK_DISABLED=true` turns the export off, and an endpoint in the variables turns it on
//! without an `[otel]` table. The `…PROTOCOL` variables may say `http/protobuf` (the default)
//! or `http/json`; `grpc` is refused at start ([`protocol`]).
//!
//! The requests go out through the proxy's own hyper + rustls client ([`OtlpClient`]), not a
//! second HTTP stack: the SDK's batch processors run on threads of their own and call it there;
//! it runs each request on the proxy's runtime. Nothing here waits on the request path: a span is
//! handed to the SDK's bounded batch queue (dropped when full), the metrics are read from the
//! proxy's own counters when the SDK collects them, and decision records are copied from the
//! trail writer into a bounded queue (dropped when full, counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::Value;
use tokio::sync::mpsc;
use vendorgate_policy::config::Otel as OtelConfig;

use crate::http_client::{side_client, SideClient};
use crate::telemetry::metrics::{Metrics, BUCKETS};

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("otel.ca_bundle: {0}")]
    Ca(#[from] vendorgate_certs::CertError),
    #[error("otel: {0}")]
    Exporter(String),
}

/// A request as a span: what the decision record knows when the request ends.
pub struct Span {
    /// The request's trace context: the ids its decision record and upstream `traceparent` carry.
    pub trace: crate::telemetry::trace_context::TraceContext,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub error: bool,
    pub attributes: Vec<KeyValue>,
}

pub struct Otel {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
    logs: Option<SdkLoggerProvider>,
    duration: Histogram<f64>,
    /// Decision records not copied to the log export (its queue full).
    pub dropped: Arc<AtomicU64>,
    /// How the collector has been answering.
    pub exports: Arc<Exports>,
}

/// The export requests' outcomes, counted where they all pass ([`OtlpClient`]). Without this a
/// collector refusing every batch (a wrong API key, a wrong port) went unseen: the SDK says
/// nothing unless built with its internal logs.
#[derive(Debug, Default)]
pub struct Exports {
    /// Answered 2xx.
    pub accepted: AtomicU64,
    /// Refused (any other status) or not answered.
    pub failed: AtomicU64,
    /// Whether the last one failed: the log says when that changes, not at every batch.
    failing: std::sync::atomic::AtomicBool,
}

impl Exports {
    /// Counts an export to `to`; the endpoint is written out only when the log speaks.
    fn note(&self, to: &http::Uri, answer: &Result<http::Response<Bytes>, HttpError>) {
        match answer {
            Ok(response) if response.status().is_success() => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        otlp.endpoint = destination(to),
                        "OTLP export accepted again"
                    );
                }
            }
            failure => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let why = match failure {
                        Ok(response) => format!("answered {}", response.status().as_u16()),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(
                        otlp.endpoint = destination(to),
                        "OTLP export failed: {why}; further failures are counted in \
                         vendorgate_otel_export_failures_total until one is accepted"
                    );
                }
            }
        }
    }
}

/// Where a request goes, without anything a URL may carry besides (credentials, a query).
fn destination(uri: &http::Uri) -> String {
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.path()
    )
}

/// What to export, if anything: `[otel]`, or the standard variables alone; never with
/// `OTEL_SDK_DISABLED=true`.
pub fn wanted(config: &vendorgate_policy::Config) -> Option<OtelConfig> {
    if disabled_by_environment() {
        return None;
    }
    config
        .otel
        .clone()
        .or_else(|| wanted_by_environment().then(OtelConfig::default))
}

/// The three OTLP signals, by the infix of their own variables (`OTEL_EXPORTER_OTLP_TRACES_…`).
const SIGNALS: [&str; 3] = ["TRACES", "METRICS", "LOGS"];

/// The encoding a signal is exported in: its own `…_PROTOCOL` variable, else
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf` (the spec's default). `http/json` is
/// spoken too; `grpc` is not built in (a second HTTP/2 client stack for a transport every
/// collector also offers over HTTP), and asking for it is an error, not a silent fallback:
/// protobuf sent to a collector's gRPC port would fail on every batch, and only the collector
/// would know.
fn protocol(signal: &str) -> Result<Protocol, String> {
    let own = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    let set = [own.as_str(), "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .into_iter()
        .find_map(|name| {
            let value = std::env::var(name).ok()?;
            let value = value.trim().to_ascii_lowercase();
            (!value.is_empty()).then_some((name, value))
        });
    match set {
        None => Ok(Protocol::HttpBinary),
        Some((_, value)) if value == "http/protobuf" => Ok(Protocol::HttpBinary),
        Some((_, value)) if value == "http/json" => Ok(Protocol::HttpJson),
        Some((name, value)) => Err(format!(
            "{name}={value}: this build exports OTLP over http/protobuf or http/json only (no \
             gRPC); set one of those, and point the endpoint at the collector's OTLP/HTTP port \
             (4318 by default)"
        )),
    }
}

/// The first signal whose protocol this build cannot speak, said as a problem.
pub fn unsupported_protocol() -> Option<String> {
    SIGNALS.iter().find_map(|signal| protocol(signal).err())
}

/// Whether the standard variables ask for an export when the config has no `[otel]`.
fn wanted_by_environment() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()))
}

/// `OTEL_SDK_DISABLED=true`: no export at all, whatever the config says.
fn disabled_by_environment() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The proxy's own HTTP client, as the OTLP exporters' transport.
#[derive(Clone)]
struct OtlpClient {
    client: SideClient<Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    exports: Arc<Exports>,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpClient")
    }
}

/// A collector's answer is small; more than this is not read.
const MAX_ANSWER: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let to = parts.uri.clone();
        let request = http::Request::from_parts(parts, Full::new(body));
        let client = self.client.clone();
        // The SDK calls from its own threads; the client's connections live on the runtime.
        let sent = self.runtime.spawn(async move {
            let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
                .await
                .map_err(|_| HttpError::from("no answer in 10 s"))??;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| HttpError::from(e.to_string()))?
                .to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        });
        let answer = sent
            .await
            .unwrap_or_else(|e| Err(HttpError::from(e.to_string())));
        self.exports.note(&to, &answer);
        answer
    }
}

impl Otel {
    /// Starts the exporters; `metrics` are the proxy's own counters, read at each collection.
    /// Runs on the proxy's runtime (its requests go out there).
    pub fn start(config: &OtelConfig, metrics: Arc<Metrics>) -> Result<Arc<Otel>, OtelError> {
        let exports = Arc::new(Exports::default());
        let client = OtlpClient {
            client: side_client(config.ca_bundle.as_deref())?,
            runtime: tokio::runtime::Handle::current(),
            exports: exports.clone(),
        };
        let endpoint = |path: &str| {
            config
                .endpoint
                .as_deref()
                .map(|e| format!("{}{path}", e.trim_end_matches('/')))
        };
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        if let Some(name) = &config.service_name {
            resource = resource.with_service_name(name.clone());
        } else if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("vendorgate");
        }
        let resource = resource.build();
        let fail = |e: opentelemetry_otlp::ExporterBuildError| OtelError::Exporter(e.to_string());

        let spans = over(
            opentelemetry_otlp::SpanExporter::builder().with_http(),
            &client,
            "TRACES",
            endpoint("/v1/traces"),
        )?;
        // Spans go out every second unless OTEL_BSP_SCHEDULE_DELAY says otherwise (the spec's
        // default, 5 s, holds five times as many of a busy proxy's spans in memory).
        let mut batching = opentelemetry_sdk::trace::BatchConfigBuilder::default();
        if std::env::var("OTEL_BSP_SCHEDULE_DELAY").is_err() {
            batching = batching.with_scheduled_delay(Duration::from_secs(1));
        }
        let processor =
            opentelemetry_sdk::trace::BatchSpanProcessor::builder(spans.build().map_err(fail)?)
                .with_batch_config(batching.build())
                .build();
        let traces = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_id_generator(GivenIds)
            .with_resource(resource.clone())
            .build();
        let tracer = traces.tracer("vendorgate");

        let measures = over(
            opentelemetry_otlp::MetricExporter::builder().with_http(),
            &client,
            "METRICS",
            endpoint("/v1/metrics"),
        )?;
        let mut reader = PeriodicReader::builder(measures.build().map_err(fail)?);
        if let Some(every) = &config.export_interval {
            reader = reader.with_interval(every.0);
        }
        let meters = SdkMeterProvider::builder()
            .with_reader(reader.build())
            .with_resource(resource.clone())
            .build();
        let duration = observe(&meters, metrics);

        let logs = if config.decisions {
            let records = over(
                opentelemetry_otlp::LogExporter::builder().with_http(),
                &client,
                "LOGS",
                endpoint("/v1/logs"),
            )?;
            Some(
                SdkLoggerProvider::builder()
                    .with_batch_exporter(records.build().map_err(fail)?)
                    .with_resource(resource)
                    .build(),
            )
        } else {
            None
        };
        Ok(Arc::new(Otel {
            tracer,
            traces,
            metrics: meters,
            logs,
            duration,
            dropped: Arc::new(AtomicU64::new(0)),
            exports,
        }))
    }

    /// A request's span, handed to the SDK's batch queue, and its duration to the histogram.
    pub fn record(&self, span: Span) {
        let seconds = span
            .end
            .duration_since(span.start)
            .unwrap_or_default()
            .as_secs_f64();
        self.duration.record(seconds, &[]);
        let trace_id = TraceId::from_hex(span.trace.trace_id()).unwrap_or(TraceId::INVALID);
        let parent = match span.trace.parent_span_id().map(SpanId::from_hex) {
            Some(Ok(parent)) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                parent,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            _ => Context::new(),
        };
        let builder = self
            .tracer
            .span_builder(span.name)
            .with_kind(SpanKind::Server)
            .with_start_time(span.start)
            .with_attributes(span.attributes);
        let span_id = SpanId::from_hex(span.trace.span_id()).unwrap_or(SpanId::INVALID);
        GIVEN.with(|g| g.set((trace_id, span_id)));
        let mut sdk_span = builder.start_with_context(&self.tracer, &parent);
        use opentelemetry::trace::Span as _;
        sdk_span.set_status(if span.error {
            Status::error("")
        } else {
            Status::Ok
        });
        sdk_span.end_with_timestamp(span.end);
    }

    /// Where the trail writer copies decision records to, when `decisions` is on: a bounded
    /// queue, read by a task that turns each record into a log record.
    pub fn decision_copies(&self) -> Option<DecisionCopies> {
        let provider = self.logs.as_ref()?;
        let logger = provider.logger("vendorgate.decisions");
        let (tx, mut rx) = mpsc::channel::<String>(256);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                for line in batch.lines() {
                    emit(&logger, line);
                }
            }
        });
        Some(DecisionCopies {
            tx,
            dropped: self.dropped.clone(),
        })
    }

    /// Sends what is queued and stops the exporters (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.traces.shutdown();
        let _ = self.metrics.shutdown();
        if let Some(logs) = &self.logs {
            let _ = logs.shutdown();
        }
    }
}

thread_local! {
    /// The ids of the span this thread is about to start (see [`GivenIds`]).
    static GIVEN: std::cell::Cell<(TraceId, SpanId)> =
        const { std::cell::Cell::new((TraceId::INVALID, SpanId::INVALID)) };
}

/// The ids the proxy gave the request (in its decision record and the `traceparent` it sent
/// upstream), for the SDK to use: it takes ids only from an id generator, which here hands out
/// the ones [`Otel::record`] set on this thread just before it starts the span.
#[derive(Debug)]
struct GivenIds;

impl opentelemetry_sdk::trace::IdGenerator for GivenIds {
    fn new_trace_id(&self) -> TraceId {
        GIVEN.with(|g| g.get().0)
    }

    fn new_span_id(&self) -> SpanId {
        GIVEN.with(|g| g.get().1)
    }
}

/// An exporter's builder set to send `signal` ([`SIGNALS`]) through `client` in its
/// [`protocol`], to `endpoint` when the config names one (else the variables decide).
fn over<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    client: &OtlpClient,
    signal: &str,
    endpoint: Option<String>,
) -> Result<B, OtelError> {
    let builder = builder
        .with_http_client(client.clone())
        .with_protocol(protocol(signal).map_err(OtelError::Exporter)?);
    Ok(match endpoint {
        Some(url) => builder.with_endpoint(url),
        None => builder,
    })
}

/// The trail writer's side of the decision records' copy.
pub struct DecisionCopies {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl DecisionCopies {
    /// A batch of records as written (JSON lines, chain fields included), `count` of them; never
    /// waits: dropped and counted when the queue is full.
    pub fn offer(&self, batch: String, count: usize) {
        if self.tx.try_send(batch).is_err() {
            self.dropped.fetch_add(count as u64, Ordering::Relaxed);
        }
    }
}

/// One decision record as a log record: its fields as attributes (nested ones by dotted keys),
/// the line itself as the body, at the record's own time.
fn emit(logger: &opentelemetry_sdk::logs::SdkLogger, line: &str) {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
        return;
    };
    let mut record = logger.create_log_record();
    record.set_event_name("vendorgate.decision");
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    if let Some(t) = fields
        .get("@timestamp")
        .and_then(Value::as_str)
        .and_then(crate::trail::time::parse_rfc3339)
    {
        record.set_timestamp(t);
    }
    let mut flat = Vec::new();
    flatten("", &Value::Object(fields), &mut flat);
    record.add_attributes(flat);
    record.set_body(AnyValue::String(line.to_string().into()));
    logger.emit(record);
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, AnyValue)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {}
        Value::Bool(b) => out.push((prefix.to_string(), AnyValue::Boolean(*b))),
        Value::Number(n) => out.push((
            prefix.to_string(),
            match n.as_i64() {
                Some(i) => AnyValue::Int(i),
                None => AnyValue::Double(n.as_f64().unwrap_or(0.0)),
            },
        )),
        Value::String(s) => out.push((prefix.to_string(), AnyValue::String(s.clone().into()))),
        Value::Array(_) => out.push((prefix.to_string(), AnyValue::String(v.to_string().into()))),
    }
}

/// The metrics, read from the proxy's counters when the SDK collects (nothing added to the
/// request path), and the latency histogram the spans feed.
fn observe(meters: &SdkMeterProvider, metrics: Arc<Metrics>) -> Histogram<f64> {
    let meter = meters.meter("vendorgate");
    let m = metrics.clone();
    meter
        .u64_observable_counter("vendorgate.requests")
        .with_description("Requests decided.")
        .with_unit("{request}")
        .with_callback(move |o| {
            for ((allowed, reason, vendor), n) in m.request_rows() {
                let decision = if allowed { "allow" } else { "deny" };
                o.observe(
                    n,
                    &[
                        KeyValue::new("decision", decision),
                        KeyValue::new("reason", reason),
                        KeyValue::new("vendor", vendor),
                    ],
                );
            }
        })
        .build();
    meter
        .u64_observable_counter("vendorgate.egress.bytes")
        .with_description("Response bytes sent to agents.")
        .with_unit("By")
        .with_callback(move |o| {
            for ((vendor, account), n) in metrics.egress_rows() {
                o.observe(
                    n,
                    &[
                        KeyValue::new("vendor", vendor),
                        KeyValue::new("account", account),
                    ],
                );
            }
        })
        .build();
    meter
        .f64_histogram("vendorgate.request.duration")
        .with_description("Time to the end of the response body.")
        .with_unit("s")
        .with_boundaries(BUCKETS.to_vec())
        .build()
}
