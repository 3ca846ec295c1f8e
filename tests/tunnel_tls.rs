//! Proves the tunnel's optional TLS on agent connections: with
//! `tunnel.certfile`/`keyfile` set, an agent trusting the relay's
//! certificate serves clients (exact bytes, half-close, the built-in echo);
//! a wrong token is still refused by name through TLS; a plain-TCP agent and
//! an agent trusting another CA are never let in, and the relay keeps serving;
//! a TLS setting that differs between relay and agent stops the agent with
//! an error saying what to change, whichever side has TLS; pool refills
//! resume an earlier TLS session instead of a full handshake; agent links
//! use TLS 1.3 with `TLS13_AES_128_GCM_SHA256`.

mod common;
mod tunnel_common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fixtures::{self_signed, Pem};
use switchboard::protocol::tunnel::ErrorCode;
use switchboard::tunnel::agent::{self, AgentError, LocalService};
use switchboard::tunnel::tls::AgentTls;
use switchboard::tunnel::TlsMismatch;
use tunnel_common::*;

fn tls_relay(pem: &Pem, services: &[&str]) -> Relay {
    let mut s = settings(services);
    s.certfile = Some(pem.cert.path().to_path_buf());
    s.keyfile = Some(pem.key.path().to_path_buf());
    Relay::start(s)
}

