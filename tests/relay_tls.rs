//! Proves `server.certfile`/`server.keyfile` serve `wss://` with rustls: a
//! client trusting the test's freshly generated certificate registers and
//! forwards; a plain `ws://` client is refused without hurting the server; a
//! file without a certificate fails at start with a typed error.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchboard::node::{self, NodeError};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

fn client_config(der: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn wss_client(url: &str, config: &Arc<rustls::ClientConfig>, name: &str, uuid: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(config.clone())),
    )
    .await
    .expect("wss connect failed");
    register(&mut ws, name, uuid).await;
    ws
}

#[tokio::test]
async fn wss_registers_and_forwards() {
    let pem = self_signed();
    let relay = TestRelay::start(tls_settings(&pem));
    assert!(relay.url.starts_with("wss://"));
    let config = client_config(&pem.der);

    let mut a = wss_client(&relay.url, &config, "peer-A", UUID_A).await;
    let mut b = wss_client(&relay.url, &config, "peer-B", UUID_B).await;
    a.send(Message::text(offer(UUID_A, UUID_B, "offer")))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, b.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), offer(UUID_A, UUID_B, "offer")),
        other => panic!("expected the offer, got {other:?}"),
    }

    // Plain ws:// against the TLS listener fails; the server keeps serving.
    let plain = relay.url.replace("wss://", "ws://");
    assert!(tokio_tungstenite::connect_async(plain.as_str())
        .await
        .is_err());
    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusted = client_config(&self_signed().der);
    let refused = tokio_tungstenite::connect_async_tls_with_config(
        relay.url.as_str(),
        None,
        false,
        Some(Connector::Rustls(untrusted)),
    )
    .await;
    assert!(refused.is_err());
    let mut c = wss_client(&relay.url, &config, "peer-C", UUID_C).await;
    c.send(Message::text(offer(UUID_C, UUID_A, "offer")))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, a.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => assert!(text.contains(UUID_C)),
        other => panic!("expected C's offer, got {other:?}"),
    }
}

#[test]
fn a_file_without_a_certificate_fails_at_start() {
    let pem = self_signed();
    let mut not_a_cert = tempfile::NamedTempFile::new().unwrap();
    not_a_cert.write_all(b"this is not PEM\n").unwrap();
    for (cert, key) in [
        (not_a_cert.path(), pem.key.path()),
        (pem.cert.path(), not_a_cert.path()),
    ] {
        let mut settings = test_settings();
        settings.server.certfile = Some(cert.to_path_buf());
        settings.server.keyfile = Some(key.to_path_buf());
        let result = actix_rt::System::new().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            node::start(settings, listener, None).map(|_| ())
        });
        assert!(matches!(result, Err(NodeError::Tls(_))), "{result:?}");
    }
}
