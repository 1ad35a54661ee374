//! A development PKI: one CA and one server certificate it signs, for `vendorgate certs dev`, the
//! demo and the tests. Never for production: the CA key sits next to the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::CertError;

/// PEM text of a freshly generated dev CA and a server certificate it signed.
#[derive(Clone)]
pub struct DevPki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

/// Where [`DevPki::write_to`] put each file.
#[derive(Debug, Clone)]
pub struct DevPkiFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// The names a local dev server answers to.
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl DevPki {
    /// A CA valid for ten years and a server certificate for `names` (DNS names or IP addresses)
    /// valid for 90 days, both ECDSA P-256.
    pub fn generate(names: &[&str]) -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vendorgate dev CA");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "vendorgate (development only)");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let today = time_now();
        ca_params.not_before = today - days(1);
        ca_params.not_after = today + days(3650);
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = today - days(1);
        params.not_after = today + days(90);
        let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;

        Ok(DevPki {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `ca-key.pem`, `server.pem` and `server-key.pem` into `dir` (created if
    /// missing). Keys are written readable by the owner only.
    pub fn write_to(&self, dir: &Path) -> Result<DevPkiFiles, CertError> {
        std::fs::create_dir_all(dir).map_err(|cause| CertError::Write {
            path: dir.to_path_buf(),
            cause,
        })?;
        let files = DevPkiFiles {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        };
        write(&files.ca_cert, &self.ca_cert_pem, false)?;
        write(&files.ca_key, &self.ca_key_pem, true)?;
        write(&files.server_cert, &self.server_cert_pem, false)?;
        write(&files.server_key, &self.server_key_pem, true)?;
        Ok(files)
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let err = |cause| CertError::Write {
        path: path.to_path_buf(),
        cause,
    };
    std::fs::write(path, text).map_err(err)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}
