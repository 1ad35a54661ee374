//! Loading errors must say which file is wrong and how: these are what an operator sees at startup.

use std::sync::Arc;

use crate::dev::{DevPki, LOCAL_NAMES};
use crate::*;

fn pki_dir() -> (tempfile::TempDir, dev::DevPkiFiles) {
    let dir = tempfile::tempdir().unwrap();
    let files = DevPki::generate(LOCAL_NAMES)
        .unwrap()
        .write_to(dir.path())
        .unwrap();
    (dir, files)
}

#[test]
fn dev_pki_loads_and_builds_configs() {
    let (_dir, files) = pki_dir();
    let cert = ReloadableCert::load(&files.server_cert, &files.server_key).unwrap();
    server_config(Arc::new(cert), Alpn::H2AndHttp11).unwrap();
    client_config(Some(&files.ca_cert), Alpn::Http11).unwrap();
    client_config(None, Alpn::H2).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.server_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn rsa_pkcs1_and_ec_sec1_keys_load() {
    // Fixtures made with openssl: an RSA key in PKCS#1 ("BEGIN RSA PRIVATE KEY") and a P-256 key in
    // SEC1 ("BEGIN EC PRIVATE KEY"), each with its self-signed certificate. PKCS#8 is what rcgen writes.
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let rsa_key = data.join("rsa-pkcs1-key.pem");
    let ec_key = data.join("ec-sec1-key.pem");
    assert!(matches!(
        load_key(&rsa_key).unwrap(),
        rustls::pki_types::PrivateKeyDer::Pkcs1(_)
    ));
    assert!(matches!(
        load_key(&ec_key).unwrap(),
        rustls::pki_types::PrivateKeyDer::Sec1(_)
    ));
    load_certified_key(&data.join("rsa-cert.pem"), &rsa_key).unwrap();
    load_certified_key(&data.join("ec-cert.pem"), &ec_key).unwrap();
    let e = load_certified_key(&data.join("rsa-cert.pem"), &ec_key).unwrap_err();
    assert!(matches!(e, CertError::KeyMismatch { .. }), "{e}");

    let (_dir, files) = pki_dir();
    assert!(matches!(
        load_key(&files.server_key).unwrap(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(_)
    ));
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let (dir, files) = pki_dir();
    let missing = dir.path().join("nope.pem");
    let e = load_certified_key(&missing, &files.server_key).unwrap_err();
    assert!(matches!(e, CertError::Read { .. }));
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );

    // A key file given where the certificate belongs.
    let e = load_certified_key(&files.server_key, &files.server_key).unwrap_err();
    assert!(matches!(e, CertError::NoCertificate { .. }), "{e}");
    assert!(e.to_string().contains("server-key.pem"), "{e}");

    // A certificate given where the key belongs.
    let e = load_certified_key(&files.server_cert, &files.server_cert).unwrap_err();
    assert!(matches!(e, CertError::NoPrivateKey { .. }), "{e}");

    // The CA's key does not belong to the server certificate.
    let e = load_certified_key(&files.server_cert, &files.ca_key).unwrap_err();
    assert!(matches!(e, CertError::KeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("ca-key.pem"), "{e}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!notbase64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = load_certs(&garbage).unwrap_err();
    assert!(matches!(e, CertError::Pem { .. }), "{e}");
    assert!(e.to_string().contains("garbage.pem"), "{e}");
}

#[test]
fn a_failed_reload_keeps_the_old_certificate() {
    let (dir, files) = pki_dir();
    let cert = ReloadableCert::load(&files.server_cert, &files.server_key).unwrap();
    let before = cert.current();

    std::fs::write(&files.server_cert, "not a certificate").unwrap();
    assert!(cert.reload().is_err());
    assert!(Arc::ptr_eq(&before, &cert.current()));

    let fresh = DevPki::generate(LOCAL_NAMES)
        .unwrap()
        .write_to(dir.path())
        .unwrap();
    cert.reload().unwrap();
    assert_ne!(before.cert[0], cert.current().cert[0]);
    let _ = fresh;
}
