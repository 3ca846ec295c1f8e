//! The periodic "Connected clients" log line, in the shape ProxyStore's
//! relay prints it: `Connected clients: N`, followed, when there are fewer
//! than `log.clients_limit` clients (and at least one), by one line per
//! client sorted by name:
//! `Client(name=…, uuid=…, user=…, address=('ip', port), created=YYYY-MM-DD HH:MM:SS UTC)`.
//! A client of a relay without authentication is `user=NullUser()`, as in
//! ProxyStore; otherwise the user is its identity (introspection: `sub`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::LogSettings;
use crate::server::messages::ClientInfo;
use crate::server::{self, ServerState};

/// Starts the line every `log.clients_interval_secs` (none when 0), at the
/// level of `log.level` when that is a plain level more severe than info
/// (ProxyStore logs it at its default level, so it always shows).
pub(super) fn start(
    log: &LogSettings,
    state: Arc<ServerState>,
) -> Option<actix_rt::task::JoinHandle<()>> {
    if log.clients_interval_secs == 0 {
        return None;
    }
    let every = Duration::from_secs(log.clients_interval_secs);
    let limit = log.clients_limit;
    let level = match log.level.parse::<log::LevelFilter>() {
        Ok(filter) => filter.to_level().unwrap_or(log::Level::Error),
        Err(_) => log::Level::Info,
    }
    .min(log::Level::Info);
    Some(actix_rt::spawn(async move {
        let mut ticks = actix_rt::time::interval_at(actix_rt::time::Instant::now() + every, every);
        loop {
            ticks.tick().await;
            if let Some(clients) = server::clients(&state).await {
                log::log!(level, "{}", text(clients, limit));
            }
        }
    }))
}

/// The line (with its client lines) for `clients`.
fn text(mut clients: Vec<ClientInfo>, limit: usize) -> String {
    clients.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = format!("Connected clients: {}", clients.len());
    if !clients.is_empty() && clients.len() < limit {
        for client in &clients {
            out.push('\n');
            out.push_str(&describe(client));
        }
    }
    out
}

fn describe(client: &ClientInfo) -> String {
    let user = client.user.as_deref().unwrap_or("NullUser()");
    let address = match client
        .remote_address
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        Some(addr) => format!("('{}', {})", addr.ip(), addr.port()),
        None => "None".to_owned(),
    };
    // RFC 3339 "2026-11-30T07:00:00.123Z" → "2026-11-30 07:00:00 UTC".
    let created = client.connected_since.get(..19).map_or_else(
        || client.connected_since.clone(),
        |t| t.replacen('T', " ", 1),
    );
    format!(
        "Client(name={}, uuid={}, user={user}, address={address}, created={created} UTC)",
        client.name, client.uuid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, user: Option<&str>) -> ClientInfo {
        ClientInfo {
            uuid: uuid::Uuid::nil(),
            name: name.into(),
            user: user.map(Into::into),
            remote_address: Some("127.0.0.1:4242".into()),
            connected_since: "2026-11-30T07:00:01.5Z".into(),
            messages_forwarded: 0,
        }
    }

    #[test]
    fn shape_and_limit() {
        let two = vec![client("b", Some("sub-1")), client("a", None)];
        let text = text(two.clone(), 3);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Connected clients: 2");
        assert_eq!(
            lines[1],
            "Client(name=a, uuid=00000000-0000-0000-0000-000000000000, user=NullUser(), \
             address=('127.0.0.1', 4242), created=2026-11-30 07:00:01 UTC)"
        );
        assert!(lines[2].starts_with("Client(name=b,") && lines[2].contains("user=sub-1"));
        // As ProxyStore: listed only when 0 < N < limit.
        assert_eq!(super::text(two, 2), "Connected clients: 2");
        assert_eq!(super::text(Vec::new(), 5), "Connected clients: 0");
    }
}
