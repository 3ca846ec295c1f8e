//! Which of the bytes a [`Connection`](super::Connection) handed to its data
//! channels the peer's SCTP stack has acknowledged, and the flush that waits
//! for every one of them.
//!
//! `webrtc` counts, per channel, the bytes handed to `send` that SCTP has not
//! released yet (`DataChannel::outstanding_bytes`; a reliable channel releases
//! a byte only when the peer acknowledged it). The sender records every chunk
//! it hands over in a [`Ledger`]; comparing what was handed over with what is
//! outstanding tells how far the peer got, in the chunk payload bytes the
//! application sent (the 18-byte chunk headers are not counted). A message
//! counts in the total from the moment the sender takes it on, so one whose
//! hand-over was cut short still counts as unacknowledged.
//!
//! One imprecision is `webrtc`'s: the release of a channel's DCEP open
//! message (bytes never counted as outstanding) is taken off the counter too,
//! saturating at 0; when that acknowledgement arrives after the first data
//! was counted, the channel looks up to 12 + label bytes further acknowledged
//! than it is. Only a peer that dies with no more than that unacknowledged on
//! a channel could be reported as having everything.
//!
//! The ledger is refreshed when a channel's buffer drains (the reader sees
//! `OnBufferedAmountLow`, which `webrtc` raises when a channel's unacknowledged
//! amount falls to its threshold, 0 by default), while a flush or a hand-over
//! polls, and while the sender is idle with chunks not yet acknowledged
//! ([`defaults::PEER_ACK_WATCH_MS`]), so it also knows, when the connection
//! ends for any reason, whether data was lost and how much arrived.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use webrtc::data_channel::DataChannel;

use super::ConnectionError;
use crate::defaults;

/// The acknowledgement state of one connection's outgoing chunks.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    channels: Vec<ChannelLedger>,
    /// Payload bytes of every message the sender took on.
    total: u64,
    /// Payload bytes of the chunks the peer acknowledged.
    acked: u64,
    /// The acknowledged bytes (headers included) when a flush last gave up
    /// for lack of progress: a flush that finds no more fails at once.
    gave_up_at: Option<u64>,
}

/// What a flush must see acknowledged: every channel's bytes handed over and
/// the payload bytes taken on, when it began.
#[derive(Debug)]
pub(super) struct Target {
    sent: Vec<u64>,
    total: u64,
}

/// One channel's share of a [`Ledger`]. Offsets count the bytes handed to the
/// channel's `send` (chunk headers included), from 0 when the channel opened.
#[derive(Debug, Default)]
struct ChannelLedger {
    /// Bytes handed to `send` so far.
    sent: u64,
    /// Bytes known to be acknowledged (a prefix of `sent`, see [`Ledger::update`]).
    released: u64,
    /// Chunks not known to be acknowledged yet: (offset of their end, payload bytes).
    pending: VecDeque<(u64, u64)>,
}

impl Ledger {
    /// Counts a message of `payload` bytes that the sender takes on.
    pub(super) fn accept(&mut self, payload: usize) {
        self.total += payload as u64;
    }

    /// Records a chunk of `wire` bytes carrying `payload` application bytes,
    /// just accepted by channel `index`'s `send`.
    pub(super) fn record(&mut self, index: usize, wire: usize, payload: usize) {
        let channel = self.channel_mut(index);
        channel.sent += wire as u64;
        let end = channel.sent;
        channel.pending.push_back((end, payload as u64));
    }

    /// Bytes handed to channel `index` so far.
    pub(super) fn sent(&self, index: usize) -> u64 {
        self.channels.get(index).map_or(0, |c| c.sent)
    }

    /// Applies channel `index`'s outstanding byte count, read after `sent`
    /// was [`Ledger::sent`]: at least `sent - outstanding` bytes are acknowledged.
    ///
    /// Reading `sent` first keeps the estimate on the safe side when a chunk
    /// is handed over while the count is read. SCTP releases the bytes of
    /// selectively acknowledged packets too, so while a loss is being
    /// repaired a few later bytes may stand in for the missing ones; the
    /// final answer (nothing outstanding) is exact.
    pub(super) fn update(&mut self, index: usize, sent: u64, outstanding: usize) {
        let released = sent.saturating_sub(outstanding as u64);
        let channel = self.channel_mut(index);
        channel.released = channel.released.max(released);
        let mut acked = 0;
        while let Some(&(end, payload)) = channel.pending.front() {
            if end > channel.released {
                break;
            }
            channel.pending.pop_front();
            acked += payload;
        }
        self.acked += acked;
    }

    /// Whether chunks of more than [`defaults::PEER_ACK_LEDGER_CHUNKS`] are
    /// waiting on some channel: the sender then refreshes the ledger itself,
    /// so that its memory stays bounded however long nobody flushes.
    pub(super) fn needs_refresh(&self) -> bool {
        self.channels
            .iter()
            .any(|c| c.pending.len() > defaults::PEER_ACK_LEDGER_CHUNKS)
    }

