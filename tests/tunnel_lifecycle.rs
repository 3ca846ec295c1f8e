//! Proves the tunnel's lifecycle through real sockets: stopping the agent
//! closes the local side and the client of a running connection, stopping the
//! relay closes a running connection's client within the grace period, and
//! the agent's `Started` reaches the relay whatever the local service does
//! first (greets, stays silent, or closes at once).

mod tunnel_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::tunnel::agent::LocalService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_running_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let relay = Relay::start(settings(&["s"]));
    let agent = agent(&relay, "s", LocalService::Addr(local.to_string()), 2).await;

    // The agent stops: the local side of a running connection is closed.
    let (mut client, mut server_side) = through(&relay, "s", &listener, b"a").await;
    let mut byte = [0u8; 1];
    server_side.read_exact(&mut byte).await.unwrap();
    tokio::time::timeout(WAIT, agent.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(
        read_until_closed(&mut server_side, WAIT).await.is_some(),
        "local side left open"
    );
    assert!(
        read_until_closed(&mut client, WAIT).await.is_some(),
        "client left open"
    );
    // The client saw EOF; once it hangs up too, the connection is gone.
    drop(client);
    wait_until("the first connection to end", || {
        relay.status("s")["active"] == 0
    })
    .await;

    // The relay stops: a running connection's client is closed, within the grace period.
    let agent = agent_again(&relay, local).await;
    let (mut client, _server_side) = through(&relay, "s", &listener, b"b").await;
    wait_until("the connection to run", || relay.status("s")["active"] == 1).await;
    let stopping = Instant::now();
    relay.tunnel.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert!(
        read_until_closed(&mut client, WAIT).await.is_some(),
        "client left open"
    );
    agent.stop().await.unwrap();
}

async fn agent_again(relay: &Relay, local: SocketAddr) -> switchboard::tunnel::agent::AgentHandle {
    agent(relay, "s", LocalService::Addr(local.to_string()), 2).await
}

/// A local service on 127.0.0.1:0 that greets (`Some(bytes)`), stays
/// silent (`None`), or closes at once (`Some(b"")`), for each connection;
/// what it receives goes back through the returned channel.
async fn scripted_service(
    greeting: Option<&'static [u8]>,
) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                match greeting {
                    Some(b"") => return,
                    Some(bytes) => stream.write_all(bytes).await.unwrap(),
                    None => {}
                }
                let mut buf = vec![0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn served(relay: &Relay, service: &str) -> f64 {
    metric(
        &relay.metrics_text(),
        "switchboard_tunnel_clients_served_total",
        service,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_reaches_the_relay_whatever_the_service_sends_first() {
    // The agent's `Started` rides with the service's first bytes, or goes
    // alone when the service is silent or closes at once.
    let relay = Relay::start(settings(&["greets", "silent", "closes"]));

    let (greets, _) = scripted_service(Some(b"220 hello\r\n")).await;
    let a1 = agent(&relay, "greets", LocalService::Addr(greets.to_string()), 1).await;
    let mut client = TcpStream::connect(relay.service("greets")).await.unwrap();
    let mut banner = [0u8; 11];
    tokio::time::timeout(WAIT, client.read_exact(&mut banner))
        .await
        .expect("no banner")
        .unwrap();
    assert_eq!(&banner, b"220 hello\r\n");
    assert_eq!(served(&relay, "greets"), 1.0);

    let (silent, mut received) = scripted_service(None).await;
    let a2 = agent(&relay, "silent", LocalService::Addr(silent.to_string()), 1).await;
    let mut client = TcpStream::connect(relay.service("silent")).await.unwrap();
    client.write_all(b"upload").await.unwrap();
    let got = tokio::time::timeout(WAIT, received.recv()).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"upload"[..]));
    wait_until("the silent service's client to count as served", || {
        served(&relay, "silent") == 1.0
    })
    .await;
    // Still open: the relay did not give up on it.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), client.read(&mut byte)).await;
    assert!(
        read.is_err(),
        "the client of a silent service was closed: {read:?}"
    );

    let (closes, _) = scripted_service(Some(b"")).await;
    let a3 = agent(&relay, "closes", LocalService::Addr(closes.to_string()), 1).await;
    let mut client = TcpStream::connect(relay.service("closes")).await.unwrap();
    let got = read_until_closed(&mut client, WAIT)
        .await
        .expect("client of a closing service was never closed");
    assert!(got.is_empty());
    assert_eq!(served(&relay, "closes"), 1.0);
    assert_eq!(
        metric(
            &relay.metrics_text(),
            "switchboard_tunnel_rejections_total",
            "local_refused"
        ),
        0.0
    );
    for a in [a1, a2, a3] {
        a.stop().await.unwrap();
    }
}
