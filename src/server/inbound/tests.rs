//! `FrameReader`: whole messages come out in arrival order, and a malformed
//! frame is reported only after every complete frame before it.

use actix_codec::Encoder;
use actix_http::ws::{Codec, Item, Message};
use actix_web::web::{Bytes, BytesMut};

use super::*;

const LIMIT: usize = 64;

/// Frames as a client writes them (masked).
fn client_bytes(messages: Vec<Message>) -> BytesMut {
    let mut codec = Codec::new().client_mode();
    let mut out = BytesMut::new();
    for message in messages {
        codec.encode(message, &mut out).expect("encodable");
    }
    out
}

fn text(s: &str) -> Message {
    Message::Text(s.into())
}

fn drain(reader: &mut FrameReader) -> (Vec<Inbound>, Option<InboundError>) {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match reader.next_message() {
            Ok(Some(message)) => out.push(message),
            Ok(None) => return (out, None),
            Err(error) => return (out, Some(error)),
        }
    }
    panic!("reader yielded more than 1000 messages");
}

fn texts(messages: &[Inbound]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| match m {
            Inbound::Text(t) => &**t,
            other => panic!("not text: {other:?}"),
        })
        .collect()
}

#[test]
fn frames_written_together_come_out_in_order() {
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&client_bytes(vec![text("one"), text("two"), text("three")]));
    let (messages, error) = drain(&mut reader);
    assert!(error.is_none());
    assert_eq!(texts(&messages), ["one", "two", "three"]);
    assert_eq!(reader.unfinished_bytes(), 0);
}

#[test]
fn a_reader_with_nothing_half_received_holds_no_buffer() {
    let mut reader = FrameReader::new(LIMIT);
    let bytes = client_bytes(vec![text("registration"), text("half")]);
    // All of the first frame and part of the second: the rest stays buffered.
    reader.push_bytes(bytes.clone().freeze().slice(..bytes.len() - 2));
    let (messages, error) = drain(&mut reader);
    assert!(error.is_none());
    assert_eq!(texts(&messages), ["registration"]);
    assert!(reader.buf.capacity() > 0);
    reader.push(&bytes[bytes.len() - 2..]);
    let (messages, error) = drain(&mut reader);
    assert!(error.is_none());
    assert_eq!(texts(&messages), ["half"]);
    // An idle client keeps no read buffer between messages.
    assert_eq!(reader.buf.capacity(), 0);
}

#[test]
fn byte_at_a_time_gives_the_same_messages() {
    let bytes = client_bytes(vec![text("alpha"), Message::Ping(Bytes::from_static(b"p"))]);
    let mut reader = FrameReader::new(LIMIT);
    let mut out = Vec::new();
    for byte in bytes.iter() {
        reader.push(&[*byte]);
        out.extend(drain(&mut reader).0);
    }
    assert_eq!(
        out,
        [
            Inbound::Text("alpha".into()),
            Inbound::Ping(Bytes::from_static(b"p"))
        ]
    );
}

#[test]
fn an_unfinished_frame_is_counted_not_decoded() {
    let mut bytes = client_bytes(vec![text("whole"), text("cut short")]);
    bytes.truncate(bytes.len() - 3);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&bytes);
    let (messages, error) = drain(&mut reader);
    assert!(error.is_none());
    assert_eq!(texts(&messages), ["whole"]);
    assert!(reader.unfinished_bytes() > 0);
}

#[test]
fn a_malformed_frame_comes_after_the_frames_before_it() {
    let mut bytes = client_bytes(vec![text("first"), text("second")]);
    // An unmasked frame from a client is a protocol error (RFC 6455 §5.1).
    bytes.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&bytes);
    let (messages, error) = drain(&mut reader);
    assert_eq!(texts(&messages), ["first", "second"]);
    let error = error.expect("unmasked frame is an error");
    assert_eq!(error.close_code(), 1002, "{error}");
}

#[test]
fn an_oversized_frame_comes_after_the_frames_before_it() {
    let big = "x".repeat(LIMIT + 1);
    let bytes = client_bytes(vec![text("small"), text(&big)]);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&bytes);
    let (messages, error) = drain(&mut reader);
    assert_eq!(texts(&messages), ["small"]);
    assert!(matches!(
        error,
        Some(InboundError::TooLarge { limit: LIMIT })
    ));
}

