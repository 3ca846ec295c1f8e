//! Reaching the relay: one connection's (optional TLS and) handshake, for
//! the control channel and each pooled data connection alike, and the
//! backoff between attempts.

use std::time::Duration;

use rand::Rng;
use tokio_util::either::Either;

use super::settings::AgentSettings;
use crate::protocol::tunnel::{self, Frame, FrameError, Role};
use crate::tunnel::error::{TlsMismatch, TunnelError};
use crate::tunnel::framing::{write_frame, FrameReader};
use crate::tunnel::net::tune_agent_socket;
use crate::tunnel::tls::AgentConn;

/// Capped, jittered exponential backoff.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `min`, doubles per attempt, never exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in [base/2, base], base = min·2^attempt capped at max.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let factor = rand::rng().random_range(0.5..=1.0);
        base.mul_f64(factor)
    }

    /// Back to `min` (after a stable session).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Connects to the relay and completes the handshake; returns the session id.
pub(super) async fn connect(
    settings: &AgentSettings,
    role: Role,
    session: u64,
) -> Result<(AgentConn, FrameReader, u64), TunnelError> {
    let limit = settings.handshake_timeout;
    let tcp = settings.proxy.connect(&settings.relay, limit).await?;
    let _ = tcp.set_nodelay(true);
    if let Err(e) = tune_agent_socket(&tcp) {
        log::debug!("tunnel agent: keepalive not set: {e}");
    }
    let mut stream = match &settings.tls {
        None => Either::Left(tcp),
        Some(tls) => tokio::time::timeout(limit, tls.connect(tcp))
            .await
            .map_err(|_| TunnelError::Timeout("in the TLS handshake"))??,
    };
    // A plain agent reading a TLS record: the relay's alert.
    let plain = settings.tls.is_none();
    let mismatch = |e| match e {
        TunnelError::Frame(FrameError::TlsRecord(_)) if plain => {
            TlsMismatch::RelayRequiresTls.into()
        }
        e => e,
    };
    let mut reader = FrameReader::new();
    let hello = Frame::Hello {
        role,
        service: settings.service.clone(),
        session,
        transport: settings.local.transport(),
    };
    write_frame(&mut stream, &hello).await?;
    let nonce = match reader
        .next_within(&mut stream, limit, "waiting for the challenge")
        .await
        .map_err(mismatch)?
    {
        Frame::Challenge { nonce } => nonce,
        Frame::Error { code, reason } => return Err(TunnelError::Refused { code, reason }),
        other => return Err(TunnelError::Unexpected(format!("{other:?}"))),
    };
    let token = settings.token.expose().as_bytes();
    let mac = tunnel::proof(token, role, &settings.service, session, &nonce);
    write_frame(&mut stream, &Frame::Proof { mac }).await?;
    match reader
        .next_within(&mut stream, limit, "waiting for acceptance")
        .await
        .map_err(mismatch)?
    {
        Frame::Accepted { session } => Ok((stream, reader, session)),
        Frame::Error { code, reason } => Err(TunnelError::Refused { code, reason }),
        other => Err(TunnelError::Unexpected(format!("{other:?}"))),
    }
}
