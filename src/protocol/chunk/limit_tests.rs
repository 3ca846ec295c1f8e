//! Reassembler bounds: a message over the cap, the pending budget, the
//! number of open streams and of remembered dropped ids are bounded, and
//! clearing a vanished peer frees its state.

use bytes::Bytes;

use super::tests::{all, raw, small_limits, CHUNK_SIZE_FOR_TESTS};
use super::*;

#[test]
fn message_over_the_cap_is_dropped_and_freed() {
    let mut r = Reassembler::new(small_limits(1000));
    let parts = all(vec![7u8; 3000], 9, 400);
    assert_eq!(r.push(parts[0].clone()), Ok(None));
    assert_eq!(r.push(parts[1].clone()), Ok(None));
    assert!(r.pending_bytes() > 800);
    let err = Err(ChunkError::MessageTooLarge {
        stream_id: 9,
        limit: 1000,
    });
    assert_eq!(r.push(parts[2].clone()), err);
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
    for part in &parts[3..] {
        assert_eq!(
            r.push(part.clone()),
            Err(ChunkError::StreamDropped { stream_id: 9 })
        );
        assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
    }
    // A single chunk over the cap is refused too; a message at the cap passes.
    let err = Err(ChunkError::MessageTooLarge {
        stream_id: 10,
        limit: 1000,
    });
    assert_eq!(r.push(all(vec![1u8; 1001], 10, 2000).remove(0)), err);
    assert_eq!(reassemble_with(&mut r, all(vec![1u8; 1000], 11, 300)).0, 11);
}

fn reassemble_with(r: &mut Reassembler, parts: Vec<Bytes>) -> (u32, Payload) {
    let mut last = None;
    for part in parts {
        last = r.push(part).unwrap();
    }
    last.unwrap()
}

#[test]
fn pending_budget_and_stream_count_are_bounded() {
    let mut limits = small_limits(1 << 20);
    limits.max_pending_bytes = 2_000;
    let mut r = Reassembler::new(limits);
    for id in 0..4 {
        r.push(all(vec![0u8; 200], id, 100).remove(0)).unwrap();
    }
    let err = Err(ChunkError::TooManyStreams {
        stream_id: 4,
        limit: 4,
    });
    assert_eq!(r.push(all(vec![0u8; 200], 4, 100).remove(0)), err);
    assert_eq!(r.pending_streams(), 4);
    // Single-chunk messages need no state and still pass.
    assert_eq!(
        r.push(all("ok", 5, 100).remove(0)),
        Ok(Some((5, Payload::from("ok"))))
    );
    // Stream 0 (seq len 2) gets a second chunk too big for the budget left.
    let err = Err(ChunkError::BudgetExceeded {
        stream_id: 0,
        limit: 2_000,
    });
    let body = vec![0u8; 1_600];
    assert_eq!(r.push(raw(1, 1_618, 0, 1, 2, &body)), err);
    assert_eq!(r.pending_streams(), 3);
    assert!(r.pending_bytes() <= 2_000);
}

#[test]
fn dropped_ids_are_remembered_within_a_bound() {
    let mut r = Reassembler::new(small_limits(10));
    for id in 0..100 {
        let first = all(vec![0u8; 40], id, 20).remove(0);
        assert!(matches!(
            r.push(first),
            Err(ChunkError::MessageTooLarge { .. })
        ));
    }
    assert_eq!(r.dropped.len(), 8);
    assert_eq!(r.dropped_set.len(), 8);
    assert_eq!(
        r.push(all(vec![0u8; 40], 99, 5).remove(0)),
        Err(ChunkError::StreamDropped { stream_id: 99 })
    );
}

#[test]
fn clear_frees_a_vanished_peers_state() {
    let mut r = Reassembler::default();
    for id in 0..10 {
        let parts = all(vec![3u8; 100_000], id, CHUNK_SIZE_FOR_TESTS);
        r.push(parts[0].clone()).unwrap();
    }
    assert_eq!(r.pending_streams(), 10);
    assert!(r.pending_bytes() > 10 * CHUNK_SIZE_FOR_TESTS);
    r.clear();
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
    assert_eq!(
        reassemble_with(&mut r, all("again", 0, 4)),
        (0, Payload::from("again"))
    );
}
