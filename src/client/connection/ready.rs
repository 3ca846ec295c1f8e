//! How a [`Connection`] becomes ready (the selected candidate pair read,
//! then the send queue opened) and how it fails (with ICE's story in words).

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::{channels, ice, Connection, ConnectionError, ConnectionEventKind, Route};
use crate::defaults;

impl Connection {
    /// Once every channel is open: reads the selected candidate pair, then
    /// opens the send queue and reports `Ready`.
    pub(super) fn check_ready(&mut self, ctx: &mut Context<Self>) {
        if self.readying
            || self.sender.is_some()
            || self.closing
            || self.open.is_empty()
            || !self.open.iter().all(|o| *o)
        {
            return;
        }
        self.readying = true;
        let pc = self.pc.clone();
        let setup = self.created.elapsed();
        let route = async move {
            let read = async {
                let ice = ice::transport(&pc?).await?;
                ice.get_selected_candidate_pair().await.ok().flatten()
            };
            let pair = tokio::time::timeout(Duration::from_secs(1), read)
                .await
                .ok()??;
            Some(Route::from_pair(pair.local(), pair.remote(), setup))
        };
        ctx.spawn(route.into_actor(self).map(|route, act, ctx| {
            if act.ended.is_none() && !act.closing {
                act.open_sender(route, ctx);
            }
        }));
    }

    fn open_sender(&mut self, route: Option<Route>, ctx: &mut Context<Self>) {
        let channels: Vec<_> = self.channels.iter().flatten().cloned().collect();
        let (tx, rx) = mpsc::channel(defaults::PEER_SEND_QUEUE);
        let sender = channels::Sender {
            channels,
            chunk_size: self.config.chunk_size,
            acks: self.acks.clone(),
            stall: Duration::from_millis(defaults::PEER_FLUSH_STALL_MS),
            addr: ctx.address().downgrade(),
        };
        self.tasks
            .push(tokio::spawn(channels::send_loop(sender, rx)));
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(tx.clone()));
        }
        self.sender = Some(tx);
        if let Some(nudge) = self.nudge.take() {
            nudge.abort();
        }
        match &route {
            Some(route) => log::info!(
                "{} ready ({} channels) in {:.1} ms via {route}",
                self.log,
                self.open.len(),
                route.setup.as_secs_f64() * 1e3
            ),
            None => log::info!("{} ready ({} channels)", self.log, self.open.len()),
        }
        self.emit(ConnectionEventKind::Ready(route));
    }

    /// Ends the connection after the peer connection failed, saying why:
    /// ICE's candidates and servers when ICE failed, else the stage after it.
    pub(super) fn fail(&mut self, ctx: &mut Context<Self>) {
        let Some(pc) = self.pc.clone() else {
            return self.end(
                Some(ConnectionError::WebRtc("connection failed".into())),
                ctx,
            );
        };
        let servers = self.config.ice_servers.clone();
        let (local, remote) = self.candidates.clone();
        let why = async move {
            let Some(ice) = ice::transport(&pc).await else {
                return "connection failed before ICE started".to_owned();
            };
            let selected = ice.get_selected_candidate_pair().await.ok().flatten();
            if let Some(pair) = selected {
                let route = Route::from_pair(pair.local(), pair.remote(), Duration::ZERO);
                return format!(
                    "connection failed after ICE connected via {route} (the peer went silent, \
                     or DTLS/SCTP failed)"
                );
            }
            // The stack forgets its candidates once ICE failed: use the
            // ones our description and the peer's listed.
            ice::describe_failure(&servers, &local, &remote)
        };
        let why = async move {
            tokio::time::timeout(Duration::from_secs(1), why)
                .await
                .unwrap_or_else(|_| "connection failed".to_owned())
        };
        ctx.spawn(why.into_actor(self).map(|why, act, ctx| {
            act.end(Some(ConnectionError::WebRtc(why)), ctx);
        }));
    }
}
