//! Plain TCP: `connrate` opens N short connections (sequentially, or C at a
//! time with `--concurrency`) and reports
//! the setup time of each (connect until the first echoed byte is back);
//! `echo-server` is the echo service it is measured against, so a direct and
//! a tunnelled run differ only by the tunnel. Used by `scripts/bench tunnel`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runs `count` connections after `warmup` unmeasured ones, `concurrency`
/// at a time, and prints the summary and the `RESULT connrate` line.
pub async fn run(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut samples = measure(addr, count, warmup, concurrency, timeout).await?;
    let per_sec = (warmup + count) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / count.max(1) as u32;
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{count} connections to {addr}, {concurrency} at a time: setup mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        ms(mean),
        ms(pct(0.5)),
        ms(pct(0.99))
    );
    println!(
        "RESULT connrate count={count} mean_ms={:.4} p50_ms={:.4} p99_ms={:.4} concurrency={concurrency} conns_per_sec={per_sec:.0}",
        ms(mean),
        ms(pct(0.5)),
        ms(pct(0.99))
    );
    Ok(())
}

/// The setup times of `count` connections, in completion order: `concurrency`
/// tasks each take the next connection number and open it (connect + 1-byte
/// echo), so that many are in flight at once; the first `warmup` numbers
/// taken are not measured.
pub async fn measure(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    if count == 0 || concurrency == 0 {
        anyhow::bail!("--count and --concurrency must be at least 1");
    }
    let next = Arc::new(AtomicUsize::new(0));
    let total = warmup + count;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(total) {
        let next = next.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(mine);
                }
                let elapsed = tokio::time::timeout(timeout, one(addr))
                    .await
                    .with_context(|| format!("connection {i} timed out"))?
                    .with_context(|| format!("connection {i} to {addr}"))?;
                if i >= warmup {
                    mine.push(elapsed);
                }
            }
        });
    }
    let mut samples = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined.context("a connrate task panicked")??);
    }
    Ok(samples)
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
    serve(listener).await
}

/// Echoes every connection accepted on `listener`.
async fn serve(listener: TcpListener) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Barrier;

    /// An echo server that answers nobody until `group` connections have
    /// sent their byte: it only finishes if that many are in flight at once.
    async fn echo_in_groups(listener: TcpListener, group: usize) {
        let barrier = Arc::new(Barrier::new(group));
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).await.is_err() {
                    return;
                }
                barrier.wait().await;
                let _ = stream.write_all(&byte).await;
                let _ = stream.shutdown().await;
            });
        }
    }

    #[tokio::test]
    async fn concurrency_keeps_that_many_connections_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(echo_in_groups(listener, 4));
        let samples = measure(addr, 12, 4, 4, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(samples.len(), 12, "every measured connection has a sample");
    }

    #[tokio::test]
    async fn sequential_connections_would_wait_for_a_group_forever() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(echo_in_groups(listener, 2));
        let error = measure(addr, 2, 0, 1, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("timed out"), "{error:#}");
    }

    #[tokio::test]
    async fn measures_count_connections_through_the_echo_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        let samples = measure(addr, 30, 5, 3, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(samples.len(), 30);
        assert!(samples.iter().all(|d| *d > Duration::ZERO));
        assert!(measure(addr, 0, 0, 1, Duration::from_secs(1))
            .await
            .is_err());
        assert!(measure(addr, 1, 0, 0, Duration::from_secs(1))
            .await
            .is_err());
    }
}
