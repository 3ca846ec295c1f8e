//! UDP helpers of the tunnel tests: real UDP echo and DNS-like servers,
//! client sockets with large buffers, numbered datagrams, checked echo sessions.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard::config::TunnelSettings;
use tokio::net::UdpSocket;

use super::{settings, Relay, WAIT};
/// Tunnel settings with one UDP service `name` (and a TCP service "web").
pub fn udp_settings(
    name: &str,
    tweak: impl FnOnce(&mut switchboard::config::TunnelService),
) -> TunnelSettings {
    let mut s = settings(&[name, "web"]);
    s.services[0].kind = Some("udp".into());
    tweak(&mut s.services[0]);
    s
}

/// Asks for 4 MiB socket buffers, so bursts of in-flight datagrams are not
/// lost in the test's own sockets (the kernel default holds ~200 small ones).
pub fn big_buffers(socket: &UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
}

/// A real UDP echo server on 127.0.0.1:0.
pub async fn udp_echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    big_buffers(&socket);
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A tiny DNS-like server: each request `id (u16) | name` is answered with
/// `id | 0x80 | name reversed | sum of its bytes (u32)`.
pub async fn resolver() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    big_buffers(&socket);
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if n < 2 {
                continue;
            }
            let _ = socket.send_to(&answer(&buf[..n]), from).await;
        }
    });
    addr
}

pub fn answer(request: &[u8]) -> Vec<u8> {
    let (id, name) = request.split_at(2);
    let mut out = id.to_vec();
    out.push(0x80);
    out.extend(name.iter().rev());
    let sum: u32 = name.iter().map(|&b| u32::from(b)).sum();
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// A client socket on 127.0.0.1 sending to `to`.
pub async fn client(to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    big_buffers(&socket);
    socket.connect(to).await.unwrap();
    socket
}

/// The next datagram within `limit`, or None.
pub async fn recv(socket: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(limit, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub fn datagram(tag: u8, seq: u32) -> Vec<u8> {
    let len = 16 + (seq as usize * 37) % 1_400;
    let mut d = vec![tag; len];
    d[..4].copy_from_slice(&seq.to_be_bytes());
    d
}

pub fn udp_sessions(relay: &Relay, name: &str) -> u64 {
    relay.status(name)["udp_sessions"].as_u64().unwrap()
}

/// Sends `count` datagrams in windows of `window`, checking each answer's
/// order and content; the client tag tells one client's answers from another's.
pub async fn echo_session(to: SocketAddr, tag: u8, count: u32, window: u32) {
    let socket = client(to).await;
    let mut seq = 0;
    while seq < count {
        let end = (seq + window).min(count);
        for s in seq..end {
            socket.send(&datagram(tag, s)).await.unwrap();
        }
        for s in seq..end {
            let got = recv(&socket, WAIT).await.expect("an echo answer");
            assert_eq!(
                got,
                datagram(tag, s),
                "client {tag}: answer {s} in order and intact"
            );
        }
        seq = end;
    }
}
