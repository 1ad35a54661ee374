//! The edge: listeners, one connection's life (TLS, HTTP/1.1 or HTTP/2, timeouts, parking idle
//! connections), and handing each request to the [`crate::pipeline`]. It sits above the pipeline;
//! nothing below the pipeline imports it.

pub mod client_io;
pub mod memory;
pub mod serve;
pub mod server;
pub mod tls_stream;
