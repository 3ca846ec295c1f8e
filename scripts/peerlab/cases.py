"""The peer lab's cases: each builds its own lab, runs transfers, and says what failed.

Every case returns a list of failure strings (empty = passed) and logs what
it saw (the selected candidate pairs, set-up time, bytes checked).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable

from .lab import Lab
from .peers import Ice, Outcome, Tools, events, make_file, peer_cmd, transfer

MiB = 1 << 20
# conntrack-flush: flush once this much of the 64 MiB has left A's router
# (the transfer is under way), and want the failure within the ICE timeouts
# (disconnected 5 s + failed 10 s, plus margin). ICE alone does not see this
# failure that soon: A's consent checks reach B's TURN relay from A's new port
# (TURN permissions are per IP) and B answers them, so A's pair looks alive
# until B gives up; the sender's stall limit (5 s without acknowledgement,
# PEER_FLUSH_STALL_MS) reports it first.
FLUSH_AFTER_BYTES = 4 * MiB
FAILURE_WITHIN_S = 25


@dataclass
class Context:
    """What a case needs to make its lab and run its peers."""

    tools: Tools
    new_lab: Callable[..., Lab]      # new_lab(modes=..., rtt_ms=...) -> a built lab, relay and coturn up
    log: Callable[[str], None]


def report(ctx: Context, name: str, out: Outcome, size: int) -> list[str]:
    """Log one transfer's figures; return its failures, named."""
    ctx.log(f'{name}: {out.pair_text()}; setup {out.setup_ms} ms, first message at '
            f'{out.first_ms} ms, {size} bytes (sha256 checked); path bytes {out.path}')
    return [f'{name}: {f}' for f in out.failures]


def cone_stun(ctx: Context) -> list[str]:
    """Two cone NATs, STUN only: a direct pair through both NATs."""
    with ctx.new_lab(modes={'a': 'cone', 'b': 'cone'}) as lab:
        out = transfer(lab, ctx.tools, ('sb', 'a'), ('sb', 'b'), 4 * MiB, Ice(), 'direct')
        return report(ctx, 'cone-stun', out, 4 * MiB)


def symmetric_turn(ctx: Context) -> list[str]:
    """Two symmetric NATs, STUN and TURN: only a relay pair can work."""
    with ctx.new_lab(modes={'a': 'symmetric', 'b': 'symmetric'}) as lab:
        out = transfer(lab, ctx.tools, ('sb', 'a'), ('sb', 'b'), 4 * MiB, Ice(turn='udp'), 'relay')
        return report(ctx, 'symmetric-turn', out, 4 * MiB)


def mixed_turn(ctx: Context) -> list[str]:
    """Cone (A) and symmetric (B), STUN and TURN: A's checks go to B's STUN-learnt port,
    which B's NAT did not open towards A, and B's arrive from a port A never sent to,
    so only a relay pair works."""
    with ctx.new_lab(modes={'a': 'cone', 'b': 'symmetric'}) as lab:
        out = transfer(lab, ctx.tools, ('sb', 'a'), ('sb', 'b'), 4 * MiB, Ice(turn='udp'), 'relay')
        return report(ctx, 'mixed-turn', out, 4 * MiB)


def turn_rest(ctx: Context) -> list[str]:
    """Two symmetric NATs, TURN with REST API credentials (--turn-secret, --turn-ttl)."""
    with ctx.new_lab(modes={'a': 'symmetric', 'b': 'symmetric'}) as lab:
        out = transfer(lab, ctx.tools, ('sb', 'a'), ('sb', 'b'), 1 * MiB,
                       Ice(turn='udp', rest=True), 'relay')
        return report(ctx, 'turn-rest', out, 1 * MiB)


def aiortc_at(rtt_ms: float, size: int = MiB) -> Callable[[Context], list[str]]:
    """Switchboard and ProxyStore's aiortc peer across two cone NATs at a round trip
    time, both offer roles (the sender offers): Switchboard -> aiortc (aiortc checks
    the bytes), then aiortc -> Switchboard, which echoes them back (each checks)."""

    def case(ctx: Context) -> list[str]:
        failures = []
        rtt = {'a': rtt_ms / 2, 'b': rtt_ms / 2}
        with ctx.new_lab(modes={'a': 'cone', 'b': 'cone'}, rtt_ms=rtt) as lab:
            for sender, receiver, label in ((('sb', 'a'), ('aio', 'b'), 'sb-offers'),
                                            (('aio', 'a'), ('sb', 'b'), 'aio-offers')):
                out = transfer(lab, ctx.tools, sender, receiver, size, Ice(), 'direct', echo=True)
                failures += report(ctx, f'aiortc-rtt{rtt_ms:g} {label}', out, size)
        return failures

    case.__doc__ = f'Switchboard <-> aiortc, both offer roles, RTT {rtt_ms:g} ms'
    return case


def udp_blocked(ctx: Context) -> list[str]:
    """A's router drops all UDP: aiortc <-> aiortc still connect through TURN over TCP
    (proves the mode; Switchboard's webrtc stack has no TURN over TCP)."""
    with ctx.new_lab(modes={'a': 'udp-blocked', 'b': 'cone'}) as lab:
        out = transfer(lab, ctx.tools, ('aio', 'a'), ('aio', 'b'), MiB, Ice(turn='tcp'), 'relay')
        return report(ctx, 'udp-blocked', out, MiB)


