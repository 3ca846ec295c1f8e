#!/usr/bin/env python3
"""Drive ProxyStore 1.1's own peer-to-peer stack (PeerManager + aiortc) from a shell.

The Rust interop tests run this as a subprocess to talk to a real ProxyStore
peer. It uses only ProxyStore's public API (RelayClient, PeerManager) except
where noted (draining the send buffers before exit reads aiortc internals).

Usage (run with the venv's interpreter, /work/main/.venv/bin/python):

  peer.py --relay ws://127.0.0.1:PORT --uuid UUID [--channels N] [--timeout S]
          listen --count K [--echo]
  peer.py --relay ws://127.0.0.1:PORT --uuid UUID [--channels N] [--timeout S]
          send PEER_UUID (--text T [--repeat R] | --bytes-len N [--seed S] | --file PATH)
          [--expect-echo]

Output: one JSON object per line on stdout, flushed at once:
  {"event": "ready", "uuid": ...}                      listen: registered with the relay
  {"event": "connected", "peer": UUID, "local_candidate": "host"|"srflx"|"prflx"|"relay",
   "remote_candidate": ..., "local_addr": "ip:port", "remote_addr": "ip:port",
   "setup_ms": N}                                      a connection's channels are open; the
                                                       candidate pair is the one ICE nominated;
                                                       setup_ms counts from get_connection()
                                                       (send) or from the offer's arrival (listen)
  {"event": "recv", "peer": UUID, "kind": "bytes"|"str", "len": N, "sha256": HEX,
   "chars": C, "text": first 200 characters}            (chars and text only for str)
  {"event": "sent", "peer": UUID, "kind": ..., "len": N, "sha256": HEX,
   "setup_ms": F, "send_ms": F}                        send: delivered to aiortc and drained
"len" counts bytes (UTF-8 bytes for str); "sha256" hashes those bytes.

--ice-server URL (repeatable) with --turn-username U --turn-credential C for
turn:/turns: URLs (aiortc uses the first STUN and the first TURN server given).

--bytes-len N --seed S sends byte i = (131 * i + S) mod 251, for i in 0..N.
--timeout bounds the whole command (default 60 s). Exit code 0 on success; 1 on
any failure or timeout, with the reason on stderr. ProxyStore logs go to
stderr at --log-level (default warning).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
import time
import uuid
from typing import Any

from aiortc import RTCIceServer
from proxystore.p2p.manager import PeerManager
from proxystore.p2p.relay.client import RelayClient

TEXT_PREVIEW_CHARS = 200
CONNECTED_POLL_S = 0.01
CLOSE_TIMEOUT_S = 5.0
DRAIN_POLL_S = 0.005
# After its last message the listener waits this long before closing, as
# `switchboard peer listen` does (PEER_CLOSE_ACK_LINGER_MS): aiortc sends the
# SACK of a packet after handing its data to the application, so closing at
# once can drop the acknowledgement of the last chunk, and the sender then
# (rightly) cannot report the message as acknowledged.
CLOSE_LINGER_S = 1.5


class Failure(Exception):
    """A reason to exit 1, printed on stderr."""


def emit(event: dict[str, Any]) -> None:
    """Print one JSON event line and flush it."""
    sys.stdout.write(json.dumps(event) + '\n')
    sys.stdout.flush()


def describe(message: bytes | str) -> dict[str, Any]:
    """Kind, byte length and SHA-256 of a message (plus a preview for text)."""
    if isinstance(message, str):
        data = message.encode('utf-8')
        return {
            'kind': 'str',
            'len': len(data),
            'sha256': hashlib.sha256(data).hexdigest(),
            'chars': len(message),
            'text': message[:TEXT_PREVIEW_CHARS],
        }
    return {
        'kind': 'bytes',
        'len': len(message),
        'sha256': hashlib.sha256(message).hexdigest(),
    }


def pattern_bytes(length: int, seed: int) -> bytes:
    """Byte i is (131 * i + seed) mod 251: easy to rebuild in any language."""
    period = bytes((131 * i + seed) % 251 for i in range(251))
    return (period * (length // 251 + 1))[:length]


def remaining(deadline: float) -> float:
    """Seconds left before the deadline (raises once it has passed)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise asyncio.TimeoutError
    return left


async def drain(manager: PeerManager, peer: uuid.UUID, deadline: float) -> None:
    """Wait until aiortc has sent and the peer acknowledged everything queued.

    ProxyStore's send() returns once chunks are queued, and closing flushes only
    what the congestion window allows, so exiting right after send() can lose
    the tail of a large message. This polls aiortc's queues (private fields).
    """
    connection = manager._peers.get(frozenset({manager.uuid, peer}))
    if connection is None:
        return
    channels = list(connection._channels.values())
    while True:
        buffered = sum(channel.bufferedAmount for channel in channels)
        sctp = channels[0].transport if channels else None
        queued = 0
        if sctp is not None:
            queued = len(getattr(sctp, '_data_channel_queue', ()))
            queued += len(getattr(sctp, '_outbound_queue', ()))
            queued += len(getattr(sctp, '_sent_queue', ()))
        if buffered == 0 and queued == 0:
            return
        if sctp is None or sctp.state == 'closed':
            # The peer closed first (e.g. after receiving everything it expected).
            print(
                f'peer.py: connection to {peer} closed with {buffered} bytes and '
                f'{queued} chunks not acknowledged',
                file=sys.stderr,
            )
            return
        if time.monotonic() >= deadline:
            raise Failure(
                f'send buffers not drained in time ({buffered} bytes, {queued} chunks left)',
            )
        await asyncio.sleep(DRAIN_POLL_S)


