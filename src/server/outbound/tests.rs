//! The outbound queue and its response body: order, the frame limit, the
//! close frame, finishing, and either half going away.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use actix_codec::Decoder;
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Message};
use actix_web::body::MessageBody;
use actix_web::web::{Bytes, BytesMut};

use super::{Outbound, OutboundBody, QueueFull, WriterDone};

/// A waker that records whether it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

fn waker() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag::default());
    (flag.clone(), Waker::from(flag))
}

fn poll_body(body: &mut OutboundBody, waker: &Waker) -> Poll<Option<Bytes>> {
    let mut task = Context::from_waker(waker);
    Pin::new(body)
        .poll_next(&mut task)
        .map(|item| item.map(|chunk| chunk.unwrap_or_else(|never| match never {})))
}

/// Decodes a chunk as a client would (server frames are not masked).
fn frames(chunk: &[u8]) -> Vec<Frame> {
    let mut codec = Codec::new().client_mode();
    let mut buf = BytesMut::from(chunk);
    let mut out = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("a valid frame") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes after the last frame", buf.len());
    out
}

fn text(s: &str) -> Message {
    Message::Text(s.into())
}

#[test]
fn queued_frames_reach_the_body_in_order_as_one_chunk() {
    let (mut out, mut body) = Outbound::new(8);
    let (body_woken, body_waker) = waker();
    assert_eq!(poll_body(&mut body, &body_waker), Poll::Pending);
    out.push(text("first")).unwrap();
    assert!(body_woken.take(), "a queued frame wakes the body");
    out.push(text("second")).unwrap();
    out.push_control(Message::Ping(Bytes::from_static(b"p")));
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body has the frames");
    };
    assert_eq!(
        frames(&chunk),
        vec![
            Frame::Text(Bytes::from_static(b"first")),
            Frame::Text(Bytes::from_static(b"second")),
            Frame::Ping(Bytes::from_static(b"p")),
        ]
    );
    assert_eq!(poll_body(&mut body, &body_waker), Poll::Pending);
    // Nothing stays allocated for an idle client once the chunk is handed over.
    assert_eq!(out.shared.borrow().buf.capacity(), 0);
}

#[test]
fn the_limit_counts_frames_the_connection_has_not_taken() {
    let (mut out, mut body) = Outbound::new(2);
    let (_, body_waker) = waker();
    out.push(text("a")).unwrap();
    out.push(text("b")).unwrap();
    assert_eq!(out.push(text("c")), Err(QueueFull));
    // A control frame over the limit is dropped, not an error.
    out.push_control(Message::Pong(Bytes::new()));
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body has the frames");
    };
    assert_eq!(frames(&chunk).len(), 2);
    out.push(text("d")).unwrap();
    out.push(text("e")).unwrap();
    assert_eq!(out.push(text("f")), Err(QueueFull));
}

#[test]
fn the_close_frame_follows_queued_frames_and_ends_the_body() {
    let (mut out, mut body) = Outbound::new(4);
    let (writer_woken, writer_waker) = waker();
    let (_, body_waker) = waker();
    let mut task = Context::from_waker(&writer_waker);
    assert_eq!(out.poll_write(&mut task), Poll::Pending);
    out.push(text("answer")).unwrap();
    // Exactly 123 bytes: the longest reason a close frame can carry, kept whole.
    let long = "é".repeat(60) + "abc";
    out.close(CloseReason {
        code: CloseCode::from(4002),
        description: Some(long),
    });
    assert!(out.closing());
    assert!(writer_woken.take(), "closing wakes the writer");
    assert_eq!(out.poll_write(&mut task), Poll::Ready(WriterDone::Closed));
    // Frames after the close are dropped.
    out.push(text("late")).unwrap();
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body has the frames");
    };
    let frames = frames(&chunk);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], Frame::Text(Bytes::from_static(b"answer")));
    let Frame::Close(Some(reason)) = &frames[1] else {
        panic!("a close frame, not {:?}", frames[1]);
    };
    assert_eq!(u16::from(reason.code), 4002);
    let description = reason.description.as_deref().unwrap_or_default();
    assert!(description.len() <= 123, "{} bytes", description.len());
    assert_eq!(description, "é".repeat(60) + "abc");
    assert_eq!(poll_body(&mut body, &body_waker), Poll::Ready(None));
}

