//! Settings and files several test files need: token auth, a self-signed certificate.
#![allow(dead_code)]

use std::io::Write;

use switchboard::config::{AuthMethod, Secret, Settings};

use super::test_settings;

/// Test settings with token auth: users alice (`alice-token`) and bob (`bob-token`).
pub fn token_settings() -> Settings {
    let mut settings = test_settings();
    settings.auth.method = AuthMethod::Token;
    for user in ["alice", "bob"] {
        settings
            .auth
            .tokens
            .insert(user.into(), Secret::new(format!("{user}-token")));
    }
    settings
}

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files and DER.
pub struct Pem {
    pub cert: tempfile::NamedTempFile,
    pub key: tempfile::NamedTempFile,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

/// Generates a fresh [`Pem`].
pub fn self_signed() -> Pem {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let mut cert_file = tempfile::NamedTempFile::new().unwrap();
    cert_file.write_all(cert.pem().as_bytes()).unwrap();
    let mut key_file = tempfile::NamedTempFile::new().unwrap();
    key_file
        .write_all(signing_key.serialize_pem().as_bytes())
        .unwrap();
    Pem {
        cert: cert_file,
        key: key_file,
        der: cert.der().clone(),
    }
}

/// Test settings serving `wss://` with `pem`'s certificate.
pub fn tls_settings(pem: &Pem) -> Settings {
    let mut settings = test_settings();
    settings.server.certfile = Some(pem.cert.path().to_path_buf());
    settings.server.keyfile = Some(pem.key.path().to_path_buf());
    settings
}
