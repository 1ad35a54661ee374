//! End-to-end tests over real sockets: a client → the real `vendorgate` binary (TLS) → the mock
//! Zendesk (TLS), everything on loopback with ephemeral ports and temporary directories.

mod support;

mod cli;
mod clients;
mod conformance;
mod detect;
mod downloads;
mod endings;
mod errors;
mod faults;
mod forwarding;
mod grants;
mod h2_abuse;
mod hygiene;
mod lifecycle;
mod limits;
mod links;
mod load;
mod locks;
mod policy;
mod reload;
mod replicas;
mod scope;
mod tls;
mod trail;
mod under_load;
