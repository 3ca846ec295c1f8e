//! Tail-loss probes beneath DTLS, for peers whose UDP receive buffer is small.
//!
//! A sender's burst can overflow the receiver's UDP socket buffer (Chromium
//! sets 64 KiB on its WebRTC sockets, which the kernel doubles to 128 KiB:
//! about 56 datagrams). A datagram lost in the middle of a burst is repaired
//! by SCTP's fast retransmit, since the datagrams after it make the receiver
//! report the gap. A datagram lost at the *end* of a burst leaves the receiver
//! nothing later to report a gap with, and `rtc-sctp` waits for its
//! retransmission timer: at least 1 s (`RTO_MIN` is a constant there), 3 s or
//! 7 s when a retransmission is lost again. Measured: 1 MiB from Switchboard
//! to Chromium on loopback took ~1 s in 13–18 of 20 tries.
//!
//! [`TailProbeSocket`] does at the UDP socket what a tail-loss probe does in
//! TCP (RFC 8985 §7, "TLP"): when a burst of at least
//! [`PROBE_MIN_BURST`] large datagrams is followed by a quiet period of
//! about two round trips, it sends the burst's last [`PROBE_DATAGRAMS`]
//! datagrams again, byte for byte. Each is a DTLS record with its own record
//! sequence number, so a copy that had arrived is dropped by the receiver's
//! DTLS replay window (RFC 6347 §4.1.2.6) and costs nothing else; a copy of
//! one that was lost is delivered, and either completes the message or shows
//! the receiver a gap, which it reports at once (RFC 4960 §6.7), and SCTP's
//! fast retransmit repairs the rest. The socket never reads or changes what
//! it sends: it sits under DTLS and sees only ciphertext.
//!
//! The round-trip time comes from ICE itself: STUN binding requests this
//! socket sends (connectivity checks, then consent checks on the selected
//! pair, also inside TURN ChannelData) and their success responses, matched
//! by transaction ID (RFC 8489 §5).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

/// Large datagrams a burst needs before its end is probed: smaller bursts fit
/// any receive buffer a WebRTC stack sets.
pub const PROBE_MIN_BURST: usize = 16;
/// Datagrams sent again when a burst ends (its last ones, in order).
pub const PROBE_DATAGRAMS: usize = 8;
/// Smallest datagram, in bytes, counted as part of a burst (an SCTP DATA
/// packet near the path MTU); STUN, DTLS alerts and SACKs are smaller.
pub const PROBE_MIN_BYTES: usize = 512;
/// Shortest quiet period before a probe, whatever the round-trip time.
pub const PROBE_MIN_QUIET: Duration = Duration::from_millis(10);
/// Round-trip time assumed before ICE has measured one.
pub const PROBE_DEFAULT_RTT: Duration = Duration::from_millis(100);
/// Added to two round trips for the receiver's delayed acknowledgement of a
/// lone packet (RFC 8985 §7.2 adds the peer's maximum ack delay).
pub const PROBE_ACK_ALLOWANCE: Duration = Duration::from_millis(5);
/// Binding requests remembered at once while their responses are awaited.
const PENDING_REQUESTS: usize = 16;

/// Tail-loss probes sent by every [`TailProbeSocket`] of this process.
static PROBES_SENT: AtomicU64 = AtomicU64::new(0);

/// Datagrams sent again as tail-loss probes by this process so far.
pub fn probes_sent() -> u64 {
    PROBES_SENT.load(Ordering::Relaxed)
}

/// A UDP socket that re-sends the end of a burst after a quiet period.
#[derive(Debug)]
pub struct TailProbeSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    state: Mutex<ProbeState>,
}

/// One datagram as it was sent.
#[derive(Debug)]
struct Sent {
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    segment_size: Option<usize>,
    contents: Vec<u8>,
}

#[derive(Debug, Default)]
struct ProbeState {
    /// The current burst's last datagrams, oldest first.
    tail: VecDeque<Sent>,
    /// Large datagrams in the current burst.
    burst: usize,
    last_send: Option<Instant>,
    rtt: RttEstimate,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The driver's pending receive, woken when a burst becomes long enough
    /// to probe, so that it arms the timer even if nothing arrives.
    recv_waker: Option<Waker>,
}

