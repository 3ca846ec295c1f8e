"""`scripts/natlab bench`: set-up time and throughput against round-trip time (not a test).

For each RTT (default 0, 40, 150 ms; the A-B round trip, half added by each
side's delay line), medians of --runs runs (default 3):
  1. set-up: a 1 KiB message across two cone NATs with STUN, for
     Switchboard -> Switchboard, Switchboard -> aiortc, aiortc -> Switchboard and
     aiortc -> aiortc (the sender offers). "setup" is the sender's "connected"
     event (start of send -> channels open, as the peer reports it); "first" is
     the sender's process start -> the listener printing the message (includes
     starting the process and registering with the relay).
  2. throughput: --bytes (default 64 MiB) Switchboard -> Switchboard, A->B and
     B->A, direct (cone NATs, STUN) and through TURN (symmetric NATs); and
     --aio-bytes (default 8 MiB; aiortc moves a few MB/s) for the pairs with
     aiortc, direct. Time: the sender's "connected" line -> the listener's
     message line; MB/s are 10^6 bytes per second.
  3. the delay line's own capacity: one TCP stream from A's host to the public
     namespace through A's delay line, at each RTT and without a delay line.
The summary is printed and written to target/bench/natlab-summary.txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from .lab import PUBLIC_IP, Lab
from .lab import run as run_cmd
from .peers import Ice, Outcome, Tools, transfer

MiB = 1 << 20
PAIRS = [('sb', 'sb'), ('sb', 'aio'), ('aio', 'sb'), ('aio', 'aio')]
NAMES = {'sb': 'Switchboard', 'aio': 'aiortc'}
TCP_PORT = 9100
TCP_BYTES = 256 * MiB

SINK = f'''
import socket, time
srv = socket.create_server(("{PUBLIC_IP}", {TCP_PORT}))
print("ready", flush=True)
c, _ = srv.accept()
total, start = 0, None
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    if start is None:
        start = time.monotonic()
    total += len(b)
print(total, time.monotonic() - start, flush=True)
'''

SOURCE = f'''
import socket, sys
s = socket.create_connection(("{PUBLIC_IP}", {TCP_PORT}), timeout=60)
block = bytes(1 << 20)
for _ in range(int(sys.argv[1]) >> 20):
    s.sendall(block)
s.shutdown(socket.SHUT_WR)
s.recv(1)
'''


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--runs', type=int, default=3, help='bench: runs per figure (median)')
    parser.add_argument('--bytes', type=int, default=64 * MiB,
                        help='bench: Switchboard <-> Switchboard throughput bytes (64 MiB)')
    parser.add_argument('--aio-bytes', type=int, default=8 * MiB,
                        help='bench: bytes for the pairs with aiortc (8 MiB)')
    parser.add_argument('--allow-unhashed', action='store_true',
                        help='bench: accept listener lines without sha256 (older binaries; '
                             'the length is still checked)')
    parser.add_argument('--only', action='append', choices=['setup', 'throughput', 'delayline'],
                        help='bench: run only these parts (repeatable)')


def runs_until_failure(count: int, once: Callable[[], Outcome]) -> list[Outcome]:
    """Up to count runs; a failed run ends the series (its timeouts cost minutes)."""
    outs: list[Outcome] = []
    for _ in range(count):
        outs.append(once())
        if outs[-1].failures:
            break
    return outs


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, unit: str = '') -> str:
    return '-' if value is None else f'{value:.0f}{unit}' if value >= 10 else f'{value:.1f}{unit}'


def setup_rows(args, tools: Tools, new_lab, say) -> list[str]:
    rows = ['set-up time across two cone NATs with STUN, ms (median of runs; '
            '"setup" = sender\'s connected event, "first" = sender start -> message printed)',
            f'{"RTT":>5}  {"pair":<28} {"setup":>7} {"first":>7}  candidates (1st run), failures']
    for rtt in args.rtt or [0, 40, 150]:
        with new_lab(modes={'a': 'cone', 'b': 'cone'}, rtt_ms={'a': rtt / 2, 'b': rtt / 2}) as lab:
            for s_kind, r_kind in PAIRS:
                outs = runs_until_failure(args.runs, lambda: transfer(
                    lab, tools, (s_kind, 'a'), (r_kind, 'b'), 1024, Ice(), None))
                row = (f'{rtt:>5g}  {NAMES[s_kind] + " -> " + NAMES[r_kind]:<28} '
                       f'{fmt(median([o.setup_ms for o in outs if o.setup_ms is not None])):>7} '
                       f'{fmt(median([o.first_ms for o in outs if o.first_ms is not None and not o.failures])):>7}  '
                       f'{outs[0].pair_text()} {failures_text(outs)}')
                say(row)
                rows.append(row)
    return rows


def failures_text(outs: list[Outcome]) -> str:
    bad = [o for o in outs if o.failures]
    if not bad:
        return ''
    return f'{len(bad)}/{len(outs)} failed: {bad[0].failures[0][:160]}'


def rate(outs: list[Outcome], size: int, baseline_ms: float | None) -> tuple[float | None, str]:
    """Median MB/s of the runs that delivered, and how it was timed.

    With the sender's "connected" event: its line -> the listener's message.
    Without (older binaries): sender start -> message, minus the median of the
    same for a 1 KiB message (baseline_ms: process start, registration, set-up).
    """
    timed = [o.transfer_ms for o in outs if o.transfer_ms and not o.failures]
    if timed:
        return size / (statistics.median(timed) / 1000) / 1e6, ''
    whole = [o.first_ms for o in outs if o.first_ms and not o.failures]
    if whole and baseline_ms is not None and statistics.median(whole) > baseline_ms:
        return (size / ((statistics.median(whole) - baseline_ms) / 1000) / 1e6,
                f' (no connected event: minus a 1 KiB send\'s {baseline_ms:.0f} ms)')
    return None, ''


def baseline(lab: Lab, tools: Tools, sender, receiver, ice: Ice, runs: int) -> float | None:
    """Median sender start -> message printed for 1 KiB (set-up without bulk)."""
    outs = runs_until_failure(runs, lambda: transfer(lab, tools, sender, receiver, 1024, ice, None))
    return median([o.first_ms for o in outs if o.first_ms is not None and not o.failures])


def throughput_rows(args, tools: Tools, new_lab, say) -> list[str]:
    rows = ['throughput, MB/s (10^6 B/s; median of runs; sender connected -> message at listener)',
            f'{"RTT":>5}  {"path":<7} {"pair":<28} {"bytes":>9} {"MB/s":>7}  candidates (1st run), notes']
    plans = [('direct', 'cone', Ice()), ('TURN', 'symmetric', Ice(turn='udp'))]
    for rtt in args.rtt or [0, 40, 150]:
        for path, mode, ice in plans:
            with new_lab(modes={'a': mode, 'b': mode}, rtt_ms={'a': rtt / 2, 'b': rtt / 2}) as lab:
                runs = [(('sb', 'a'), ('sb', 'b'), args.bytes), (('sb', 'b'), ('sb', 'a'), args.bytes)]
                if path == 'direct':
                    runs += [((s, 'a'), (r, 'b'), args.aio_bytes) for s, r in PAIRS if 'aio' in (s, r)]
                for sender, receiver, size in runs:
                    outs = runs_until_failure(args.runs, lambda: transfer(
                        lab, tools, sender, receiver, size, ice, None))
                    base = None
                    if not any(o.transfer_ms for o in outs):
                        base = baseline(lab, tools, sender, receiver, ice, args.runs)
                    mbps, how = rate(outs, size, base)
                    label = f'{NAMES[sender[0]]} {sender[1].upper()} -> {NAMES[receiver[0]]} {receiver[1].upper()}'
                    row = (f'{rtt:>5g}  {path:<7} {label:<28} {size >> 20:>5} MiB {fmt(mbps):>7}  '
                           f'{outs[0].pair_text()}{how} {failures_text(outs)}')
                    say(row)
                    rows.append(row)
    return rows


def tcp_once(lab: Lab, tools: Tools) -> float | None:
    # Socket buffers large enough for 150 ms at the line's rate, so the figure
    # is the delay line's and not TCP's window.
    for ns in (lab.pub_ns, lab.sides['a'].host_ns):
        for key in ('net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem'):
            run_cmd('ip', 'netns', 'exec', ns, 'sysctl', '-qw', f'{key}=4096 131072 33554432')
    sink = lab.start('tcp-sink', lab.pub_ns, [tools_python(), '-c', SINK])
    if sink.wait_line(lambda t: t == 'ready', 10) is None:
        return None
    source = lab.start('tcp-source', lab.sides['a'].host_ns,
                       [tools_python(), '-c', SOURCE, str(TCP_BYTES)])
    source.wait(120)
    line = sink.wait_line(lambda t: t[:1].isdigit(), 10)
    source.stop()
    sink.stop()
    if line is None:
        return None
    total, seconds = line.text.split()
    return int(total) / float(seconds) / 1e6


def tools_python() -> str:
    return sys.executable


def delayline_rows(args, tools: Tools, new_lab, say) -> list[str]:
    rows = [f'delay line capacity: one TCP stream of {TCP_BYTES >> 20} MiB, A -> public namespace, '
            'MB/s (median)', f'{"RTT":>9}  {"MB/s":>7}']
    for rtt in [None, *(r for r in (args.rtt or [0, 40, 150]))]:
        # rtt None: no delay line at all; 0 is run as 0.02 ms so the TUN path is used.
        line_rtt = 0 if rtt is None else max(rtt, 0.02)
        with new_lab(modes={'a': 'cone', 'b': 'cone'}, rtt_ms={'a': line_rtt, 'b': 0}) as lab:
            speeds = [s for s in (tcp_once(lab, tools) for _ in range(args.runs)) if s]
        label = 'no line' if rtt is None else f'{rtt:g} ms'
        row = f'{label:>9}  {fmt(median(speeds)):>7}'
        say(row)
        rows.append(row)
    return rows


def run(args: argparse.Namespace, tools: Tools, new_lab: Callable[..., Lab], say) -> int:
    tools.timeout_s = max(tools.timeout_s, 60)
    tools.allow_unhashed = args.allow_unhashed
    parts = args.only or ['setup', 'throughput', 'delayline']
    started = time.monotonic()
    rows: list[str] = []
    for part, fn in (('setup', setup_rows), ('throughput', throughput_rows),
                     ('delayline', delayline_rows)):
        if part in parts:
            rows += fn(args, tools, new_lab, say) + ['']
    rows.append(f'({time.monotonic() - started:.0f} s; binary {tools.binary})')
    out = Path(__file__).resolve().parents[2] / 'target' / 'bench'
    out.mkdir(parents=True, exist_ok=True)
    (out / 'natlab-summary.txt').write_text('\n'.join(rows) + '\n')
    print('\n'.join(rows))
    return 0