def selected_pair(connection: Any) -> dict[str, Any]:
    """The candidate pair aioice nominated for a ProxyStore connection (private fields).

    ProxyStore's PeerConnection holds an aiortc RTCPeerConnection; its SCTP
    transport runs over DTLS over an RTCIceTransport, whose aioice Connection
    keeps the nominated pair per component (the data channel uses component 1).
    aioice pairs the host (or relay) socket, not the server-reflexive address,
    so a direct pair across NATs shows "host" locally and "srflx"/"prflx" remotely.
    """
    sctp = connection._pc.sctp
    ice = sctp.transport.transport._connection if sctp is not None else None
    pair = ice._nominated.get(1) if ice is not None else None
    if pair is None:
        return {'local_candidate': None, 'remote_candidate': None}
    local, remote = pair.local_candidate, pair.remote_candidate
    return {
        'local_candidate': local.type,
        'remote_candidate': remote.type,
        'local_addr': f'{local.host}:{local.port}',
        'remote_addr': f'{remote.host}:{remote.port}',
    }


def emit_connected(peer: uuid.UUID, connection: Any, setup_s: float) -> None:
    """The "connected" event line for one open connection."""
    emit(
        {
            'event': 'connected',
            'peer': str(peer),
            **selected_pair(connection),
            'setup_ms': round(setup_s * 1000),
        },
    )


class ConnectionWatch:
    """Listen side: print "connected" once for each connection the manager opens.

    ProxyStore creates the connection when the offer arrives; reading its peer
    table (a private field) is the only way to see it without changing
    ProxyStore. run() sweeps it every few ms; receive() sweeps once more before
    printing a message, so "connected" always comes before that message's "recv".
    """

    def __init__(self, manager: PeerManager) -> None:
        self.manager = manager
        self.first_seen: dict[int, float] = {}
        self.reported: set[int] = set()

    def sweep(self) -> None:
        for key, connection in list(self.manager._peers.items()):
            ident = id(connection)
            self.first_seen.setdefault(ident, time.monotonic())
            if ident in self.reported or connection._pc.connectionState != 'connected':
                continue
            channels = list(connection._channels.values())
            if not channels or any(c.readyState != 'open' for c in channels):
                continue
            self.reported.add(ident)
            peer = next(iter(key - {self.manager.uuid}), self.manager.uuid)
            emit_connected(peer, connection, time.monotonic() - self.first_seen[ident])

    async def run(self) -> None:
        while True:
            self.sweep()
            await asyncio.sleep(CONNECTED_POLL_S)


def build_message(args: argparse.Namespace) -> bytes | str:
    """The message the send command was asked to send."""
    if args.text is not None:
        return args.text * args.repeat
    if args.bytes_len is not None:
        return pattern_bytes(args.bytes_len, args.seed)
    with open(args.file, 'rb') as f:
        return f.read()


async def listen(manager: PeerManager, args: argparse.Namespace, deadline: float) -> None:
    """Print each received message; echo it back if asked; stop after --count."""
    emit({'event': 'ready', 'uuid': str(manager.uuid)})
    watch = ConnectionWatch(manager)
    watcher = asyncio.create_task(watch.run())
    try:
        await receive(manager, args, deadline, watch)
    finally:
        watcher.cancel()


async def receive(
    manager: PeerManager,
    args: argparse.Namespace,
    deadline: float,
    watch: ConnectionWatch,
) -> None:
    """The listen loop: --count messages, each echoed if asked."""
    for index in range(args.count):
        try:
            peer, message = await asyncio.wait_for(manager.recv(), remaining(deadline))
        except asyncio.TimeoutError:
            raise Failure(f'timed out waiting for message {index + 1} of {args.count}') from None
        watch.sweep()
        emit({'event': 'recv', 'peer': str(peer), **describe(message)})
        if args.echo:
            await asyncio.wait_for(
                manager.send(peer, message, timeout=remaining(deadline)),
                remaining(deadline),
            )
            await drain(manager, peer, deadline)
    await asyncio.sleep(min(CLOSE_LINGER_S, remaining(deadline)))


