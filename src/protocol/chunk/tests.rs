//! Chunk format tests: exact bytes, round trips, ProxyStore's chunks, every bad
//! input with its typed error, freed state, and mutations that must never panic.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};

use super::*;

pub(super) fn all(payload: impl Into<Payload>, stream_id: u32, size: usize) -> Vec<Bytes> {
    chunks(payload.into(), stream_id, size).unwrap().collect()
}

/// A chunk as ProxyStore's `Chunk.__bytes__` writes it: length counts characters for text.
fn proxystore_chunk(stream_id: u32, seq_id: u32, seq_len: u32, data: Payload) -> Bytes {
    let (dtype, count) = match &data {
        Payload::Bytes(b) => (DTYPE_BYTES, b.len()),
        Payload::Text(s) => (DTYPE_TEXT, s.chars().count()),
    };
    raw(
        dtype,
        (HEADER_LEN + count) as u32,
        stream_id,
        seq_id,
        seq_len,
        data.as_bytes(),
    )
}

pub(super) fn raw(
    dtype: u16,
    length: u32,
    stream: u32,
    seq_id: u32,
    seq_len: u32,
    body: &[u8],
) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&dtype.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&seq_id.to_be_bytes());
    out.extend_from_slice(&seq_len.to_be_bytes());
    out.extend_from_slice(body);
    out.into()
}

fn reassemble(parts: Vec<Bytes>) -> (u32, Payload) {
    let mut r = Reassembler::default();
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let out = r.push(part).unwrap();
        if i + 1 < n {
            assert_eq!(out, None);
        } else {
            assert_eq!(r.pending_streams(), 0);
            assert_eq!(r.pending_bytes(), 0);
            return out.unwrap();
        }
    }
    unreachable!("no chunks")
}

pub(super) fn small_limits(max_message_bytes: usize) -> ReassemblerLimits {
    ReassemblerLimits {
        max_message_bytes,
        max_pending_bytes: 1 << 20,
        max_pending_streams: 4,
        dropped_streams_remembered: 8,
    }
}

#[test]
fn known_chunk_has_exact_big_endian_bytes() {
    let got = all("hi", 0x0102_0304, 32);
    let want: &[u8] = &[
        0, 2, // dtype text
        0, 0, 0, 20, // length 18 + 2
        1, 2, 3, 4, // stream id
        0, 0, 0, 0, // seq id
        0, 0, 0, 1, // seq len
        b'h', b'i',
    ];
    assert_eq!(got, vec![Bytes::from_static(want)]);
    let parsed = parse_chunk(want).unwrap();
    assert_eq!(
        parsed.header,
        ChunkHeader {
            dtype: 2,
            length: 20,
            stream_id: 0x0102_0304,
            seq_id: 0,
            seq_len: 1
        }
    );
    assert_eq!(parsed.payload, b"hi");
}

#[test]
fn bytes_and_ascii_text_round_trip() {
    let bytes = Payload::from(vec![0u8, 1, 2, 255, 254]);
    assert_eq!(reassemble(all(bytes.clone(), 7, 4)), (7, bytes.clone()));
    assert_eq!(reassemble(all(bytes.clone(), 8, 1024)), (8, bytes));
    let text = Payload::from("hello, switchboard");
    assert_eq!(reassemble(all(text.clone(), 9, 4)), (9, text));
}

#[test]
fn non_ascii_text_counts_bytes_and_cuts_on_char_boundaries() {
    let text = "héllo wörld ✓ 🦀🦀🦀";
    let parts = all(text, 3, 5);
    let mut total = 0;
    for part in &parts {
        let chunk = parse_chunk(part).unwrap();
        assert_eq!(
            chunk.header.length as usize,
            part.len(),
            "length counts bytes"
        );
        assert!(
            std::str::from_utf8(chunk.payload).is_ok(),
            "each chunk is valid UTF-8"
        );
        assert!(chunk.payload.len() <= 5);
        total += chunk.payload.len();
    }
    assert_eq!(total, text.len());
    let one = all(text, 4, CHUNK_SIZE_FOR_TESTS);
    assert_eq!(
        parse_chunk(&one[0]).unwrap().header.length as usize,
        HEADER_LEN + text.len()
    );
    assert_eq!(reassemble(parts), (3, Payload::from(text)));
}

