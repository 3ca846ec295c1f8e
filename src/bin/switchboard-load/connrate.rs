//! Plain TCP: `connrate` opens N sequential short connections and reports
//! the setup time of each (connect until the first echoed byte is back);
//! `echo-server` is the echo service it is measured against, so a direct and
//! a tunnelled run differ only by the tunnel. Used by `scripts/bench tunnel`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runs `count` sequential connections after `warmup` unmeasured ones.
pub async fn run(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let elapsed = tokio::time::timeout(timeout, one(addr))
            .await
            .with_context(|| format!("connection {i} timed out"))?
            .with_context(|| format!("connection {i} to {addr}"))?;
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / count.max(1) as u32;
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{count} sequential connections to {addr}: setup mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        ms(mean),
        ms(pct(0.5)),
        ms(pct(0.99))
    );
    println!(
        "RESULT connrate count={count} mean_ms={:.4} p50_ms={:.4} p99_ms={:.4}",
        ms(mean),
        ms(pct(0.5)),
        ms(pct(0.99))
    );
    Ok(())
}

/// Connect, send one byte, wait for it to come back; the connection then closes.
async fn one(addr: SocketAddr) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    let elapsed = start.elapsed();
    stream.shutdown().await?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    Ok(elapsed)
}

/// An echo server on `listen` until killed.
pub async fn echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    eprintln!("echo server on {}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}
