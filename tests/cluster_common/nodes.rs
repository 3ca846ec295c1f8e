//! Relay nodes of a cluster test: several `node::start` nodes on
//! 127.0.0.1:0 in one actix System (one thread), started with the cluster
//! settings of `engine::settings` and returned once each node's engine is
//! attached and up (bounded); stopped gracefully on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use switchboard::config::Settings;
use switchboard::node;

use crate::cluster_common::engine::LIMIT;

/// One node's addresses.
#[derive(Debug, Clone)]
pub struct NodeAddrs {
    /// The public WebSocket listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// `ws://127.0.0.1:{port}`.
    pub url: String,
}

/// Nodes running in one actix System on their own thread.
pub struct Nodes {
    /// The nodes, in the order of their settings.
    pub nodes: Vec<NodeAddrs>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nodes {
    /// Starts one node per settings; with the cluster on, waits until each
    /// engine is attached and up (panics after [`LIMIT`]).
    pub fn start(all: Vec<Settings>) -> Nodes {
        let _ = env_logger::builder().is_test(true).try_init();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut running = Vec::new();
                let mut addrs = Vec::new();
                for settings in all {
                    let cluster = settings.cluster.enabled;
                    let public = TcpListener::bind("127.0.0.1:0").expect("bind public");
                    let admin = TcpListener::bind("127.0.0.1:0").expect("bind admin");
                    let node = node::start(settings, public, Some(admin)).expect("node starts");
                    addrs.push(NodeAddrs {
                        addr: node.public_addr(),
                        admin: node.admin_addr().expect("admin address"),
                        url: format!("ws://127.0.0.1:{}", node.public_addr().port()),
                    });
                    running.push((node, cluster));
                }
                let deadline = Instant::now() + LIMIT;
                for (node, cluster) in &running {
                    if !cluster {
                        continue;
                    }
                    loop {
                        let up = node
                            .relay()
                            .state()
                            .cluster()
                            .is_some_and(|link| link.cluster.state().borrow().is_up());
                        if up {
                            break;
                        }
                        assert!(Instant::now() < deadline, "a node's cluster never came up");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                tx.send((addrs, stop_tx)).expect("test waits");
                let _ = stop_rx.await;
                for (node, _) in running {
                    node.shutdown().await;
                }
            })
        });
        let (nodes, stop) = rx.recv_timeout(LIMIT).expect("nodes did not start");
        Nodes {
            nodes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &NodeAddrs {
        &self.nodes[i]
    }

    /// Stops every node gracefully and waits.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}