pub(super) const CHUNK_SIZE_FOR_TESTS: usize = crate::defaults::CHUNK_SIZE;

#[test]
fn empty_message_is_one_chunk_with_seq_len_one() {
    for payload in [Payload::from(Vec::new()), Payload::from("")] {
        let parts = all(payload.clone(), 5, CHUNK_SIZE_FOR_TESTS);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), HEADER_LEN);
        let header = parse_chunk(&parts[0]).unwrap().header;
        assert_eq!((header.seq_id, header.seq_len), (0, 1));
        assert_eq!(reassemble(parts), (5, payload));
    }
}

#[test]
fn large_message_reassembles_from_shuffled_chunks() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut data = vec![0u8; 3 * (1 << 20) + 12_345];
    rng.fill_bytes(&mut data);
    let encoder = chunks(data.clone().into(), 42, CHUNK_SIZE_FOR_TESTS).unwrap();
    assert_eq!(encoder.len(), data.len().div_ceil(CHUNK_SIZE_FOR_TESTS));
    let mut parts: Vec<Bytes> = encoder.collect();
    parts.shuffle(&mut rng);
    assert_eq!(reassemble(parts), (42, Payload::from(data)));

    let text: String = "ünïcødé ✓ ".repeat(120_000);
    let mut parts = all(text.as_str(), 43, CHUNK_SIZE_FOR_TESTS);
    parts.shuffle(&mut rng);
    assert_eq!(reassemble(parts), (43, Payload::Text(text)));
}

#[test]
fn interleaved_streams_reassemble_independently() {
    let a = all(vec![1u8; 100], 1, 10);
    let b = all("b".repeat(100), 2, 10);
    let mut r = Reassembler::default();
    let mut done = Vec::new();
    for (x, y) in a.into_iter().zip(b) {
        done.extend(r.push(x).unwrap());
        done.extend(r.push(y).unwrap());
    }
    assert_eq!(done.len(), 2);
    assert_eq!(r.pending_streams(), 0);
}

#[test]
fn proxystore_chunks_are_accepted() {
    // Bytes and ASCII text: ProxyStore's length is exact.
    let bytes = proxystore_chunk(0, 0, 1, Payload::from(vec![9u8; 40]));
    let ascii = proxystore_chunk(1, 0, 1, Payload::from("plain"));
    let mut r = Reassembler::default();
    assert_eq!(
        r.push(bytes).unwrap(),
        Some((0, Payload::from(vec![9u8; 40])))
    );
    assert_eq!(r.push(ascii).unwrap(), Some((1, Payload::from("plain"))));
    // Non-ASCII text: the length field counts characters; the whole chunk is the payload.
    let parts = ["grüß ", "dich ✓", " 🦀"];
    let mut out = None;
    for (i, part) in parts.iter().enumerate() {
        let chunk = proxystore_chunk(2, i as u32, 3, Payload::from(*part));
        assert!((parse_chunk(&chunk).unwrap().header.length as usize) < chunk.len());
        out = r.push(chunk).unwrap();
    }
    assert_eq!(out, Some((2, Payload::from("grüß dich ✓ 🦀"))));
    // A short length that is not the character count stays an error.
    let body = "grüß".as_bytes();
    let bad = raw(DTYPE_TEXT, (HEADER_LEN + 3) as u32, 3, 0, 1, body);
    assert!(matches!(
        parse_chunk(&bad),
        Err(ChunkError::LengthMismatch { declared: 21, .. })
    ));
    // Only text gets that allowance.
    let bad = raw(DTYPE_BYTES, (HEADER_LEN + 4) as u32, 3, 0, 1, body);
    assert!(matches!(
        parse_chunk(&bad),
        Err(ChunkError::LengthMismatch { .. })
    ));
}