impl TailProbeSocket {
    /// Wraps `inner`; nothing is probed until a burst ends.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Self {
        TailProbeSocket {
            inner,
            state: Mutex::new(ProbeState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, ProbeState> {
        // A panic while holding the lock leaves only counters and copies behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the probes once the quiet period has passed; otherwise arms the
    /// timer on `cx`, so the driver's pending receive is woken at the deadline.
    fn poll_probe(&self, cx: &mut Context<'_>) {
        let due = {
            let mut state = self.state();
            if !state
                .recv_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.recv_waker = Some(cx.waker().clone());
            }
            let Some(last) = state.last_send else {
                return;
            };
            if state.burst < PROBE_MIN_BURST || state.tail.is_empty() {
                state.timer = None;
                return;
            }
            let deadline = last + state.rtt.quiet_period();
            if Instant::now() < deadline {
                let deadline = tokio::time::Instant::from_std(deadline);
                let timer = state
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return;
                }
            }
            state.timer = None;
            state.burst = 0;
            std::mem::take(&mut state.tail)
        };
        for sent in &due {
            let transmit = Transmit {
                destination: sent.destination,
                ecn: None,
                contents: &sent.contents,
                segment_size: sent.segment_size,
                src_ip: sent.src_ip,
            };
            // A full send buffer is no reason to wait: the probe is a hint.
            match self.inner.poll_send(cx, &transmit) {
                Poll::Ready(Ok(_)) => {
                    PROBES_SENT.fetch_add(1, Ordering::Relaxed);
                }
                Poll::Ready(Err(e)) => {
                    log::debug!("tail-loss probe to {}: {e}", sent.destination);
                    break;
                }
                Poll::Pending => break,
            }
        }
        log::trace!("tail-loss probe: {} datagrams sent again", due.len());
    }
}

impl ProbeState {
    /// Records a sent datagram; returns the receive side's waker when the
    /// burst has just become long enough to probe.
    fn on_sent(&mut self, transmit: &Transmit<'_>, now: Instant) -> Option<Waker> {
        let contents = transmit.contents;
        if let Some(id) = stun_binding(contents, STUN_BINDING_REQUEST) {
            self.rtt.on_request(id, now);
            return None;
        }
        if contents.len() < PROBE_MIN_BYTES {
            return None;
        }
        let quiet = self.rtt.quiet_period();
        if self.last_send.is_none_or(|last| now >= last + quiet) {
            self.burst = 0;
            self.tail.clear();
        }
        self.burst += 1;
        self.last_send = Some(now);
        let mut buffer = if self.tail.len() >= PROBE_DATAGRAMS {
            self.tail
                .pop_front()
                .map(|s| s.contents)
                .unwrap_or_default()
        } else {
            Vec::with_capacity(contents.len())
        };
        buffer.clear();
        buffer.extend_from_slice(contents);
        self.tail.push_back(Sent {
            destination: transmit.destination,
            src_ip: transmit.src_ip,
            segment_size: transmit.segment_size,
            contents: buffer,
        });
        if self.burst == PROBE_MIN_BURST {
            self.recv_waker.clone()
        } else {
            None
        }
    }
}

impl AsyncUdpSocket for TailProbeSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let result = self.inner.poll_send(cx, transmit);
        if let Poll::Ready(Ok(_)) = result {
            let waker = self.state().on_sent(transmit, Instant::now());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        result
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // `webrtc`'s driver drains ready datagrams with a no-op waker; only
        // its real pending receive may carry the timer.
        if !cx.waker().will_wake(Waker::noop()) {
            self.poll_probe(cx);
        }
        let result = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(messages)) = result {
            let now = Instant::now();
            for (buf, m) in bufs.iter().zip(&meta[..messages]) {
                let first = &buf[..m.stride.max(1).min(m.len).min(buf.len())];
                if let Some(id) = stun_binding(first, STUN_BINDING_SUCCESS) {
                    self.state().rtt.on_response(id, now);
                }
            }
        }
        result
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// STUN message type of a Binding request (RFC 8489 §18.2).
const STUN_BINDING_REQUEST: u16 = 0x0001;
/// STUN message type of a Binding success response.
const STUN_BINDING_SUCCESS: u16 = 0x0101;
/// The fixed magic cookie of every RFC 5389/8489 STUN message.
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// First byte of TURN ChannelData: channel numbers 0x4000..=0x4FFF (RFC 8656 §12).
const CHANNEL_DATA_FIRST: std::ops::RangeInclusive<u8> = 0x40..=0x4F;

/// The transaction ID of `datagram` if it is a STUN message of type `kind`,
/// bare or inside TURN ChannelData.
fn stun_binding(datagram: &[u8], kind: u16) -> Option<[u8; 12]> {
    let message = match datagram.first() {
        Some(b) if CHANNEL_DATA_FIRST.contains(b) => datagram.get(4..)?,
        _ => datagram,
    };
    let header = message.get(..20)?;
    if u16::from_be_bytes([header[0], header[1]]) != kind || header[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let mut id = [0; 12];
    id.copy_from_slice(&header[8..20]);
    Some(id)
}

/// Smoothed round-trip time from STUN binding transactions (RFC 6298 §2 weights).
#[derive(Debug, Default)]
struct RttEstimate {
    pending: VecDeque<([u8; 12], Instant)>,
    smoothed: Option<Duration>,
}

impl RttEstimate {
    fn on_request(&mut self, id: [u8; 12], now: Instant) {
        if self.pending.len() >= PENDING_REQUESTS {
            self.pending.pop_front();
        }
        self.pending.push_back((id, now));
    }

    fn on_response(&mut self, id: [u8; 12], now: Instant) {
        let Some(at) = self.pending.iter().position(|(pending, _)| *pending == id) else {
            return;
        };
        let Some((_, sent)) = self.pending.remove(at) else {
            return;
        };
        let sample = now.saturating_duration_since(sent);
        self.smoothed = Some(match self.smoothed {
            None => sample,
            Some(srtt) => (srtt * 7 + sample) / 8,
        });
    }

    /// How long no large datagram may be sent before the burst counts as ended.
    fn quiet_period(&self) -> Duration {
        let rtt = self.smoothed.unwrap_or(PROBE_DEFAULT_RTT);
        (rtt * 2 + PROBE_ACK_ALLOWANCE).max(PROBE_MIN_QUIET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(kind: u16, id: u8) -> Vec<u8> {
        let mut m = kind.to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&STUN_MAGIC_COOKIE);
        m.extend_from_slice(&[id; 12]);
        m
    }

    #[test]
    fn binding_transactions_are_recognised_bare_and_in_channel_data() {
        let request = stun(STUN_BINDING_REQUEST, 7);
        assert_eq!(stun_binding(&request, STUN_BINDING_REQUEST), Some([7; 12]));
        assert_eq!(stun_binding(&request, STUN_BINDING_SUCCESS), None);
        let mut wrapped = vec![0x40, 0x01, 0, 20];
        wrapped.extend_from_slice(&stun(STUN_BINDING_SUCCESS, 9));
        assert_eq!(stun_binding(&wrapped, STUN_BINDING_SUCCESS), Some([9; 12]));
        // A DTLS record (content type 23) and a truncated header are not STUN.
        assert_eq!(stun_binding(&[23; 40], STUN_BINDING_REQUEST), None);
        assert_eq!(stun_binding(&request[..19], STUN_BINDING_REQUEST), None);
        let mut bad_cookie = request.clone();
        bad_cookie[4] = 0;
        assert_eq!(stun_binding(&bad_cookie, STUN_BINDING_REQUEST), None);
    }

    #[test]
    fn quiet_period_follows_the_measured_round_trip() {
        let mut rtt = RttEstimate::default();
        assert_eq!(
            rtt.quiet_period(),
            PROBE_DEFAULT_RTT * 2 + PROBE_ACK_ALLOWANCE
        );
        let t0 = Instant::now();
        rtt.on_request([1; 12], t0);
        rtt.on_response([2; 12], t0 + Duration::from_millis(1)); // unknown id: ignored
        assert_eq!(rtt.smoothed, None);
        rtt.on_response([1; 12], t0 + Duration::from_millis(40));
        assert_eq!(rtt.smoothed, Some(Duration::from_millis(40)));
        assert_eq!(rtt.quiet_period(), Duration::from_millis(85));
        rtt.on_request([3; 12], t0);
        rtt.on_response([3; 12], t0 + Duration::from_micros(100));
        // 7/8 of 40 ms + 1/8 of 0.1 ms; loopback round trips floor at PROBE_MIN_QUIET.
        assert_eq!(
            rtt.smoothed,
            Some(Duration::from_micros(35_012) + Duration::from_nanos(500))
        );
        let mut fast = RttEstimate::default();
        fast.on_request([4; 12], t0);
        fast.on_response([4; 12], t0 + Duration::from_micros(50));
        assert_eq!(fast.quiet_period(), PROBE_MIN_QUIET);
    }
}
