//! Proves an IPv4 client of an IPv6 socket is reported as IPv4 everywhere:
//! with the tunnel's and the relay's listeners bound to an IPv6 (IPv4-mapped
//! loopback) address, an IPv4 client's PROXY v2 header has family 0x11 with
//! 127.0.0.1 as source and destination, `Start` and `ConnectionOpen` carry
//! 127.0.0.1, `/tunnels` shows the agent at 127.0.0.1, and the relay's
//! `/clients` lists the client at 127.0.0.1.

mod common;
mod tunnel_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use switchboard::protocol::tunnel::{Frame, Role};
use switchboard::tunnel::agent::LocalService;
use switchboard::tunnel::framing::write_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_common::*;

/// IPv4 loopback as an IPv6 socket sees it: a dual-stack listener bound
/// here accepts IPv4 clients and reports them as `::ffff:127.0.0.1`.
const MAPPED_LOOPBACK: &str = "::ffff:127.0.0.1";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A tunnel relay whose agents' and service listeners are IPv6 sockets.
fn dual_stack_relay(service: &str) -> Relay {
    let mut s = settings(&[service]);
    s.host = MAPPED_LOOPBACK.into();
    s.services[0].bind = format!("[{MAPPED_LOOPBACK}]:0");
    let relay = Relay::start(s);
    assert!(
        relay.service(service).is_ipv6(),
        "the listener is an IPv6 socket"
    );
    relay
}

/// The same port as `addr`, reached over IPv4.
fn ipv4(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(LOOPBACK, addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_and_tunnels_report_an_ipv4_client_as_ipv4() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 16];
        s.read_exact(&mut header).await.unwrap();
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        let _ = seen_tx.send((header, body));
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let relay = dual_stack_relay("pp");
    let agents = ipv4(relay.tunnel.agents_addr()).to_string();
    let mut a = agent_settings(&agents, "pp", LocalService::Addr(local.to_string()), 1);
    a.proxy_protocol = true;
    let agent = switchboard::tunnel::agent::spawn(a);
    wait_until("the pool to fill", || relay.idle("pp") == 1).await;
    let public = ipv4(relay.service("pp"));
    let mut client = TcpStream::connect(public).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"data").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    let (header, body) = seen_rx.await.unwrap();
    assert_eq!(
        &header[12..16],
        &[0x21, 0x11, 0x00, 0x0C],
        "TCP over IPv4, 12 bytes"
    );
    assert_eq!(&body[..4], &[127, 0, 0, 1], "source");
    assert_eq!(&body[4..8], &[127, 0, 0, 1], "destination");
    assert_eq!(u16::from_be_bytes([body[8], body[9]]), client_addr.port());
    assert_eq!(u16::from_be_bytes([body[10], body[11]]), public.port());
    let agent_addr = relay.status("pp")["agents"][0]["addr"].clone();
    let agent_addr: SocketAddr = agent_addr.as_str().unwrap().parse().unwrap();
    assert_eq!(
        agent_addr.ip(),
        LOOPBACK,
        "/tunnels shows the agent as IPv4"
    );
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_connection_open_carry_the_ipv4_address() {
    let relay = dual_stack_relay("raw");
    let (mut control, mut control_reader, session) =
        raw_agent(&relay, "raw", Role::Control, 0).await;
    let (mut data, mut data_reader, _) = raw_agent(&relay, "raw", Role::Data, session).await;
    wait_until("the pooled connection", || relay.idle("raw") == 1).await;
    let public = ipv4(relay.service("raw"));
    let client = TcpStream::connect(public).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    assert!(client_addr.is_ipv4());
    let Frame::Start {
        conn,
        client: seen,
        server,
    } = next_event(&mut data, &mut data_reader).await
    else {
        panic!("no start");
    };
    assert_eq!(seen, client_addr);
    assert_eq!(server, public);
    write_frame(&mut data, &Frame::Started { conn })
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut control, &mut control_reader).await,
        Frame::ConnectionOpen {
            conn,
            client: client_addr
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_clients_lists_an_ipv4_client_as_ipv4() {
    let public = std::net::TcpListener::bind(format!("[{MAPPED_LOOPBACK}]:0")).unwrap();
    let relay = common::TestRelay::start_on(common::test_settings(), public);
    let _ws = common::client(&relay.url, "v4", common::UUID_A).await;
    let clients = common::wait_clients(relay.admin, |j| common::lists(j, common::UUID_A)).await;
    let remote = clients[0]["remote_address"].as_str().unwrap();
    let remote: SocketAddr = remote.parse().unwrap();
    assert_eq!(remote.ip(), LOOPBACK, "{clients}");
}
