//! Plain UDP: `udp-rr` sends N requests one at a time from one socket and
//! reports each round trip (send until the answer is back); `udp-echo-server`
//! answers every datagram with itself, so a direct and a tunnelled run
//! differ only by the tunnel. Used by `scripts/bench tunnel`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket;

/// Runs `count` sequential request/response round trips after `warmup`
/// unmeasured ones; each request carries its sequence number, so a late
/// answer to an earlier (timed out) request is not taken for the current one.
pub async fn run(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let any = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(addr).await?;
    let mut request = vec![0u8; size.max(8)];
    let mut answer = vec![0u8; 65_536];
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0usize;
    for i in 0..(warmup + count) as u64 {
        request[..8].copy_from_slice(&i.to_be_bytes());
        let start = Instant::now();
        socket
            .send(&request)
            .await
            .with_context(|| format!("send to {addr}"))?;
        let got = tokio::time::timeout(timeout, async {
            loop {
                let n = socket.recv(&mut answer).await?;
                if n >= 8 && answer[..8] == i.to_be_bytes() {
                    return Ok::<_, std::io::Error>(());
                }
            }
        })
        .await;
        match got {
            Ok(Ok(())) if i as usize >= warmup => samples.push(start.elapsed()),
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).with_context(|| format!("receive from {addr}")),
            Err(_) => lost += 1,
        }
    }
    anyhow::ensure!(!samples.is_empty(), "no answer from {addr}");
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{count} sequential {size}-byte requests to {addr}: round trip p50 {:.1} µs, p99 {:.1} µs, {lost} lost",
        us(pct(0.5)),
        us(pct(0.99))
    );
    println!(
        "RESULT udp-rr count={count} size={size} p50_us={:.1} p99_us={:.1} lost={lost}",
        us(pct(0.5)),
        us(pct(0.99))
    );
    Ok(())
}

/// A UDP echo server on `listen` until killed.
pub async fn echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    eprintln!("UDP echo server on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let _ = socket.send_to(&buf[..n], from).await;
    }
}
