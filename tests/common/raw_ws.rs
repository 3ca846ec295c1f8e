//! Raw WebSocket clients for tests that need bytes the usual client will not
//! write: masked frames built by hand, and an upgrade over any TCP stream.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestRelay, WAIT};

/// A masked client frame (RFC 6455 §5.2) with opcode `op` and FIN set.
pub fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | op];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

pub fn text_frame(text: &str) -> Vec<u8> {
    frame(0x1, text.as_bytes())
}

/// A raw TCP client after a completed WebSocket upgrade.
pub async fn upgraded(relay: &TestRelay) -> TcpStream {
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    upgrade(tcp, relay).await
}

/// Completes a WebSocket upgrade on `tcp`, already connected to `relay`.
pub async fn upgrade(mut tcp: TcpStream, relay: &TestRelay) -> TcpStream {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        relay.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "response head too long");
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("upgrade answer timed out")
            .unwrap();
        assert_eq!(n, 1, "relay hung up during the upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// What the relay wrote back until it closed the connection: text payloads,
/// then the close code if it sent a close frame.
pub async fn read_until_end(tcp: &mut TcpStream) -> (Vec<String>, Option<u16>) {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "relay did not end the connection");
    let (mut texts, mut close, mut at) = (Vec::new(), None, 0);
    while at + 2 <= bytes.len() {
        let (op, len) = (bytes[at] & 0x0f, (bytes[at + 1] & 0x7f) as usize);
        let (len, start) = match len {
            126 => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                at + 4,
            ),
            127 => panic!("unexpectedly large frame from the relay"),
            n => (n, at + 2),
        };
        let payload = &bytes[start..start + len];
        match op {
            0x1 => texts.push(String::from_utf8(payload.to_vec()).unwrap()),
            0x8 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
            _ => {}
        }
        at = start + len;
    }
    (texts, close)
}
