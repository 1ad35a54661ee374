//! TLS material for vendorgate: loading PEM certificates and keys with errors that say which file is
//! wrong and how, a server certificate that can be reloaded without a restart, the client-side root
//! store for the upstream, and a development CA so the demo and tests run real TLS with no setup.
//!
//! Everything here uses the `ring` crypto provider explicitly rather than a process-wide default, so
//! no caller can forget to install one and no two crates can disagree about it.
#![forbid(unsafe_code)]

pub mod dev;
mod error;
pub mod expiry;
mod load;
mod reload;
mod tls;

pub use error::CertError;
pub use load::{load_certified_key, load_certs, load_key, load_roots};
pub use reload::ReloadableCert;
pub use tls::{client_config, provider, server_config, Alpn};

#[cfg(test)]
mod tests;