    /// Whether some chunk handed over is not known to be acknowledged.
    pub(super) fn has_pending(&self) -> bool {
        self.channels.iter().any(|c| !c.pending.is_empty())
    }

    /// What a flush beginning now must see acknowledged.
    pub(super) fn target(&self) -> Target {
        Target {
            sent: self.channels.iter().map(|c| c.sent).collect(),
            total: self.total,
        }
    }

    /// Whether `target` is acknowledged: on every channel, and in payload
    /// bytes (a message taken on but not wholly handed over never is).
    fn reached(&self, target: &Target) -> bool {
        let channels = target.sent.iter().enumerate().all(|(index, sent)| {
            self.channels
                .get(index)
                .map_or(*sent == 0, |c| c.released >= *sent)
        });
        channels && self.acked >= target.total
    }

    /// Acknowledged bytes over all channels (headers included): grows with progress.
    fn released(&self) -> u64 {
        self.channels.iter().map(|c| c.released).sum()
    }

    /// Payload bytes acknowledged and handed over, over the connection's life.
    pub(super) fn progress(&self) -> (u64, u64) {
        (self.acked, self.total)
    }

    fn channel_mut(&mut self, index: usize) -> &mut ChannelLedger {
        if self.channels.len() <= index {
            self.channels.resize_with(index + 1, ChannelLedger::default);
        }
        &mut self.channels[index]
    }
}

/// A [`Ledger`] shared by a connection's sender, readers and flushes (all on
/// the connection's thread, so the lock is never contended), and the signal
/// readers raise when a channel's buffer drained.
#[derive(Debug, Default, Clone)]
pub(super) struct Acks {
    pub(super) ledger: Arc<Mutex<Ledger>>,
    pub(super) drained: Arc<Notify>,
}

impl Acks {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads channel `index`'s outstanding bytes into the ledger. Fails when
    /// the channel (or its connection) is gone.
    pub(super) async fn refresh(
        &self,
        index: usize,
        channel: &Arc<dyn DataChannel>,
    ) -> Result<(), webrtc::error::Error> {
        let sent = self.lock().sent(index);
        let outstanding = channel.outstanding_bytes().await?;
        self.lock().update(index, sent, outstanding);
        Ok(())
    }

    /// Records channel `index` as drained (nothing outstanding) after its
    /// `OnBufferedAmountLow` event (threshold 0), when the channel closed
    /// before its count could be read. A closed channel takes no more
    /// chunks, so at most the chunks handed over between the event and its
    /// handling (none once the sender has finished) are counted too early.
    pub(super) fn drained_when_closed(&self, index: usize) {
        let mut ledger = self.lock();
        let sent = ledger.sent(index);
        ledger.update(index, sent, 0);
    }

    /// The error for bytes that were handed over but not acknowledged, or
    /// `None` when the peer acknowledged everything.
    pub(super) fn unacknowledged(&self, reason: impl Into<String>) -> Option<ConnectionError> {
        let (acked, total) = self.lock().progress();
        (acked < total).then(|| ConnectionError::Unacknowledged {
            acked,
            total,
            reason: reason.into(),
        })
    }

