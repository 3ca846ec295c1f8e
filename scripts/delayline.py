#!/usr/bin/env python3
"""A WAN delay line for the NAT lab: hold every packet of a TUN device D ms.

This kernel has no netem, so scripts/natlab adds round-trip time in userspace.
The lab puts a namespace between a private host and its NAT router; that
namespace forwards without NAT, and its policy routing (`ip rule add iif h0
lookup 100`, the same for the router side, table 100 = `default dev dl0`)
sends every forwarded packet into the TUN device dl0. This program reads each
packet from the TUN, holds it --delay-ms milliseconds, and writes it back,
in the order it arrived; the kernel then sees it arriving on dl0, which no
rule matches, so the main table routes it on to its real next hop. Each
direction passes once, so a delay line adds 2 * D to the round trip.

  delayline.py --dev dl0 --delay-ms 20 [--queue-limit 20000]

The device must exist (`ip tuntap add dev dl0 mode tun`); the program attaches
to it, prints "ready" on stdout, and runs until SIGTERM/SIGINT, then prints one
JSON line of counters (packets, bytes, drops, largest queue) on stdout.
Packets beyond --queue-limit waiting at once are dropped, like a router's full
buffer. One thread and one read per packet: throughput is capped by Python's
per-packet cost (see `scripts/natlab bench`, which measures it).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_SIZE = 65536
# Packets read in one go before looking at the queue's head again, so a flood
# in one direction cannot starve due packets of being written.
READ_BATCH = 64
# Longest sleep when nothing is queued: how soon a signal is noticed.
IDLE_WAIT_S = 0.5


class Stop(Exception):
    """Raised by the signal handler to end the loop."""


def attach(name: str) -> int:
    """Open /dev/net/tun and attach to the device called name (no packet info)."""
    fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
    request = struct.pack('16sH', name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, request)
    return fd


def run(fd: int, delay_s: float, queue_limit: int, counters: dict[str, int]) -> None:
    """Read packets, keep them in arrival order with a due time, write them when due."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, packet = queue.popleft()
            try:
                os.write(fd, packet)
            except OSError:
                # The device's peer side can refuse a packet (e.g. no route):
                # a real link would lose it too.
                counters['write_errors'] += 1
        wait_s = queue[0][0] - now if queue else IDLE_WAIT_S
        if not poller.poll(max(0, int(wait_s * 1000 + 0.999))):
            continue
        due = time.monotonic() + delay_s
        for _ in range(READ_BATCH):
            try:
                packet = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            counters['packets'] += 1
            counters['bytes'] += len(packet)
            if len(queue) >= queue_limit:
                counters['dropped'] += 1
                continue
            queue.append((due, packet))
        counters['max_queue'] = max(counters['max_queue'], len(queue))


def main(argv: list[str]) -> int:
    """Parse arguments, attach, run until a signal, print the counters."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dev', required=True, help='TUN device to attach to')
    parser.add_argument('--delay-ms', type=float, required=True, help='one-way hold time')
    parser.add_argument('--queue-limit', type=int, default=20000,
                        help='most packets held at once; more are dropped (default 20000)')
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.queue_limit < 1:
        parser.error('--delay-ms must be >= 0 and --queue-limit >= 1')

    def stop(signum: int, frame: object) -> None:
        raise Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    counters = {'packets': 0, 'bytes': 0, 'dropped': 0, 'write_errors': 0, 'max_queue': 0}
    try:
        fd = attach(args.dev)
    except OSError as e:
        print(f'delayline: cannot attach to {args.dev}: {e}', file=sys.stderr)
        return 1
    print('ready', flush=True)
    try:
        run(fd, args.delay_ms / 1000, args.queue_limit, counters)
    except Stop:
        pass
    print(json.dumps({'event': 'delayline', 'dev': args.dev, **counters}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
