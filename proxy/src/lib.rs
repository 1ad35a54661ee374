//! vendorgate: a TLS-terminating reverse proxy that stands between a company's subcontractors and the
//! SaaS support platform they work in, and decides every request.
//!
//! This crate owns everything with I/O: listeners, the upstream client, the admin endpoint, the CLI
//! and the demo. What to decide lives in `vendorgate-policy`, which is pure; TLS material lives in
//! `vendorgate-certs`.
// One audited exception, allowed where it stands: `edge::memory::trim` asks glibc for `malloc_trim`.
#![deny(unsafe_code)]

pub mod active;
pub mod admin;
pub mod audit;
pub mod body;
pub mod clock;
pub mod conn;
pub mod credential;
pub mod detect;
pub mod downloads;
pub mod edge;
pub mod errors;
pub mod gateway;
pub mod headers;
pub mod http_client;
pub mod identity;
pub mod ip_text;
#[cfg(test)]
mod layout;
pub mod links;
pub mod metering;
pub mod outcome;
pub mod pipeline;
pub mod redact;
pub mod reload;
pub mod settings;
pub mod simulate;
pub mod state;
pub mod telemetry;
pub mod trail;
pub mod unguessable;
pub mod upstream;

pub use edge::server::{start, Running, StartError};
pub use settings::{load_config, LoadError};