    /// Waits until `handed_over` resolves (the messages to flush are all
    /// handed to `channels`, each given with its index), then until the peer
    /// has acknowledged every byte handed over by then. Fails with
    /// [`ConnectionError::Unacknowledged`] when the peer acknowledges nothing
    /// new for `stall` (during either wait), or when a channel goes away first.
    pub(super) async fn flush(
        &self,
        channels: Vec<(usize, Arc<dyn DataChannel>)>,
        stall: Duration,
        handed_over: impl std::future::Future<Output = ()>,
    ) -> Result<(), ConnectionError> {
        let mut handed_over = std::pin::pin!(handed_over);
        let mut target = None;
        let (mut progress, gave_up_at) = {
            let ledger = self.lock();
            (ledger.released(), ledger.gave_up_at)
        };
        let poll = Duration::from_millis(defaults::PEER_FLUSH_POLL_MS);
        // A flush gave up already and nothing was acknowledged since: no second wait.
        let mut stalled = gave_up_at == Some(progress);
        let mut last_progress = tokio::time::Instant::now();
        loop {
            // Armed before reading, so a drain signalled meanwhile is not missed.
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let mut gone = None;
            for (index, channel) in &channels {
                if let Err(error) = self.refresh(*index, channel).await {
                    gone = Some(error);
                }
            }
            let (reached, released) = {
                let ledger = self.lock();
                let reached = target.as_ref().is_some_and(|t| ledger.reached(t));
                (reached, ledger.released())
            };
            if reached {
                return Ok(());
            }
            if let Some(error) = gone {
                // Nothing more will be handed over: what was is what counts.
                let ledger = self.lock();
                if target.is_none() && ledger.reached(&ledger.target()) {
                    return Ok(());
                }
                drop(ledger);
                return Err(self.failed(format!("the data channel went away: {error}")));
            }
            if released > progress {
                progress = released;
                last_progress = tokio::time::Instant::now();
                stalled = false;
            } else if stalled || last_progress.elapsed() >= stall {
                self.lock().gave_up_at = Some(released);
                let reason = format!("nothing more acknowledged for {} s", stall.as_secs_f32());
                return Err(self.failed(reason));
            }
            // A drained buffer or the end of the hand-over ends the wait
            // early; polling covers the rest.
            tokio::select! {
                () = &mut handed_over, if target.is_none() => {
                    target = Some(self.lock().target());
                }
                _ = &mut drained => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Waits for `send` (a channel's `send`, which waits while the channel's
    /// send buffer is full) as long as the peer keeps acknowledging: fails
    /// with [`ConnectionError::Unacknowledged`] when it acknowledges nothing
    /// new on any of `channels` for `stall`, and with
    /// [`ConnectionError::Closed`] when the channel refuses the chunk.
    pub(super) async fn hand_over(
        &self,
        send: impl std::future::Future<Output = Result<(), webrtc::error::Error>>,
        channels: &[Arc<dyn DataChannel>],
        stall: Duration,
    ) -> Result<(), ConnectionError> {
        let mut send = std::pin::pin!(send);
        let poll = Duration::from_millis(defaults::PEER_FLUSH_POLL_MS);
        let mut progress = self.lock().released();
        let mut last_progress = tokio::time::Instant::now();
        loop {
            // `send` stays polled while the counts are read. Both wait on the
            // connection's one `futures` mutex, whose unlock wakes only the
            // first waiter it registered: a `send` left pending there and not
            // polled keeps every later wake to itself, and the read would wait
            // until the connection ends (seen in the NAT lab as a 28 s hang).
            let refreshed = async {
                tokio::time::sleep(poll).await;
                self.refresh_all(channels).await;
            };
            tokio::select! {
                biased;
                result = &mut send => {
                    return result.map_err(|e| {
                        ConnectionError::Closed(format!("data channel refused a chunk: {e}"))
                    });
                }
                () = refreshed => {}
            }
            let released = self.lock().released();
            if released > progress {
                progress = released;
                last_progress = tokio::time::Instant::now();
            } else if last_progress.elapsed() >= stall {
                self.lock().gave_up_at = Some(released);
                let reason = format!(
                    "nothing acknowledged for {} s while sending",
                    stall.as_secs_f32()
                );
                return Err(self.failed(reason));
            }
        }
    }

    /// Reads every channel's outstanding count once (channels gone are skipped).
    pub(super) async fn refresh_all(&self, channels: &[Arc<dyn DataChannel>]) {
        for (index, channel) in channels.iter().enumerate() {
            let _ = self.refresh(index, channel).await;
        }
    }

    fn failed(&self, reason: String) -> ConnectionError {
        let (acked, total) = self.lock().progress();
        ConnectionError::Unacknowledged {
            acked,
            total,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_count_as_acknowledged_once_their_end_is_released() {
        let mut ledger = Ledger::default();
        ledger.accept(350);
        ledger.record(0, 118, 100);
        ledger.record(1, 68, 50);
        ledger.record(0, 218, 200);
        let target = ledger.target();
        assert_eq!(ledger.progress(), (0, 350));
        // Channel 0: 336 handed over, 200 outstanding -> the first chunk (118) is acknowledged.
        ledger.update(0, 336, 200);
        assert_eq!(ledger.progress(), (100, 350));
        assert!(!ledger.reached(&target));
        ledger.update(1, 68, 0);
        ledger.update(0, 336, 0);
        assert_eq!(ledger.progress(), (350, 350));
        assert!(ledger.reached(&target));
    }

    #[test]
    fn an_outstanding_count_read_before_a_later_send_never_overstates() {
        let mut ledger = Ledger::default();
        ledger.accept(164);
        ledger.record(0, 100, 82);
        let sent = ledger.sent(0);
        // A second chunk is handed over while the count (which includes it) is read.
        ledger.record(0, 100, 82);
        ledger.update(0, sent, 150);
        assert_eq!(ledger.progress(), (0, 164));
        // Released counts never go back.
        ledger.update(0, 200, 0);
        ledger.update(0, 200, 200);
        assert_eq!(ledger.progress(), (164, 164));
    }

    #[test]
    fn a_message_whose_hand_over_was_cut_short_is_never_acknowledged() {
        let mut ledger = Ledger::default();
        assert!(ledger.reached(&ledger.target()));
        // 3 chunks of 100 bytes taken on, only the first handed over.
        ledger.accept(300);
        ledger.record(0, 118, 100);
        ledger.update(0, 118, 0);
        assert_eq!(ledger.progress(), (100, 300));
        assert!(!ledger.reached(&ledger.target()));
        assert!(!ledger.needs_refresh());
    }
}
