//! The relay soak's bookkeeping: who sends what to whom (the plan), what each
//! receiver saw (its inbox), and the count of lost, duplicated and reordered
//! deliveries per sender→receiver pair (the tally).

use std::collections::HashMap;

use anyhow::bail;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use switchboard::protocol::{decode, RelayMessage};
use uuid::Uuid;

use crate::client::{frame_seq, peer_frame};

/// Every client's identity and the destination of each of its forwards.
pub struct Plan {
    /// Client `i`'s UUID.
    pub uuids: Vec<Uuid>,
    /// UUID → client index.
    pub index: HashMap<Uuid, u32>,
    /// `routes[i][m]`: the client that client `i`'s `m`-th forward goes to.
    pub routes: Vec<Vec<u32>>,
    /// Encoded size of every frame, in bytes.
    pub size: usize,
}

impl Plan {
    /// `clients` clients, each sending `forwards` forwards spread evenly over
    /// `peers` peers in a shuffled order. Peer `j` of each client is its
    /// successor in the `j`-th random cycle through all clients, so nobody
    /// sends to itself and everybody receives from exactly `peers` senders
    /// (about `forwards` messages). The same seed gives the same plan.
    pub fn new(
        clients: usize,
        forwards: usize,
        peers: usize,
        size: usize,
        seed: u64,
    ) -> anyhow::Result<Plan> {
        if clients < 2 || clients > u32::MAX as usize {
            bail!("--clients must be in [2, {}]", u32::MAX);
        }
        if peers == 0 || peers >= clients || forwards == 0 {
            bail!("--peers must be in [1, clients - 1] and --forwards at least 1");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let uuids: Vec<Uuid> = (0..clients)
            .map(|_| uuid::Builder::from_random_bytes(rng.random()).into_uuid())
            .collect();
        let index = uuids
            .iter()
            .enumerate()
            .map(|(i, u)| (*u, i as u32))
            .collect();
        let mut peers_of = vec![Vec::with_capacity(peers); clients];
        let mut cycle: Vec<u32> = (0..clients as u32).collect();
        for _ in 0..peers {
            cycle.shuffle(&mut rng);
            for k in 0..clients {
                peers_of[cycle[k] as usize].push(cycle[(k + 1) % clients]);
            }
        }
        let routes = peers_of
            .into_iter()
            .map(|mine| {
                let mut route: Vec<u32> = (0..forwards).map(|m| mine[m % peers]).collect();
                route.shuffle(&mut rng);
                route
            })
            .collect();
        let plan = Plan {
            uuids,
            index,
            routes,
            size,
        };
        plan.frame(0, 1, 0)?;
        Ok(plan)
    }

    /// The name client `i` registers and sends as.
    pub fn name(i: u32) -> String {
        format!("soak-{i}")
    }

    /// The `seq`-th forward from client `from` to client `to`, encoded.
    pub fn frame(&self, from: u32, to: u32, seq: u64) -> anyhow::Result<String> {
        let (source, peer) = (self.uuids[from as usize], self.uuids[to as usize]);
        peer_frame(source, &Self::name(from), peer, seq, self.size)
    }

    /// Forwards the plan sends in all.
    pub fn total(&self) -> u64 {
        self.routes.iter().map(|r| r.len() as u64).sum()
    }

    /// Forwards planned per (sender, receiver) pair.
    fn expected(&self) -> HashMap<(u32, u32), u32> {
        let mut expected = HashMap::new();
        for (sender, route) in self.routes.iter().enumerate() {
            for &receiver in route {
                *expected.entry((sender as u32, receiver)).or_insert(0) += 1;
            }
        }
        expected
    }
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Sender index → the pair sequence numbers, in arrival order.
    pub arrivals: HashMap<u32, Vec<u32>>,
    /// Frames that are not, byte for byte, a forward the plan sends to this client.
    pub malformed: u64,
    /// Forwards the relay sent back with `error` set.
    pub error_echoes: u64,
    /// The first malformed frame or error echo, described.
    pub first_problem: Option<String>,
    /// Why the connection ended before the soak stopped reading, if it did.
    pub ended: Option<String>,
}

impl Inbox {
    /// Records one text frame received by client `me`: a delivery when it is
    /// byte for byte the frame its sender built (the relay re-encodes
    /// forwards with the same encoder), else a described problem.
    pub fn record(&mut self, text: &str, me: u32, plan: &Plan) {
        if let Some((sender, seq)) = quick_fields(text) {
            let rebuilt = (sender as usize) < plan.uuids.len() && sender != me;
            if rebuilt && plan.frame(sender, me, seq).is_ok_and(|f| f == text) {
                let seq = u32::try_from(seq).unwrap_or(u32::MAX);
                self.arrivals.entry(sender).or_default().push(seq);
                return;
            }
        }
        let problem = describe(text, me, plan);
        if problem.starts_with("error echo") {
            self.error_echoes += 1;
        } else {
            self.malformed += 1;
        }
        self.first_problem.get_or_insert(problem);
    }
}

/// The sender index (from its name `soak-N`) and sequence number of a soak
/// frame, found by text search; `None` if either is missing.
fn quick_fields(text: &str) -> Option<(u32, u64)> {
    let digits = |key: &str| {
        let start = text.find(key)? + key.len();
        let rest = &text[start..];
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        rest[..end].parse::<u64>().ok()
    };
    let sender = u32::try_from(digits("\"source_name\": \"soak-")?).ok()?;
    Some((sender, digits("a=x-seq:")?))
}

/// Why `text`, received by client `me`, is not a planned forward.
fn describe(text: &str, me: u32, plan: &Plan) -> String {
    let head: String = text.chars().take(200).collect();
    match decode(text) {
        Ok(RelayMessage::PeerConnection(m)) if m.error.is_some() => {
            format!("error echo at client {me}: {:?}", m.error)
        }
        Ok(RelayMessage::PeerConnection(m)) => match plan.index.get(&m.source_uuid) {
            None => format!("forward at client {me} from unknown {}", m.source_uuid),
            Some(_) if m.peer_uuid != plan.uuids[me as usize] => {
                format!("forward at client {me} addressed to {}", m.peer_uuid)
            }
            Some(sender) => format!(
                "forward from client {sender} at client {me} (seq {:?}) differs from what was sent: {head}",
                frame_seq(&m)
            ),
        },
        Ok(other) => format!("not a forward at client {me}: {other:?}"),
        Err(error) => format!("undecodable frame at client {me} ({error}): {head}"),
    }
}

/// The count over every pair.
#[derive(Debug, Default)]
pub struct Tally {
    /// Forwards delivered once each, with a planned sequence number.
    pub delivered: u64,
    /// Planned forwards never delivered.
    pub lost: u64,
    /// Deliveries of a forward already delivered.
    pub duplicated: u64,
    /// First deliveries that came after a later forward of the same pair.
    pub reordered: u64,
    /// Deliveries with a sequence number or sender the plan never sent.
    pub unexpected: u64,
    /// Pairs with a planned forward.
    pub pairs: u64,
    /// Up to five pairs with a problem, described.
    pub examples: Vec<String>,
}

/// Compares every inbox (`(receiver index, inbox)`) with the plan.
pub fn tally(plan: &Plan, inboxes: &[(u32, Inbox)]) -> Tally {
    let mut expected = plan.expected();
    let mut tally = Tally {
        pairs: expected.len() as u64,
        ..Tally::default()
    };
    for (receiver, inbox) in inboxes {
        for (&sender, seqs) in &inbox.arrivals {
            let planned = expected.remove(&(sender, *receiver)).unwrap_or(0);
            judge(&mut tally, (sender, *receiver), seqs, planned);
        }
    }
    for ((sender, receiver), planned) in expected {
        judge(&mut tally, (sender, receiver), &[], planned);
    }
    tally
}

/// Adds one pair's arrivals (`seqs`, of `planned` forwards numbered from 0).
fn judge(tally: &mut Tally, pair: (u32, u32), seqs: &[u32], planned: u32) {
    let mut seen = vec![false; planned as usize];
    let (mut highest, mut dup, mut reordered, mut unexpected) = (None, 0u64, 0u64, 0u64);
    for &seq in seqs {
        match seen.get_mut(seq as usize) {
            None => unexpected += 1,
            Some(true) => dup += 1,
            Some(slot) => {
                *slot = true;
                if highest.is_some_and(|h| seq < h) {
                    reordered += 1;
                }
                highest = highest.max(Some(seq));
            }
        }
    }
    let delivered = seen.iter().filter(|s| **s).count() as u64;
    let lost = u64::from(planned) - delivered;
    tally.delivered += delivered;
    tally.lost += lost;
    tally.duplicated += dup;
    tally.reordered += reordered;
    tally.unexpected += unexpected;
    if lost + dup + reordered + unexpected > 0 && tally.examples.len() < 5 {
        tally.examples.push(format!(
            "client {} -> client {}: planned {planned}, arrivals {seqs:?}",
            pair.0, pair.1
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_spreads_forwards_without_self_sends() {
        let plan = Plan::new(50, 20, 4, 1800, 7).unwrap();
        assert_eq!(plan.total(), 1000);
        let mut received = vec![0u32; 50];
        for (sender, route) in plan.routes.iter().enumerate() {
            assert_eq!(route.len(), 20);
            assert!(route.iter().all(|&r| r as usize != sender));
            route.iter().for_each(|&r| received[r as usize] += 1);
        }
        assert!(received.iter().all(|&n| n == 20), "{received:?}");
    }

    #[test]
    fn inbox_accepts_only_the_exact_planned_frame() {
        let plan = Plan::new(3, 2, 1, 1000, 1).unwrap();
        let (from, to) = (0u32, plan.routes[0][0]);
        let frame = plan.frame(from, to, 4).unwrap();
        let mut inbox = Inbox::default();
        inbox.record(&frame, to, &plan);
        assert_eq!(inbox.arrivals.get(&from), Some(&vec![4]));
        inbox.record(&frame.replacen("x", "y", 1), to, &plan);
        inbox.record(&frame, from, &plan);
        inbox.record("{}", to, &plan);
        assert_eq!((inbox.malformed, inbox.error_echoes), (3, 0));
        assert!(inbox.first_problem.unwrap().contains("differs"));
    }

    #[test]
    fn judge_counts_each_kind_of_problem() {
        let mut tally = Tally::default();
        judge(&mut tally, (0, 1), &[0, 2, 1, 2, 9], 4);
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.lost, 1);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.reordered, 1);
        assert_eq!(tally.unexpected, 1);
        assert_eq!(tally.examples.len(), 1);
        let mut clean = Tally::default();
        judge(&mut clean, (0, 1), &[0, 1, 2], 3);
        assert_eq!((clean.delivered, clean.examples.len()), (3, 0));
    }
}
