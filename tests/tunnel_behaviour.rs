//! Proves the TCP tunnel serves plain TCP clients through real sockets:
//! echo (built-in and a real local service), 1 000 concurrent clients with
//! exact bytes, half-close, drops in both directions, pool refill, a burst
//! larger than the pool, an empty pool's bounded wait, a silent client, a
//! refusing local service, services that greet, stay silent or close at
//! once (the agent's `Started` reaches the relay in each case), an agent
//! that reconnects after a relay restart. (Shutdowns and `Started` are in
//! tunnel_lifecycle.rs.)

#[path = "common/refusing.rs"]
mod refusing;
mod tunnel_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use refusing::Refusing;
use switchboard::tunnel::agent::LocalService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_common::*;

fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_echo_through_the_tunnel() {
    let relay = Relay::start(settings(&["echo"]));
    let agent = agent(&relay, "echo", LocalService::Echo, 4).await;
    let data = payload(1, 300_000);
    assert_eq!(exchange(relay.service("echo"), &data).await, data);
    assert_eq!(exchange(relay.service("echo"), b"").await, b"");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_clients_get_exact_bytes() {
    let relay = Relay::start(settings(&["svc"]));
    let local = echo_server().await;
    let agent = agent(&relay, "svc", LocalService::Addr(local.to_string()), 32).await;
    let addr = relay.service("svc");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        tasks.push(tokio::spawn(async move {
            let data = payload(i, 1000 + (i * 37) % 9000);
            let back = exchange(addr, &data).await;
            assert_eq!(back.len(), data.len(), "client {i}: byte count");
            assert!(back == data, "client {i}: bytes differ");
            data.len() as u64
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(agent.stats.served.load(Ordering::Relaxed), 1000);
    wait_until("the metrics to count every byte", || {
        let text = relay.metrics_text();
        metric(&text, "switchboard_tunnel_bytes_to_agent_total", "svc") == total as f64
            && metric(&text, "switchboard_tunnel_bytes_to_client_total", "svc") == total as f64
    })
    .await;
    let text = relay.metrics_text();
    assert_eq!(
        metric(&text, "switchboard_tunnel_clients_served_total", "svc"),
        1000.0
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_honoured() {
    // The local service reads to EOF, then answers: it only can if the
    // client's FIN crossed the tunnel while the way back stayed open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .await
            .unwrap();
    });
    let relay = Relay::start(settings(&["h"]));
    let _agent = agent(&relay, "h", LocalService::Addr(local.to_string()), 2).await;
    let mut client = TcpStream::connect(relay.service("h")).await.unwrap();
    client.write_all(&[7; 12345]).await.unwrap();
    client.shutdown().await.unwrap();
    let answer = read_until_closed(&mut client, WAIT).await.unwrap();
    assert_eq!(answer, b"got 12345 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_propagate_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let relay = Relay::start(settings(&["d"]));
    let _agent = agent(&relay, "d", LocalService::Addr(local.to_string()), 2).await;

    // Client drops: the local service sees EOF.
    let (client, mut server_side) = through(&relay, "d", &listener, b"x").await;
    drop(client);
    let got = read_until_closed(&mut server_side, WAIT)
        .await
        .expect("local never saw the drop");
    assert_eq!(got, b"x");
    drop(server_side);

    // Local service drops: the client sees EOF.
    let (mut client, mut server_side) = through(&relay, "d", &listener, b"y").await;
    let mut byte = [0u8; 1];
    server_side.read_exact(&mut byte).await.unwrap();
    server_side.write_all(b"bye").await.unwrap();
    drop(server_side);
    let got = read_until_closed(&mut client, WAIT)
        .await
        .expect("client never saw the drop");
    assert_eq!(got, b"bye");
    // EOF is all TCP says about a drop; once the client hangs up too,
    // nothing of the connection is left on the relay.
    drop(client);
    wait_until("no active tunnelled connection", || {
        relay.status("d")["active"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_refills_as_soon_as_a_slot_is_taken() {
    let relay = Relay::start(settings(&["p"]));
    let agent = agent(&relay, "p", LocalService::Echo, 3).await;
    let mut client = TcpStream::connect(relay.service("p")).await.unwrap();
    client.write_all(b"hold").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    let taken = Instant::now();
    wait_until("the pool to refill", || relay.idle("p") == 3).await;
    let refill = taken.elapsed();
    eprintln!("pool refilled in {refill:?}");
    // The original waited ~2.7 s; a refill is one connect and handshake.
    assert!(refill < Duration::from_secs(1), "refill took {refill:?}");
    // The agent counts the new connection once the relay's acceptance arrives.
    wait_until("the agent to count 3 idle", || {
        agent.stats.idle.load(Ordering::Relaxed) == 3
    })
    .await;
    assert_eq!(relay.status("p")["active"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_pool_waits_then_succeeds() {
    // Each local connection is held 150 ms, so 12 clients on 2 pooled
    // connections cannot all be served at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let relay = Relay::start(settings(&["b"]));
    let _agent = agent(&relay, "b", LocalService::Addr(local.to_string()), 2).await;
    let addr = relay.service("b");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            tokio::spawn(async move { exchange(addr, &payload(i, 100)).await == payload(i, 100) })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    let text = relay.metrics_text();
    assert!(
        metric(&text, "switchboard_tunnel_waits_total", "b") > 0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_tunnel_rejections_total", "b"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pool_closes_the_client_after_the_wait() {
    let mut s = settings(&["none"]);
    s.pool_wait_ms = 300;
    let relay = Relay::start(s);
    let started = Instant::now();
    let mut client = TcpStream::connect(relay.service("none")).await.unwrap();
    let got = read_until_closed(&mut client, WAIT)
        .await
        .expect("client was never closed");
    assert!(got.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the wait"
    );
    let text = relay.metrics_text();
    assert_eq!(
        metric(&text, "switchboard_tunnel_rejections_total", "pool_timeout"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_block_others() {
    let relay = Relay::start(settings(&["q"]));
    let _agent = agent(&relay, "q", LocalService::Echo, 2).await;
    let mut silent = TcpStream::connect(relay.service("q")).await.unwrap();
    wait_until("the silent client to be carried", || {
        relay.status("q")["active"] == 1
    })
    .await;
    assert_eq!(exchange(relay.service("q"), b"ping").await, b"ping");
    // Well past every heartbeat timeout, the silent client is still connected.
    tokio::time::sleep(Duration::from_millis(800)).await;
    silent.write_all(b"late").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(WAIT, silent.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"late");
    drop(silent);
    wait_until("the silent client's tunnel to end", || {
        relay.status("q")["active"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_local_service_closes_the_client_cleanly() {
    let closed = Refusing::new();
    let relay = Relay::start(settings(&["r"]));
    let agent = agent(
        &relay,
        "r",
        LocalService::Addr(closed.addr().to_string()),
        2,
    )
    .await;
    let mut client = TcpStream::connect(relay.service("r")).await.unwrap();
    let got = read_until_closed(&mut client, WAIT)
        .await
        .expect("client was never closed");
    assert!(got.is_empty());
    assert_eq!(agent.stats.local_failures.load(Ordering::Relaxed), 1);
    let text = relay.metrics_text();
    assert_eq!(
        metric(
            &text,
            "switchboard_tunnel_rejections_total",
            "local_refused"
        ),
        1.0
    );
    wait_until("the pool to refill after the refusal", || {
        relay.idle("r") == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reconnects_after_a_relay_restart() {
    let s = settings(&["re"]);
    let relay = Relay::start(s.clone());
    let agents_addr = relay.tunnel.agents_addr();
    let service_addr = relay.service("re");
    let agent = agent(&relay, "re", LocalService::Echo, 3).await;
    assert_eq!(exchange(service_addr, b"before").await, b"before");
    relay.tunnel.shutdown().await;
    wait_until("the agent to notice", || {
        !agent.stats.connected.load(Ordering::Acquire)
    })
    .await;

    let mut again = s;
    again.port = agents_addr.port();
    again.services[0].bind = service_addr.to_string();
    let relay = Relay::start(again);
    wait_until("the agent to reconnect and refill", || {
        relay.idle("re") == 3
    })
    .await;
    assert!(agent.stats.sessions.load(Ordering::Relaxed) >= 2);
    assert_eq!(exchange(service_addr, b"after").await, b"after");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copying_pump_works_without_splice() {
    let mut s = settings(&["copy"]);
    s.splice = false;
    let relay = Relay::start(s);
    let local = echo_server().await;
    let mut a = agent_settings(
        &relay.agents(),
        "copy",
        LocalService::Addr(local.to_string()),
        2,
    );
    a.splice = false;
    let agent = switchboard::tunnel::agent::spawn(a);
    wait_until("the pool to fill", || relay.idle("copy") == 2).await;
    let data = payload(3, 2_000_000);
    assert_eq!(exchange(relay.service("copy"), &data).await, data);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfers_switch_to_splice_and_stay_exact() {
    let relay = Relay::start(settings(&["bulk"]));
    let local = echo_server().await;
    let agent = agent(&relay, "bulk", LocalService::Addr(local.to_string()), 2).await;
    let data = payload(5, 8_000_000);
    assert_eq!(exchange(relay.service("bulk"), &data).await, data);
    wait_until("the byte counters", || {
        metric(
            &relay.metrics_text(),
            "switchboard_tunnel_bytes_to_client_total",
            "bulk",
        ) == 8_000_000.0
    })
    .await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_tells_the_local_service_the_client_and_public_addresses() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 28];
        s.read_exact(&mut header).await.unwrap();
        let _ = seen_tx.send(header);
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let relay = Relay::start(settings(&["pp"]));
    let mut a = agent_settings(
        &relay.agents(),
        "pp",
        LocalService::Addr(local.to_string()),
        1,
    );
    a.proxy_protocol = true;
    let agent = switchboard::tunnel::agent::spawn(a);
    wait_until("the pool to fill", || relay.idle("pp") == 1).await;
    let mut client = TcpStream::connect(relay.service("pp")).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"data").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"data", "the header is not passed on to the client");
    let header = seen_rx.await.unwrap();
    assert_eq!(header[..12], switchboard::protocol::proxy_v2::SIGNATURE);
    assert_eq!(&header[12..16], &[0x21, 0x11, 0x00, 0x0C]);
    assert_eq!(&header[16..20], &[127, 0, 0, 1]);
    assert_eq!(
        u16::from_be_bytes([header[24], header[25]]),
        client_addr.port()
    );
    // Destination: the relay's public port the client connected to, not
    // the local service's own address.
    assert_eq!(&header[20..24], &[127, 0, 0, 1]);
    assert_eq!(
        u16::from_be_bytes([header[26], header[27]]),
        relay.service("pp").port()
    );
    assert_ne!(relay.service("pp").port(), local.port());
    agent.stop().await.unwrap();
}
