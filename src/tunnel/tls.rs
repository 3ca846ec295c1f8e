//! Optional TLS on agent connections (control and data): rustls with the
//! ring provider, the relay's certificate from `tunnel.certfile` /
//! `tunnel.keyfile`, the agent trusting a CA file or the web PKI roots.
//!
//! Plain connections stay plain `TcpStream`s (and can use splice); TLS ones
//! are the right side of an [`Either`]. (Reading a TLS socket through a
//! 64 KiB buffer, since rustls reads at most 4 KiB per call, cut the system
//! calls per MiB by half but not the CPU time: BENCHMARKS.md, "TLS and set-up".)
//!
//! Agents resume TLS sessions (rustls's in-memory ticket cache in the
//! agent, the relay's session cache): a pool refill after the first skips
//! the certificate signature and its verification. [`AgentTls::connect`]
//! counts full and resumed handshakes.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::HandshakeKind;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::either::Either;

use super::error::{TlsMismatch, TunnelError};
use crate::tls::TlsError;

/// An agent connection as the relay holds it.
pub type RelayConn = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;
/// A relay connection as the agent holds it.
pub type AgentConn = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// TLS handshakes an agent completed, ever: all of them, and those that
/// resumed an earlier session.
#[derive(Debug, Default)]
pub struct Handshakes {
    /// Handshakes completed.
    pub full_or_resumed: AtomicU64,
    /// Of those, resumed ones.
    pub resumed: AtomicU64,
}

/// The relay's TLS acceptor for agent connections.
pub fn acceptor(certfile: &Path, keyfile: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = crate::tls::server_config(certfile, keyfile)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How an agent connects over TLS.
#[derive(Clone)]
pub struct AgentTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// Shared by every clone (one agent's connections).
    pub handshakes: Arc<Handshakes>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentTls({:?})", self.server_name)
    }
}

impl AgentTls {
    /// Trusts the PEM certificates in `ca_file`, or the web PKI roots without
    /// one; checks the relay's certificate against `server_name`.
    pub fn new(ca_file: Option<&Path>, server_name: &str) -> Result<AgentTls, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{} holds no PEM certificate", path.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(agent_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
        Ok(AgentTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            handshakes: Arc::default(),
        })
    }

    /// Runs the TLS handshake on a connected socket. An answer that is not
    /// TLS at all (a relay without `tunnel.certfile` answers with a plain
    /// frame) is [`TlsMismatch::RelayWithoutTls`].
    pub async fn connect(&self, stream: TcpStream) -> Result<AgentConn, TunnelError> {
        match self
            .connector
            .connect(self.server_name.clone(), stream)
            .await
        {
            Ok(tls) => {
                let h = &self.handshakes;
                h.full_or_resumed.fetch_add(1, Ordering::Relaxed);
                if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                    h.resumed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Either::Right(tls))
            }
            Err(e) if not_tls(&e) => Err(TlsMismatch::RelayWithoutTls.into()),
            Err(e) => match certificate_error(&e) {
                Some(why) => Err(TunnelError::UntrustedRelay(why)),
                None => Err(e.into()),
            },
        }
    }
}

/// The ring provider with `TLS13_AES_128_GCM_SHA256` first (then ring's
/// default order). The agent is the TLS client and the relay follows the
/// client's order, so this picks the suite of every agent link. It is
/// TLS 1.3's mandatory suite (RFC 8446 §9.1) at x25519's 128-bit security
/// level, and it is cheaper than ring's first choice, `AES_256_GCM_SHA384`:
/// the key schedule's HMACs run on SHA-256 (SHA-NI where the CPU has it)
/// instead of SHA-512, which was a quarter of a pool refill's resumed
/// handshake, and AES-128 has 10 rounds against 14 (BENCHMARKS.md, "TLS and
/// set-up").
fn agent_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// Why the relay's certificate was refused, if that is why the handshake failed.
fn certificate_error(error: &std::io::Error) -> Option<String> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        e @ rustls::Error::InvalidCertificate(_) => Some(e.to_string()),
        _ => None,
    }
}

/// Whether a TLS handshake failed because the peer's bytes are no TLS records.
fn not_tls(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)))
}
