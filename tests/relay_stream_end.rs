//! Proves that every whole frame a client wrote before its stream ended (FIN,
//! reset, mid-frame cut, malformed or oversized frame) is handled in order, that
//! such an end is an abnormal closure (1006) and not a protocol error, and that
//! no metric label takes a close code from the network.
mod common;

use common::raw_ws::{frame, read_until_end, text_frame, upgraded};
use common::*;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

async fn metric(relay: &TestRelay, line_start: &str) -> Option<f64> {
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The field report's scenario: registration and offer in one write, then
/// FIN. 40 tries, every one answered and delivered.
#[tokio::test]
async fn frames_written_just_before_fin_are_all_handled() {
    let relay = TestRelay::start(test_settings());
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    for attempt in 0..40 {
        let mut a = upgraded(&relay).await;
        let offer_text = offer(UUID_A, UUID_B, "offer").replace("v=0", &format!("v={attempt}"));
        let mut burst = text_frame(&registration("peer-A", UUID_A));
        burst.extend(text_frame(&offer_text));
        a.write_all(&burst).await.unwrap();
        a.shutdown().await.unwrap();
        let (texts, close) = read_until_end(&mut a).await;
        assert_eq!(texts, [SUCCESS], "attempt {attempt}");
        assert_eq!(close, None, "an ended stream gets no close frame (1006)");
        assert_eq!(recv_text(&mut b).await, offer_text, "attempt {attempt}");
    }
    assert_eq!(
        metric(&relay, "switchboard_abnormal_closures_total").await,
        Some(40.0)
    );
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert!(!metrics.contains("code=\"1002\""), "{metrics}");
    assert_still_serving(&relay.url).await;
}

/// A stream cut in the middle of a frame: the whole frames before it count.
#[tokio::test]
async fn frames_before_a_cut_frame_are_handled() {
    let relay = TestRelay::start(test_settings());
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    let mut a = upgraded(&relay).await;
    let offer_text = offer(UUID_A, UUID_B, "offer");
    let mut burst = text_frame(&registration("peer-A", UUID_A));
    burst.extend(text_frame(&offer_text));
    let cut = text_frame(&offer(UUID_A, UUID_B, "answer"));
    burst.extend_from_slice(&cut[..cut.len() / 2]);
    a.write_all(&burst).await.unwrap();
    a.shutdown().await.unwrap();
    let (texts, close) = read_until_end(&mut a).await;
    assert_eq!(
        (texts.as_slice(), close),
        ([SUCCESS.to_string()].as_slice(), None)
    );
    assert_eq!(recv_text(&mut b).await, offer_text);
    assert_eq!(
        metric(&relay, "switchboard_abnormal_closures_total").await,
        Some(1.0)
    );
}

/// A reset (RST) right after the frames: nothing can be written back, but
/// the offer still reaches B.
#[tokio::test]
async fn frames_before_a_reset_are_handled() {
    let relay = TestRelay::start(test_settings());
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    for attempt in 0..10 {
        let mut a = upgraded(&relay).await;
        let offer_text = offer(UUID_A, UUID_B, "offer").replace("v=0", &format!("v={attempt}"));
        let mut burst = text_frame(&registration("peer-A", UUID_A));
        burst.extend(text_frame(&offer_text));
        a.write_all(&burst).await.unwrap();
        a.set_zero_linger().unwrap();
        drop(a);
        assert_eq!(recv_text(&mut b).await, offer_text, "attempt {attempt}");
    }
    assert_still_serving(&relay.url).await;
}

/// A malformed or oversized frame after good ones: the good ones are handled
/// first, then the relay closes with the matching code.
#[tokio::test]
async fn bad_frames_are_refused_after_the_good_ones_before_them() {
    let mut settings = test_settings();
    settings.server.max_message_bytes = 4096;
    let relay = TestRelay::start(settings);
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    let unmasked = [0x81, 0x02, b'h', b'i'].to_vec();
    let oversized = text_frame(&"x".repeat(5000));
    let bad_utf8 = frame(0x1, &[0xC3, 0x28]);
    // Only a header declaring 16 GiB: refused at once, nothing buffered.
    let mut huge_header = vec![0x81, 0x80 | 127];
    huge_header.extend_from_slice(&(1u64 << 34).to_be_bytes());
    huge_header.extend_from_slice(&[1, 2, 3, 4]);
    let bad_close_reason = frame(0x8, &[0x03, 0xe8, 0xff, 0xfe]);
    let bad_close_code = frame(0x8, &1005u16.to_be_bytes());
    for (bad, code) in [
        (unmasked, 1002),
        (oversized, 4003),
        (bad_utf8, 1007),
        (huge_header, 4003),
        (bad_close_reason, 1007),
        (bad_close_code, 1002),
    ] {
        let mut a = upgraded(&relay).await;
        let offer_text = offer(UUID_A, UUID_B, "offer").replace("v=0", &format!("v={code}"));
        let mut burst = text_frame(&registration("peer-A", UUID_A));
        burst.extend(text_frame(&offer_text));
        burst.extend(bad);
        a.write_all(&burst).await.unwrap();
        let (texts, close) = read_until_end(&mut a).await;
        assert_eq!(texts, [SUCCESS], "code {code}");
        assert_eq!(close, Some(code));
        assert_eq!(recv_text(&mut b).await, offer_text);
    }
    assert_still_serving(&relay.url).await;
}

/// Data after the client's close frame is ignored (RFC 6455 §5.5.1), and the
/// close is answered.
#[tokio::test]
async fn frames_after_a_close_frame_are_ignored() {
    let relay = TestRelay::start(test_settings());
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    let mut a = upgraded(&relay).await;
    let mut burst = text_frame(&registration("peer-A", UUID_A));
    burst.extend(frame(0x8, &1000u16.to_be_bytes()));
    burst.extend(text_frame(&offer(UUID_A, UUID_B, "offer")));
    a.write_all(&burst).await.unwrap();
    let (texts, close) = read_until_end(&mut a).await;
    assert_eq!((texts, close), (vec![SUCCESS.to_string()], Some(1000)));
    // B gets nothing; the next thing it sees is its own echo of a ping.
    b.send(Message::Ping(b"mark".to_vec().into()))
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut b))
        .await
        .expect("pong timed out");
    assert!(matches!(next, Some(Ok(Message::Pong(_)))), "{next:?}");
    assert_eq!(
        metric(&relay, "switchboard_abnormal_closures_total").await,
        Some(0.0)
    );
}

/// A client's close code is counted by kind, never as a label of its own,
/// and never as one of the relay's closes or takeovers.
#[tokio::test]
async fn client_close_codes_do_not_become_labels() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    a.close(Some(CloseFrame {
        code: CloseCode::from(4004),
        reason: "".into(),
    }))
    .await
    .unwrap();
    expect_close(&mut a).await;
    for code in 3000..3200u16 {
        let mut ws = connect(&relay.url).await;
        ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))
        .await
        .unwrap();
        expect_close(&mut ws).await;
    }
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert_eq!(
        metric(&relay, "switchboard_takeovers_total").await,
        Some(0.0)
    );
    assert!(!metrics.contains("switchboard_closes_total{"), "{metrics}");
    assert!(
        metrics.contains("switchboard_client_closes_total{kind=\"application\"} 201"),
        "{metrics}"
    );
    let series = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
        .count();
    assert!(series < 20, "{series} labelled series:\n{metrics}");
}
