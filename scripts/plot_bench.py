"""Plot a `bookingctl bench` report: throughput and p99 latency against concurrency.

    bookingctl bench --concurrency 1,8,32,64 --json-out bench.json
    python scripts/plot_bench.py bench.json               writes bench.png
    python scripts/plot_bench.py bench.json -o out.png

One line per mode (saga, direct) in each of two panels; concurrency is on a
log scale when the sweep spans more than a factor of ten. Needs matplotlib
(the dev extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

# After use(): pyplot picks its backend when imported.
import matplotlib.pyplot as plt

STYLE = {"saga": ("tab:blue", "o"), "direct": ("tab:orange", "s")}


def series(report: dict[str, Any]) -> dict[str, list[tuple[int, float | None, float | None]]]:
    """Per mode: (concurrency, bookings/s, p99 ms) of each throughput run, by concurrency."""
    throughput = report.get("throughput") or {}
    found: dict[str, list[tuple[int, float | None, float | None]]] = {}
    for run in throughput.get("runs", []):
        found.setdefault(run["mode"], []).append(
            (run["concurrency"], run["bookings_per_s"], run["latency_ms"]["p99"])
        )
    return {mode: sorted(points) for mode, points in found.items()}


def plot(report: dict[str, Any], out: Path) -> None:
    lines = series(report)
    if not lines:
        raise ValueError("the report has no throughput runs to plot")
    figure, (rate_axis, p99_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    concurrencies = sorted({c for points in lines.values() for c, _, _ in points})
    for mode, points in lines.items():
        color, marker = STYLE.get(mode, ("tab:gray", "^"))
        xs = [c for c, _, _ in points]
        rate_axis.plot(xs, [r for _, r, _ in points], marker=marker, color=color, label=mode)
        p99_axis.plot(xs, [p for _, _, p in points], marker=marker, color=color, label=mode)
    for axis, title, unit in (
        (rate_axis, "throughput", "bookings/s"),
        (p99_axis, "p99 latency to the final status", "ms"),
    ):
        if concurrencies[-1] > 10 * concurrencies[0]:
            axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_xlabel("concurrency (bookings in flight)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    system = report.get("system", {})
    config = report.get("config", {})
    figure.suptitle(
        f"bookingctl bench: {config.get('bookings', '?')} bookings per run,"
        f" {system.get('kind', '?')} system, {system.get('cpu_count', '?')} CPUs,"
        f" tracing {'on' if system.get('tracing') else 'off'} ({report.get('started_at', '')})"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="JSON written by `bookingctl bench --json-out`")
    parser.add_argument(
        "-o", "--out", type=Path, default=None, help="PNG to write [default: REPORT with .png]"
    )
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as err:
        print(f"plot_bench: cannot read {args.report}: {err}", file=sys.stderr)
        return 2
    out = args.out or args.report.with_suffix(".png")
    try:
        plot(report, out)
    except ValueError as err:
        print(f"plot_bench: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