def conntrack_flush(ctx: Context) -> list[str]:
    """A (symmetric NAT) sends 64 MiB to B (cone) at 40 ms RTT through TURN; A's
    router forgets every mapping (conntrack -F) once the connection is open and
    4 MiB more have left the router, so
    A's packets leave from new ports the old pair cannot use. The send must fail
    within the ICE timeouts (10 s failed timeout, plus margin) with a reason, and
    a new send from the same peer UUID must open a new connection that delivers."""
    failures: list[str] = []
    tools, size, ice = ctx.tools, 64 * MiB, Ice(turn='udp')
    with ctx.new_lab(modes={'a': 'symmetric', 'b': 'cone'}, rtt_ms={'a': 20, 'b': 20}) as lab:
        b_uuid, a_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        rx = lab.start('sb-listen-b', lab.sides['b'].host_ns,
                       peer_cmd('sb', tools, ice, b_uuid, ['listen', '--count', '2']))
        if rx.wait_line(lambda t: '"ready"' in t, tools.timeout_s) is None:
            return [f'conntrack-flush: listener not ready: {rx.stderr()[-1000:]}']
        big, _ = make_file(lab, size)
        tx = lab.start('sb-send-a', lab.sides['a'].host_ns,
                       peer_cmd('sb', tools, ice, a_uuid, ['send', b_uuid, '--file', str(big)]))
        opened = rx.wait_line(lambda t: '"connected"' in t, tools.timeout_s)
        if opened is None:
            tx.stop()
            return [f'conntrack-flush: no connection opened before the flush: '
                    f'{" | ".join(tx.stderr().strip().splitlines()[-2:])}']
        lab.zero_counters()
        moved = wait_bytes_sent(lab, 'a', FLUSH_AFTER_BYTES, tools.timeout_s)
        if moved < FLUSH_AFTER_BYTES:
            failures.append(f'conntrack-flush: A\'s router forwarded only {moved} bytes in '
                            f'{tools.timeout_s} s: the transfer never got going')
        if tx.popen.poll() is not None:
            failures.append(f'conntrack-flush: the send ended (exit {tx.popen.returncode}) before '
                            'the flush: nothing was interrupted')
        flushed = time.monotonic()
        lab.flush_conntrack('a')
        stamp = time.strftime('%H:%M:%S', time.gmtime())
        ctx.log(f'conntrack-flush: flushed A\'s router at {stamp} UTC, {flushed - opened.at:.1f} s '
                f'after B\'s "connected" and {moved} bytes after it')
        code = tx.wait(60)
        took = time.monotonic() - flushed
        reason = ' | '.join(tx.stderr().strip().splitlines()[-3:])
        ctx.log(f'conntrack-flush: send exit {code} {took:.1f} s after the flush: {reason}')
        if code in (None, 0):
            failures.append(f'conntrack-flush: the interrupted send exit {code} '
                            f'{took:.1f} s after the flush (want a failure reported)')
        elif took > FAILURE_WITHIN_S:
            failures.append(f'conntrack-flush: the failure came {took:.1f} s after the flush, '
                            'later than the ICE timeouts allow')
        tx.stop()
        out = transfer_after(lab, tools, ice, rx, a_uuid, b_uuid)
        failures += report(ctx, 'conntrack-flush, next send', out, MiB)
    return failures


def wait_bytes_sent(lab: Lab, side: str, want: int, timeout_s: float) -> int:
    """Waits until the side's router forwarded want bytes (any path); returns how many."""
    deadline = time.monotonic() + timeout_s
    moved = 0
    while time.monotonic() < deadline:
        moved = sum(lab.path_bytes(side).values())
        if moved >= want:
            break
        time.sleep(0.1)
    return moved


def transfer_after(lab: Lab, tools: Tools, ice: Ice, rx, a_uuid: str, b_uuid: str) -> Outcome:
    """A second send from the same UUID to the listener still running (its 2nd message)."""
    out = Outcome()
    path, digest = make_file(lab, MiB)
    seen = len(events(rx, 'recv'))
    tx = lab.start('sb-send-a-again', lab.sides['a'].host_ns,
                   peer_cmd('sb', tools, ice, a_uuid, ['send', b_uuid, '--file', str(path)]))
    code = tx.wait(tools.timeout_s * 2)
    rx.wait(10)
    if code != 0:
        out.failures.append(f'second send exit {code}: {tx.stderr()[-800:]}')
    got = events(rx, 'recv')[seen:]
    if not got or got[-1][1].get('sha256') != digest:
        out.failures.append(f'the listener did not get the second file intact: {[g[1] for g in got]}')
    connected = events(tx, 'connected')
    out.sender_pair = connected[0][1] if connected else None
    tx.stop()
    rx.stop()
    return out


def suite(test_rtts: list[float]) -> list[tuple[str, Callable[[Context], list[str]]]]:
    """Every case of `scripts/natlab peers`, in order."""
    cases = [
        ('cone-stun', cone_stun),
        ('symmetric-turn', symmetric_turn),
        ('mixed-turn', mixed_turn),
        ('turn-rest', turn_rest),
    ]
    cases += [(f'aiortc-rtt{r:g}', aiortc_at(r)) for r in test_rtts]
    cases += [('conntrack-flush', conntrack_flush), ('udp-blocked', udp_blocked)]
    return cases
