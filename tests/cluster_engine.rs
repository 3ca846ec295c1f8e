//! Proves the cluster engine against a real redis-server: registrations, other users, takeovers across nodes with the old node told, compare-and-delete, dead nodes expiring, 10 000 ordered forwards, forged payloads dropped and counted, Redis SIGKILLed and restarted (degraded, then up with registrations re-asserted), and subscriptions killed or silenced being rebuilt.
//!
//! Each test starts its own `redis-server` on a free 127.0.0.1 port
//! (`tests/cluster_common`); without one installed the tests fail saying
//! so, unless `SWITCHBOARD_SKIP_REDIS=1`.

mod cluster_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_common::engine::{
    eventually, forward, forward_arrives, Node, LIMIT, MAX_MESSAGE, NODE_TTL_MS,
};
use cluster_common::{redis_available, Proxy, Redis};
use switchboard::cluster::envelope::{encode, envelope_limit};
use switchboard::cluster::{ClusterState, Delivery, Owner, Reasserted, RegisterOutcome};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_found_and_listed_across_nodes() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let b = Node::start(&redis.url(), "node-b").await;
    let uuid = Uuid::new_v4();
    assert_eq!(
        a.register(uuid, 3, "alice").await,
        RegisterOutcome::Registered
    );
    let owner = b.cluster.lookup(uuid).await.unwrap();
    let want = Owner {
        node: "node-a".into(),
        session: 3,
        user: "alice".into(),
    };
    assert_eq!(owner, Some(want));
    assert_eq!(b.cluster.lookup(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(b.cluster.nodes().await.unwrap(), ["node-a", "node-b"]);
    let other = Uuid::new_v4();
    assert_eq!(
        b.register(other, 1, "bob").await,
        RegisterOutcome::Registered
    );
    let clients = a.cluster.clients().await.unwrap();
    let listed: Vec<_> = clients
        .iter()
        .map(|c| (c.uuid, c.node.as_str(), c.user.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (uuid, "node-a", "alice", "peer-3"),
            (other, "node-b", "bob", "peer-1")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_uuid_on_a_live_node_is_refused() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let b = Node::start(&redis.url(), "node-b").await;
    let uuid = Uuid::new_v4();
    a.register(uuid, 1, "alice").await;
    let outcome = b.register(uuid, 2, "mallory").await;
    assert_eq!(
        outcome,
        RegisterOutcome::OtherUser {
            node: "node-a".into()
        }
    );
    let owner = b.cluster.lookup(uuid).await.unwrap().unwrap();
    assert_eq!((owner.node.as_str(), owner.session), ("node-a", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_across_nodes_tells_the_old_node_and_a_late_close_changes_nothing() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut a = Node::start(&redis.url(), "node-a").await;
    let b = Node::start(&redis.url(), "node-b").await;
    let uuid = Uuid::new_v4();
    a.register(uuid, 5, "alice").await;
    let outcome = b.register(uuid, 9, "alice").await;
    assert_eq!(
        outcome,
        RegisterOutcome::TakenOver {
            node: "node-a".into()
        }
    );
    assert_eq!(a.next().await, Delivery::Takeover { uuid, session: 5 });
    // The old socket closes late: its unregister must not erase B's record.
    assert!(!a.cluster.unregister(uuid, 5).await.unwrap());
    let owner = a.cluster.lookup(uuid).await.unwrap().unwrap();
    assert_eq!((owner.node.as_str(), owner.session), ("node-b", 9));
    let clients = a.cluster.clients().await.unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0].node, "node-b");
    assert_eq!(b.cluster.metrics().takeovers_out.load(Ordering::Relaxed), 1);
    // Counted by the node's registry when the session still held it
    // (cluster_nodes: takeover_across_nodes_closes_the_old_socket_with_4004).
    assert_eq!(a.cluster.metrics().takeovers_in.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_with_a_stale_session_leaves_the_newer_record() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let uuid = Uuid::new_v4();
    a.register(uuid, 1, "alice").await;
    a.register(uuid, 2, "alice").await;
    assert!(!a.cluster.unregister(uuid, 1).await.unwrap());
    assert_eq!(a.cluster.lookup(uuid).await.unwrap().unwrap().session, 2);
    assert!(a.cluster.unregister(uuid, 2).await.unwrap());
    assert_eq!(a.cluster.lookup(uuid).await.unwrap(), None);
    assert!(a.cluster.clients().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_registrations_vanish_within_the_ttl_and_are_taken() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let b = Node::start(&redis.url(), "node-b").await;
    let uuid = Uuid::new_v4();
    a.register(uuid, 1, "alice").await;
    drop(a); // Its tasks stop: no more heartbeats, nothing cleaned up.
    let died = Instant::now();
    eventually("the dead node's uuid is no longer found", || async {
        b.cluster.lookup(uuid).await.unwrap().is_none()
    })
    .await;
    let gone = died.elapsed();
    assert!(gone < Duration::from_millis(NODE_TTL_MS + 500), "{gone:?}");
    assert_eq!(b.cluster.nodes().await.unwrap(), ["node-b"]);
    // Another user may take it now: its holder is dead.
    assert_eq!(
        b.register(uuid, 4, "bob").await,
        RegisterOutcome::Registered
    );
    let mut raw = redis.raw();
    eventually("the dead node's set is reaped", || {
        let left: i64 = redis::cmd("EXISTS")
            .arg("sbtest:node:node-a:clients")
            .query(&mut raw)
            .unwrap();
        async move { left == 0 }
    })
    .await;
    let owner = b.cluster.lookup(uuid).await.unwrap().unwrap();
    assert_eq!(
        (owner.node.as_str(), owner.user.as_str()),
        ("node-b", "bob")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_forwards_arrive_in_order() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let mut b = Node::start(&redis.url(), "node-b").await;
    const COUNT: usize = 10_000;
    let (from, to) = (Uuid::new_v4(), Uuid::new_v4());
    let receiver = tokio::spawn(async move {
        let mut texts = Vec::with_capacity(COUNT);
        while texts.len() < COUNT {
            match b.next().await {
                Delivery::Forward { text, .. } => texts.push(text),
                other => panic!("unexpected {other:?}"),
            }
        }
        (texts, b)
    });
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..COUNT {
        pending.push(
            a.cluster
                .forward("node-b", &forward(from, to, &i.to_string())),
        );
        if pending.len() == 1_000 {
            for result in futures_util::future::join_all(pending.drain(..)).await {
                result.expect("forward published");
            }
        }
    }
    let (texts, b) = tokio::time::timeout(LIMIT, receiver)
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    let want: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert!(texts == want, "forwards arrived out of order");
    let m = a.cluster.metrics();
    assert_eq!(m.forwards_out.load(Ordering::Relaxed), COUNT as u64);
    assert_eq!(
        b.cluster.metrics().forwards_in.load(Ordering::Relaxed),
        COUNT as u64
    );
    eprintln!(
        "{COUNT} forwards A→B in {elapsed:?} ({:.0}/s)",
        COUNT as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_oversized_payloads_are_dropped_and_counted() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let mut b = Node::start(&redis.url(), "node-b").await;
    let (from, to) = (Uuid::new_v4(), Uuid::new_v4());
    let limit = envelope_limit(MAX_MESSAGE);
    let for_c = encode("node-c", &forward(from, to, "x"), limit).unwrap();
    let mut oversized = encode("node-b", &forward(from, to, ""), limit).unwrap();
    oversized.resize(limit + 1, b'x');
    let mut not_utf8 = encode("node-b", &forward(from, to, ""), limit).unwrap();
    not_utf8.extend_from_slice(&[0xff, 0xfe]);
    let forged: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        br#"{"v":2,"node":"node-b","kind":"forward"}"#.to_vec(),
        br#"{"v":1,"node":"node-b","kind":"takeover","uuid":"x","session":1}"#.to_vec(),
        for_c,
        oversized,
        not_utf8,
    ];
    let mut raw = redis.raw();
    for payload in &forged {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("sbtest:node:node-b")
            .arg(payload)
            .query(&mut raw)
            .unwrap();
        assert_eq!(receivers, 1);
    }
    assert_eq!(
        redis.cli(&["PUBLISH", "sbtest:node:node-b", "{\"v\":1}"]),
        "1"
    );
    forward_arrives(&a, &mut b, from, to, "the real one").await;
    let failures = b.cluster.metrics().decode_failures.load(Ordering::Relaxed);
    assert_eq!(failures, forged.len() as u64 + 1);
    assert!(b.inbox.try_recv().is_none());
    assert!(b.cluster.state().borrow().is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_degrades_then_recovers_with_registrations() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let mut b = Node::start(&redis.url(), "node-b").await;
    let uuid = Uuid::new_v4();
    a.register(uuid, 7, "alice").await;
    redis.kill();
    let state = a.wait_state(false).await;
    assert!(matches!(state, ClusterState::Degraded { .. }));
    b.wait_state(false).await;
    let (from, to) = (uuid, Uuid::new_v4());
    assert!(a
        .cluster
        .forward("node-b", &forward(from, to, "lost"))
        .await
        .is_err());
    let outage = Instant::now();
    redis.restart();
    a.wait_state(true).await;
    b.wait_state(true).await;
    eprintln!("up again {:?} after the restart", outage.elapsed());
    // Redis came back empty: A wrote its registration again.
    let owner = b.cluster.lookup(uuid).await.unwrap().unwrap();
    assert_eq!((owner.node.as_str(), owner.session), ("node-a", 7));
    forward_arrives(&a, &mut b, from, to, "after").await;
    assert!(a.cluster.metrics().reasserts.load(Ordering::Relaxed) >= 2);
    assert!(a.cluster.metrics().degraded_time() > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_is_rebuilt() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let mut b = Node::start(&redis.url(), "node-b").await;
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, "2", "both nodes' subscriptions killed");
    eventually("both subscriptions rebuilt", || async {
        let m = (a.cluster.metrics(), b.cluster.metrics());
        m.0.reconnects.load(Ordering::Relaxed) >= 1 && m.1.reconnects.load(Ordering::Relaxed) >= 1
    })
    .await;
    b.wait_state(true).await;
    let (from, to) = (Uuid::new_v4(), Uuid::new_v4());
    forward_arrives(&a, &mut b, from, to, "again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_caught_by_the_self_check() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let a = Node::start(&redis.url(), "node-a").await;
    let mut b = Node::start(&proxy.url(), "node-b").await;
    assert_eq!(
        proxy.mute_subscribers(),
        1,
        "B's subscription goes through the proxy"
    );
    let state = b.wait_state(false).await;
    match state {
        ClusterState::Degraded { reason, .. } => assert!(reason.contains("self-check"), "{reason}"),
        ClusterState::Up => unreachable!(),
    }
    b.wait_state(true).await;
    let m = b.cluster.metrics();
    assert!(m.self_check_failures.load(Ordering::Relaxed) >= 1);
    assert!(m.reconnects.load(Ordering::Relaxed) >= 1);
    let (from, to) = (Uuid::new_v4(), Uuid::new_v4());
    forward_arrives(&a, &mut b, from, to, "heard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassert_rewrites_what_is_missing_reports_what_others_took_and_drops_stale_records() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut a = Node::start(&redis.url(), "node-a").await;
    let b = Node::start(&redis.url(), "node-b").await;
    let (kept, moved, stale) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    a.register(kept, 1, "alice").await;
    a.register(moved, 2, "alice").await;
    let outcome = b.register(moved, 8, "alice").await;
    assert_eq!(
        outcome,
        RegisterOutcome::TakenOver {
            node: "node-a".into()
        }
    );
    assert_eq!(
        a.next().await,
        Delivery::Takeover {
            uuid: moved,
            session: 2
        }
    );
    // As if A had missed that takeover (A's list still has `moved`), lost
    // a close in an outage (`stale`), and Redis had lost `kept`'s record.
    let mut raw = redis.raw();
    let stale_key = format!("sbtest:reg:{stale}");
    redis::pipe()
        .cmd("HSET")
        .arg(&stale_key)
        .arg(
            &[
                "node", "node-a", "session", "3", "user", "alice", "name", "x",
            ][..],
        )
        .cmd("SADD")
        .arg("sbtest:node:node-a:clients")
        .arg(stale.to_string())
        .cmd("DEL")
        .arg(format!("sbtest:reg:{kept}"))
        .exec(&mut raw)
        .unwrap();
    let report = a.cluster.reassert().await.unwrap();
    let want = Reasserted {
        registrations: 2,
        lost: 1,
        stale: 1,
    };
    assert_eq!(report, want);
    assert_eq!(
        a.next().await,
        Delivery::Takeover {
            uuid: moved,
            session: 2
        }
    );
    let owner = |o: Option<Owner>| o.map(|o| (o.node, o.session));
    assert_eq!(
        owner(b.cluster.lookup(kept).await.unwrap()),
        Some(("node-a".into(), 1))
    );
    assert_eq!(
        owner(b.cluster.lookup(moved).await.unwrap()),
        Some(("node-b".into(), 8))
    );
    assert_eq!(b.cluster.lookup(stale).await.unwrap(), None);
}
