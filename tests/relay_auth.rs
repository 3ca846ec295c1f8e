//! Proves authentication at registration: static bearer tokens (from TOML,
//! env-style map and a tokens file) and OAuth 2.0 token introspection against
//! a real HTTP server on loopback; missing or malformed headers get 4001, bad,
//! inactive or wrong-audience tokens get 4002, another user's UUID gets 4002,
//! and peers of another user get the error echo.

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;

use common::introspect::Provider;
use common::*;
use futures_util::SinkExt;
use switchboard::config::{AuthMethod, Secret, Settings};

async fn authed(url: &str, token: &str) -> Ws {
    connect_with(url, &[("Authorization", &format!("Bearer {token}"))]).await
}

async fn register_closes(ws: &mut Ws, uuid: &str) -> (u16, String) {
    send(ws, registration("x", uuid)).await;
    expect_close(ws).await
}

#[tokio::test]
async fn missing_or_malformed_header_is_4001() {
    let relay = TestRelay::start(token_settings());
    let mut ws = connect(&relay.url).await;
    let (code, reason) = register_closes(&mut ws, UUID_A).await;
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.starts_with("UnauthorizedError"), "{reason}");
    for header in ["alice-token", "Basic YWxpY2U6eA==", "Bearer", "Bearer a b"] {
        let mut ws = connect_with(&relay.url, &[("Authorization", header)]).await;
        let (code, reason) = register_closes(&mut ws, UUID_A).await;
        assert_eq!(code, 4001, "{header}: {reason}");
    }
    assert_still_serving_as(&relay.url, "alice-token").await;
}

#[tokio::test]
async fn wrong_token_is_4002() {
    let relay = TestRelay::start(token_settings());
    let mut ws = authed(&relay.url, "mallory-token").await;
    let (code, reason) = register_closes(&mut ws, UUID_A).await;
    assert_eq!(code, 4002);
    assert!(reason.starts_with("ForbiddenError"), "{reason}");
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert!(
        metrics.contains("switchboard_auth_failures_total 1"),
        "{metrics}"
    );
    assert_still_serving_as(&relay.url, "bob-token").await;
}

#[tokio::test]
async fn another_users_uuid_is_4002_and_same_user_takes_over() {
    let relay = TestRelay::start(token_settings());
    let mut alice = authed(&relay.url, "alice-token").await;
    register(&mut alice, "alice", UUID_A).await;
    let mut bob = authed(&relay.url, "bob-token").await;
    let (code, reason) = register_closes(&mut bob, UUID_A).await;
    assert_eq!(code, 4002);
    assert!(
        reason.contains("already registered to another user"),
        "{reason}"
    );
    // Alice still owns it; a second Alice socket takes it over with 4004.
    let mut alice2 = authed(&relay.url, "alice-token").await;
    register(&mut alice2, "alice-2", UUID_A).await;
    assert_eq!(expect_close(&mut alice).await.0, 4004);
    let json = wait_clients(relay.admin, |j| lists(j, UUID_A)).await;
    assert_eq!(json[0]["user"], "alice");
}

#[tokio::test]
async fn forwarding_to_another_users_peer_is_echoed() {
    let relay = TestRelay::start(token_settings());
    let mut alice = authed(&relay.url, "alice-token").await;
    register(&mut alice, "alice", UUID_A).await;
    let mut bob = authed(&relay.url, "bob-token").await;
    register(&mut bob, "bob", UUID_B).await;
    send(&mut alice, offer(UUID_A, UUID_B, "offer")).await;
    let echo: serde_json::Value = serde_json::from_str(&recv_text(&mut alice).await).unwrap();
    assert_eq!(
        echo["error"],
        format!("The requested peer {UUID_B} is owned by a different user.")
    );
    // Same user's peers still reach each other.
    let mut alice2 = authed(&relay.url, "alice-token").await;
    register(&mut alice2, "alice-2", UUID_C).await;
    send(&mut alice, offer(UUID_A, UUID_C, "offer")).await;
    assert_eq!(recv_text(&mut alice2).await, offer(UUID_A, UUID_C, "offer"));
    bob.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
}

