"""Peers in the lab: Switchboard's CLI peer and ProxyStore's aiortc peer, one transfer checked.

A transfer starts a listener on one side, then a sender on the other that
sends a file of random bytes (the sender is the offerer), and checks:
  - both processes exit 0 (the listener after --count messages);
  - the listener received exactly the file (length and sha256);
  - both printed a "connected" event naming the candidate pair ICE selected,
    and the pair is of the kind expected ("direct": no relay candidate on
    either side; "relay": a relay candidate on at least one end);
  - the sender's NAT router carried the bytes on that path (to the public
    namespace for a relay pair, to the other router for a direct one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .lab import (
    PUBLIC_IP, RELAY_PORT, TURN_PASSWORD, TURN_PORT, TURN_REST_PORT, TURN_SECRET, TURN_USER, Lab,
    Proc,
)

RELAY_URL = f'ws://{PUBLIC_IP}:{RELAY_PORT}'
DIRECT_TYPES = {'host', 'srflx', 'prflx'}


@dataclass
class Ice:
    """Which STUN/TURN servers both peers are given."""

    stun: bool = True
    turn: str | None = None        # None, 'udp' or 'tcp'
    rest: bool = False             # TURN REST API secret (port 3479) instead of user/password
    rest_ttl: int = 600

    def urls(self) -> list[str]:
        urls = [f'stun:{PUBLIC_IP}:{TURN_PORT}'] if self.stun else []
        if self.turn:
            port = TURN_REST_PORT if self.rest else TURN_PORT
            urls.append(f'turn:{PUBLIC_IP}:{port}?transport={self.turn}')
        return urls

    def rest_credentials(self) -> tuple[str, str]:
        """TURN REST API user name and credential, as coturn checks them."""
        username = f'{int(time.time()) + self.rest_ttl}:switchboard'
        digest = hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
        return username, base64.b64encode(digest).decode()

    def sb_args(self) -> list[str]:
        args = [a for url in self.urls() for a in ('--ice-server', url)]
        if self.turn and self.rest:
            args += ['--turn-secret', TURN_SECRET, '--turn-ttl', str(self.rest_ttl)]
        elif self.turn:
            args += ['--turn-username', TURN_USER, '--turn-credential', TURN_PASSWORD]
        return args

    def aio_args(self) -> list[str]:
        args = [a for url in self.urls() for a in ('--ice-server', url)]
        if self.turn:
            user, credential = self.rest_credentials() if self.rest else (TURN_USER, TURN_PASSWORD)
            args += ['--turn-username', user, '--turn-credential', credential]
        return args


@dataclass
class Tools:
    """Where the programs are."""

    binary: str
    python: str
    peer_py: str
    timeout_s: int = 30
    # bench only: accept a listener line without sha256 (binaries before it was
    # printed) when the length matches.
    allow_unhashed: bool = False


@dataclass
class Outcome:
    """What one transfer showed; failures is empty when every check held."""

    failures: list[str] = field(default_factory=list)
    sender_pair: dict | None = None
    receiver_pair: dict | None = None
    setup_ms: float | None = None        # reported by the sender's "connected" event
    first_ms: float | None = None        # sender start -> listener printed the message
    transfer_ms: float | None = None     # sender's "connected" line -> listener's message
    path: dict[str, int] = field(default_factory=dict)

    def pair_text(self) -> str:
        def one(p: dict | None) -> str:
            return f'{p.get("local_candidate")}/{p.get("remote_candidate")}' if p else '?'
        return f'sender {one(self.sender_pair)}, listener {one(self.receiver_pair)}'


def events(proc: Proc, name: str) -> list[tuple[float, dict]]:
    """The JSON lines of a process with that "event", with their read times."""
    found = []
    for line in proc.lines:
        try:
            value = json.loads(line.text)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get('event') == name:
            found.append((line.at, value))
    return found


def peer_cmd(kind: str, tools: Tools, ice: Ice, me: str, action: list[str]) -> list[str]:
    """The command line of a Switchboard ('sb') or aiortc ('aio') peer."""
    common = ['--relay', RELAY_URL, '--uuid', me, '--timeout', str(tools.timeout_s)]
    if kind == 'sb':
        return [tools.binary, 'peer', *common, *ice.sb_args(), *action]
    return [tools.python, tools.peer_py, *common, *ice.aio_args(), *action]


def make_file(lab: Lab, size: int) -> tuple[Path, str]:
    """A file of random bytes in the lab's work dir, and its sha256."""
    data = os.urandom(size)
    path = lab.work / f'data-{size}-{uuid.uuid4().hex[:8]}'
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def check_pair(out: Outcome, expect: str | None) -> None:
    """The pair both ends reported is the kind expected."""
    pairs = [('sender', out.sender_pair), ('listener', out.receiver_pair)]
    if expect is None:
        return
    for who, pair in pairs:
        if pair is None:
            out.failures.append(f'{who}: no "connected" event with the selected candidate pair')
            return
    types = [(p['local_candidate'], p['remote_candidate']) for _, p in pairs]
    if expect == 'direct':
        for (who, _), (local, remote) in zip(pairs, types):
            if local not in DIRECT_TYPES or remote not in DIRECT_TYPES - {'host'}:
                out.failures.append(f'{who}: pair {local}/{remote} is not a direct pair through the NATs')
    elif expect == 'relay':
        for (who, _), (local, remote) in zip(pairs, types):
            if 'relay' not in (local, remote):
                out.failures.append(f'{who}: pair {local}/{remote} has no relay candidate')


