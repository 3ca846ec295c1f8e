#!/usr/bin/env python3
"""Benchmark ProxyStore 1.1's peers (PeerManager + aiortc) on loopback.

The ProxyStore side of `scripts/bench peer`, measuring what
`switchboard-peer-bench` measures for Switchboard. Run it with the ProxyStore
venv's interpreter against a relay listening on 127.0.0.1 (the script uses
ProxyStore's own `proxystore-relay`).

  peer_bench.py --relay ws://127.0.0.1:PORT setup --count 20 --warmup 2 --channels 4
  peer_bench.py --relay ws://127.0.0.1:PORT throughput --bytes 16MiB --message 1MiB \
      --channels 4 --runs 3

Each command starts a receiving peer B in a child process (`serve`, the same
script), so A and B each have their own interpreter and core, as two ProxyStore
peers would. Both use ProxyStore's public PeerManager API; A is the offerer.

- setup: for each connection, a fresh A (new UUID, registered first, not timed)
  calls `PeerManager.get_connection(B)`, which creates the channels, gathers
  candidates and sends the offer through the relay, then
  `PeerConnection.ready()`, which resolves once every channel is open.
  `connect_ms` is the whole call; `offer_to_open_ms` starts when the offer has
  been handed to the relay client (the issue's definition).
- throughput: over one open connection, A tells B how many bytes to expect
  (cumulative, so message order does not matter), sends the bytes as messages
  with `PeerManager.send`, and B answers with the CLOCK_MONOTONIC instant at
  which it had every byte; the run time is that instant minus A's instant
  before the first send (one clock for both processes). MB/s uses 10^6 bytes.

Loopback only: aiortc (aioice) gathers host candidates on every interface but
127.0.0.1. The script replaces `aioice.ice.get_host_addresses` so that both
peers gather 127.0.0.1 only, like the Rust side (`bind_addrs = [127.0.0.1]`),
and passes no ICE servers (no STUN traffic).

Output: human text on stderr; `RESULT <test> key=value ...` lines on stdout.
Every wait is bounded (--timeout, per step). Exit code 0 on success, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import time
import uuid

import aioice.ice
from proxystore.p2p.manager import PeerManager
from proxystore.p2p.relay.client import RelayClient

LOOPBACK = '127.0.0.1'
CLOSE_TIMEOUT_S = 10.0
SERVE_START_TIMEOUT_S = 30.0
SIZE_UNITS = {
    '': 1, 'b': 1, 'k': 2**10, 'kib': 2**10, 'm': 2**20, 'mib': 2**20,
    'g': 2**30, 'gib': 2**30, 'kb': 10**3, 'mb': 10**6, 'gb': 10**9,
}


class Failure(Exception):
    """A reason to exit 1, printed on stderr."""


def loopback_only() -> None:
    """Make aiortc gather host candidates on 127.0.0.1 only."""

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    aioice.ice.get_host_addresses = host_addresses


def parse_size(text: str) -> int:
    """'64MiB', '1MiB', '16MB', '4096' -> bytes."""
    match = re.fullmatch(r'\s*(\d+)\s*([A-Za-z]*)\s*', text)
    if match is None or match.group(2).lower() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f'{text!r} is not a size like 64MiB')
    value = int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text!r} is zero')
    return value


def log(text: str) -> None:
    """Human text, on stderr."""
    print(text, file=sys.stderr, flush=True)


def stats(name: str, values: list[float]) -> str:
    """key=value fields for a list of measurements."""
    return (
        f'{name}_median={statistics.median(values):.2f} {name}_min={min(values):.2f} '
        f'{name}_max={max(values):.2f} {name}_all={",".join(f"{v:.2f}" for v in values)}'
    )


async def start_manager(
    relay: str,
    channels: int,
    timeout: float,
    client_uuid: uuid.UUID | None = None,
) -> PeerManager:
    """A registered ProxyStore PeerManager (host candidates only, no STUN)."""
    client = RelayClient(
        relay,
        client_name='peer-bench',
        client_uuid=client_uuid or uuid.uuid4(),
        timeout=timeout,
    )
    manager = PeerManager(
        client,
        timeout=max(1, int(timeout)),
        peer_channels=channels,
        ice_servers=[],
    )
    await asyncio.wait_for(manager.async_init(), timeout)
    return manager


async def close_manager(manager: PeerManager) -> None:
    """Close a manager within a bounded time; failures are only logged."""
    try:
        await asyncio.wait_for(manager.close(), CLOSE_TIMEOUT_S)
    except Exception as e:  # a failed close must not hide the measurement
        log(f'peer_bench.py: close failed: {e!r}')


async def serve(args: argparse.Namespace) -> None:
    """Receiver B: count bytes; answer each 'expect T' once T bytes have arrived."""
    manager = await start_manager(args.relay, 1, args.timeout, uuid.UUID(args.uuid))
    print('ready', flush=True)
    received = 0
    pending: list[tuple[uuid.UUID, int]] = []
    deadline = time.monotonic() + args.lifetime
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f'serve: lifetime of {args.lifetime} s is over')
            try:
                peer, message = await asyncio.wait_for(manager.recv(), left)
            except asyncio.TimeoutError:
                continue
            if isinstance(message, str):
                kind, _, value = message.partition(' ')
                if kind == 'quit':
                    return
                if kind == 'expect':
                    pending.append((peer, int(value)))
            else:
                received += len(message)
            now = time.monotonic()
            for peer, target in [p for p in pending if received >= p[1]]:
                pending.remove((peer, target))
                await asyncio.wait_for(
                    manager.send(peer, f'done {target} {now!r}', timeout=args.timeout),
                    args.timeout,
                )
    finally:
        await close_manager(manager)


class Receiver:
    """The `serve` child process, started and always stopped by its owner."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.uuid = uuid.uuid4()
        command = [
            sys.executable, os.path.abspath(__file__), '--relay', args.relay,
            '--timeout', str(args.timeout), '--log-level', args.log_level,
            'serve', '--uuid', str(self.uuid),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    async def wait_ready(self) -> None:
        """Wait (bounded) for the child's 'ready' line."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(
            asyncio.to_thread(self.process.stdout.readline), SERVE_START_TIMEOUT_S,
        )
        if line.strip() != 'ready':
            raise Failure(f'serve did not start (exit code {self.process.poll()})')

    def stop(self) -> None:
        """Terminate the child, then kill it if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(CLOSE_TIMEOUT_S)


async def setup(args: argparse.Namespace, receiver: Receiver) -> None:
    """Open --warmup + --count connections from fresh A managers to B."""
    connect_ms: list[float] = []
    offer_ms: list[float] = []
    for i in range(args.warmup + args.count):
        manager = await start_manager(args.relay, args.channels, args.timeout)
        try:
            began = time.monotonic()
            connection = await asyncio.wait_for(
                manager.get_connection(receiver.uuid), args.timeout,
            )
            offered = time.monotonic()
            await connection.ready(timeout=args.timeout)
            opened = time.monotonic()
        except asyncio.TimeoutError:
            raise Failure(f'connection {i} not open within {args.timeout} s') from None
        finally:
            await close_manager(manager)
        if i >= args.warmup:
            connect_ms.append((opened - began) * 1000)
            offer_ms.append((opened - offered) * 1000)
    log(f'  get_connection + ready (ms): {[round(v, 2) for v in connect_ms]}')
    log(f'  offer sent -> all channels open (ms): {[round(v, 2) for v in offer_ms]}')
    print(
        f'RESULT setup level=proxystore channels={args.channels} count={args.count} '
        f'{stats("connect_ms", connect_ms)} {stats("offer_to_open_ms", offer_ms)}',
        flush=True,
    )


async def transfer(
    manager: PeerManager,
    receiver: Receiver,
    message: bytes,
    count: int,
    target: int,
    timeout: float,
) -> float:
    """Send `count` messages; return seconds until B had cumulative `target` bytes."""
    await asyncio.wait_for(manager.send(receiver.uuid, f'expect {target}'), timeout)
    began = time.monotonic()
    for _ in range(count):
        await asyncio.wait_for(manager.send(receiver.uuid, message), timeout)
    sent = time.monotonic()
    peer, reply = await asyncio.wait_for(manager.recv(), timeout)
    fields = reply.split(' ') if isinstance(reply, str) else []
    if peer != receiver.uuid or len(fields) != 3 or fields[:2] != ['done', str(target)]:
        raise Failure(f'unexpected reply from {peer}: {reply!r:.80}')
    finished = float(fields[2])
    log(f'  last send returned after {sent - began:.3f} s, receiver complete after '
        f'{finished - began:.3f} s')
    return finished - began


async def throughput(args: argparse.Namespace, receiver: Receiver) -> None:
    """--runs transfers of --bytes in --message messages over one connection."""
    if args.message > args.bytes or args.runs < 1:
        raise Failure('--message must not exceed --bytes, and --runs must be at least 1')
    count = args.bytes // args.message
    total = count * args.message
    message = bytes(i % 251 for i in range(251)) * (args.message // 251 + 1)
    message = message[: args.message]
    manager = await start_manager(args.relay, args.channels, args.timeout)
    try:
        began = time.monotonic()
        connection = await asyncio.wait_for(
            manager.get_connection(receiver.uuid), args.timeout,
        )
        await connection.ready(timeout=args.timeout)
        log(f'  connected in {(time.monotonic() - began) * 1000:.1f} ms')
        delivered = len(message)
        await transfer(manager, receiver, message, 1, delivered, args.run_timeout)
        rates: list[float] = []
        seconds: list[float] = []
        for run in range(1, args.runs + 1):
            delivered += total
            secs = await transfer(manager, receiver, message, count, delivered,
                                  args.run_timeout)
            rate = total / secs / 1e6
            log(f'  run {run}/{args.runs}: {secs:.3f} s, {rate:.2f} MB/s')
            rates.append(rate)
            seconds.append(secs)
        await asyncio.wait_for(manager.send(receiver.uuid, 'quit'), args.timeout)
    except asyncio.TimeoutError:
        raise Failure('throughput: a step timed out') from None
    finally:
        await close_manager(manager)
    print(
        f'RESULT throughput level=proxystore channels={args.channels} bytes={total} '
        f'message={args.message} runs={args.runs} {stats("mbps", rates)} '
        f'{stats("seconds", seconds)}',
        flush=True,
    )


async def drive(args: argparse.Namespace) -> None:
    """Start B, run the command as A, always stop B."""
    receiver = Receiver(args)
    try:
        await receiver.wait_ready()
        if args.command == 'setup':
            log(f'proxystore setup: {args.channels} channel(s), {args.warmup} warm-up + '
                f'{args.count} measured, relay {args.relay}')
            await setup(args, receiver)
        else:
            log(f'proxystore throughput: {args.bytes // args.message} x {args.message} B, '
                f'{args.channels} channel(s), {args.runs} run(s)')
            await throughput(args, receiver)
    finally:
        receiver.stop()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line described in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--relay', required=True, help='ws://127.0.0.1:PORT')
    parser.add_argument('--timeout', type=float, default=30,
                        help='bound on each step in seconds (default 30)')
    parser.add_argument('--log-level', default='warning', help='Python log level')
    commands = parser.add_subparsers(dest='command', required=True)
    setup_cmd = commands.add_parser('setup', help='connection set-up times')
    setup_cmd.add_argument('--count', type=int, default=20)
    setup_cmd.add_argument('--warmup', type=int, default=2)
    setup_cmd.add_argument('--channels', type=int, default=1)
    put = commands.add_parser('throughput', help='bulk transfer rate')
    put.add_argument('--bytes', type=parse_size, default=parse_size('16MiB'))
    put.add_argument('--message', type=parse_size, default=parse_size('1MiB'))
    put.add_argument('--channels', type=int, default=1)
    put.add_argument('--runs', type=int, default=3)
    put.add_argument('--run-timeout', type=float, default=300,
                     help='bound on one run in seconds (default 300)')
    serve_cmd = commands.add_parser('serve', help='the receiving peer (started by the others)')
    serve_cmd.add_argument('--uuid', required=True)
    serve_cmd.add_argument('--lifetime', type=float, default=3600,
                           help='exit after this many seconds at the latest')
    args = parser.parse_args(argv)
    if not args.relay.startswith('ws://127.0.0.1:'):
        parser.error('--relay must be ws://127.0.0.1:PORT (loopback only)')
    if args.command == 'setup' and args.count < 1:
        parser.error('--count must be at least 1')
    return args


def main(argv: list[str]) -> int:
    """Entry point: exit code 0 on success, 1 on failure."""
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    loopback_only()
    try:
        asyncio.run(serve(args) if args.command == 'serve' else drive(args))
    except Failure as e:
        log(f'peer_bench.py: {e}')
        return 1
    except Exception as e:
        log(f'peer_bench.py: {type(e).__name__}: {e}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
