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

/// Builds a rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3).
pub fn server_config(certfile: &Path, keyfile: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let tls = TlsError;
    let open = |path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|e| tls(format!("cannot open {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(certfile)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("{}: {e}", certfile.display())))?;
    if certs.is_empty() {
        return Err(tls(format!(
            "{} holds no PEM certificate",
            certfile.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(keyfile)?)
        .map_err(|e| tls(format!("{}: {e}", keyfile.display())))?
        .ok_or_else(|| tls(format!("{} holds no PEM private key", keyfile.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(format!("certificate and key do not fit: {e}")))
}