async def send(manager: PeerManager, args: argparse.Namespace, deadline: float) -> None:
    """Open the connection, send one message, wait until it is drained (and echoed)."""
    peer = uuid.UUID(args.peer)
    message = build_message(args)
    start = time.monotonic()
    connection = await asyncio.wait_for(manager.get_connection(peer), remaining(deadline))
    await connection.ready(timeout=remaining(deadline))
    opened = time.monotonic()
    emit_connected(peer, connection, opened - start)
    await asyncio.wait_for(
        manager.send(peer, message, timeout=remaining(deadline)),
        remaining(deadline),
    )
    await drain(manager, peer, deadline)
    done = time.monotonic()
    emit(
        {
            'event': 'sent',
            'peer': str(peer),
            **{k: v for k, v in describe(message).items() if k not in ('text',)},
            'setup_ms': round((opened - start) * 1000, 1),
            'send_ms': round((done - opened) * 1000, 1),
        },
    )
    if args.expect_echo:
        try:
            source, echo = await asyncio.wait_for(manager.recv(), remaining(deadline))
        except asyncio.TimeoutError:
            raise Failure('timed out waiting for the echo') from None
        emit({'event': 'recv', 'peer': str(source), **describe(echo)})
        if echo != message:
            raise Failure('the echo differs from the message sent')


async def run(args: argparse.Namespace) -> None:
    """Register with the relay, run the command, always close everything."""
    deadline = time.monotonic() + args.timeout
    ice = [
        RTCIceServer(urls=url, username=args.turn_username, credential=args.turn_credential)
        if url.startswith(('turn:', 'turns:'))
        else RTCIceServer(urls=url)
        for url in args.ice_server
    ]
    relay = RelayClient(
        args.relay,
        client_name=args.name,
        client_uuid=uuid.UUID(args.uuid),
        timeout=min(args.timeout, 10),
    )
    manager = PeerManager(
        relay,
        timeout=max(1, int(args.timeout)),
        peer_channels=args.channels,
        ice_servers=ice,
    )
    try:
        try:
            await asyncio.wait_for(manager.async_init(), remaining(deadline))
        except asyncio.TimeoutError:
            raise Failure(f'could not register with the relay at {args.relay}') from None
        command = listen if args.command == 'listen' else send
        try:
            await command(manager, args, deadline)
        except asyncio.TimeoutError:
            raise Failure(f'{args.command}: timed out after {args.timeout} s') from None
    finally:
        await close(manager, relay)


async def close(manager: PeerManager, relay: RelayClient) -> None:
    """Close the manager (connections and relay client) within a bounded time."""
    try:
        if manager._server_task is not None:
            await asyncio.wait_for(manager.close(), CLOSE_TIMEOUT_S)
        else:
            await asyncio.wait_for(relay.close(), CLOSE_TIMEOUT_S)
    except Exception as e:  # closing must not mask the real outcome
        print(f'peer.py: close failed: {e!r}', file=sys.stderr)


def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before and after the command (given once is enough)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument('--relay', default=default(None),
                        help='ws:// or wss:// relay URL')
    parser.add_argument('--uuid', default=default(None),
                        help='UUID to register as')
    parser.add_argument('--name', default=default('peer.py'), help='name to register as')
    parser.add_argument('--channels', type=int, default=default(1),
                        help='data channels per connection (default 1)')
    parser.add_argument('--timeout', type=float, default=default(60),
                        help='bound on the whole command in seconds (default 60)')
    parser.add_argument('--ice-server', action='append', default=default([]),
                        help='STUN/TURN URL (repeatable); none by default: host candidates only')
    parser.add_argument('--turn-username', default=default(None),
                        help='TURN user name for every turn: URL')
    parser.add_argument('--turn-credential', default=default(None),
                        help='TURN credential for every turn: URL')
    parser.add_argument('--log-level', default=default('warning'),
                        help='ProxyStore/aiortc log level (default warning)')


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line described in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest='command', required=True)

    listen_cmd = commands.add_parser('listen', help='print received messages')
    add_common(listen_cmd, suppress=True)
    listen_cmd.add_argument('--count', type=int, required=True, help='exit after K messages')
    listen_cmd.add_argument('--echo', action='store_true', help='send each message back')

    send_cmd = commands.add_parser('send', help='send one message')
    add_common(send_cmd, suppress=True)
    send_cmd.add_argument('peer', help='UUID of the receiving peer')
    what = send_cmd.add_mutually_exclusive_group(required=True)
    what.add_argument('--text', help='send this string')
    what.add_argument('--bytes-len', type=int, help='send N pattern bytes')
    what.add_argument('--file', help='send the bytes of this file')
    send_cmd.add_argument('--repeat', type=int, default=1, help='repeat --text R times')
    send_cmd.add_argument('--seed', type=int, default=0, help='pattern seed for --bytes-len')
    send_cmd.add_argument('--expect-echo', action='store_true', help='wait for the echo')
    args = parser.parse_args(argv)
    if args.relay is None or args.uuid is None:
        parser.error('--relay and --uuid are required')
    return args


def main(argv: list[str]) -> int:
    """Entry point: exit code 0 on success, 1 on failure."""
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format='%(asctime)s %(levelname)s %(name)s: %(message)s',
    )
    try:
        asyncio.run(run(args))
    except Failure as e:
        print(f'peer.py: {e}', file=sys.stderr)
        return 1
    except Exception as e:
        print(f'peer.py: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
