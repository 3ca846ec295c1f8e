//! rustls server configuration from PEM files, shared by the relay's public
//! listener (`server.certfile`, `server.keyfile`) and the tunnel's agents
//! listener (`tunnel.certfile`, `tunnel.keyfile`).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

/// Why a certificate and key could not be turned into a TLS configuration;
/// the message names the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// Which of the two files a [`Blamed`] error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate file (`certfile`).
    Cert,
    /// The key file (`keyfile`), including a key that does not belong to
    /// the certificate.
    Key,
}

/// A [`TlsError`] with the file it is about, so that a caller can name its
/// own setting for that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blamed {
    /// The file at fault.
    pub file: TlsFile,
    /// What is wrong, naming the file.
    pub error: TlsError,
}

/// Builds a rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3).
pub fn server_config(certfile: &Path, keyfile: &Path) -> Result<rustls::ServerConfig, TlsError> {
    server_config_blamed(certfile, keyfile).map_err(|b| b.error)
}

/// [`server_config`] whose error says which file is at fault.
pub fn server_config_blamed(
    certfile: &Path,
    keyfile: &Path,
) -> Result<rustls::ServerConfig, Blamed> {
    let blame = |file: TlsFile, message: String| Blamed {
        file,
        error: TlsError(message),
    };
    let open = |file: TlsFile, path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|e| blame(file, format!("cannot open {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(TlsFile::Cert, certfile)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| blame(TlsFile::Cert, format!("{}: {e}", certfile.display())))?;
    if certs.is_empty() {
        return Err(blame(
            TlsFile::Cert,
            format!("{} holds no PEM certificate", certfile.display()),
        ));
    }
    let key = rustls_pemfile::private_key(&mut open(TlsFile::Key, keyfile)?)
        .map_err(|e| blame(TlsFile::Key, format!("{}: {e}", keyfile.display())))?
        .ok_or_else(|| {
            blame(
                TlsFile::Key,
                format!("{} holds no PEM private key", keyfile.display()),
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| blame(TlsFile::Cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => blame(
                TlsFile::Key,
                format!(
                    "the key does not belong to the certificate: the key in {} is not the one of the certificate in {}",
                    keyfile.display(),
                    certfile.display()
                ),
            ),
            other => blame(
                TlsFile::Key,
                format!(
                    "the key in {} cannot serve the certificate in {}: {other}",
                    keyfile.display(),
                    certfile.display()
                ),
            ),
        })
}
