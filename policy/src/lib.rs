//! vendorgate's policy: the configuration model, its validation, and (as it lands) the compiled policy
//! that decides every request.
//!
//! This crate is pure on purpose: no file or network access, no async runtime, no wall clock. The proxy
//! reads files and hands their text here; time arrives as an input. That keeps every rule testable in
//! isolation and keeps the security-critical decision code free of I/O failure modes.
#![forbid(unsafe_code)]

pub mod config;
pub mod controls;
pub mod decide;
pub mod decision;
pub mod detect;
pub mod fields;
pub mod grants;
pub mod ipset;
pub mod limits;
pub mod locks;
pub mod path;
pub mod patterns;
pub mod policy;
pub mod routes;
pub mod scope;
pub mod token;
pub mod units;
pub mod window;

pub use config::{Config, ConfigError, ConfigErrors};
pub use controls::{Controls, Granted};
pub use decide::{Arrival, Check, Decision, Facts, Presented, Step, Trace};
pub use decision::{Allow, Challenge, Denial, Reason};
pub use grants::{ApprovalError, Grant, GrantRequest, GrantRules, GrantState, RequestError};
pub use ipset::IpSet;
pub use limits::{
    gcra, gcra_standing, gcra_take, session_step, ByteRule, Direction, GcraOutcome, RateRule,
    SessionRecord, SessionStep,
};
pub use locks::{Lock, LockTarget, Subject};
pub use policy::{Admission, Policy, RouteAction, Standing};
pub use token::{bearer, JwksError, KeySet, VerifiedToken, VerifyError};
pub use units::{ByteSize, HumanDuration};
pub use window::{AccessWindows, Days, Hours, Window, WindowError};

#[cfg(test)]
mod tests;
