"""Latency statistics and the progress line of `bookingctl bench`: pure functions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict


class LatencySummary(TypedDict):
    """Latencies in milliseconds; None when there was nothing to measure."""

    count: int
    mean: float | None
    min: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between the closest
    ranks, as numpy's default does; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> LatencySummary:
    """Count, mean, min, p50, p95, p99 and max of `seconds`, in milliseconds (3 decimals)."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return LatencySummary(
        count=len(seconds),
        mean=ms(sum(seconds) / len(seconds)) if seconds else None,
        min=ms(min(seconds, default=None)),
        p50=ms(percentile(seconds, 50)),
        p95=ms(percentile(seconds, 95)),
        p99=ms(percentile(seconds, 99)),
        max=ms(max(seconds, default=None)),
    )


def rate(count: int, seconds: float) -> float | None:
    """count / seconds, or None when no time passed."""
    return count / seconds if seconds > 0 else None


def bar(fraction: float, width: int = 24) -> str:
    """A text progress bar such as [#########...............]."""
    filled = min(width, max(0, round(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(
    label: str,
    *,
    done: int,
    total: int,
    elapsed: float,
    outcomes: Mapping[str, int],
    p50_ms: float | None,
) -> str:
    """One line of progress: what runs, how far, how fast, and how the bookings ended."""
    fraction = done / total if total else 1.0
    per_second = rate(done, elapsed)
    tally = " ".join(
        f"{outcome} {count}"
        for outcome, count in sorted(outcomes.items(), key=lambda item: -item[1])[:3]
    )
    parts = [
        f"{label:<24}",
        bar(fraction),
        f"{done:>6}/{total:<6}",
        f"{per_second:7.1f}/s" if per_second is not None else f"{'-':>7}/s",
        f"p50 {p50_ms:7.1f} ms" if p50_ms is not None else "p50       - ms",
        f"{elapsed:6.1f} s",
        tally,
    ]
    return "  ".join(parts).rstrip()


@dataclass(frozen=True)
class Sample:
    """One booking as the bench saw it.

    `outcome` is the booking's final status (CONFIRMED, FAILED, CANCELLED),
    PENDING when it was not final by the bench's deadline, or ERROR:<gRPC
    code> when a call failed outright. `latency_s` runs from sending the
    request to learning the final status.
    """

    latency_s: float
    outcome: str
    # Index of the account in its run's fixtures.
    account: int = 0
    booking_id: str = ""
    amount_cents: int = 0
    # Why it did not confirm: the booking's failure_reason, or the failed call and its error.
    detail: str = ""


@dataclass(frozen=True)
class PgStats:
    """Cumulative counters of one PostgreSQL server at one moment."""

    # Transactions (commits + rollbacks) per database.
    xacts: dict[str, int]
    # Rows ever inserted into the workflow log; None when the table is not there.
    log_rows: int | None
    # time.monotonic() of the reading.
    at: float = 0.0


def idle_rates(before: PgStats, after: PgStats) -> dict[str, float]:
    """Transactions per second per database between two readings of an idle system."""
    seconds = after.at - before.at
    if seconds <= 0:
        return {}
    return {
        name: round((count - before.xacts[name]) / seconds, 3)
        for name, count in after.xacts.items()
        if name in before.xacts
    }
