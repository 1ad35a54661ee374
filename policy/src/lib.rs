//! vendorgate's policy: the configuration model, its validation, and (as it lands) the compiled policy
//! that decides every request.
//!
//! This crate is pure on purpose: no file or network access, no async runtime, no wall clock. The proxy
//! reads files and hands their text here; time arrives as an input. That keeps every rule testable in
//! isolation and keeps the security-critical decision code free of I/O failure modes.
#![forbid(unsafe_code)]

pub mod config;
pub mod units;

pub use config::{Config, ConfigError};
pub use units::{ByteSize, HumanDuration};
