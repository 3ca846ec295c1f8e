//! [`check`]: everything [`super::start`] loads from the settings before it
//! listens, without binding anything (`switchboard check-config`).

use std::path::Path;

use redis::IntoConnectionInfo;

use crate::config::{ConfigError, Settings};
use crate::server::auth::Authenticator;

/// Loads what a start loads from already-validated `settings`, binding no
/// port and connecting to nothing: the auth tokens file, the relay's and
/// the tunnel's TLS certificate and key, each tunnel service's token, and
/// with the cluster on, its Redis URL, password and TLS files.
///
/// Errors: [`ConfigError::Invalid`] naming the key whose file or value a
/// start would refuse.
pub fn check(settings: &Settings) -> Result<(), ConfigError> {
    Authenticator::from_settings(&settings.auth)?;
    let server = &settings.server;
    if let (Some(cert), Some(key)) = (&server.certfile, &server.keyfile) {
        check_tls("server", cert, key)?;
    }
    let tunnel = &settings.tunnel;
    if !tunnel.services.is_empty() {
        if let (Some(cert), Some(key)) = (&tunnel.certfile, &tunnel.keyfile) {
            check_tls("tunnel", cert, key)?;
        }
        for service in &tunnel.services {
            service.load_token()?;
        }
    }
    let cluster = &settings.cluster;
    if cluster.enabled {
        cluster
            .redis_url
            .expose()
            .into_connection_info()
            .map_err(|e| ConfigError::Invalid {
                key: "cluster.redis_url".into(),
                message: format!("{}: {e}", cluster.redis_url),
            })?;
        cluster.load_password()?;
        cluster.load_tls()?;
    }
    Ok(())
}

/// Builds the TLS configuration `section.certfile` and `section.keyfile`
/// name; an error names the key file when the message is about it.
fn check_tls(section: &str, cert: &Path, key: &Path) -> Result<(), ConfigError> {
    crate::tls::server_config_blamed(cert, key).map_err(|blamed| {
        let name = match blamed.file {
            crate::tls::TlsFile::Cert => "certfile",
            crate::tls::TlsFile::Key => "keyfile",
        };
        ConfigError::Invalid {
            key: format!("{section}.{name}"),
            message: blamed.error.0,
        }
    })?;
    Ok(())
}
