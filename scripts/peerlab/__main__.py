"""Entry point of the peer lab; scripts/natlab runs it (`python3 scripts/peerlab ...`).

  peers  [--case NAME]... [--rtt MS]...   run the cases (all by default); PASSED only if all pass
  bench  [options]                        set-up time and throughput against RTT (bench.py)
  up     [--mode-a M] [--mode-b M] [--rtt-a MS] [--rtt-b MS]
                                          build one lab and keep it until Ctrl-C (to try things by hand)

Common: --bin PATH (switchboard), --python PATH (venv with ProxyStore, for
tests/interop/peer.py), --prefix P (namespace names; scripts/natlab passes
one with its PID), --keep (keep each lab's work dir and logs).
Exit codes: 0 passed, 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peerlab import bench, cases  # noqa: E402
from peerlab.lab import (  # noqa: E402
    MODES, PUBLIC_IP, TURN_PASSWORD, TURN_PORT, TURN_REST_PORT, TURN_SECRET, TURN_USER, Lab, LabError,
)
from peerlab.peers import RELAY_URL, Tools  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UP_LIMIT_S = 3600


def say(text: str) -> None:
    print(f'natlab: {text}', file=sys.stderr, flush=True)


def lab_factory(args: argparse.Namespace, tools: Tools):
    """new_lab(modes, rtt_ms): a built lab with the relay and coturn running."""
    counter = itertools.count()

    def new_lab(modes: dict[str, str], rtt_ms: dict[str, float] | None = None) -> Lab:
        n = next(counter)
        work = Path(tempfile.mkdtemp(prefix=f'natlab-{args.prefix}-{n}-'))
        lab = Lab(prefix=f'{args.prefix}{n}', work=work, modes=modes,
                  rtt_ms=rtt_ms or {'a': 0, 'b': 0}, keep_work=args.keep)
        try:
            lab.build()
            lab.start_relay(tools.binary)
            lab.start_turn()
        except BaseException:
            lab.close(keep_work=args.keep)
            raise
        if args.keep:
            say(f'lab {lab.prefix}: logs in {work}')
        return lab

    return new_lab


def run_peers(args: argparse.Namespace, tools: Tools) -> int:
    known = cases.suite(args.rtt or [0, 40])
    chosen = [(n, c) for n, c in known if not args.case or n in args.case]
    unknown = set(args.case or []) - {n for n, _ in known}
    if unknown:
        say(f'unknown case(s) {", ".join(sorted(unknown))}; known: {", ".join(n for n, _ in known)}')
        return 2
    ctx = cases.Context(tools=tools, new_lab=lab_factory(args, tools), log=say)
    failed: list[str] = []
    for name, case in chosen:
        started = time.monotonic()
        say(f'--- {name}: {(case.__doc__ or "").split(chr(10))[0]}')
        try:
            failures = case(ctx)
        except LabError as e:
            failures = [f'{name}: the lab failed: {e}']
        took = time.monotonic() - started
        if failures:
            failed.append(name)
            for failure in failures:
                say(f'FAIL {failure}')
            say(f'{name}: FAILED ({took:.1f} s)')
        else:
            say(f'{name}: ok ({took:.1f} s)')
    if failed:
        say(f'FAILED: {len(failed)} of {len(chosen)} cases: {", ".join(failed)}')
        return 1
    say(f'PASSED ({len(chosen)} cases)')
    return 0


def run_up(args: argparse.Namespace, tools: Tools) -> int:
    modes = {'a': args.mode_a, 'b': args.mode_b}
    with lab_factory(args, tools)(modes, {'a': args.rtt_a, 'b': args.rtt_b}) as lab:
        a, b = lab.sides['a'], lab.sides['b']
        say(f'lab up: A {a.host_ip} ({a.mode}, rtt {a.rtt_ms:g} ms) in {a.host_ns}, '
            f'B {b.host_ip} ({b.mode}, rtt {b.rtt_ms:g} ms) in {b.host_ns}')
        say(f'relay {RELAY_URL}; STUN/TURN {PUBLIC_IP}:{TURN_PORT} (user {TURN_USER}, password '
            f'{TURN_PASSWORD}), TURN REST API {PUBLIC_IP}:{TURN_REST_PORT} (--turn-secret '
            f'{TURN_SECRET}); work dir {lab.work}')
        say(f'try: ip netns exec {a.host_ns} {tools.binary} peer --relay {RELAY_URL} ...')
        say('Ctrl-C tears it down')
        time.sleep(UP_LIMIT_S)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='natlab', description='the two-NAT peer lab')
    parser.add_argument('command', choices=['peers', 'bench', 'up'])
    parser.add_argument('--bin', help='the switchboard binary (relay and peers; default '
                        'target/debug/switchboard, for bench target/release/switchboard)')
    parser.add_argument('--python', default=os.environ.get('SWITCHBOARD_PYTHON')
                        or str(ROOT / '.venv' / 'bin' / 'python'),
                        help='Python with ProxyStore 1.1.0 for tests/interop/peer.py '
                             '(default $SWITCHBOARD_PYTHON, else .venv)')
    parser.add_argument('--prefix', default=f'sbp{os.getpid()}',
                        help='start of every namespace name (unique per run)')
    parser.add_argument('--keep', action='store_true',
                        help='keep each lab\'s work dir (logs, coturn logs, configs)')
    parser.add_argument('--timeout', type=int, default=30, help='peer --timeout (s)')
    parser.add_argument('--case', action='append', help='peers: run only this case (repeatable)')
    parser.add_argument('--rtt', action='append', type=float,
                        help='peers: RTTs of the aiortc cases (default 0 and 40); '
                             'bench: RTTs measured (default 0, 40, 150)')
    for side in ('a', 'b'):
        parser.add_argument(f'--mode-{side}', choices=MODES, default='cone',
                            help=f'up: NAT of side {side.upper()}')
        parser.add_argument(f'--rtt-{side}', type=float, default=0.0,
                            help=f'up: round trip time (ms) side {side.upper()}\'s delay line adds')
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.bin is None:
        profile = 'release' if args.command == 'bench' else 'debug'
        args.bin = str(ROOT / 'target' / profile / 'switchboard')
    # `up` runs no aiortc peer: it needs no Python with ProxyStore.
    needed = [(args.bin, '--bin')] + ([] if args.command == 'up' else [(args.python, '--python')])
    for path, what in needed:
        if not os.access(path, os.X_OK):
            say(f'{what} {path} is not an executable')
            return 2
    tools = Tools(binary=args.bin, python=args.python,
                  peer_py=str(ROOT / 'tests' / 'interop' / 'peer.py'), timeout_s=args.timeout)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        if args.command == 'peers':
            return run_peers(args, tools)
        if args.command == 'bench':
            return bench.run(args, tools, lab_factory(args, tools), say)
        return run_up(args, tools)
    except KeyboardInterrupt:
        say('interrupted; lab torn down')
        return 130


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
