//! rustls configurations for both sides of the proxy.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ResolvesServerCert, ServerSessionMemoryCache};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::load::load_roots;
use crate::CertError;

/// The one crypto provider vendorgate uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which application protocols to offer over ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1`.
    H2AndHttp11,
    /// `http/1.1` only.
    Http11,
    /// `h2` only.
    H2,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2AndHttp11 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http11 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        }
    }
}

/// A TLS 1.2/1.3 server config. Session resumption (stateful cache and stateless tickets) is on:
/// vendor agents' tools reconnect often, and a full handshake costs far more than a resumed one.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Alpn,
) -> Result<ServerConfig, CertError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.protocols();
    config.session_storage = ServerSessionMemoryCache::new(20_000);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(config)
}

/// A TLS 1.2/1.3 client config trusting either the CAs in `ca_bundle` (only those) or, without one,
/// the Mozilla web PKI roots compiled in (so the proxy does not depend on the host's CA store).
pub fn client_config(ca_bundle: Option<&Path>, alpn: Alpn) -> Result<ClientConfig, CertError> {
    let roots = match ca_bundle {
        Some(path) => load_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.protocols();
    Ok(config)
}
