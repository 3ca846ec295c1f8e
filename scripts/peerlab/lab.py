"""The two-NAT peer lab: network namespaces, NAT routers, delay lines, coturn, the relay.

    <p>-a  eth0 10.99.1.2 --h0 <p>-da r0-- lan0 <p>-ra wan0 203.0.113.2 --+
                          (delay line)      (NAT router)                 br0 in <p>-pub 203.0.113.1
    <p>-b  eth0 10.99.2.2 --h0 <p>-db r0-- lan0 <p>-rb wan0 203.0.113.3 --+   relay :8700
                                                                              coturn :3478 (long-term
                                                                              credentials, STUN too)
                                                                              coturn :3479 (REST API secret)

A side's mode is "cone" (MASQUERADE, keeps the source port, plus a firewall
dropping unsolicited input on the router), "symmetric" (MASQUERADE
--random-fully: a new port per destination) or "udp-blocked" (cone, and the
router drops every UDP datagram from the private side). The delay namespace
forwards without NAT; with a round trip time set, its policy routing sends
every forwarded packet through scripts/delayline.py (rtt/2 each way).
Every router counts the UDP/TCP bytes its private host sends to the public
namespace (STUN, TURN) and to anything else (the other router: direct), so a
case can check the path without trusting what the peers report.
Everything is torn down by `Lab.close()`; namespace names carry a prefix the
caller makes unique (scripts/natlab uses its PID).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PUBLIC_IP = '203.0.113.1'
RELAY_PORT = 8700
TURN_PORT = 3478
TURN_REST_PORT = 3479
TURN_USER = 'lab'
TURN_PASSWORD = 'lab-password'
TURN_REALM = 'switchboard.lab'
TURN_SECRET = 'lab-rest-secret'
SIDES = ('a', 'b')
MODES = ('cone', 'symmetric', 'udp-blocked')
DELAY_TABLE = '100'
STOP_WAIT_S = 3.0
READY_WAIT_S = 10.0


class LabError(Exception):
    """The lab could not be built or a process misbehaved."""


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command, raising LabError with its stderr if it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise LabError(f'{" ".join(cmd)}: exit {done.returncode}: {done.stderr.strip()}')
    return done


@dataclass
class Line:
    """One stdout line of a process and when it was read (time.monotonic())."""

    at: float
    text: str


class Proc:
    """A process started in a namespace; stdout lines are kept with their time."""

    def __init__(self, name: str, ns: str, cmd: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self.started = time.monotonic()
        self.lines: list[Line] = []
        self._cond = threading.Condition()
        self._log_file = open(log, 'wb')
        self.popen = subprocess.Popen(
            ['ip', 'netns', 'exec', ns, *cmd],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = Line(time.monotonic(), raw.decode('utf-8', 'replace').rstrip('\n'))
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, predicate, timeout: float) -> Line | None:
        """The first line (old or new) for which predicate(text) holds, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if predicate(line.text):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.2))

    def wait(self, timeout: float) -> int | None:
        """Exit code within timeout, or None if still running."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(2)
        return code

    def stderr(self) -> str:
        """What the process wrote on stderr so far."""
        self._log_file.flush()
        return self.log.read_text(errors='replace')

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL after a few seconds."""
        if self.popen.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(STOP_WAIT_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._reader.join(2)
        self._log_file.close()


@dataclass
class Side:
    """One private host, its delay namespace and its NAT router."""

    name: str
    index: int
    mode: str = 'cone'
    rtt_ms: float = 0.0
    host_ns: str = ''
    delay_ns: str = ''
    router_ns: str = ''

    @property
    def host_ip(self) -> str:
        return f'10.99.{self.index}.2'

    @property
    def wan_ip(self) -> str:
        return f'203.0.113.{self.index + 1}'


@dataclass
class Lab:
    """The whole lab; build() brings it up, close() tears every piece down."""

    prefix: str
    work: Path
    modes: dict[str, str] = field(default_factory=lambda: {'a': 'cone', 'b': 'cone'})
    rtt_ms: dict[str, float] = field(default_factory=lambda: {'a': 0.0, 'b': 0.0})
    root: Path = Path(__file__).resolve().parents[2]
    procs: list[Proc] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    keep_work: bool = False

    def __post_init__(self) -> None:
        self.pub_ns = f'{self.prefix}-pub'
        self.sides = {
            name: Side(name, i + 1, self.modes.get(name, 'cone'), self.rtt_ms.get(name, 0.0),
                       f'{self.prefix}-{name}', f'{self.prefix}-d{name}', f'{self.prefix}-r{name}')
            for i, name in enumerate(SIDES)
        }
        for side in self.sides.values():
            if side.mode not in MODES:
                raise LabError(f'unknown mode {side.mode!r} (one of {", ".join(MODES)})')

    # -- building ---------------------------------------------------------

    def _add_ns(self, ns: str) -> None:
        run('ip', 'netns', 'add', ns)
        self.namespaces.append(ns)
        self.sh(ns, 'ip link set lo up')
        # IPv4 only: no link-local IPv6 candidates to confuse the pair checks.
        self.sh(ns, 'sysctl -qw net.ipv6.conf.all.disable_ipv6=1')
        self.sh(ns, 'sysctl -qw net.ipv6.conf.default.disable_ipv6=1')

    def sh(self, ns: str, command: str, check: bool = True) -> str:
        """Run one whitespace-separated command inside a namespace."""
        return run('ip', 'netns', 'exec', ns, *command.split(), check=check).stdout

    def build(self) -> None:
        """Namespaces, links, addresses, NAT rules and counters."""
        self.work.mkdir(parents=True, exist_ok=True)
        self._add_ns(self.pub_ns)
        self.sh(self.pub_ns, 'ip link add br0 type bridge')
        self.sh(self.pub_ns, f'ip addr add {PUBLIC_IP}/24 dev br0')
        self.sh(self.pub_ns, 'ip link set br0 up')
        for side in self.sides.values():
            self._build_side(side)

    def _build_side(self, side: Side) -> None:
        h, d, r, n = side.host_ns, side.delay_ns, side.router_ns, side.index
        for ns in (h, d, r):
            self._add_ns(ns)
        run('ip', 'link', 'add', 'eth0', 'netns', h, 'type', 'veth', 'peer', 'name', 'h0', 'netns', d)
        run('ip', 'link', 'add', 'r0', 'netns', d, 'type', 'veth', 'peer', 'name', 'lan0', 'netns', r)
        run('ip', 'link', 'add', 'wan0', 'netns', r, 'type', 'veth', 'peer', 'name', f'p{side.name}',
            'netns', self.pub_ns)
        self.sh(self.pub_ns, f'ip link set p{side.name} master br0')
        self.sh(self.pub_ns, f'ip link set p{side.name} up')
        self.sh(h, f'ip addr add {side.host_ip}/24 dev eth0')
        self.sh(h, 'ip link set eth0 up')
        self.sh(h, f'ip route add default via 10.99.{n}.1')
        self.sh(d, f'ip addr add 10.99.{n}.1/24 dev h0')
        self.sh(d, f'ip addr add 10.99.{10 + n}.2/24 dev r0')
        self.sh(d, 'ip link set h0 up')
        self.sh(d, 'ip link set r0 up')
        self.sh(d, f'ip route add default via 10.99.{10 + n}.1')
        for key in ('net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0',
                    'net.ipv4.conf.default.rp_filter=0'):
            self.sh(d, f'sysctl -qw {key}')
        self.sh(r, f'ip addr add 10.99.{10 + n}.1/24 dev lan0')
        self.sh(r, f'ip addr add {side.wan_ip}/24 dev wan0')
        self.sh(r, 'ip link set lan0 up')
        self.sh(r, 'ip link set wan0 up')
        self.sh(r, f'ip route add 10.99.{n}.0/24 via 10.99.{10 + n}.2')
        self.sh(r, 'sysctl -qw net.ipv4.ip_forward=1')
        self._nat(side)
        if side.rtt_ms > 0:
            self._delay(side)

    def _nat(self, side: Side) -> None:
        """The router's NAT and firewall for the side's mode, and the path counters."""
        r = side.router_ns
        random = ' --random-fully' if side.mode == 'symmetric' else ''
        self.sh(r, f'iptables -t nat -A POSTROUTING -o wan0 -j MASQUERADE{random}')
        self.sh(r, 'iptables -P FORWARD DROP')
        if side.mode == 'udp-blocked':
            self.sh(r, 'iptables -A FORWARD -i lan0 -p udp -j DROP')
        self.sh(r, 'iptables -A FORWARD -i lan0 -o wan0 -j ACCEPT')
        self.sh(r, 'iptables -A FORWARD -i wan0 -o lan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT')
        # Without this drop, conntrack answers unsolicited packets by remapping
        # the port, and even hole punching between cone NATs fails.
        self.sh(r, 'iptables -A INPUT -i wan0 -m conntrack --ctstate NEW,INVALID -j DROP')
        # Counters (rules without a target), read by path_bytes().
        for proto in ('udp', 'tcp'):
            self.sh(r, f'iptables -t mangle -A POSTROUTING -o wan0 -p {proto} -d {PUBLIC_IP}')
            self.sh(r, f'iptables -t mangle -A POSTROUTING -o wan0 -p {proto} ! -d {PUBLIC_IP}')

    def _delay(self, side: Side) -> None:
        """A TUN device and a delay line holding each forwarded packet rtt/2."""
        d = side.delay_ns
        self.sh(d, 'ip tuntap add dev dl0 mode tun')
        line = self.start(f'delay-{side.name}', d, [
            sys.executable, str(self.root / 'scripts' / 'delayline.py'),
            '--dev', 'dl0', '--delay-ms', str(side.rtt_ms / 2),
        ])
        if line.wait_line(lambda t: t == 'ready', READY_WAIT_S) is None:
            raise LabError(f'the delay line of side {side.name} did not start: {line.stderr()}')
        # A deep device queue: a burst waits for the reader instead of being dropped.
        self.sh(d, 'ip link set dl0 txqueuelen 10000')
        self.sh(d, 'ip link set dl0 up')
        self.sh(d, f'ip route add default dev dl0 table {DELAY_TABLE}')
        self.sh(d, f'ip rule add iif h0 lookup {DELAY_TABLE} pref 100')
        self.sh(d, f'ip rule add iif r0 lookup {DELAY_TABLE} pref 101')

    # -- services -----------------------------------------------------------

    def start(self, name: str, ns: str, cmd: list[str]) -> Proc:
        """Start a process in a namespace; close() stops it."""
        proc = Proc(name, ns, cmd, self.work / f'{name}.{len(self.procs)}.log')
        self.procs.append(proc)
        return proc

    def start_relay(self, binary: str) -> None:
        """The Switchboard relay on the public address (admin listener off)."""
        config = self.work / 'relay.toml'
        config.write_text(
            f'[server]\nhost = "{PUBLIC_IP}"\nport = {RELAY_PORT}\n[admin]\nenabled = false\n',
        )
        relay = self.start('relay', self.pub_ns, [binary, '--config', str(config), '--log-level', 'info'])
        self._wait_port(relay, 'tcp', RELAY_PORT)

    def start_turn(self) -> None:
        """coturn twice: long-term credentials on 3478, REST API secret on 3479."""
        common = [
            'turnserver', '-n', '-v', '--no-cli', '--no-tls', '--no-dtls', '--simple-log',
            '--listening-ip', PUBLIC_IP, '--relay-ip', PUBLIC_IP, '--realm', TURN_REALM,
            # The private ranges are not routable from the public namespace.
            '--denied-peer-ip', '10.0.0.0-10.255.255.255', '--no-multicast-peers',
        ]
        variants = [
            ('turn', TURN_PORT, ['--lt-cred-mech', '--user', f'{TURN_USER}:{TURN_PASSWORD}'],
             49152, 55999),
            ('turn-rest', TURN_REST_PORT, ['--use-auth-secret', '--static-auth-secret', TURN_SECRET],
             56000, 62999),
        ]
        for name, port, auth, low, high in variants:
            proc = self.start(name, self.pub_ns, [
                *common, *auth, '--listening-port', str(port),
                '--min-port', str(low), '--max-port', str(high),
                '--log-file', str(self.work / f'{name}-coturn.log'),
                '--pidfile', str(self.work / f'{name}.pid'),
                '--db', str(self.work / f'{name}.sqlite'),
            ])
            self._wait_port(proc, 'udp', port)

    def _wait_port(self, proc: Proc, proto: str, port: int) -> None:
        flag = '-lun' if proto == 'udp' else '-ltn'
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise LabError(f'{proc.name} exited ({proc.popen.returncode}): {proc.stderr()}')
            if f'{PUBLIC_IP}:{port} ' in self.sh(self.pub_ns, f'ss -H {flag}'):
                return
            time.sleep(0.05)
        raise LabError(f'{proc.name} does not listen on {proto} {port}: {proc.stderr()}')

    # -- observing and disturbing -------------------------------------------

    def zero_counters(self) -> None:
        for side in self.sides.values():
            self.sh(side.router_ns, 'iptables -t mangle -Z POSTROUTING')

    def path_bytes(self, side: str) -> dict[str, int]:
        """Bytes the side's router sent since zero_counters(): to the public host, direct."""
        out = self.sh(self.sides[side].router_ns, 'iptables -t mangle -L POSTROUTING -v -x -n')
        totals = {'public': 0, 'direct': 0}
        for row in out.splitlines():
            cols = row.split()
            if len(cols) < 8 or not cols[0].isdigit():
                continue
            key = 'direct' if cols[-1].startswith('!') else 'public'
            totals[key] += int(cols[1])
        return totals

    def flush_conntrack(self, side: str) -> str:
        """Make the side's router forget every mapping (conntrack -F)."""
        return run('ip', 'netns', 'exec', self.sides[side].router_ns, 'conntrack', '-F').stderr.strip()

    # -- teardown -----------------------------------------------------------

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(keep_work=self.keep_work)

    def close(self, keep_work: bool = False) -> None:
        """Stop every process (newest first), delete every namespace and the work dir."""
        for proc in reversed(self.procs):
            proc.stop()
        for ns in reversed(self.namespaces):
            run('ip', 'netns', 'del', ns, check=False)
        self.namespaces.clear()
        if not keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
