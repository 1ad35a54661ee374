//! A server certificate that can be swapped while the proxy serves.
//!
//! Certificates expire and get rotated by cert-manager or an ACME client; restarting the proxy to pick
//! them up would drop every vendor's connection. New handshakes see the new certificate as soon as
//! [`ReloadableCert::reload`] succeeds; a failed reload keeps the old one serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::load::{load_certified_key, shared};
use crate::CertError;

pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(ReloadableCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(shared(key)),
        })
    }

    /// Re-reads both files. On error the certificate in use is kept and the error returned.
    pub fn reload(&self) -> Result<(), CertError> {
        let key = shared(load_certified_key(&self.cert_path, &self.key_path)?);
        // A poisoned lock only means a reader panicked mid-clone; the Arc inside is still whole.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    /// When the certificate being served stops being valid: its leaf's `notAfter`, RFC 3339.
    pub fn not_after(&self) -> Option<String> {
        crate::expiry::not_after(self.current().cert.first()?.as_ref())
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
