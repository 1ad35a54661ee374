//! Reading the config file from disk and checking everything it points to, so that `vendorgate check`
//! and startup catch the same mistakes.

use std::path::{Path, PathBuf};

use vendorgate_certs::{client_config, load_certified_key, Alpn, CertError};
use vendorgate_policy::{Config, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Certs(#[from] CertError),
}

/// Reads and parses `path`; relative paths inside resolve against the file's directory.
pub fn load_config(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut config = Config::from_toml(&text, &path.display().to_string())?;
    config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
    Ok(config)
}

/// Loads the TLS material the config names, reporting the first file that is unusable.
pub fn check_files(config: &Config) -> Result<(), LoadError> {
    load_certified_key(&config.server.tls_cert, &config.server.tls_key)?;
    client_config(config.upstream.ca_bundle.as_deref(), Alpn::Http11)?;
    Ok(())
}

/// A few lines a person can read to confirm the file says what they meant.
pub fn summary(config: &Config) -> String {
    let s = &config.server;
    let u = &config.upstream;
    let ca = u.ca_bundle.as_ref().map_or_else(
        || "built-in web PKI roots".to_string(),
        |p| p.display().to_string(),
    );
    let mut out = format!(
        "listen     https://{} (cert {}, key {})\n\
         admin      http://{}\n\
         upstream   {} (trusting {}; HTTP/2 {})\n\
         limits     {} connections, headers {} within {}, request body {}, {} streams per HTTP/2 connection\n\
         timeouts   TLS handshake {}, idle keep-alive {}, upstream connect {}, upstream response {}, shutdown grace {}\n",
        s.listen.get_ref(),
        s.tls_cert.display(),
        s.tls_key.display(),
        config.admin.listen.get_ref(),
        u.url,
        ca,
        if u.http2 { "offered" } else { "off" },
        s.max_connections,
        s.max_header_size,
        s.header_read_timeout,
        s.max_request_body,
        s.max_concurrent_streams,
        s.tls_handshake_timeout,
        s.idle_timeout,
        u.connect_timeout,
        u.response_timeout,
        s.shutdown_grace,
    );
    if u.url.scheme == vendorgate_policy::config::Scheme::Http {
        out.push_str("warning    the upstream is plain HTTP: anything injected upstream travels unencrypted\n");
    }
    out
}
