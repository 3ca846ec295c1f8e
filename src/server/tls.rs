//! rustls server configuration from PEM files (`server.certfile`, `server.keyfile`).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use super::ServerError;

/// Builds a rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3).
pub fn server_config(certfile: &Path, keyfile: &Path) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |what: String| ServerError::Tls(what);
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