#[test]
fn a_reason_over_123_bytes_is_cut_at_a_character_boundary() {
    let (mut out, mut body) = Outbound::new(4);
    let (_, body_waker) = waker();
    out.close(CloseReason {
        code: CloseCode::Policy,
        description: Some("é".repeat(100)),
    });
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body has the close frame");
    };
    let Frame::Close(Some(reason)) = &frames(&chunk)[0] else {
        panic!("a close frame");
    };
    assert_eq!(reason.description.as_deref(), Some("é".repeat(61).as_str()));
}

#[test]
fn finish_hands_over_what_is_queued_then_ends_without_a_close_frame() {
    let (mut out, mut body) = Outbound::new(4);
    let (writer_woken, writer_waker) = waker();
    let (_, body_waker) = waker();
    let mut task = Context::from_waker(&writer_waker);
    out.push(text("registered")).unwrap();
    out.finish();
    assert!(out.closing());
    out.push(text("late")).unwrap();
    assert_eq!(out.poll_write(&mut task), Poll::Pending, "not taken yet");
    writer_woken.take();
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body has the frame");
    };
    assert_eq!(
        frames(&chunk),
        vec![Frame::Text(Bytes::from_static(b"registered"))]
    );
    assert!(writer_woken.take(), "taking the frames wakes the writer");
    assert_eq!(out.poll_write(&mut task), Poll::Ready(WriterDone::Drained));
    assert_eq!(poll_body(&mut body, &body_waker), Poll::Ready(None));
}

#[test]
fn a_dropped_body_drops_frames_and_is_reported_once_finishing() {
    let (mut out, body) = Outbound::new(4);
    let (writer_woken, writer_waker) = waker();
    let mut task = Context::from_waker(&writer_waker);
    assert_eq!(out.poll_write(&mut task), Poll::Pending);
    drop(body);
    assert!(writer_woken.take());
    // The session still handles what the client sent before: not done yet.
    assert_eq!(out.poll_write(&mut task), Poll::Pending);
    // Frames for a gone connection are dropped and never count against the limit.
    for _ in 0..10 {
        out.push(text("nobody")).unwrap();
    }
    assert!(out.shared.borrow().buf.is_empty());
    out.finish();
    assert_eq!(
        out.poll_write(&mut task),
        Poll::Ready(WriterDone::SocketGone)
    );
}

#[test]
fn a_gone_connection_with_frames_untaken_is_reported_when_finishing() {
    let (mut out, body) = Outbound::new(4);
    let (_, writer_waker) = waker();
    let mut task = Context::from_waker(&writer_waker);
    out.push(text("untaken")).unwrap();
    out.finish();
    assert_eq!(out.poll_write(&mut task), Poll::Pending);
    drop(body);
    assert_eq!(
        out.poll_write(&mut task),
        Poll::Ready(WriterDone::SocketGone)
    );
}

#[test]
fn a_dropped_session_ends_the_body_after_what_is_queued() {
    let (mut out, mut body) = Outbound::new(4);
    let (body_woken, body_waker) = waker();
    out.push(text("last")).unwrap();
    let _ = body_woken.take();
    drop(out);
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body still has the frame");
    };
    assert_eq!(
        frames(&chunk),
        vec![Frame::Text(Bytes::from_static(b"last"))]
    );
    assert_eq!(poll_body(&mut body, &body_waker), Poll::Ready(None));
}

#[test]
fn abandoning_drops_untaken_frames_and_sends_the_close_alone() {
    let (mut out, mut body) = Outbound::new(4);
    let (_, body_waker) = waker();
    for _ in 0..4 {
        out.push(text("unread")).unwrap();
    }
    assert_eq!(out.push(text("one too many")), Err(QueueFull));
    out.abandon(CloseReason {
        code: CloseCode::Policy,
        description: Some("slow consumer".into()),
    });
    assert!(out.closing());
    let Poll::Ready(Some(chunk)) = poll_body(&mut body, &body_waker) else {
        panic!("the body has the close frame");
    };
    let frames = frames(&chunk);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(matches!(&frames[0], Frame::Close(Some(r)) if u16::from(r.code) == 1008));
    assert_eq!(poll_body(&mut body, &body_waker), Poll::Ready(None));
}
