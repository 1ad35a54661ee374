//! A Zendesk-like HTTPS API for vendorgate's demo, end-to-end tests and benchmarks.
//!
//! It speaks the shapes of the real Zendesk Support API (tickets, users, cursor pagination, cursor-based
//! incremental exports) with deterministic generated data, plus a few `/__mock/…` endpoints that tests
//! need and Zendesk does not have: an echo of what arrived, an arbitrarily large streamed body, a slow
//! response and fixed-size static bodies. It is a test double for the *upstream*, never for the proxy.
#![forbid(unsafe_code)]

mod body;
mod data;
pub mod idp;
mod query;
mod routes;
mod server;

pub use body::MockBody;
pub use data::ticket;
pub use server::{MockOptions, MockUpstream, RecordedRequest};
