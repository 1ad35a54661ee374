//! Reading PEM files into rustls types.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::tls::provider;
use crate::CertError;

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|cause| CertError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

fn pem_error(path: &Path, e: pem::Error) -> CertError {
    CertError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// All certificates in a PEM file, in file order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        other => pem_error(path, other),
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, CertError> {
    let chain = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let signing_key =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::BadPrivateKey {
                path: key_path.to_path_buf(),
                detail: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        // The provider could not tell (e.g. an unusual key type); rustls will fail the handshake
        // loudly if they really disagree, so do not refuse to start on a maybe.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(CertError::BadCertificate {
            path: cert_path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// A root store holding every certificate of a PEM bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| CertError::BadCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

pub(crate) fn shared(key: CertifiedKey) -> Arc<CertifiedKey> {
    Arc::new(key)
}
