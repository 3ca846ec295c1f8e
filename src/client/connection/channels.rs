//! The tasks moving bytes between a [`Connection`](super::Connection) and its data
//! channels: one reader per channel, one sender per connection.
//!
//! Readers await the actor's bounded mailbox for every chunk, so a slow
//! application slows the reader, SCTP's receive window fills, and the peer
//! waits: nothing is buffered without bound. The sender awaits
//! `DataChannel::send`, which waits while a channel has more than the
//! configured send-buffer limit outstanding.

use std::sync::{Arc, Mutex};

use actix::WeakAddr;
use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::{ChannelClosed, ChannelOpen, Connection, ConnectionError, MessageIn};
use crate::protocol::chunk::{self, Payload, Reassembler};

/// One message waiting for the sender task.
pub(super) struct Outgoing {
    pub payload: Payload,
    pub stream_id: u32,
    pub done: oneshot::Sender<Result<(), ConnectionError>>,
}

/// The reassembly state all readers of one connection share. The readers run
/// on the connection's thread, so the lock is never contended.
pub(super) type SharedReassembler = Arc<Mutex<Reassembler>>;

/// What a reader needs besides its channel.
pub(super) struct Reader {
    pub index: usize,
    pub addr: WeakAddr<Connection>,
    pub reassembler: SharedReassembler,
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
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    if let Some(connection) = reader.addr.upgrade() {
        connection.do_send(ChannelClosed { index });
    }
}

/// Sends queued messages, chunk `i` of each on channel `i mod N`, until the queue closes.
pub(super) async fn send_loop(
    channels: Vec<Arc<dyn DataChannel>>,
    chunk_size: usize,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    while let Some(outgoing) = queue.recv().await {
        let result =
            send_message(&channels, chunk_size, outgoing.payload, outgoing.stream_id).await;
        let failed = result.is_err();
        let _ = outgoing.done.send(result);
        if failed {
            // A channel refused a chunk: the connection is closing. Fail the rest.
            queue.close();
        }
    }
}

async fn send_message(
    channels: &[Arc<dyn DataChannel>],
    chunk_size: usize,
    payload: Payload,
    stream_id: u32,
) -> Result<(), ConnectionError> {
    let chunks = chunk::chunks(payload, stream_id, chunk_size)
        .map_err(|e| ConnectionError::Chunk(e.to_string()))?;
    for (i, chunk) in chunks.enumerate() {
        let channel = &channels[i % channels.len()];
        // Each chunk was just written into its own buffer: this does not copy.
        let data = chunk
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        channel
            .send(data)
            .await
            .map_err(|e| ConnectionError::Closed(format!("data channel refused a chunk: {e}")))?;
    }
    Ok(())
}