def check_path(out: Outcome, expect: str | None, size: int) -> None:
    """The sender's router carried the file on the expected path."""
    want = {'direct': 'direct', 'relay': 'public'}.get(expect or '')
    if want and out.path.get(want, 0) < size:
        out.failures.append(
            f'the sender\'s router sent {out.path.get(want, 0)} bytes on the {want} path '
            f'(counters {out.path}), fewer than the {size} sent',
        )


def transfer(lab: Lab, tools: Tools, sender: tuple[str, str], receiver: tuple[str, str],
             size: int, ice: Ice, expect: str | None, echo: bool = False,
             sender_uuid: str | None = None) -> Outcome:
    """One file from sender (kind, side) to receiver (kind, side), checked."""
    out = Outcome()
    path, digest = make_file(lab, size)
    r_uuid, s_uuid = str(uuid.uuid4()), sender_uuid or str(uuid.uuid4())
    r_kind, r_side = receiver
    s_kind, s_side = sender
    # Only peer.py's send waits for an echo; a Switchboard send exits once acknowledged.
    echo = echo and s_kind == 'aio'
    listen = ['listen', '--count', '1'] + (['--echo'] if echo else [])
    rx = lab.start(f'{r_kind}-listen-{r_side}', lab.sides[r_side].host_ns,
                   peer_cmd(r_kind, tools, ice, r_uuid, listen))
    if rx.wait_line(lambda t: '"ready"' in t, tools.timeout_s) is None:
        out.failures.append(f'listener not ready: {rx.stderr()[-1500:]}')
        rx.stop()
        return out
    send = ['send', r_uuid, '--file', str(path)]
    if echo:
        send.append('--expect-echo')
    lab.zero_counters()
    tx = lab.start(f'{s_kind}-send-{s_side}', lab.sides[s_side].host_ns,
                   peer_cmd(s_kind, tools, ice, s_uuid, send))
    limit = tools.timeout_s * 2 + 10
    code = tx.wait(limit)
    rcode = rx.wait(10 if code is not None else 1)
    out.path = lab.path_bytes(s_side)
    for proc, code_, who in ((tx, code, 'sender'), (rx, rcode, 'listener')):
        if code_ != 0:
            tail = proc.stderr().strip().splitlines()[-6:]
            state = 'still running' if code_ is None else f'exit {code_}'
            out.failures.append(f'{who} ({proc.name}) {state}: ' + ' | '.join(tail))
        proc.stop()
    collect(out, tx, rx, size, digest, tools.allow_unhashed)
    check_pair(out, expect)
    check_path(out, expect, size)
    return out


def collect(out: Outcome, tx: Proc, rx: Proc, size: int, digest: str,
            allow_unhashed: bool = False) -> None:
    """Fill the outcome from the two processes' event lines."""
    got = events(rx, 'recv')
    if not got:
        out.failures.append('the listener received nothing')
    else:
        at, value = got[0]
        unhashed_ok = allow_unhashed and 'sha256' not in value
        if value.get('len') != size or (value.get('sha256') != digest and not unhashed_ok):
            out.failures.append(
                f'the listener got {value.get("len")} bytes with sha256 {value.get("sha256")}, '
                f'sent {size} with {digest}',
            )
        out.first_ms = round((at - tx.started) * 1000)
    sent_connected = events(tx, 'connected')
    if sent_connected:
        at, value = sent_connected[0]
        out.sender_pair = value
        out.setup_ms = value.get('setup_ms')
        if got:
            out.transfer_ms = round((got[0][0] - at) * 1000)
    received_connected = events(rx, 'connected')
    if received_connected:
        out.receiver_pair = received_connected[0][1]
