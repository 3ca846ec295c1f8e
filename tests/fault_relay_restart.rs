//! Proves that the relay's clients survive a relay crash: the `switchboard`
//! relay process (public, admin and tunnel listeners, two tunnel services) is
//! killed with SIGKILL and restarted on the same ports while 20 PeerManagers
//! (10 of them streaming numbered messages to the other 10 over WebRTC) and two
//! `switchboard host` agent processes are connected. Every manager registers
//! again within its backoff and accepts a fresh peer; the streams lose,
//! duplicate and reorder nothing; both agents refill their pools and serve
//! clients; no client process or actor is restarted. It prints the measured
//! times (`scripts/fault` runs it several times and collects them).

mod common;
mod fault_common;
mod tunnel_common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use common::peers::{events, wait_event, wait_registered};
use fault_common::{
    agent, both_pools_full, collector, manager_config, AgentProc, Inbox, Ports, RelayProc, Stream,
    AGENT_POOL, SERVICES,
};
use futures_util::future::join_all;
use switchboard::client::connection::ConnectionError;
use switchboard::client::peer_manager::{
    Connect, PeerError, PeerEvent, PeerManager, Send, Subscribe,
};
use switchboard::protocol::chunk::Payload;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

/// PeerManagers connected to the relay when it is killed.
const MANAGERS: usize = 20;

/// How long the relay stays dead the second time (the managers' first retries
/// are refused); the first time it comes back at once.
const DOWN: Duration = Duration::from_millis(1_500);

/// The managers' reconnect delays: 1 s doubling to 4 s.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// Slack on top of a backoff delay for connecting and registering.
const SLACK: Duration = Duration::from_millis(500);

/// The whole test's deadline for any one wait.
const LIMIT: Duration = Duration::from_secs(20);

struct Peers {
    addrs: Vec<Addr<PeerManager>>,
    uuids: Vec<Uuid>,
}

/// Starts the managers, each with a collector feeding `inbox`.
async fn start_managers(url: &str, inbox: &Inbox) -> Peers {
    let mut addrs = Vec::new();
    for index in 0..MANAGERS {
        let config = manager_config(url, BACKOFF_INITIAL, BACKOFF_MAX);
        let addr = PeerManager::new(config).unwrap().start();
        addr.send(Subscribe(collector(index, inbox))).await.unwrap();
        addrs.push(addr);
    }
    let uuids = join_all(addrs.iter().map(wait_registered)).await;
    Peers { addrs, uuids }
}

/// Opens the pairs i → i + MANAGERS/2 and starts a numbered stream on each.
async fn start_streams(peers: &Peers) -> Vec<Stream> {
    let half = MANAGERS / 2;
    let connects = (0..half).map(|i| peers.addrs[i].send(Connect(peers.uuids[i + half])));
    for result in join_all(connects).await {
        result.unwrap().unwrap();
    }
    (0..half)
        .map(|i| Stream::start(peers.addrs[i].clone(), peers.uuids[i + half], i + half))
        .collect()
}

/// Waits for every manager's next `Registered`; returns each one's time after `since`.
async fn all_registered_again(
    subscriptions: &mut [UnboundedReceiver<PeerEvent>],
    since: Instant,
) -> Vec<Duration> {
    let waits = subscriptions.iter_mut().map(|events| async move {
        wait_event(events, |e| matches!(e, PeerEvent::Registered { .. })).await;
        since.elapsed()
    });
    tokio::time::timeout(LIMIT, join_all(waits))
        .await
        .expect("every manager registers again")
}

/// A fresh manager sends to each of the 20; each must receive it.
async fn fresh_peer_reaches_everyone(url: &str, peers: &Peers, inbox: &mut Inbox) {
    let config = manager_config(url, BACKOFF_INITIAL, BACKOFF_MAX);
    let fresh = PeerManager::new(config).unwrap().start();
    let fresh_uuid = wait_registered(&fresh).await;
    let sends = peers
        .uuids
        .iter()
        .map(|peer| fresh.send(Send::text(*peer, format!("fresh to {peer}"))));
    for result in join_all(sends).await {
        result.unwrap().unwrap();
    }
    let got = inbox.sent_by(fresh_uuid, MANAGERS, LIMIT).await;
    for (index, uuid) in peers.uuids.iter().enumerate() {
        let wanted = Payload::Text(format!("fresh to {uuid}"));
        assert!(
            got.iter().any(|(i, p)| *i == index && *p == wanted),
            "manager {index} did not get the fresh peer's message: {got:?}"
        );
    }
}

/// SIGKILLs the relay and waits until every manager noticed; returns its ports
/// and when it died.
async fn kill(relay: RelayProc, subscriptions: &mut [UnboundedReceiver<PeerEvent>]) -> Instant {
    let killed = Instant::now();
    relay.kill().await;
    for events in subscriptions.iter_mut() {
        wait_event(events, |e| matches!(e, PeerEvent::RelayLost { .. })).await;
    }
    killed
}