fn trusting(pem: &Pem) -> AgentTls {
    AgentTls::new(Some(pem.cert.path()), "localhost").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_over_tls_serves_exact_bytes() {
    let pem = self_signed();
    let relay = tls_relay(&pem, &["svc", "echo"]);
    let local = echo_server().await;
    let mut s = agent_settings(
        &relay.agents(),
        "svc",
        LocalService::Addr(local.to_string()),
        3,
    );
    s.tls = Some(trusting(&pem));
    let a = agent::spawn(s);
    let mut e = agent_settings(&relay.agents(), "echo", LocalService::Echo, 2);
    e.tls = Some(trusting(&pem));
    let b = agent::spawn(e);
    wait_until("both pools to fill", || {
        relay.idle("svc") == 3 && relay.idle("echo") == 2
    })
    .await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(exchange(relay.service("svc"), &data).await, data);
    assert_eq!(
        exchange(relay.service("echo"), &data[..100_000]).await,
        &data[..100_000]
    );
    let tasks: Vec<_> = (0..50u8)
        .map(|i| {
            let addr = relay.service("svc");
            tokio::spawn(async move { exchange(addr, &[i; 5000]).await == vec![i; 5000] })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Each client takes a pooled connection and the agent opens another: those
/// refills resume a TLS session of an earlier connection (no certificate
/// signature, no chain verification), as the agent's counters show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_refills_resume_the_tls_session() {
    let pem = self_signed();
    let relay = tls_relay(&pem, &["svc"]);
    let local = echo_server().await;
    let tls = trusting(&pem);
    let handshakes = tls.handshakes.clone();
    let mut s = agent_settings(
        &relay.agents(),
        "svc",
        LocalService::Addr(local.to_string()),
        2,
    );
    s.tls = Some(tls);
    let a = agent::spawn(s);
    wait_until("the pool to fill", || relay.idle("svc") == 2).await;
    let before = handshakes.full_or_resumed.load(Ordering::Relaxed);
    let resumed_before = handshakes.resumed.load(Ordering::Relaxed);
    for i in 0..5u8 {
        assert_eq!(exchange(relay.service("svc"), &[i; 100]).await, [i; 100]);
        wait_until("the refill", || relay.idle("svc") == 2).await;
    }
    let refills = handshakes.full_or_resumed.load(Ordering::Relaxed) - before;
    let resumed = handshakes.resumed.load(Ordering::Relaxed) - resumed_before;
    assert!(refills >= 5, "{refills} handshakes for 5 clients");
    assert_eq!(resumed, refills, "every refill resumed a session");
    a.stop().await.unwrap();
}

/// The agent (the TLS client, whose order the relay follows) picks TLS 1.3
/// with AES-128-GCM and SHA-256: the cheaper key schedule of every refill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_links_use_tls13_aes128_gcm_sha256() {
    let pem = self_signed();
    let acceptor = switchboard::tunnel::tls::acceptor(pem.cert.path(), pem.key.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(socket).await.unwrap();
        tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
    });
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn = tokio::time::timeout(WAIT, trusting(&pem).connect(socket))
        .await
        .unwrap()
        .unwrap();
    let tokio_util::either::Either::Right(tls) = conn else {
        panic!("a TLS agent returned a plain connection");
    };
    let (_, client) = tls.get_ref();
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let chosen = client.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(chosen, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    assert_eq!(server.await.unwrap(), chosen, "both ends agree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_over_tls_is_refused_by_name() {
    let pem = self_signed();
    let relay = tls_relay(&pem, &["svc"]);
    let mut s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 1);
    s.tls = Some(trusting(&pem));
    s.token = switchboard::config::Secret::new("wrong");
    match tokio::time::timeout(WAIT, agent::spawn(s).join())
        .await
        .unwrap()
    {
        Err(AgentError::Rejected { code, reason }) => {
            assert_eq!(code, ErrorCode::AuthFailed);
            assert!(reason.contains("svc"), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_or_untrusting_agents_are_never_let_in() {
    let pem = self_signed();
    let other = self_signed();
    let relay = tls_relay(&pem, &["svc"]);
    let plain = agent::spawn(agent_settings(
        &relay.agents(),
        "svc",
        LocalService::Echo,
        2,
    ));
    let mut s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 2);
    s.tls = Some(trusting(&other));
    let untrusting = agent::spawn(s);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(relay.idle("svc"), 0);
    assert!(relay.status("svc")["agents"].as_array().unwrap().is_empty());
    assert!(!plain.stats.connected.load(Ordering::Acquire));
    assert!(!untrusting.stats.connected.load(Ordering::Acquire));
    // Both gave up, saying why (see the tests below).
    assert!(plain.stop().await.is_err());
    assert!(untrusting.stop().await.is_err());
    // The relay still serves a trusting agent.
    let mut s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 1);
    s.tls = Some(trusting(&pem));
    let good = agent::spawn(s);
    wait_until("the trusting agent's pool", || relay.idle("svc") == 1).await;
    assert_eq!(exchange(relay.service("svc"), b"tls").await, b"tls");
    good.stop().await.unwrap();
}

/// An agent that does not trust the relay's certificate stops and says what
/// to check, instead of retrying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_trust_the_relay_stops_saying_why() {
    let pem = self_signed();
    let relay = tls_relay(&pem, &["svc"]);
    let mut s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 1);
    s.tls = Some(trusting(&self_signed()));
    let error = agent_error(s).await.to_string();
    assert!(
        error.contains("certificate is not trusted") && error.contains("--tls-ca-file"),
        "{error}"
    );
}

/// Runs `settings` until the agent stops by itself (bounded); its error.
async fn agent_error(settings: agent::AgentSettings) -> AgentError {
    match tokio::time::timeout(WAIT, agent::spawn(settings).join()).await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("the agent stopped without an error"),
        Err(_) => panic!("the agent kept retrying instead of saying what is wrong"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_agent_of_a_tls_relay_is_told_to_use_tls() {
    let pem = self_signed();
    let relay = tls_relay(&pem, &["svc"]);
    let s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 1);
    let error = agent_error(s).await;
    assert!(
        matches!(
            error,
            AgentError::TlsMismatch(TlsMismatch::RelayRequiresTls)
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the relay requires TLS: start the agent with --tls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_agent_of_a_plain_relay_is_told_the_relay_has_no_certificate() {
    let pem = self_signed();
    let relay = Relay::start(settings(&["svc"]));
    let mut s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 1);
    s.tls = Some(trusting(&pem));
    let error = agent_error(s).await;
    assert!(
        matches!(error, AgentError::TlsMismatch(TlsMismatch::RelayWithoutTls)),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("this agent speaks TLS but the relay's tunnel has no certificate"),
        "{text}"
    );
    // The relay goes on serving agents that match it.
    let good = agent::spawn(agent_settings(
        &relay.agents(),
        "svc",
        LocalService::Echo,
        1,
    ));
    wait_until("a plain agent's pool", || relay.idle("svc") == 1).await;
    assert_eq!(exchange(relay.service("svc"), b"plain").await, b"plain");
    good.stop().await.unwrap();
}