/// Bytes written by ProxyStore 1.1.0's `bytes(Chunk(...))`, recorded from the venv.
#[test]
fn literal_proxystore_chunks_parse() {
    // Chunk(5, 0, 1, 'grüß ✓'): length 24 = 18 + 6 characters, 10 payload bytes.
    let text: &[u8] = &[
        0, 2, 0, 0, 0, 24, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 103, 114, 195, 188, 195, 159, 32,
        226, 156, 147,
    ];
    // Chunk(6, 1, 2, b'\x00\xff') and Chunk(7, 0, 1, '').
    let bytes: &[u8] = &[
        0, 1, 0, 0, 0, 20, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 255,
    ];
    let empty: &[u8] = &[0, 2, 0, 0, 0, 18, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut r = Reassembler::default();
    let out = r.push(Bytes::from_static(text));
    assert_eq!(out, Ok(Some((5, Payload::from("grüß ✓")))));
    assert_eq!(r.push(Bytes::from_static(bytes)), Ok(None));
    assert_eq!(parse_chunk(bytes).unwrap().payload, &[0, 255]);
    assert_eq!(
        r.push(Bytes::from_static(empty)),
        Ok(Some((7, Payload::from(""))))
    );
    // Our encoding of the same text differs only in the length field (bytes).
    let ours = all("grüß ✓", 5, 64).remove(0);
    assert_eq!(&ours[..5], &text[..5]);
    assert_eq!(ours[5], 28);
    assert_eq!(&ours[6..], &text[6..]);
}

#[test]
fn malformed_chunks_get_typed_errors() {
    let body = b"abcd";
    let len = (HEADER_LEN + body.len()) as u32;
    assert_eq!(parse_chunk(&[0; 17]), Err(ChunkError::TooShort { len: 17 }));
    assert_eq!(parse_chunk(&[]), Err(ChunkError::TooShort { len: 0 }));
    let longer = raw(1, len + 1, 0, 0, 1, body);
    assert_eq!(
        parse_chunk(&longer),
        Err(ChunkError::LengthMismatch {
            declared: len + 1,
            actual: 22
        })
    );
    let shorter = raw(1, len - 1, 0, 0, 1, body);
    assert!(matches!(
        parse_chunk(&shorter),
        Err(ChunkError::LengthMismatch { .. })
    ));
    let tiny = raw(2, 3, 0, 0, 1, body);
    assert!(matches!(
        parse_chunk(&tiny),
        Err(ChunkError::LengthMismatch { .. })
    ));
    assert_eq!(
        parse_chunk(&raw(3, len, 0, 0, 1, body)),
        Err(ChunkError::UnknownDType(3))
    );
    assert_eq!(
        parse_chunk(&raw(0, len, 0, 0, 1, body)),
        Err(ChunkError::UnknownDType(0))
    );
    assert_eq!(
        parse_chunk(&raw(1, len, 0, 2, 2, body)),
        Err(ChunkError::SeqIdOutOfRange {
            seq_id: 2,
            seq_len: 2
        })
    );
    assert_eq!(
        parse_chunk(&raw(1, len, 6, 0, 0, body)),
        Err(ChunkError::ZeroSeqLen { stream_id: 6 })
    );
    // The reassembler reports the same errors and keeps no state.
    let mut r = Reassembler::default();
    assert_eq!(
        r.push(raw(0, len, 0, 0, 1, body)),
        Err(ChunkError::UnknownDType(0))
    );
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
}

#[test]
fn encoder_rejects_tiny_chunk_sizes() {
    assert_eq!(
        chunks("x".into(), 0, 3).err(),
        Some(ChunkError::ChunkSizeTooSmall(3))
    );
    assert_eq!(all("🦀🦀", 0, MIN_CHUNK_SIZE).len(), 2);
    // A chunk size beyond the message (even usize::MAX) gives one chunk.
    assert_eq!(all("é".repeat(10), 0, usize::MAX).len(), 1);
    assert_eq!(all(vec![1u8; 10], 0, usize::MAX).len(), 1);
}

#[test]
fn duplicate_and_inconsistent_chunks_drop_the_stream() {
    let mut r = Reassembler::new(small_limits(1 << 20));
    let parts = all(vec![1u8; 30], 1, 10);
    assert_eq!(r.push(parts[0].clone()), Ok(None));
    assert_eq!(
        r.push(parts[0].clone()),
        Err(ChunkError::Duplicate {
            stream_id: 1,
            seq_id: 0
        })
    );
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
    // Later chunks of the dropped stream are discarded, not stored.
    assert_eq!(
        r.push(parts[1].clone()),
        Err(ChunkError::StreamDropped { stream_id: 1 })
    );
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));

    let parts = all(vec![1u8; 30], 2, 10);
    r.push(parts[0].clone()).unwrap();
    let text = raw(DTYPE_TEXT, 28, 2, 1, 3, b"0123456789");
    let err = Err(ChunkError::Inconsistent {
        stream_id: 2,
        field: "dtype",
    });
    assert_eq!(r.push(text), err);
    assert_eq!(r.pending_streams(), 0);

    let parts = all(vec![1u8; 30], 3, 10);
    r.push(parts[0].clone()).unwrap();
    let longer = raw(DTYPE_BYTES, 28, 3, 1, 4, b"0123456789");
    let err = Err(ChunkError::Inconsistent {
        stream_id: 3,
        field: "seq len",
    });
    assert_eq!(r.push(longer), err);
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
}

