//! Proves UDP services through the tunnel with real UDP and TCP sockets: a
//! real UDP echo service (many datagrams, order and content kept per
//! session, two clients at once get only their own answers), DNS-like
//! request/response traffic (many ids in flight, every answer matched),
//! idle expiry (the session leaves `/tunnels` and the gauge; the next
//! datagram opens a new one), the `max_sessions`, `queue_full` and
//! `too_large` drops counted, and queued datagrams delivered once an agent
//! comes (tunnel_udp_edges.rs proves the wrong transport, bad settings, the
//! wire format, TLS and processes).

mod common;
mod tunnel_common;

use std::collections::HashMap;
use std::time::Duration;

use switchboard::tunnel::agent::{self, LocalService};
use tokio::net::UdpSocket;
use tunnel_common::udp::*;
use tunnel_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_keeps_order_and_content_per_session() {
    let relay = Relay::start(udp_settings("echo", |_| {}));
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 4).await;
    let status = relay.status("echo");
    assert_eq!(status["type"], "udp");
    assert_eq!(relay.status("web")["type"], "tcp");
    let to = relay.service("echo");
    tokio::join!(
        echo_session(to, 1, 2_000, 50),
        echo_session(to, 2, 2_000, 50)
    );
    assert_eq!(udp_sessions(&relay, "echo"), 2);
    let text = relay.metrics_text();
    let label = "service=\"echo\"";
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_datagrams_in_total", label),
        4_000.0
    );
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_datagrams_out_total", label),
        4_000.0
    );
    assert_eq!(metric(&text, "switchboard_tunnel_udp_sessions", label), 2.0);
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_drops_total", label),
        0.0
    );
    // The largest datagram IPv4 carries goes through whole, and an empty one.
    let socket = client(to).await;
    for d in [vec![0xabu8; 65_507], Vec::new()] {
        socket.send(&d).await.unwrap();
        assert_eq!(recv(&socket, WAIT).await.expect("answer"), d);
    }
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_like_requests_in_flight_are_all_answered() {
    let relay = Relay::start(udp_settings("dns", |_| {}));
    let local = resolver().await;
    let agent = agent(&relay, "dns", LocalService::Udp(local.to_string()), 4).await;
    let to = relay.service("dns");
    let clients = (0..4u16).map(|c| async move {
        let socket = client(to).await;
        let mut expected = HashMap::new();
        for i in 0..200u16 {
            let id = c * 1_000 + i;
            let mut request = id.to_be_bytes().to_vec();
            request.extend_from_slice(format!("host-{id}.example.org").as_bytes());
            socket.send(&request).await.unwrap();
            expected.insert(id, answer(&request));
        }
        while !expected.is_empty() {
            let got = recv(&socket, WAIT).await.expect("every request answered");
            let id = u16::from_be_bytes([got[0], got[1]]);
            let want = expected
                .remove(&id)
                .expect("an answer to a request of this client");
            assert_eq!(got, want, "answer of request {id}");
        }
    });
    futures_util::future::join_all(clients).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_a_new_datagram_opens_a_new_one() {
    let relay = Relay::start(udp_settings("echo", |s| s.udp_idle_timeout_ms = Some(300)));
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 2).await;
    let socket = client(relay.service("echo")).await;
    socket.send(b"one").await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"one");
    assert_eq!(udp_sessions(&relay, "echo"), 1);
    wait_until("the idle session to expire", || {
        udp_sessions(&relay, "echo") == 0
    })
    .await;
    let text = relay.metrics_text();
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_sessions", "service=\"echo\""),
        0.0
    );
    // Its pooled connection was closed; the pool is refilled.
    wait_until("the pool to refill", || relay.idle("echo") >= 2).await;
    socket.send(b"two").await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"two");
    assert_eq!(udp_sessions(&relay, "echo"), 1);
    let text = relay.metrics_text();
    let served = metric(
        &text,
        "switchboard_tunnel_clients_served_total",
        "service=\"echo\"",
    );
    assert_eq!(served, 2.0, "two sessions, one after the other");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_max_sessions_are_dropped_and_counted() {
    let relay = Relay::start(udp_settings("echo", |s| s.udp_max_sessions = Some(2)));
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 4).await;
    let to = relay.service("echo");
    let (a, b, c) = (client(to).await, client(to).await, client(to).await);
    for s in [&a, &b] {
        s.send(b"hello").await.unwrap();
        assert_eq!(recv(s, WAIT).await.unwrap(), b"hello");
    }
    for _ in 0..3 {
        c.send(b"third").await.unwrap();
    }
    assert_eq!(
        recv(&c, Duration::from_millis(300)).await,
        None,
        "no third session"
    );
    let text = relay.metrics_text();
    let drops = metric(
        &text,
        "switchboard_tunnel_udp_drops_total",
        "reason=\"max_sessions\"",
    );
    assert_eq!(drops, 3.0);
    assert_eq!(udp_sessions(&relay, "echo"), 2);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_and_queued_datagrams_wait_for_an_agent() {
    let relay = Relay::start(udp_settings("echo", |s| s.udp_queue = Some(4)));
    let socket = client(relay.service("echo")).await;
    // No agent yet: the session waits for a pooled connection with its queue.
    for seq in 0..20 {
        socket.send(&datagram(7, seq)).await.unwrap();
    }
    wait_until("the excess to be dropped", || {
        metric(
            &relay.metrics_text(),
            "switchboard_tunnel_udp_drops_total",
            "reason=\"queue_full\"",
        ) == 16.0
    })
    .await;
    assert_eq!(udp_sessions(&relay, "echo"), 1);
    let local = udp_echo_server().await;
    let agent = agent::spawn(agent_settings(
        &relay.agents(),
        "echo",
        LocalService::Udp(local.to_string()),
        2,
    ));
    for seq in 0..4 {
        let got = recv(&socket, WAIT)
            .await
            .expect("a queued datagram answered");
        assert_eq!(got, datagram(7, seq));
    }
    assert_eq!(recv(&socket, Duration::from_millis(200)).await, None);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_over_the_limit_are_dropped_and_counted() {
    let mut s = udp_settings("echo", |s| s.bind = "[::1]:0".into());
    s.host = "127.0.0.1".into();
    let relay = Relay::start(s);
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 2).await;
    let socket = UdpSocket::bind("[::1]:0").await.unwrap();
    socket.connect(relay.service("echo")).await.unwrap();
    // IPv6 carries up to 65 527 bytes; the tunnel, 65 507.
    socket.send(&vec![1u8; 65_508]).await.unwrap();
    socket.send(b"small").await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"small");
    let text = relay.metrics_text();
    let drops = metric(
        &text,
        "switchboard_tunnel_udp_drops_total",
        "reason=\"too_large\"",
    );
    assert_eq!(drops, 1.0);
    agent.stop().await.unwrap();
}
