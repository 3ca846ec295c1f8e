"""Draws the CSVs of `scripts/bench curves` as PNG plots (matplotlib).

Usage: plot_curves.py DIR. Reads DIR/<family>.csv, writes DIR/<family>.png for
every CSV present. Points repeated over several runs are drawn faint, one
dot per run, with the line through their medians.
"""

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 90


def rows(path):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f)]


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def series(data, x_key, y_key, where=None):
    """(xs, medians, all_points) of y against x, over the rows matching `where`."""
    groups = defaultdict(list)
    for r in data:
        if where and any(r.get(k) != v for k, v in where.items()):
            continue
        x, y = num(r[x_key]), num(r[y_key])
        if x is not None and y is not None:
            groups[x].append(y)
    xs = sorted(groups)
    meds = [statistics.median(groups[x]) for x in xs]
    points = [(x, y) for x in xs for y in groups[x]]
    return xs, meds, points


def line(ax, data, x_key, y_key, label, where=None, style="o-", scale=1.0, color=None):
    xs, meds, points = series(data, x_key, y_key, where)
    if not xs:
        return
    drawn = ax.plot(xs, [m * scale for m in meds], style, label=label, color=color, ms=4)
    if len(points) > len(xs):
        ax.plot(
            [p[0] for p in points],
            [p[1] * scale for p in points],
            ".",
            color=drawn[0].get_color(),
            alpha=0.35,
            ms=5,
        )


def log2_axis(ax, ticks):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()


def finish(fig, path, title):
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {path}")


def relay_clients(data, out):
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for r in data:
        r["k"] = num(r["clients"]) / 1000
    line(axes[0], data, "k", "msgs_per_sec", "forwarded msg/s", scale=1e-3)
    axes[0].set_ylabel("thousand msg/s (4 pairs flood)")
    line(axes[1], data, "k", "p50_us", "p50")
    line(axes[1], data, "k", "p99_us", "p99")
    axes[1].set_ylabel("one-way latency (µs), 1 in flight")
    axes[1].set_yscale("log")
    line(axes[2], data, "k", "rss_after_kib", "relay VmRSS", scale=1 / 1024)
    axes[2].set_ylabel("MiB")
    twin = axes[2].twinx()
    line(twin, data, "k", "kib_per_client", "KiB per client", style="s--", color="tab:red")
    twin.set_ylabel("KiB per idle client", color="tab:red")
    twin.set_ylim(bottom=0)
    axes[0].set_ylim(bottom=0)
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("idle registered clients (thousands)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    finish(fig, out, "Relay: cost against registered idle clients")


def relay_pairs(data, out):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    line(axes[0], data, "pairs", "msgs_per_sec", "forwarded msg/s", scale=1e-3)
    axes[0].set_ylabel("thousand msg/s")
    twin = axes[0].twinx()
    line(twin, data, "pairs", "relay_cores", "relay running", style="s--", color="tab:red")
    line(twin, data, "pairs", "relay_wait_cores", "relay waiting for a CPU", style="^:",
         color="tab:purple")
    twin.set_ylabel("relay cores: running (red), runnable but waiting (purple)", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    twin.set_ylim(0, 2.05)
    line(axes[1], data, "pairs", "probe_p50_us", "probe p50")
    line(axes[1], data, "pairs", "probe_p99_us", "probe p99")
    axes[1].set_ylabel("probe one-way latency (µs)")
    axes[1].set_yscale("log")
    ticks = sorted({num(r["pairs"]) for r in data if num(r["pairs"])})
    for ax in axes:
        log2_axis(ax, ticks)
        ax.set_xlabel("active flood pairs (window 64)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylim(bottom=0)
    finish(fig, out, "Relay: cost against active pairs (latency probe beside the flood)")


def tunnel_streams(data, out):
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for side in ("direct", "tunnel"):
        line(ax, data, "streams", "gbit_per_sec", side, where={"side": side})
    ticks = sorted({num(r["streams"]) for r in data if num(r["streams"])})
    log2_axis(ax, ticks)
    ax.set_xlabel("concurrent streams (iperf3 -P)")
    ax.set_ylabel("Gbit/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, out, "Tunnel: throughput against concurrent streams")


def tunnel_setup(data, out):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for side, color in (("direct", "tab:blue"), ("tunnel", "tab:orange")):
        w = {"side": side}
        line(axes[0], data, "concurrency", "p50_ms", f"{side} p50", where=w, color=color)
        line(axes[0], data, "concurrency", "p99_ms", f"{side} p99", where=w, style="s--", color=color)
        line(axes[1], data, "concurrency", "conns_per_sec", side, where=w, color=color, scale=1e-3)
    axes[0].set_ylabel("set-up time (ms), connect + 1-byte echo")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("thousand connections/s")
    axes[1].set_ylim(bottom=0)
    ticks = sorted({num(r["concurrency"]) for r in data if num(r["concurrency"])})
    for ax in axes:
        log2_axis(ax, ticks)
        ax.set_xlabel("connections in flight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    finish(fig, out, "Tunnel: connection set-up against concurrency")


def peer(data, out, x_key, xlabel, title, log_x):
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    xs = [num(r[x_key]) for r in data]
    med = [num(r["mbps_median"]) for r in data]
    lo = [m - num(r["mbps_min"]) for m, r in zip(med, data)]
    hi = [num(r["mbps_max"]) - m for m, r in zip(med, data)]
    ax.errorbar(xs, med, yerr=[lo, hi], fmt="o-", capsize=3, ms=4, label="MB/s (median, min–max)")
    if log_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([r["message"] for r in data], rotation=30)
        ax.minorticks_off()
    else:
        log2_axis(ax, xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MB/s (10^6 B)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    finish(fig, out, title)


def main():
    out = Path(sys.argv[1])
    drawers = {
        "relay-clients": relay_clients,
        "relay-pairs": relay_pairs,
        "tunnel-streams": tunnel_streams,
        "tunnel-setup": tunnel_setup,
        "peer-sizes": lambda d, o: peer(
            d, o, "message_bytes", "message size (1 channel)",
            "Peers: throughput against message size", True),
        "peer-channels": lambda d, o: peer(
            d, o, "channels", "data channels (1 MiB messages)",
            "Peers: throughput against channel count", False),
    }
    for name, draw in drawers.items():
        path = out / f"{name}.csv"
        if path.exists():
            data = rows(path)
            if data:
                draw(data, out / f"{name}.png")


if __name__ == "__main__":
    main()
