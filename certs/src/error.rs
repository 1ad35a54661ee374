use std::path::PathBuf;

/// What went wrong with a piece of TLS material. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("{path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        /// Not `source`: the message already says it, and a chain would say it twice.
        cause: std::io::Error,
    },
    #[error("{path}: cannot write: {cause}")]
    Write {
        path: PathBuf,
        /// Not `source`: the message already says it, and a chain would say it twice.
        cause: std::io::Error,
    },
    #[error("{path}: malformed PEM: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{path}: no certificate found (expected a \"-----BEGIN CERTIFICATE-----\" block)")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path}: no private key found (expected a \"BEGIN PRIVATE KEY\" (PKCS#8), \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)"
    )]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: unusable private key: {detail}")]
    BadPrivateKey { path: PathBuf, detail: String },
    #[error("{path}: unusable certificate: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{key}: this private key does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("generating dev certificates: {0}")]
    Generate(#[from] rcgen::Error),
}