#[tokio::test]
async fn tokens_file_is_read() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "# user token\ncarol carol-token\n\ndave   dave-token").unwrap();
    let mut settings = test_settings();
    settings.auth.method = AuthMethod::Token;
    settings.auth.tokens_file = Some(file.path().to_path_buf());
    let relay = TestRelay::start(settings);
    let mut carol = authed(&relay.url, "carol-token").await;
    register(&mut carol, "carol", UUID_A).await;
    let mut dave = authed(&relay.url, "dave-token").await;
    register(&mut dave, "dave", UUID_B).await;
    let json = wait_clients(relay.admin, |j| j.as_array().unwrap().len() == 2).await;
    let users: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].clone())
        .collect();
    assert!(
        users.contains(&"carol".into()) && users.contains(&"dave".into()),
        "{json}"
    );
}

/// Registers two fresh clients with `token` and exchanges an offer.
async fn assert_still_serving_as(url: &str, token: &str) {
    let a = uuid::Uuid::new_v4().to_string();
    let b = uuid::Uuid::new_v4().to_string();
    let mut ca = authed(url, token).await;
    register(&mut ca, "a", &a).await;
    let mut cb = authed(url, token).await;
    register(&mut cb, "b", &b).await;
    send(&mut ca, offer(&a, &b, "offer")).await;
    assert_eq!(recv_text(&mut cb).await, offer(&a, &b, "offer"));
}

// ---- OAuth 2.0 token introspection (RFC 7662) against a loopback provider ----

fn introspection_settings(url: String, secret: &str) -> Settings {
    let mut settings = test_settings();
    settings.auth.method = AuthMethod::Introspection;
    settings.auth.introspection_url = Some(url);
    settings.auth.client_id = Some("relay-app".into());
    settings.auth.client_secret = Some(Secret::new(secret));
    settings.auth.audience = Some("switchboard".into());
    settings
}

#[tokio::test]
async fn introspection_accepts_active_tokens_with_the_audience() {
    let provider = Provider::start();
    let url = format!("http://{}/oauth2/introspect", provider.addr);
    let relay = TestRelay::start(introspection_settings(url, "s3cret"));

    let mut alice = authed(&relay.url, "alice-oauth").await;
    register(&mut alice, "alice", UUID_A).await;
    let json = wait_clients(relay.admin, |j| lists(j, UUID_A)).await;
    assert_eq!(json[0]["user"], "alice-id", "user identity is `sub`");

    // Another token of the same subject is the same user: takeover, not 4002.
    let mut alice2 = authed(&relay.url, "alice-again").await;
    register(&mut alice2, "alice-2", UUID_A).await;
    assert_eq!(expect_close(&mut alice).await.0, 4004);

    // A different subject may not take Alice's UUID.
    let mut bob = authed(&relay.url, "bob-oauth").await;
    assert_eq!(register_closes(&mut bob, UUID_A).await.0, 4002);

    // Positive results are cached: a second socket with the same token is not re-introspected.
    let before = provider.calls.load(Ordering::SeqCst);
    let mut alice3 = authed(&relay.url, "alice-oauth").await;
    register(&mut alice3, "alice-3", UUID_C).await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn introspection_refusals() {
    let provider = Provider::start();
    let url = format!("http://{}/oauth2/introspect", provider.addr);
    let relay = TestRelay::start(introspection_settings(url, "s3cret"));
    for (token, why) in [
        ("revoked", "not active"),
        ("wrong-aud", "audience"),
        ("no-sub", "subject"),
    ] {
        let mut ws = authed(&relay.url, token).await;
        let (code, reason) = register_closes(&mut ws, UUID_B).await;
        assert_eq!(code, 4002, "{token}: {reason}");
        assert!(reason.contains(why), "{token}: {reason}");
    }
    let mut ws = connect(&relay.url).await;
    assert_eq!(register_closes(&mut ws, UUID_B).await.0, 4001);
    assert_still_serving_as(&relay.url, "bob-oauth").await;
}

#[tokio::test]
async fn introspection_provider_failure_is_1013_try_again_later() {
    // Wrong client secret: the provider answers 401 to the relay.
    let provider = Provider::start();
    let url = format!("http://{}/oauth2/introspect", provider.addr);
    let relay = TestRelay::start(introspection_settings(url, "wrong-secret"));
    let mut ws = authed(&relay.url, "alice-oauth").await;
    let (code, reason) = register_closes(&mut ws, UUID_A).await;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("HTTP 401"), "{reason}");

    // Nobody listening at all.
    let closed = common::refusing::Refusing::new();
    let relay = TestRelay::start(introspection_settings(
        format!("http://{}/introspect", closed.addr()),
        "s3cret",
    ));
    let mut ws = authed(&relay.url, "alice-oauth").await;
    assert_eq!(register_closes(&mut ws, UUID_A).await.0, 1013);
}
