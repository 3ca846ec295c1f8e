//! `[cluster]`: several relay nodes sharing one Redis (src/cluster), and validation.
//!
//! Off by default: a node without this section works alone, without Redis.
//! The Redis password is never held in a printable form: a password inside
//! `redis_url` is masked by [`RedisUrl`]'s `Debug` and `Display`, and one
//! named by `password_env` or `password_file` is read only when the engine
//! connects, into a [`Secret`].

use std::fmt;
use std::path::PathBuf;

use redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};

use super::{invalid, mask_url_password, read_token_file, ConfigError, Secret, MASK};
use crate::defaults;

/// `[cluster]`: scale-out over Redis.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Whether this node joins a cluster at all.
    pub enabled: bool,
    /// The shared Redis: `redis://` or `rediss://` (TLS, rustls), with an
    /// optional `user:password@` and `/db`.
    pub redis_url: RedisUrl,
    /// Name of an environment variable holding the Redis password.
    pub password_env: Option<String>,
    /// A file whose first line is the Redis password.
    pub password_file: Option<PathBuf>,
    /// With `rediss://`: PEM file of the CA certificate(s) to trust for
    /// Redis's certificate, instead of the Web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// With `rediss://`: PEM file of this node's client certificate chain,
    /// for a Redis that asks for one (`tls-auth-clients yes`); with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// With `rediss://`: PEM file of the private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// This node's id in Redis; empty means a fresh UUID at every start.
    pub node_id: String,
    /// Prefix of every key and channel: 1-64 characters of `[A-Za-z0-9:_-]`.
    pub key_prefix: String,
    /// Interval at which the node refreshes its liveness key, in milliseconds.
    pub heartbeat_ms: u64,
    /// Lifetime of the liveness key, in milliseconds (more than twice the heartbeat).
    pub node_ttl_ms: u64,
    /// Time one Redis command gets to answer, in milliseconds.
    pub command_timeout_ms: u64,
    /// Time one connection attempt to Redis gets, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Interval of the subscription self-check, in milliseconds.
    pub self_check_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: defaults::CLUSTER_ENABLED,
            redis_url: RedisUrl(defaults::CLUSTER_REDIS_URL.into()),
            password_env: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            node_id: String::new(),
            key_prefix: defaults::CLUSTER_KEY_PREFIX.into(),
            heartbeat_ms: defaults::CLUSTER_HEARTBEAT_MS,
            node_ttl_ms: defaults::CLUSTER_NODE_TTL_MS,
            command_timeout_ms: defaults::CLUSTER_COMMAND_TIMEOUT_MS,
            connect_timeout_ms: defaults::CLUSTER_CONNECT_TIMEOUT_MS,
            self_check_ms: defaults::CLUSTER_SELF_CHECK_MS,
        }
    }
}

/// A Redis URL whose password, if it holds one, prints as `MASKED`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        RedisUrl(url.into())
    }
    /// The URL itself, password included; call only to connect, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with the password of its `user:password@` part replaced by
    /// `MASKED` (the whole part when it has no `:`).
    pub fn masked(&self) -> String {
        mask_url_password(&self.0, "MASKED")
    }
}

/// Serializes with the password masked as [`MASK`] (`switchboard check-config`).
impl Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&mask_url_password(&self.0, MASK))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", self.masked())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// What a `rediss://` connection trusts and shows, as PEM.
#[derive(Clone)]
pub struct RedisTls {
    /// The CA certificate(s) to trust (`cluster.ca_file`); `None`: the Web PKI roots.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain and its key, for mutual TLS.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "PEM"))
            .field("client", &self.client.as_ref().map(|_| "PEM, key MASKED"))
            .finish()
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// Reads the PEM file of `key` and checks that it holds `what`.
fn read_pem(path: &std::path::Path, key: &str, what: Pem) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let mut reader = &bytes[..];
    let found = match what {
        Pem::Certificates => {
            let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut reader).collect();
            match certs {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err("holds no PEM certificate".to_owned()),
                Err(e) => Err(format!("is not valid PEM: {e}")),
            }
        }
        Pem::PrivateKey => match rustls_pemfile::private_key(&mut reader) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("holds no PEM private key".to_owned()),
            Err(e) => Err(format!("is not valid PEM: {e}")),
        },
    };
    found.map_err(|m| invalid(key, format!("{} {m}", path.display())))?;
    Ok(bytes)
}

