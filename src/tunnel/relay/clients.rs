//! The services' public listeners: each accepted client is handed to an
//! idle pooled connection of its service ([`reassign`] waits up to
//! `tunnel.pool_wait_ms` for one when there is none, and takes back the
//! clients whose hand-off failed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::{Assignment, Handed, TakeError};
use super::state::{Service, TunnelState};

pub(super) async fn accept_clients(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    listener: Arc<tokio::net::TcpListener>,
) {
    // The address clients connect to; asked per client only when the
    // listener is bound to a wildcard address.
    let bound = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let accepted = tokio::select! {
            biased;
            _ = service.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (client, addr) = match accepted {
            Ok((client, addr)) => (client, crate::addr::canonical(addr)),
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                log::warn!("tunnel: {}: accept failed: {e}", service.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if state.active.load(Ordering::Acquire) >= state.settings.max_clients {
            log::warn!(
                "tunnel: {}: closing client {addr}: tunnel.max_clients reached",
                service.name
            );
            state.reject(&service, "max_clients");
            continue;
        }
        let _ = client.set_nodelay(true);
        let Some(server) = bound
            .or_else(|| client.local_addr().ok())
            .map(crate::addr::canonical)
        else {
            log::warn!("tunnel: {}: client {addr} gone at accept", service.name);
            continue;
        };
        let assignment = Handed::Tcp(Assignment {
            client,
            addr,
            server,
            conn: state.id(),
            accepted: Instant::now(),
            early: Vec::new(),
            early_eof: false,
            attempts: 0,
        });
        hand(&state, &service, assignment);
    }
}

/// Hands a client (or UDP session) to an idle pooled connection: at once
/// when one is there (no other task in between), else by a task that waits.
pub(super) fn hand(state: &Arc<TunnelState>, service: &Arc<Service>, assignment: Handed) {
    let assignment = match service.pool.try_take() {
        Some(idle) => {
            state.pool_changed(service);
            match idle.tx.send(assignment) {
                Ok(()) => return,
                Err(back) => back,
            }
        }
        None => assignment,
    };
    tokio::spawn(reassign(state.clone(), service.clone(), assignment));
}

/// Hands a client to the best idle pooled connection, waiting up to
/// `tunnel.pool_wait_ms`; closes it (dropping the socket) when none comes.
pub(super) async fn reassign(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut assignment: Handed,
) {
    let wait = Duration::from_millis(state.settings.pool_wait_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let addr = assignment.addr();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let taken = tokio::select! {
            t = service.pool.take(left, state.settings.max_waiting) => t,
            _ = service.cancel.cancelled() => return,
        };
        state.pool_changed(&service);
        match taken {
            Ok((idle, waited)) => {
                if waited {
                    state
                        .metrics
                        .tunnel_waits
                        .get_or_create(&service.labels)
                        .inc();
                }
                match idle.tx.send(assignment) {
                    Ok(()) => return,
                    // That pooled connection died just now: try the next one.
                    Err(back) => assignment = back,
                }
            }
            Err(TakeError::TooManyWaiting) => {
                log::warn!(
                    "tunnel: {}: closing client {addr}: {} clients already waiting",
                    service.name,
                    state.settings.max_waiting
                );
                return state.reject(&service, "max_waiting");
            }
            Err(TakeError::Timeout) => {
                log::warn!(
                    "tunnel: {}: closing client {addr}: no pooled connection within {wait:?}",
                    service.name
                );
                return state.reject(&service, "pool_timeout");
            }
        }
    }
}
