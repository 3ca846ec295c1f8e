//! How a session's input ends: a frame the relay refuses, or the client's
//! stream ending without a close handshake.

use actix::prelude::*;

use super::WsSession;
use crate::protocol::close;
use crate::server::inbound::{InboundError, StreamEnd};

impl WsSession {
    /// A frame the relay cannot accept: close with the code that fits.
    pub(super) fn refuse_frame(&mut self, ctx: &mut Context<Self>, error: &InboundError) {
        let code = error.close_code();
        let reason = match error {
            InboundError::TooLarge { limit } => {
                log::warn!(
                    "{} message larger than max_message_bytes ({limit}); closing with {code}",
                    self.tag
                );
                close::REASON_TOO_LARGE
            }
            InboundError::InvalidUtf8 => {
                log::warn!("{} {error}; closing with {code}", self.tag);
                "Invalid UTF-8."
            }
            InboundError::BadCloseCode(_) => {
                log::warn!("{} {error}; closing with {code}", self.tag);
                "Protocol error."
            }
            InboundError::Protocol(error) => {
                log::warn!(
                    "{} WebSocket protocol error ({error}); closing with {code}",
                    self.tag
                );
                "Protocol error."
            }
        };
        self.close(ctx, code, reason);
    }

    /// The client's stream ended (FIN, reset, or mid-frame) after every
    /// whole message in it was handled. Without a close handshake this is an
    /// abnormal closure (1006, RFC 6455 §7.1.5): nothing is written back but
    /// what is already queued, such as the answer to a registration.
    pub(super) fn ended(&mut self, ctx: &mut Context<Self>, end: StreamEnd) {
        self.input_done = true;
        if self.closing() {
            if self.close_sent {
                ctx.stop();
            }
            return;
        }
        log::info!(
            "{} connection ended without a close frame (1006){}{}",
            self.tag,
            match end.unfinished_bytes {
                0 => String::new(),
                n => format!("; {n} bytes of an unfinished frame dropped"),
            },
            end.cause.map(|c| format!(" ({c})")).unwrap_or_default()
        );
        self.state.metrics.abnormal_closures.inc();
        self.out.finish();
        ctx.run_later(self.state.close_flush, |_, ctx| ctx.stop());
    }
}
