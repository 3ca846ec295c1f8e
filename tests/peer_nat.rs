//! Proves WebRTC peers connect across two NATs and say how: runs
//! `scripts/natlab peers`, which builds network namespaces (two private hosts,
//! each behind its own NAT router, cone, symmetric or UDP-blocked, with an
//! optional userspace WAN delay line, and a public namespace with the relay and
//! Debian's coturn) and, with this build's `switchboard` binary and ProxyStore's
//! aiortc peer (`tests/interop/peer.py` run by `$SWITCHBOARD_PYTHON`), checks
//! every transfer's bytes by sha256 and which candidate pair ICE selected:
//! cone <-> cone with STUN is direct; symmetric <-> symmetric and cone <->
//! symmetric go through TURN (long-term and TURN REST API credentials);
//! Switchboard <-> aiortc in both offer roles at 0 and 40 ms round trip;
//! aiortc behind a UDP-blocked NAT uses TURN over TCP; a NAT that forgets
//! its mappings mid-transfer (`conntrack -F` on the router) makes the send
//! fail within 25 s saying how much the peer acknowledged, and the next send
//! opens a new connection that delivers. The lab is always torn down. Where
//! this machine cannot build it (not root, no
//! `ip`/`iptables`/`turnserver`/`conntrack`, namespaces refused), the test
//! FAILS saying so, unless SWITCHBOARD_SKIP_NATLAB=1 is set.

use std::process::Command;

const CANNOT_BUILD_LAB: i32 = 77;

/// Every case of `scripts/natlab peers`.
const CASES: &[&str] = &[
    "cone-stun",
    "symmetric-turn",
    "mixed-turn",
    "turn-rest",
    "aiortc-rtt0",
    "aiortc-rtt40",
    "conntrack-flush",
    "udp-blocked",
];

#[test]
fn peers_cross_two_nats_on_the_expected_candidate_pairs() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/natlab");
    let mut command = Command::new("bash");
    command.arg(script).arg("peers");
    for case in CASES {
        command.arg("--case").arg(case);
    }
    command.arg("--bin").arg(env!("CARGO_BIN_EXE_switchboard"));
    if let Ok(python) = std::env::var("SWITCHBOARD_PYTHON") {
        command.arg("--python").arg(python);
    }
    let output = command.output().expect("cannot run bash scripts/natlab");
    let log = String::from_utf8_lossy(&output.stderr);
    eprintln!("{log}");
    match output.status.code() {
        Some(0) => assert!(
            log.contains("natlab: PASSED"),
            "script exited 0 without PASSED"
        ),
        Some(CANNOT_BUILD_LAB)
            if std::env::var("SWITCHBOARD_SKIP_NATLAB").as_deref() == Ok("1") =>
        {
            eprintln!("SKIPPED (SWITCHBOARD_SKIP_NATLAB=1): this machine cannot build the NAT lab");
        }
        Some(CANNOT_BUILD_LAB) => panic!(
            "the peer NAT lab could not run: this machine cannot build it (see the natlab \
             line above; needs root, iproute2, iptables, coturn and conntrack). \
             Set SWITCHBOARD_SKIP_NATLAB=1 to skip it explicitly."
        ),
        other => panic!("peer NAT lab failed (exit {other:?}); its log is above"),
    }
}
