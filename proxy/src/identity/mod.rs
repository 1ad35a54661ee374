//! Who is asking: the IdP's keys (fetched, cached, refreshed) and verified tokens (remembered until
//! they expire so a busy session does not pay for a signature check on every request).

pub mod cache;
mod fetch;
mod keys;

pub use cache::TokenCache;
pub use keys::{KeySource, KeyStore, KeysError};
