//! The tasks moving bytes between a [`Connection`](super::Connection) and its data
//! channels: one reader per channel, one sender per connection.
//!
//! Readers await the actor's bounded mailbox for every chunk, so a slow
//! application slows the reader, SCTP's receive window fills, and the peer
//! waits: nothing is buffered without bound. The sender awaits
//! `DataChannel::send`, which waits while a channel has more than the
//! configured send-buffer limit outstanding, and records every chunk it hands
//! over in the connection's acknowledgement ledger ([`super::acks`]); readers
//! refresh the ledger when their channel's send buffer drains, and the sender
//! while its queue is empty and chunks are not yet acknowledged. A hand-over
//! that waits while the peer acknowledges nothing for the stall limit ends
//! the connection (its peer is gone, or stopped reading for that long).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::WeakAddr;
use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::acks::Acks;
use super::types::{ChannelClosed, ChannelOpen, MessageIn, SendFailed};
use super::{Connection, ConnectionError};
use crate::defaults;
use crate::protocol::chunk::{self, Payload, Reassembler};

/// What the sender task takes from its queue.
pub(super) enum Outgoing {
    /// A message to cut into chunks and hand to the channels.
    Message {
        payload: Payload,
        stream_id: u32,
        done: oneshot::Sender<Result<(), ConnectionError>>,
    },
    /// Answered once every message queued before it was handed over.
    Barrier(oneshot::Sender<()>),
}

/// The reassembly state all readers of one connection share. The readers run
/// on the connection's thread, so the lock is never contended.
pub(super) type SharedReassembler = Arc<Mutex<Reassembler>>;

/// What a reader needs besides its channel.
pub(super) struct Reader {
    pub index: usize,
    pub addr: WeakAddr<Connection>,
    pub reassembler: SharedReassembler,
    pub acks: Acks,
    pub log: String,
}

/// Forwards the events of one channel to the connection until it closes.
/// Chunks are reassembled here; the actor gets whole messages (and the
/// reader waits for each to be taken, which bounds what is buffered).
pub(super) async fn read_channel(channel: Arc<dyn DataChannel>, reader: Reader) {
    let index = reader.index;
    while let Some(event) = channel.poll().await {
        let Some(connection) = reader.addr.upgrade() else {
            return;
        };
        match event {
            DataChannelEvent::OnOpen => connection.do_send(ChannelOpen { index }),
            DataChannelEvent::OnMessage(message) => {
                let pushed = reader
                    .reassembler
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(message.data.freeze());
                match pushed {
                    Ok(Some((_, payload))) => {
                        if connection.send(MessageIn(payload)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => log::warn!("{} dropped a chunk: {error}", reader.log),
                }
            }
            // Everything SCTP had of this channel is acknowledged (the
            // threshold is 0). When the peer closed right after its last
            // acknowledgement (a listener that exits once it has the
            // message), the channel is gone by the time it can be read: the
            // event itself still says the count reached 0.
            DataChannelEvent::OnBufferedAmountLow => {
                if reader.acks.refresh(index, &channel).await.is_err() {
                    reader.acks.drained_when_closed(index);
                }
                reader.acks.drained.notify_waiters();
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    if let Some(connection) = reader.addr.upgrade() {
        connection.do_send(ChannelClosed { index });
    }
}

/// What the sender task needs besides its queue.
pub(super) struct Sender {
    pub channels: Vec<Arc<dyn DataChannel>>,
    pub chunk_size: usize,
    pub acks: Acks,
    /// How long a hand-over may wait while the peer acknowledges nothing.
    pub stall: Duration,
    pub addr: WeakAddr<Connection>,
}

/// Sends queued messages, chunk `i` of each on channel `i mod N`, until the
/// queue closes. A message the channels did not take whole ends the
/// connection (a refused chunk: it is closing already; a stalled hand-over:
/// the sender ends it) and fails every message queued after it.
pub(super) async fn send_loop(sender: Sender, mut queue: mpsc::Receiver<Outgoing>) {
    let Sender {
        channels,
        chunk_size,
        acks,
        stall,
        addr,
    } = sender;
    let watch = Duration::from_millis(defaults::PEER_ACK_WATCH_MS);
    loop {
        let idle_with_pending = acks.lock().has_pending();
        let outgoing = tokio::select! {
            biased;
            next = queue.recv() => match next {
                Some(outgoing) => outgoing,
                None => break,
            },
            () = async {
                tokio::time::sleep(watch).await;
                acks.refresh_all(&channels).await;
            }, if idle_with_pending => continue,
        };
        let (payload, stream_id, done) = match outgoing {
            Outgoing::Barrier(reached) => {
                let _ = reached.send(());
                continue;
            }
            Outgoing::Message {
                payload,
                stream_id,
                done,
            } => (payload, stream_id, done),
        };
        let message = Message {
            payload,
            stream_id,
            chunk_size,
            stall,
        };
        let result = send_message(&channels, &acks, message).await;
        // A message that could not be cut into chunks fails alone.
        let failed = matches!(&result, Err(error) if !matches!(error, ConnectionError::Chunk(_)));
        // A message taken on and not wholly handed over is lost with the
        // connection: say how far the peer got.
        let result = result.map_err(|error| match error {
            ConnectionError::Chunk(_) | ConnectionError::Unacknowledged { .. } => error,
            error => acks.unacknowledged(error.to_string()).unwrap_or(error),
        });
        if failed {
            if let (Some(connection), Err(error)) = (addr.upgrade(), &result) {
                connection.do_send(SendFailed(error.clone()));
            }
            queue.close();
        }
        let _ = done.send(result);
        if failed {
            continue;
        }
        if acks.lock().needs_refresh() {
            acks.refresh_all(&channels).await;
        }
    }
}

/// One message for [`send_message`].
struct Message {
    payload: Payload,
    stream_id: u32,
    chunk_size: usize,
    stall: Duration,
}

async fn send_message(
    channels: &[Arc<dyn DataChannel>],
    acks: &Acks,
    message: Message,
) -> Result<(), ConnectionError> {
    let len = message.payload.len();
    let chunks = chunk::chunks(message.payload, message.stream_id, message.chunk_size)
        .map_err(|e| ConnectionError::Chunk(e.to_string()))?;
    acks.lock().accept(len);
    for (i, chunk) in chunks.enumerate() {
        let index = i % channels.len();
        // Each chunk was just written into its own buffer: this does not copy.
        let data = chunk
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let wire = data.len();
        let send = channels[index].send(data);
        acks.hand_over(send, channels, message.stall).await?;
        acks.lock()
            .record(index, wire, wire.saturating_sub(chunk::HEADER_LEN));
    }
    Ok(())
}
