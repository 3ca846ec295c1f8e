//! Registrations in Redis: register, unregister, lookup, and listing the
//! cluster's nodes and clients.

use redis::Value;
use uuid::Uuid;

use super::engine::Cluster;
use super::envelope::TAKEOVER_PARTS;
use super::{ClusterClient, ClusterError, ClusterMetrics, Holder, Owner, RegisterOutcome};

/// Records read per pipeline when listing clients.
const LIST_CHUNK: usize = 1_000;

impl Cluster {
    /// Registers `uuid` for `holder` on this node (one script: see the
    /// module documentation for the outcomes).
    pub async fn register(
        &self,
        uuid: Uuid,
        holder: &Holder,
    ) -> Result<RegisterOutcome, ClusterError> {
        let s = &self.shared;
        s.note_registered(uuid);
        let mut invocation = s.scripts.register.key(s.keys.reg(&uuid));
        invocation
            .arg(&s.keys.prefix)
            .arg(&s.keys.node)
            .arg(holder.session)
            .arg(&holder.user)
            .arg(&holder.name)
            .arg(uuid.to_string())
            .arg(&TAKEOVER_PARTS[..]);
        let mut conn = s.conn.clone();
        let (outcome, node): (String, String) = s
            .command("register", invocation.invoke_async(&mut conn))
            .await?;
        match outcome.as_str() {
            "registered" => Ok(RegisterOutcome::Registered),
            "taken_over" => {
                ClusterMetrics::inc(&s.metrics.takeovers_out);
                log::info!(
                    "[cluster {uuid}] taken over from node {node} by session {}",
                    holder.session
                );
                Ok(RegisterOutcome::TakenOver { node })
            }
            "other_user" => Ok(RegisterOutcome::OtherUser { node }),
            other => Err(ClusterError::BadData(format!(
                "register answered {other:?}"
            ))),
        }
    }

    /// Deletes the record of `uuid` if this node's `session` still holds
    /// it; `Ok(false)` when another session or node holds it now.
    pub async fn unregister(&self, uuid: Uuid, session: u64) -> Result<bool, ClusterError> {
        let s = &self.shared;
        s.note_unregistered(uuid, session);
        let mut invocation = s.scripts.unregister.key(s.keys.reg(&uuid));
        invocation
            .key(s.keys.clients(&s.keys.node))
            .arg(&s.keys.node)
            .arg(session)
            .arg(uuid.to_string());
        let mut conn = s.conn.clone();
        let deleted: i64 = s
            .command("unregister", invocation.invoke_async(&mut conn))
            .await?;
        Ok(deleted == 1)
    }

    /// Who holds `uuid`, if its node is alive (one round trip).
    pub async fn lookup(&self, uuid: Uuid) -> Result<Option<Owner>, ClusterError> {
        let s = &self.shared;
        let mut invocation = s.scripts.lookup.key(s.keys.reg(&uuid));
        invocation.arg(&s.keys.prefix);
        let mut conn = s.conn.clone();
        let found: Option<(String, String, String)> = s
            .command("lookup", invocation.invoke_async(&mut conn))
            .await?;
        let Some((node, session, user)) = found else {
            return Ok(None);
        };
        let session = session
            .parse()
            .map_err(|_| ClusterError::BadData(format!("session {session:?} of {uuid}")))?;
        Ok(Some(Owner {
            node,
            session,
            user,
        }))
    }

    /// The ids of the nodes alive now (one round trip).
    pub async fn nodes(&self) -> Result<Vec<String>, ClusterError> {
        let s = &self.shared;
        let mut invocation = s.scripts.alive_nodes.key(s.keys.nodes());
        invocation.arg(&s.keys.prefix);
        let mut conn = s.conn.clone();
        let mut nodes: Vec<String> = s
            .command("nodes", invocation.invoke_async(&mut conn))
            .await?;
        nodes.sort();
        Ok(nodes)
    }

    /// Every registration on the live nodes, by node then UUID (for
    /// `/clients`): the alive nodes, their sets, then the records in
    /// pipelines of 1 000. A record that names another node than
    /// the set it was found in moved meanwhile and is left out.
    pub async fn clients(&self) -> Result<Vec<ClusterClient>, ClusterError> {
        let s = &self.shared;
        let nodes = self.nodes().await?;
        let mut sets = redis::pipe();
        for node in &nodes {
            sets.cmd("SMEMBERS").arg(s.keys.clients(node));
        }
        let mut conn = s.conn.clone();
        let members: Vec<Vec<String>> = s.command("clients", sets.query_async(&mut conn)).await?;
        let mut wanted: Vec<(Uuid, &str)> = Vec::new();
        for (node, uuids) in nodes.iter().zip(&members) {
            wanted.extend(
                uuids
                    .iter()
                    .filter_map(|u| Uuid::parse_str(u).ok())
                    .map(|u| (u, node.as_str())),
            );
        }
        wanted.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(LIST_CHUNK) {
            let mut records = redis::pipe();
            for (uuid, _) in chunk {
                records
                    .cmd("HMGET")
                    .arg(s.keys.reg(uuid))
                    .arg(&["node", "user", "name"][..]);
            }
            let rows: Vec<Vec<Value>> =
                s.command("clients", records.query_async(&mut conn)).await?;
            for ((uuid, node), row) in chunk.iter().zip(rows) {
                let field = |i: usize| match row.get(i) {
                    Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                };
                if let (Some(n), Some(user), Some(name)) = (field(0), field(1), field(2)) {
                    if n == *node {
                        out.push(ClusterClient {
                            uuid: *uuid,
                            node: n,
                            user,
                            name,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
