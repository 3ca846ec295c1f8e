//! The tasks moving bytes between a [`Connection`](super::Connection) and its data
//! channels: one reader per channel, one sender per connection.
//!
//! Readers await the actor's bounded mailbox for every chunk, so a slow
//! application slows the reader, SCTP's receive window fills, and the peer
//! waits: nothing is buffered without bound. The sender awaits
//! `DataChannel::send`, which waits while a channel has more than the
//! configured send-buffer limit outstanding.

use std::sync::Arc;

use actix::WeakAddr;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::{ChannelClosed, ChannelOpen, ChunkIn, Connection, ConnectionError};
use crate::protocol::chunk::{self, Payload};

/// One message waiting for the sender task.
pub(super) struct Outgoing {
    pub payload: Payload,
    pub stream_id: u32,
    pub done: oneshot::Sender<Result<(), ConnectionError>>,
}

/// Forwards the events of channel `index` to the connection until it closes.
pub(super) async fn read_channel(
    channel: Arc<dyn DataChannel>,
    index: usize,
    addr: WeakAddr<Connection>,
) {
    while let Some(event) = channel.poll().await {
        let Some(connection) = addr.upgrade() else {
            return;
        };
        match event {
            DataChannelEvent::OnOpen => connection.do_send(ChannelOpen { index }),
            DataChannelEvent::OnMessage(message) => {
                let data: Bytes = message.data.freeze();
                if connection.send(ChunkIn { data }).await.is_err() {
                    return;
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    if let Some(connection) = addr.upgrade() {
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
