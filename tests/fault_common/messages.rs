//! Numbered message streams over peer connections, and the inbox that
//! collects what the managers receive and checks the streams.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use switchboard::client::peer_manager::{PeerManager, PeerMessage, Send};
use switchboard::protocol::chunk::Payload;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Pause between two messages of a stream.
const STREAM_GAP: Duration = Duration::from_millis(20);

/// Forwards what one manager receives to the inbox, tagged with the manager's index.
struct Collector {
    index: usize,
    tx: mpsc::UnboundedSender<(usize, PeerMessage)>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<PeerMessage> for Collector {
    type Result = ();
    fn handle(&mut self, message: PeerMessage, _: &mut Context<Self>) {
        let _ = self.tx.send((self.index, message));
    }
}

/// Everything the managers received.
pub struct Inbox {
    tx: mpsc::UnboundedSender<(usize, PeerMessage)>,
    rx: mpsc::UnboundedReceiver<(usize, PeerMessage)>,
    got: Vec<(usize, PeerMessage)>,
}

/// A recipient delivering manager `index`'s messages to `inbox`.
pub fn collector(index: usize, inbox: &Inbox) -> Recipient<PeerMessage> {
    Collector {
        index,
        tx: inbox.tx.clone(),
    }
    .start()
    .recipient()
}

impl Inbox {
    pub fn new() -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        Inbox {
            tx,
            rx,
            got: Vec::new(),
        }
    }

    /// Receives until `done` holds on what was received, or panics after `limit`.
    async fn until(&mut self, limit: Duration, done: impl Fn(&[(usize, PeerMessage)]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.got) {
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(item)) => self.got.push(item),
                _ => panic!("inbox: condition not met within {limit:?}"),
            }
        }
    }

    /// Waits for `count` messages from `peer`; returns (receiver index, payload) of each.
    pub async fn sent_by(
        &mut self,
        peer: Uuid,
        count: usize,
        limit: Duration,
    ) -> Vec<(usize, Payload)> {
        let from =
            |got: &[(usize, PeerMessage)]| got.iter().filter(|(_, m)| m.peer == peer).count();
        self.until(limit, |got| from(got) >= count).await;
        let got = self.got.iter().filter(|(_, m)| m.peer == peer);
        got.map(|(i, m)| (*i, m.payload.clone())).collect()
    }

    /// Checks stream `i` (manager i to manager i + half, `sent[i]` messages):
    /// received exactly "0", "1", … in order, nothing lost or doubled.
    pub async fn check_streams(&mut self, uuids: &[Uuid], sent: &[u64], limit: Duration) {
        let half = sent.len();
        let received = |got: &[(usize, PeerMessage)], i: usize| -> Vec<Payload> {
            got.iter()
                .filter(|(to, m)| *to == i + half && m.peer == uuids[i])
                .map(|(_, m)| m.payload.clone())
                .collect()
        };
        let complete = |got: &[(usize, PeerMessage)]| {
            (0..half).all(|i| received(got, i).len() as u64 >= sent[i])
        };
        let deadline = Instant::now() + limit;
        while !complete(&self.got) && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Some(item)) = tokio::time::timeout(left, self.rx.recv()).await {
                self.got.push(item);
            }
        }
        for (i, count) in sent.iter().enumerate() {
            let want: Vec<Payload> = (0..*count).map(|n| Payload::Text(n.to_string())).collect();
            let got = received(&self.got, i);
            assert!(
                got == want,
                "stream {i}: sent {count}, received {} (first difference at {:?})",
                got.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
    }
}

/// Sends "0", "1", … from one manager to a peer until stopped; every send must succeed.
pub struct Stream {
    stop: Rc<Cell<bool>>,
    task: tokio::task::JoinHandle<Result<u64, String>>,
}

impl Stream {
    pub fn start(from: Addr<PeerManager>, to: Uuid, label: usize) -> Stream {
        let stop = Rc::new(Cell::new(false));
        let flag = stop.clone();
        let task = actix_rt::spawn(async move {
            let mut sent = 0u64;
            while !flag.get() {
                match from.send(Send::text(to, sent.to_string())).await {
                    Ok(Ok(())) => sent += 1,
                    other => return Err(format!("stream to {label}: message {sent}: {other:?}")),
                }
                tokio::time::sleep(STREAM_GAP).await;
            }
            Ok(sent)
        });
        Stream { stop, task }
    }

    /// Stops sending; returns how many messages were sent (all successfully).
    pub async fn stop(self) -> u64 {
        self.stop.set(true);
        self.task.await.unwrap().unwrap()
    }
}
