#!/usr/bin/env python3
"""Drive a Switchboard relay with ProxyStore 1.1.0's own RelayClient.

Usage: relay_clients.py ws://127.0.0.1:PORT [ws://127.0.0.1:PORT2 [ws://127.0.0.1:PORT3]]

With several addresses (the nodes of a Switchboard cluster), client A uses
the first, B the second and the replacement A2 the last: every exchange and
the 4004 takeover then cross nodes.

Run by tests/interop_proxystore.rs against an in-process relay. Every check is
an assert; every await is bounded by a timeout; one line is printed per check
that passed. Exit status 0 means ProxyStore's client works unchanged against
the relay. Talks only to the address given on the command line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable
from typing import Any
from typing import TypeVar

import websockets.exceptions
import websockets.protocol
from proxystore.p2p.relay.client import RelayClient
from proxystore.p2p.relay.exceptions import RelayRegistrationError
from proxystore.p2p.relay.messages import PeerConnectionRequest

T = TypeVar('T')

# Bound on every single await (connect, send, recv, close).
STEP_TIMEOUT = 10.0
# Bound on the whole run (the Rust test has its own, larger, hard timeout).
TOTAL_TIMEOUT = 45.0

UUID_A = uuid.UUID('0b02e3e1-3e68-41e9-9712-6aedce7b75db')
UUID_B = uuid.UUID('fce0cb8b-0f0a-4378-9ead-6136be5877b7')
UUID_UNKNOWN = uuid.UUID('6a1d2c7e-52f4-4d8e-9b0e-3c51a0f7d1aa')

NAME_A = 'interop-peer-A'
NAME_B = 'interop-peer-B'
NAME_A2 = 'interop-peer-A-replacement'

# ProxyStore's relay text for a peer_connection to an unregistered peer.
UNKNOWN_PEER_ERROR = (
    'Cannot forward peer connection message to peer {uuid} because this '
    'peer is not registered this relay server.'
)
# Start of the close reason ProxyStore's relay uses with 4004.
DUPLICATE_REASON_PREFIX = 'Relay received a registration with the same ID'


def ok(check: str) -> None:
    print(f'ok: {check}', flush=True)


async def bounded(aw: Awaitable[T], what: str) -> T:
    try:
        return await asyncio.wait_for(aw, STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(
            f'timed out after {STEP_TIMEOUT}s waiting for: {what}',
        ) from None


def description(kind: str, marker: str) -> str:
    """A WebRTC session description as ProxyStore peers send it.

    ensure_ascii=False keeps the non-ASCII characters raw inside the
    description string, so the relay sees them as \\uXXXX escapes (including a
    surrogate pair) once ProxyStore's encoder serializes the outer frame.
    """
    sdp = (
        'v=0\r\n'
        f'o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n'
        f's=ProxyStore interop {marker} — café ü ß 中文 🚀\r\n'
        't=0 0\r\n'
        'a=group:BUNDLE 0\r\n'
        'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n'
        'c=IN IP4 0.0.0.0\r\n'
        'a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n'
        'a=ice-ufrag:"quoted\\backslash"\r\n'
        'a=sctp-port:5000\r\n'
    )
    return json.dumps({'sdp': sdp, 'type': kind}, ensure_ascii=False)


def assert_same_request(
    got: Any,
    sent: PeerConnectionRequest,
    what: str,
    error: str | None = None,
) -> None:
    assert isinstance(got, PeerConnectionRequest), (
        f'{what}: expected PeerConnectionRequest, got {got!r}'
    )
    for field in (
        'source_uuid',
        'source_name',
        'peer_uuid',
        'description_type',
        'description',
        'message_type',
    ):
        assert getattr(got, field) == getattr(sent, field), (
            f'{what}: field {field} differs: '
            f'got {getattr(got, field)!r}, sent {getattr(sent, field)!r}'
        )
    assert got.error == error, (
        f'{what}: error is {got.error!r}, expected {error!r}'
    )


async def exchange(
    offerer: RelayClient,
    answerer: RelayClient,
    label: str,
) -> None:
    """Offer from `offerer` to `answerer`, then the answer back."""
    offer = PeerConnectionRequest(
        source_uuid=offerer.uuid,
        source_name=offerer.name,
        peer_uuid=answerer.uuid,
        description_type='offer',
        description=description('offer', label),
    )
    await bounded(offerer.send(offer), f'{label}: send offer')
    got = await bounded(answerer.recv(), f'{label}: receive offer')
    assert_same_request(got, offer, f'{label}: offer')
    assert json.loads(got.description) == json.loads(offer.description)
    ok(f'{label}: {answerer.name} received the offer with every field equal')

    answer = PeerConnectionRequest(
        source_uuid=answerer.uuid,
        source_name=answerer.name,
        peer_uuid=offerer.uuid,
        description_type='answer',
        description=description('answer', label),
    )
    await bounded(answerer.send(answer), f'{label}: send answer')
    got = await bounded(offerer.recv(), f'{label}: receive answer')
    assert_same_request(got, answer, f'{label}: answer')
    ok(f'{label}: {offerer.name} received the answer with every field equal')


async def run(addresses: list[str], clients: list[RelayClient]) -> None:
    address_a, address_b, address_a2 = addresses[0], addresses[1 % len(addresses)], addresses[-1]
    # A never reconnects by itself: it is the client that gets replaced, and
    # ProxyStore's guarded reconnect task turns an unrecoverable close (4004)
    # into SystemExit(1) by design. B and A2 use ProxyStore's defaults.
    a = RelayClient(
        address_a,
        client_name=NAME_A,
        client_uuid=UUID_A,
        reconnect_task=False,
        timeout=STEP_TIMEOUT,
    )
    clients.append(a)
    b = RelayClient(
        address_b,
        client_name=NAME_B,
        client_uuid=UUID_B,
        timeout=STEP_TIMEOUT,
    )
    clients.append(b)

    # 1. Registration: RelayClient.connect() sends relay_registration and
    # requires a relay_response with success=True, else it raises.
    for client in (a, b):
        await bounded(client.connect(retry=False), f'{client.name}: connect')
        assert client.websocket.state is websockets.protocol.State.OPEN
        assert client.uuid in (UUID_A, UUID_B)
    ok('A and B connected and registered with ProxyStore RelayClient')

    # 2. Offer A -> B with non-ASCII in the description, answer B -> A.
    await exchange(a, b, 'A<->B')

    # 3. Offer to an unregistered UUID comes back to the sender with error set.
    lost = PeerConnectionRequest(
        source_uuid=a.uuid,
        source_name=a.name,
        peer_uuid=UUID_UNKNOWN,
        description_type='offer',
        description=description('offer', 'unknown peer'),
    )
    await bounded(a.send(lost), 'A: send to unknown peer')
    got = await bounded(a.recv(), 'A: receive error echo')
    assert_same_request(
        got,
        lost,
        'unknown peer',
        error=UNKNOWN_PEER_ERROR.format(uuid=UUID_UNKNOWN),
    )
    ok('A got its request to an unknown UUID back with ProxyStore\'s error')

    # 4. A second registration of UUID_A (same user: auth is none) makes the
    # relay close A's socket with 4004; the new client takes over.
    a_recv = asyncio.create_task(a.recv())
    a2 = RelayClient(
        address_a2,
        client_name=NAME_A2,
        client_uuid=UUID_A,
        timeout=STEP_TIMEOUT,
    )
    clients.append(a2)
    await bounded(a2.connect(retry=False), 'A2: connect with A\'s UUID')
    ok('A2 registered with the UUID of A')

    try:
        await bounded(a_recv, 'A: close after replacement')
    except websockets.exceptions.ConnectionClosed as e:
        assert e.rcvd is not None, f'A saw no close frame from the relay: {e!r}'
        assert e.rcvd.code == 4004, f'A closed with {e.rcvd.code}, not 4004'
        assert e.rcvd.reason.startswith(DUPLICATE_REASON_PREFIX), (
            f'unexpected 4004 reason: {e.rcvd.reason!r}'
        )
    else:
        raise AssertionError('A received a message instead of being closed')
    assert a._websocket is not None
    assert a._websocket.close_code == 4004, a._websocket.close_code
    ok('relay closed A with 4004 and ProxyStore\'s reason')

    # ProxyStore's client treats 4004 as unrecoverable: it refuses to
    # reconnect and raises RelayRegistrationError with the close reason.
    try:
        await bounded(a.connect(), 'A: reconnect after 4004')
    except RelayRegistrationError as e:
        assert str(e).startswith(DUPLICATE_REASON_PREFIX), repr(e)
    else:
        raise AssertionError('A reconnected after 4004')
    ok('ProxyStore client A reports 4004 as unrecoverable RelayRegistrationError')

    # The replacement now owns UUID_A: B's answer goes to A2, not A.
    await exchange(a2, b, 'A2<->B')
    await exchange(b, a2, 'B<->A2')
    ok('the replacement client exchanges messages with B')


async def main(addresses: list[str]) -> int:
    clients: list[RelayClient] = []
    try:
        await asyncio.wait_for(run(addresses, clients), TOTAL_TIMEOUT)
    finally:
        for client in clients:
            try:
                await asyncio.wait_for(client.close(), STEP_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - report, keep closing
                print(f'warning: closing {client.name}: {e!r}', file=sys.stderr)
    ok('all clients closed')
    return 0


if __name__ == '__main__':
    given = sys.argv[1:]
    if not 1 <= len(given) <= 3 or not all(a.startswith('ws://127.0.0.1:') for a in given):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(given)))