#[test]
fn invalid_utf8_text_is_a_typed_error() {
    let mut r = Reassembler::default();
    let bad = raw(DTYPE_TEXT, 20, 1, 0, 1, &[0xc3, 0x28]);
    assert_eq!(r.push(bad), Err(ChunkError::InvalidUtf8 { stream_id: 1 }));
    // Split across chunks: each half alone is fine, the whole is not.
    assert_eq!(r.push(raw(DTYPE_TEXT, 19, 2, 0, 2, b"a")), Ok(None));
    assert_eq!(
        r.push(raw(DTYPE_TEXT, 19, 2, 1, 2, &[0xff])),
        Err(ChunkError::InvalidUtf8 { stream_id: 2 })
    );
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
    // A character split across chunks by another implementation is fine.
    let crab = "🦀".as_bytes();
    assert_eq!(r.push(raw(DTYPE_TEXT, 20, 3, 1, 2, &crab[2..])), Ok(None));
    assert_eq!(
        r.push(raw(DTYPE_TEXT, 20, 3, 0, 2, &crab[..2])),
        Ok(Some((3, Payload::from("🦀"))))
    );
}

#[test]
fn mutated_chunks_never_panic() {
    let samples = [
        all("héllo ✓", 1, 4).remove(1),
        all(vec![1u8, 2, 3, 4, 5, 6], 2, 4).remove(0),
        all("", 3, 4).remove(0),
        proxystore_chunk(4, 0, 2, Payload::from("grüß")),
    ];
    let replacements = [0x00, 0x01, 0x02, 0x03, 0x12, 0x7f, 0x80, 0xc3, 0xff];
    let mut parsed = 0usize;
    let mut r = Reassembler::new(small_limits(64));
    for sample in samples {
        let mut candidates: Vec<Vec<u8>> =
            (0..=sample.len()).map(|n| sample[..n].to_vec()).collect();
        for i in 0..sample.len() {
            for &byte in &replacements {
                let mut mutated = sample.to_vec();
                mutated[i] = byte;
                candidates.push(mutated);
            }
        }
        for candidate in candidates {
            if parse_chunk(&candidate).is_ok() {
                parsed += 1;
            }
            let _ = r.push(Bytes::from(candidate));
            assert!(r.pending_streams() <= 4);
            assert!(r.pending_bytes() <= 1 << 20);
        }
    }
    assert!(
        parsed > 0,
        "harmless mutations (e.g. in the payload) still parse"
    );
    r.clear();
    assert_eq!((r.pending_streams(), r.pending_bytes()), (0, 0));
}