/// Restarts the relay on `ports` `down` after `killed`; waits until every
/// manager registered again (asserting each did within `bound`) and both
/// pools are full; prints the figures.
async fn restart(
    ports: &Ports,
    killed: Instant,
    down: Duration,
    bound: Duration,
    subscriptions: &mut [UnboundedReceiver<PeerEvent>],
) -> RelayProc {
    tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
    let spawned = Instant::now();
    let relay = RelayProc::start(Some(ports)).await;
    let listening = Instant::now();
    let (registered, pools) = tokio::join!(all_registered_again(subscriptions, listening), async {
        both_pools_full(ports.admin, LIMIT).await;
        listening.elapsed()
    });
    let slowest = registered.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FAULT FIGURES: down {:?} (kill to listening again; the restart took {:?}, {} bind \
         retries); all {MANAGERS} managers registered again {:?} after (first {:?}, median \
         {:?}); both pools ({AGENT_POOL} each) full again {:?} after",
        listening - killed,
        listening - spawned,
        relay.bind_retries,
        slowest,
        registered.iter().min().copied().unwrap_or_default(),
        fault_common::median(&registered),
        pools,
    );
    assert!(
        slowest < bound,
        "re-registration took {slowest:?} (bound {bound:?})"
    );
    relay
}

/// Every agent process is the one started at first, and serves a client.
async fn tunnels_serve(ports: &Ports, agents: &mut [AgentProc]) {
    for service in SERVICES {
        let payload = format!("through {service} after the crash");
        let echoed = tunnel_common::exchange(ports.service(service), payload.as_bytes()).await;
        assert_eq!(echoed, payload.as_bytes(), "service {service}");
    }
    for agent in agents {
        assert!(agent.running(), "an agent process exited");
    }
}

/// A `Connect` asked for while the relay was down was held and sent once we
/// registered again: it succeeded, or (the peer had not registered again yet)
/// failed with the relay's unknown-peer echo; then a new one succeeds.
async fn held_connect_resolves(result: Result<(), PeerError>, peers: &Peers, i: usize) {
    match result {
        Ok(()) => {}
        Err(PeerError::Connection {
            error: ConnectionError::Relay(reason),
            ..
        }) if reason.contains("not registered") => {
            let again = peers.addrs[i].send(Connect(peers.uuids[i + 1])).await;
            again.unwrap().unwrap();
        }
        Err(other) => panic!("connect {i} made while the relay was down: {other:?}"),
    }
}

#[actix_rt::test]
async fn relay_killed_and_restarted_on_the_same_ports_loses_nothing() {
    let relay = RelayProc::start(None).await;
    let (ports, url) = (relay.ports.clone(), relay.ports.url());
    let mut agents = Vec::new();
    for service in SERVICES {
        agents.push(agent(&ports, service).await);
    }
    both_pools_full(ports.admin, LIMIT).await;
    let mut inbox = Inbox::new();
    let peers = start_managers(&url, &inbox).await;
    let mut subscriptions = join_all(peers.addrs.iter().map(events)).await;
    let streams = start_streams(&peers).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Back at once: every manager is in by its first retry.
    let killed = kill(relay, &mut subscriptions).await;
    let quick = BACKOFF_INITIAL + SLACK;
    let relay = restart(&ports, killed, Duration::ZERO, quick, &mut subscriptions).await;
    tunnels_serve(&ports, &mut agents).await;

    // Down for a while: retries are refused; connections asked for meanwhile wait.
    let killed = kill(relay, &mut subscriptions).await;
    let meanwhile: Vec<_> = (0..5)
        .map(|i| actix_rt::spawn(peers.addrs[i].send(Connect(peers.uuids[i + 1]))))
        .collect();
    let _relay = restart(
        &ports,
        killed,
        DOWN,
        BACKOFF_MAX + SLACK,
        &mut subscriptions,
    )
    .await;
    for (i, connect) in meanwhile.into_iter().enumerate() {
        held_connect_resolves(connect.await.unwrap().unwrap(), &peers, i).await;
    }

    // The streams ran through both crashes; stop them and check every message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent = Vec::new();
    for stream in streams {
        sent.push(stream.stop().await);
    }
    inbox.check_streams(&peers.uuids, &sent, LIMIT).await;
    fresh_peer_reaches_everyone(&url, &peers, &mut inbox).await;
    tunnels_serve(&ports, &mut agents).await;

    // One registration per manager (and the fresh one) since the last
    // restart: no manager opened a second session that took its UUID over.
    let (_, metrics) = common::http_get(ports.admin, "/metrics", None).await;
    let count = |name| tunnel_common::metric(&metrics, name, "");
    assert_eq!(count("switchboard_takeovers_total"), 0.0, "{metrics}");
    let registrations = count("switchboard_registrations_total");
    assert_eq!(registrations, (MANAGERS + 1) as f64, "{metrics}");
}
