//! Target for the relay's WebSocket frame reader (`server::inbound`), which
//! reads every byte a client sends after the upgrade.

use crate::server::inbound::{FrameReader, Inbound, InboundError};

/// The largest message the target's reader accepts, in bytes (small, so
/// fragments and oversized frames are reached quickly).
const LIMIT: usize = 4096;

/// What a reader yields for a byte stream: the messages, then how it stopped.
#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Inbound>,
    /// The close code of the error that stopped it, if one did.
    error: Option<u16>,
}

/// Feeds `stream` in chunks whose sizes cycle through `splits` (each 1..=64).
fn read(stream: &[u8], splits: &[u8]) -> Outcome {
    let mut reader = FrameReader::new(LIMIT);
    let mut messages = Vec::new();
    let mut at = 0;
    let mut step = 0;
    while at < stream.len() {
        let size = splits
            .get(step % splits.len().max(1))
            .map_or(stream.len(), |s| usize::from(*s % 64) + 1);
        step += 1;
        let end = (at + size).min(stream.len());
        reader.push(&stream[at..end]);
        at = end;
        loop {
            match reader.next_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(error) => return stopped(messages, &error, stream.len()),
            }
        }
        assert!(reader.unfinished_bytes() <= at, "more unfinished than fed");
    }
    Outcome {
        messages,
        error: None,
    }
}

fn stopped(messages: Vec<Inbound>, error: &InboundError, fed: usize) -> Outcome {
    check_sizes(&messages, fed);
    Outcome {
        messages,
        error: Some(error.close_code()),
    }
}

/// No message is larger than the limit, nor are they together larger than the input.
fn check_sizes(messages: &[Inbound], fed: usize) {
    let mut total = 0;
    for message in messages {
        let len = match message {
            Inbound::Text(t) => t.len(),
            Inbound::Binary(b) | Inbound::Ping(b) | Inbound::Pong(b) => b.len(),
            Inbound::Close(_) | Inbound::Ended(_) => 0,
        };
        assert!(
            len <= LIMIT,
            "a {len}-byte message passed the {LIMIT}-byte limit"
        );
        total += len;
    }
    assert!(total <= fed, "{total} message bytes out of {fed} fed");
}

/// The first byte picks how many split sizes follow; the rest is the client's
/// byte stream. Checks: no panic; sizes bounded (see `check_sizes`); the
/// messages and the error are the same whether the stream arrives whole or
/// in pieces (a reader must not depend on how TCP cut the stream).
pub fn ws_inbound(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (splits, stream) = rest.split_at(n);
    let whole = read(stream, &[]);
    check_sizes(&whole.messages, stream.len());
    if !splits.is_empty() {
        assert_eq!(read(stream, splits), whole, "split reads differ");
    }
}
