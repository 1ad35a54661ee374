//! What the proxy tells operators besides the decision trail: Prometheus metrics, OpenTelemetry
//! spans, W3C trace context, request ids, and a throttle for log lines that could repeat on every
//! request.

pub mod metrics;
pub mod otel;
pub mod request_id;
pub mod throttle;
pub mod trace_context;
