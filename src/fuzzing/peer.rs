//! Target for what a remote peer sends to set up a connection
//! (`client::connection::setup`): the session description text carried in
//! a relay `peer_connection`, and the labels of the data channels it opens.

use crate::client::connection::setup::{description_from_json, label, parse_label};
use crate::defaults;
use crate::protocol::relay::DescriptionType;

/// The first input byte picks offer/answer and a channel limit; the rest is
/// text used both as a description (`{"sdp": ..., "type": ...}`, whose SDP
/// the `webrtc` crate parses) and as a channel label (`p2p-{i}-{N}`).
///
/// Checks: neither parser panics; a label accepted has `i < N <= limit`
/// and is written back identically when it was written canonically.
pub fn peer_signal(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if flags & 1 == 0 {
        DescriptionType::Offer
    } else {
        DescriptionType::Answer
    };
    let _ = description_from_json(text, kind);
    let max = usize::from(flags >> 1).min(defaults::PEER_MAX_CHANNELS);
    if let Ok((index, total)) = parse_label(text, max) {
        assert!(
            index < total && total <= max,
            "{text:?} -> ({index}, {total})"
        );
        assert_eq!(parse_label(&label(index, total), max), Ok((index, total)));
    }
}