#[test]
fn fragments_are_joined_with_control_frames_between() {
    let bytes = client_bytes(vec![
        Message::Continuation(Item::FirstText(Bytes::from_static(b"hel"))),
        Message::Ping(Bytes::new()),
        Message::Continuation(Item::Continue(Bytes::new())),
        Message::Continuation(Item::Last(Bytes::from_static(b"lo"))),
        text("after"),
    ]);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&bytes);
    let (messages, error) = drain(&mut reader);
    assert!(error.is_none());
    assert_eq!(
        messages,
        [
            Inbound::Ping(Bytes::new()),
            Inbound::Text("hello".into()),
            Inbound::Text("after".into())
        ]
    );
}

#[test]
fn fragments_over_the_limit_are_too_large() {
    let half = Bytes::from(vec![b'a'; LIMIT / 2 + 1]);
    let bytes = client_bytes(vec![
        Message::Continuation(Item::FirstBinary(half.clone())),
        Message::Continuation(Item::Last(half)),
    ]);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&bytes);
    let (messages, error) = drain(&mut reader);
    assert!(messages.is_empty());
    let error = error.expect("joined message over the limit");
    assert_eq!(error.close_code(), crate::protocol::close::TOO_LARGE);
}

#[test]
fn joined_text_must_be_utf8() {
    // "é" is 0xC3 0xA9: split across fragments it is fine, cut off it is not.
    let split = client_bytes(vec![
        Message::Continuation(Item::FirstText(Bytes::from_static(&[0xC3]))),
        Message::Continuation(Item::Last(Bytes::from_static(&[0xA9]))),
    ]);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&split);
    assert_eq!(drain(&mut reader).0, [Inbound::Text("é".into())]);

    let cut = client_bytes(vec![
        Message::Continuation(Item::FirstText(Bytes::from_static(&[0xC3]))),
        Message::Continuation(Item::Last(Bytes::new())),
    ]);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&cut);
    let error = drain(&mut reader).1.expect("invalid UTF-8");
    assert_eq!(error.close_code(), 1007);
}

#[test]
fn a_continuation_without_a_start_is_a_protocol_error() {
    let mut bytes = client_bytes(vec![text("ok")]);
    // FIN + continuation opcode, masked with a zero key, payload "x".
    bytes.extend_from_slice(&[0x80, 0x81, 0, 0, 0, 0, b'x']);
    let mut reader = FrameReader::new(LIMIT);
    reader.push(&bytes);
    let (messages, error) = drain(&mut reader);
    assert_eq!(texts(&messages), ["ok"]);
    assert_eq!(error.expect("no start").close_code(), 1002);
}

/// A masked header declaring `len` payload bytes, with no payload after it.
fn header_only(opcode_byte: u8, len: u64) -> Vec<u8> {
    let mut out = vec![opcode_byte, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

#[test]
fn an_oversized_length_is_refused_from_the_header_alone() {
    for len in [LIMIT as u64 + 1, 1 << 34, 1 << 62] {
        let mut reader = FrameReader::new(LIMIT);
        reader.push(&client_bytes(vec![text("before")]));
        reader.push(&header_only(0x81, len));
        let (messages, error) = drain(&mut reader);
        assert_eq!(texts(&messages), ["before"]);
        assert!(
            matches!(error, Some(InboundError::TooLarge { .. })),
            "{len}: {error:?}"
        );
    }
}

#[test]
fn a_fragment_that_would_pass_the_limit_is_refused_from_its_header() {
    let mut reader = FrameReader::new(LIMIT);
    let first = Bytes::from(vec![b'a'; LIMIT - 10]);
    reader.push(&client_bytes(vec![Message::Continuation(
        Item::FirstBinary(first),
    )]));
    // FIN + continuation, declaring 11 bytes: one more than the room left.
    reader.push(&[0x80, 0x80 | 11, 0, 0, 0, 0]);
    let (messages, error) = drain(&mut reader);
    assert!(messages.is_empty());
    assert!(matches!(error, Some(InboundError::TooLarge { .. })));
}

#[test]
fn close_frames_are_checked_for_code_and_reason() {
    let close = |payload: &[u8]| {
        // FIN + close, masked with a zero key.
        let mut out = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        out
    };
    let cases: [(&[u8], Option<u16>); 6] = [
        (&[0x03, 0xe8], None),
        (&[0x03, 0xe8, b'o', b'k'], None),
        (&[0x03, 0xe8, 0xff, 0xfe], Some(1007)),
        (&[0x03, 0xed], Some(1002)),
        (&[0x13, 0x88], Some(1002)),
        (&[], None),
    ];
    for (payload, code) in cases {
        let mut reader = FrameReader::new(LIMIT);
        reader.push(&close(payload));
        let (messages, error) = drain(&mut reader);
        assert_eq!(error.map(|e| e.close_code()), code, "{payload:?}");
        assert_eq!(messages.len(), usize::from(code.is_none()), "{payload:?}");
    }
}
