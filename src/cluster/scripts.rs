//! Key names and the Lua scripts that read and write them atomically.
//!
//! Every script runs whole inside Redis, so no other command sees half of
//! it. The scripts build the names of other nodes' keys from the prefix
//! (the node that holds a UUID is only known inside the script), so they
//! need one Redis, not a Redis Cluster, whose scripts may only touch keys
//! they declare.

use redis::Script;
use uuid::Uuid;

/// The names of this node's keys and channels, and of the shared ones.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The prefix, e.g. `switchboard:`.
    pub prefix: String,
    /// This node's id.
    pub node: String,
}

impl Keys {
    /// `{prefix}node:{node}:alive`.
    pub fn alive(&self, node: &str) -> String {
        format!("{}node:{node}:alive", self.prefix)
    }
    /// `{prefix}node:{node}:clients`.
    pub fn clients(&self, node: &str) -> String {
        format!("{}node:{node}:clients", self.prefix)
    }
    /// `{prefix}node:{node}`: the node's channel.
    pub fn channel(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }
    /// `{prefix}reg:{uuid}`.
    pub fn reg(&self, uuid: &Uuid) -> String {
        format!("{}reg:{uuid}", self.prefix)
    }
    /// `{prefix}nodes`: every node seen, alive or not (for listing and reaping).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

/// Register: KEYS[1] the record; ARGV prefix, node, session, user, name,
/// uuid, then the four pieces of a takeover envelope. Returns
/// `{outcome, other node}`: `registered`, `taken_over` or `other_user`.
const REGISTER: &str = r"
local prefix, node, session, user, name, uuid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local old = redis.call('HMGET', KEYS[1], 'node', 'session', 'user')
local old_node, old_session, old_user = old[1], old[2], old[3]
local outcome = 'registered'
if old_node and old_node ~= node then
  if redis.call('EXISTS', prefix .. 'node:' .. old_node .. ':alive') == 1 then
    if old_user ~= user then
      return {'other_user', old_node}
    end
    redis.call('PUBLISH', prefix .. 'node:' .. old_node,
      ARGV[7] .. old_node .. ARGV[8] .. uuid .. ARGV[9] .. (old_session or '0') .. ARGV[10])
    outcome = 'taken_over'
  end
  redis.call('SREM', prefix .. 'node:' .. old_node .. ':clients', uuid)
end
redis.call('HSET', KEYS[1], 'node', node, 'session', session, 'user', user, 'name', name)
redis.call('SADD', prefix .. 'node:' .. node .. ':clients', uuid)
return {outcome, old_node or ''}
";

/// Unregister: KEYS[1] the record, KEYS[2] this node's set; ARGV node,
/// session, uuid. Deletes only the record this session wrote; returns 1 if it did.
const UNREGISTER: &str = r"
local r = redis.call('HMGET', KEYS[1], 'node', 'session')
if r[1] == ARGV[1] and r[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  return 1
end
return 0
";

/// Lookup: KEYS[1] the record; ARGV prefix. `{node, session, user}` when
/// the holder's node is alive, else nil.
const LOOKUP: &str = r"
local r = redis.call('HMGET', KEYS[1], 'node', 'session', 'user')
if not r[1] then return false end
if redis.call('EXISTS', ARGV[1] .. 'node:' .. r[1] .. ':alive') == 0 then return false end
return {r[1], r[2] or '', r[3] or ''}
";

/// Forward: KEYS[1] the target's record; ARGV prefix, this node, the
/// sender's user, the envelopes' common head, then each envelope's tail
/// (the holder's node goes between head and tail), in order. Returns
/// `{outcome, node}`: `unknown` (no record, or this node's), `dead` or
/// `other_user` (nothing published), or `sent` followed by each PUBLISH's
/// count of receivers.
const FORWARD: &str = r"
local prefix = ARGV[1]
local r = redis.call('HMGET', KEYS[1], 'node', 'user')
local node = r[1]
if not node or node == ARGV[2] then return {'unknown', ''} end
if redis.call('EXISTS', prefix .. 'node:' .. node .. ':alive') == 0 then return {'dead', node} end
if r[2] ~= ARGV[3] then return {'other_user', node} end
local channel, head = prefix .. 'node:' .. node, ARGV[4] .. node
local out = {'sent', node}
for i = 5, #ARGV do
  out[#out + 1] = redis.call('PUBLISH', channel, head .. ARGV[i])
end
return out
";

/// Leave: KEYS[1] the nodes set; ARGV prefix, node. A node that stops:
/// deletes its liveness key, the records that still name it, its set, and
/// its id from the nodes set. Returns the records deleted.
const LEAVE: &str = r"
local prefix, node = ARGV[1], ARGV[2]
local set = prefix .. 'node:' .. node .. ':clients'
local deleted = 0
redis.call('DEL', prefix .. 'node:' .. node .. ':alive')
for _, u in ipairs(redis.call('SMEMBERS', set)) do
  local reg = prefix .. 'reg:' .. u
  if redis.call('HGET', reg, 'node') == node then
    redis.call('DEL', reg)
    deleted = deleted + 1
  end
end
redis.call('DEL', set)
redis.call('SREM', KEYS[1], node)
return deleted
";

/// Alive nodes: KEYS[1] the nodes set; ARGV prefix.
const ALIVE_NODES: &str = r"
local alive = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'node:' .. n .. ':alive') == 1 then
    table.insert(alive, n)
  end
end
return alive
";

/// Reap: KEYS[1] the nodes set; ARGV prefix, budget. Deletes up to
/// `budget` records of dead nodes (those still naming the dead node), and
/// forgets a dead node once its set is empty. Returns records deleted.
const REAP: &str = r"
local prefix, budget, reaped = ARGV[1], tonumber(ARGV[2]), 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if budget <= 0 then break end
  if redis.call('EXISTS', prefix .. 'node:' .. n .. ':alive') == 0 then
    local set = prefix .. 'node:' .. n .. ':clients'
    local uuids = redis.call('SPOP', set, budget)
    for _, u in ipairs(uuids) do
      local reg = prefix .. 'reg:' .. u
      if redis.call('HGET', reg, 'node') == n then
        redis.call('DEL', reg)
        reaped = reaped + 1
      end
    end
    budget = budget - #uuids
    if redis.call('SCARD', set) == 0 then redis.call('SREM', KEYS[1], n) end
  end
end
return reaped
";

/// Reassert: ARGV prefix, node, then (uuid, session, user, name) per
/// registration. Writes each one whose record is missing, on a dead node,
/// or this node's with an older session; returns the UUIDs another live
/// node holds (this node's holders of those lost them).
const REASSERT: &str = r"
local prefix, node = ARGV[1], ARGV[2]
local own = prefix .. 'node:' .. node .. ':clients'
local lost = {}
local function older(a, b)
  return #a < #b or (#a == #b and a < b)
end
for i = 3, #ARGV, 4 do
  local uuid, session, user, name = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local reg = prefix .. 'reg:' .. uuid
  local r = redis.call('HMGET', reg, 'node', 'session')
  local write = true
  if r[1] == node then
    write = older(r[2] or '', session)
  elseif r[1] and redis.call('EXISTS', prefix .. 'node:' .. r[1] .. ':alive') == 1 then
    write = false
    table.insert(lost, uuid)
  elseif r[1] then
    redis.call('SREM', prefix .. 'node:' .. r[1] .. ':clients', uuid)
  end
  if write then
    redis.call('HSET', reg, 'node', node, 'session', session, 'user', user, 'name', name)
  end
  if write or r[1] == node then redis.call('SADD', own, uuid) end
end
return lost
";

/// Drop stale: ARGV prefix, node, then UUIDs in this node's set that it no
/// longer holds. Deletes their records if they still name this node.
const DROP_STALE: &str = r"
local prefix, node = ARGV[1], ARGV[2]
local own = prefix .. 'node:' .. node .. ':clients'
for i = 3, #ARGV do
  local reg = prefix .. 'reg:' .. ARGV[i]
  if redis.call('HGET', reg, 'node') == node then redis.call('DEL', reg) end
  redis.call('SREM', own, ARGV[i])
end
return 0
";

/// The scripts, hashed once (`EVALSHA`, loaded again after a Redis restart).
pub(crate) struct Scripts {
    pub register: Script,
    pub unregister: Script,
    pub lookup: Script,
    pub forward: Script,
    pub leave: Script,
    pub alive_nodes: Script,
    pub reap: Script,
    pub reassert: Script,
    pub drop_stale: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            register: Script::new(REGISTER),
            unregister: Script::new(UNREGISTER),
            lookup: Script::new(LOOKUP),
            forward: Script::new(FORWARD),
            leave: Script::new(LEAVE),
            alive_nodes: Script::new(ALIVE_NODES),
            reap: Script::new(REAP),
            reassert: Script::new(REASSERT),
            drop_stale: Script::new(DROP_STALE),
        }
    }
}