/// Whether `id` can name a node: 1-64 characters of `[A-Za-z0-9._-]` (it is
/// part of key and channel names, so never `:`).
pub fn valid_node_id(id: &str) -> bool {
    (1..=defaults::CLUSTER_NODE_ID_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `prefix` can start every key: 1-64 characters of `[A-Za-z0-9:_-]`.
pub fn valid_key_prefix(prefix: &str) -> bool {
    (1..=defaults::CLUSTER_KEY_PREFIX_MAX).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

impl ClusterSettings {
    /// The node id to use for this start: `node_id`, or a fresh UUID when it is empty.
    pub fn resolve_node_id(&self) -> String {
        if self.node_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            self.node_id.clone()
        }
    }

    /// The Redis password from `password_env` or `password_file`, if one is
    /// configured (a password inside `redis_url` is left to the URL).
    pub fn load_password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(name) = &self.password_env {
            return match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
                _ => Err(invalid(
                    "cluster.password_env",
                    format!("environment variable {name} is not set or empty"),
                )),
            };
        }
        match &self.password_file {
            Some(path) => read_token_file(path)
                .map(Some)
                .map_err(|message| invalid("cluster.password_file", message)),
            None => Ok(None),
        }
    }

    /// Checks every `cluster.*` key; when the cluster is enabled, also that
    /// the password's variable or file can be read.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_url()?;
        if self.password_env.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("cluster.password_env", "must not be empty"));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(invalid(
                "cluster.password_file",
                "give cluster.password_env or cluster.password_file, not both",
            ));
        }
        if !self.node_id.is_empty() && !valid_node_id(&self.node_id) {
            return Err(invalid(
                "cluster.node_id",
                format!(
                    "{:?} must be empty or 1-64 characters of A-Z a-z 0-9 . _ -",
                    self.node_id
                ),
            ));
        }
        if !valid_key_prefix(&self.key_prefix) {
            return Err(invalid(
                "cluster.key_prefix",
                format!(
                    "{:?} must be 1-64 characters of A-Z a-z 0-9 : _ -",
                    self.key_prefix
                ),
            ));
        }
        for (key, value) in [
            ("cluster.heartbeat_ms", self.heartbeat_ms),
            ("cluster.command_timeout_ms", self.command_timeout_ms),
            ("cluster.connect_timeout_ms", self.connect_timeout_ms),
            ("cluster.self_check_ms", self.self_check_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.node_ttl_ms <= self.heartbeat_ms.saturating_mul(2) {
            return Err(invalid(
                "cluster.node_ttl_ms",
                "must be more than twice cluster.heartbeat_ms",
            ));
        }
        self.validate_tls_keys()?;
        if self.enabled {
            self.load_password()?;
            self.load_tls()?;
        }
        Ok(())
    }

    /// The TLS files go with `rediss://`, the certificate with its key.
    fn validate_tls_keys(&self) -> Result<(), ConfigError> {
        let tls = self.redis_url.expose().starts_with("rediss://");
        for (key, value) in [
            ("cluster.ca_file", &self.ca_file),
            ("cluster.client_cert_file", &self.client_cert_file),
            ("cluster.client_key_file", &self.client_key_file),
        ] {
            if value.is_some() && !tls {
                return Err(invalid(
                    key,
                    "is only used with a rediss:// cluster.redis_url (TLS)",
                ));
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => Err(invalid(
                "cluster.client_key_file",
                "must be given with cluster.client_cert_file",
            )),
            (None, Some(_)) => Err(invalid(
                "cluster.client_cert_file",
                "must be given with cluster.client_key_file",
            )),
            _ => Ok(()),
        }
    }

    /// The TLS material of `ca_file`, `client_cert_file` and
    /// `client_key_file`, read and checked (PEM that parses, at least one
    /// certificate, one private key); `None` when none is set.
    pub fn load_tls(&self) -> Result<Option<RedisTls>, ConfigError> {
        let ca = match &self.ca_file {
            Some(path) => Some(read_pem(path, "cluster.ca_file", Pem::Certificates)?),
            None => None,
        };
        let client = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem(cert, "cluster.client_cert_file", Pem::Certificates)?,
                Secret::new(String::from_utf8_lossy(&read_pem(
                    key,
                    "cluster.client_key_file",
                    Pem::PrivateKey,
                )?)),
            )),
            _ => None,
        };
        if ca.is_none() && client.is_none() {
            return Ok(None);
        }
        Ok(Some(RedisTls { ca, client }))
    }

    fn validate_url(&self) -> Result<(), ConfigError> {
        let url = self.redis_url.expose();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                "cluster.redis_url",
                format!("{} must start with redis:// or rediss://", self.redis_url),
            ));
        }
        if url.contains('#') {
            return Err(invalid(
                "cluster.redis_url",
                "a fragment (#insecure) is not supported: rediss:// always verifies the server",
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| invalid("cluster.redis_url", format!("{}: {e}", self.redis_url)))?;
        let in_url = info.redis_settings().password().is_some();
        if in_url && (self.password_env.is_some() || self.password_file.is_some()) {
            return Err(invalid(
                "cluster.redis_url",
                "holds a password, and so do cluster.password_env or cluster.password_file",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        for (url, shown) in [
            ("redis://:hunter2@db:6379/0", "redis://:MASKED@db:6379/0"),
            ("rediss://ops:hunter2@db", "rediss://ops:MASKED@db"),
            ("redis://hunter2@db/1", "redis://MASKED@db/1"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://db/0?x=a@b", "redis://db/0?x=a@b"),
        ] {
            let url = RedisUrl::new(url);
            assert_eq!(url.masked(), shown);
            assert!(!format!("{url:?} {url}").contains("hunter2"));
        }
    }

    #[test]
    fn names_and_prefixes() {
        assert!(valid_node_id("node-1.eu_west"));
        assert!(!valid_node_id("a:b") && !valid_node_id("") && !valid_node_id(&"x".repeat(65)));
        assert!(valid_key_prefix("switchboard:") && valid_key_prefix("a"));
        assert!(
            !valid_key_prefix("") && !valid_key_prefix("sb prefix") && !valid_key_prefix("{x}")
        );
    }
}
