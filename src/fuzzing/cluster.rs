//! Target for what arrives on a cluster node's Redis channel
//! (`cluster::envelope`): anyone who can publish to Redis can send it.

use crate::cluster::envelope::{decode, encode};

/// The node the input is addressed to.
const NODE: &str = "node-1";
/// The envelope limit (a relay message of 1 024 bytes plus the header).
const LIMIT: usize = 1024 + crate::defaults::CLUSTER_ENVELOPE_HEADER_MAX;

/// A payload published on node `node-1`'s channel.
///
/// Checks: [`decode`] never panics and refuses anything over the limit; an
/// accepted envelope re-encodes (with no limit) to a payload that decodes
/// to the same envelope.
pub fn cluster_envelope(data: &[u8]) {
    let Ok(envelope) = decode(data, NODE, LIMIT) else {
        return;
    };
    assert!(data.len() <= LIMIT, "{} bytes accepted", data.len());
    let again = encode(NODE, &envelope, usize::MAX).expect("no limit");
    assert_eq!(decode(&again, NODE, usize::MAX).as_ref(), Ok(&envelope));
}
