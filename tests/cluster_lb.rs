//! Proves config/cluster/nginx.conf, the load-balancer example: Debian's
//! nginx started with that file (only its ports rewritten to this test's
//! free ones) carries WebSocket upgrades to a three-node cluster, spreads the
//! clients over the nodes, and every client reaches every other one through
//! it, byte-exact, whichever node each landed on.

mod cluster_common;
mod common;
#[path = "cluster_common/nodes.rs"]
mod nodes;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_common::{redis_available, Redis};
use common::*;
use nodes::Nodes;

/// Debian's nginx, or `None` when it is missing and SWITCHBOARD_SKIP_NGINX=1.
fn nginx_binary() -> Option<PathBuf> {
    for path in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(path).exists() {
            return Some(PathBuf::from(path));
        }
    }
    if std::env::var("SWITCHBOARD_SKIP_NGINX").as_deref() == Ok("1") {
        eprintln!("SKIPPED (SWITCHBOARD_SKIP_NGINX=1): nginx is not installed");
        return None;
    }
    panic!(
        "nginx is not installed (Debian: apt-get install nginx; scripts/test installs it). \
         Set SWITCHBOARD_SKIP_NGINX=1 to skip this test explicitly."
    );
}

/// nginx running the example config; killed (and its directory removed) on drop.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(binary: &PathBuf, nodes: &[SocketAddr]) -> Nginx {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cluster/nginx.conf");
        let mut text = std::fs::read_to_string(example).unwrap();
        for (index, node) in nodes.iter().enumerate() {
            let shipped = format!("127.0.0.1:{}", 8711 + index);
            assert!(
                text.contains(&shipped),
                "the example no longer names {shipped}"
            );
            text = text.replace(&shipped, &node.to_string());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(text.contains("127.0.0.1:8710"));
        text = text.replace("127.0.0.1:8710", &format!("127.0.0.1:{port}"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let config = dir.path().join("nginx.conf");
        std::fs::write(&config, text).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (SIGKILL would leave
    /// them running); SIGKILL only if it has not exited within 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_nginx_land_on_every_node_and_reach_each_other() {
    if !redis_available() {
        return;
    }
    let Some(binary) = nginx_binary() else {
        return;
    };
    let redis = Redis::start();
    let cluster = Nodes::start(
        (0..3)
            .map(|i| {
                let mut settings = test_settings();
                settings.cluster = cluster_common::engine::settings(&redis.url());
                settings.cluster.node_id = format!("node-{i}");
                settings
            })
            .collect(),
    );
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.addr).collect();
    let nginx = Nginx::start(&binary, &addrs);
    let url = format!("ws://127.0.0.1:{}", nginx.port);
    let uuids: Vec<String> = (0..6).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut clients = Vec::new();
    for (index, uuid) in uuids.iter().enumerate() {
        clients.push(client(&url, &format!("peer-{index}"), uuid).await);
    }
    // least_conn spreads six long-lived connections over the three nodes.
    for node in &cluster.nodes {
        let (status, body) = http_get(node.admin, "/clients?scope=local", None).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            uuids.iter().any(|u| body.contains(u.as_str())),
            "node {} got no client through nginx: {body}",
            node.addr
        );
    }
    // A ring: each client offers to the next; every offer arrives byte-exact.
    for index in 0..uuids.len() {
        let next = (index + 1) % uuids.len();
        let frame = offer(&uuids[index], &uuids[next], "offer");
        send(&mut clients[index], frame.clone()).await;
        assert_eq!(recv_text(&mut clients[next]).await, frame);
    }
}
