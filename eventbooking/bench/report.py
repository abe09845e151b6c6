"""What `bookingctl bench` reports: the JSON document and the summary for people.

Pure functions over what the runs measured, so they are tested without a
system. Per-booking figures divide by the bookings a run made; resource
figures are differences of two readings taken around the run: from its first
request to the moment no saga was running any more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventbooking.bench import procfs
from eventbooking.bench.stats import LatencySummary, PgStats, Sample, latency_summary, rate
from eventbooking.otlp_sink import SinkStats
from eventbooking.sagactl import columns

REPORT_VERSION = 1
SERVICES = ("account_svc", "event_svc", "booking_svc", "notification_svc")
# What the system costs, as opposed to the bench and the trace sink that measure it.
SYSTEM_PROCESSES = (*SERVICES, "postgres")
FINAL_OUTCOMES = frozenset({"CONFIRMED", "FAILED", "CANCELLED"})
# The maintenance database, where the bench's own reads of the statistics run.
MAINTENANCE_DATABASE = "postgres"
TOP_REASONS = 5


@dataclass(frozen=True)
class RunMeasure:
    """One timed run of N bookings in one mode at one concurrency."""

    mode: str
    concurrency: int
    samples: Sequence[Sample]
    # First request to last final status.
    load_s: float
    # First request to no saga running: the span the resource readings cover.
    window_s: float
    # Whether every saga had finished when the window closed.
    quiet: bool
    cpu_before: Mapping[str, float | None] | None = None
    cpu_after: Mapping[str, float | None] | None = None
    pg_before: PgStats | None = None
    pg_after: PgStats | None = None
    # (log rows, bookings) read through GetBookingHistory when the database cannot be read.
    history: tuple[int, int] | None = None
    peak_rss: Mapping[str, Any] | None = None
    accounts: int = 0
    events: int = 0
    # Transactions per second each database makes on an idle system (background work).
    idle_xacts_per_s: Mapping[str, float] | None = None


@dataclass(frozen=True)
class ContentionMeasure:
    """Many bookings at once for one event with fewer seats."""

    seats: int
    concurrency: int
    samples: Sequence[Sample]
    load_s: float
    quiet: bool
    capacity: int
    sold: int
    held: int
    available: int
    # Charges minus refunds of each account, in the order of the run's accounts.
    net_charged: Sequence[int]
    # First request to no saga running, and the CPU readings at either end.
    window_s: float = 0.0
    cpu_before: Mapping[str, float | None] | None = None
    cpu_after: Mapping[str, float | None] | None = None


@dataclass(frozen=True)
class RecoveryMeasure:
    """Bookings in flight, booking_svc killed and restarted, time until every one is final."""

    bookings: int
    # CreateBooking outcomes: PENDING when accepted, ERROR:<code> otherwise.
    submitted: Mapping[str, int]
    running_at_kill: int | None
    kill_to_healthy_s: float
    # None when not every booking was final within the bench's deadline.
    kill_to_bookings_final_s: float | None
    # Every booking final and no saga running any more (notifications sent); None if not.
    kill_to_final_s: float | None
    final: Mapping[str, int]
    quiet: bool
    lease_s: float


@dataclass(frozen=True)
class Context:
    """Everything about the bench itself that the report repeats."""

    config: Mapping[str, Any]
    system: Mapping[str, Any]
    started_at: str
    duration_s: float
    tracing: bool
    spans: SinkStats | None = None
    peak_rss: Mapping[str, Any] | None = None
    stuck_sagas: int | None = None
    notes: Sequence[str] = field(default_factory=tuple)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def outcome_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """How many bookings ended how, most common first."""
    return dict(Counter(s.outcome for s in samples).most_common())


def failure_reasons(samples: Sequence[Sample]) -> dict[str, int]:
    """The most common reasons bookings did not confirm."""
    reasons = Counter(
        f"{s.outcome}: {s.detail[:160]}" if s.detail else s.outcome
        for s in samples
        if s.outcome != "CONFIRMED"
    )
    return dict(reasons.most_common(TOP_REASONS))


def final_latencies(samples: Sequence[Sample]) -> list[float]:
    return [s.latency_s for s in samples if s.outcome in FINAL_OUTCOMES]


def cpu_report(
    before: Mapping[str, float | None] | None,
    after: Mapping[str, float | None] | None,
    *,
    bookings: int,
    window_s: float,
) -> dict[str, Any] | None:
    """CPU seconds per booking and cores used, per process, plus the system's total."""
    if before is None or after is None or bookings <= 0:
        return None
    used = procfs.delta(before, after)
    system = [used[name] for name in SYSTEM_PROCESSES if name in used]
    total = None if not system or any(v is None for v in system) else sum(v or 0 for v in system)
    used_all = {**used, "system_total": total}
    return {
        "per_booking_s": {
            name: _round(None if v is None else v / bookings) for name, v in used_all.items()
        },
        "total_s": {name: _round(v, 3) for name, v in used_all.items()},
        "cores_used": {
            name: _round(None if v is None or window_s <= 0 else v / window_s, 3)
            for name, v in used_all.items()
        },
    }


def xacts_per_booking(
    before: PgStats | None,
    after: PgStats | None,
    *,
    bookings: int,
    idle_per_s: Mapping[str, float] | None = None,
) -> dict[str, float] | None:
    """Database transactions per booking, per database and in total, less what the idle
    system does in as much time when `idle_per_s` is known (never below zero). The
    maintenance database, where the bench reads the statistics, is left out of the total."""
    if before is None or after is None or bookings <= 0:
        return None
    seconds = max(0.0, after.at - before.at)
    per: dict[str, float] = {}
    for name, count in sorted(after.xacts.items()):
        if name in before.xacts:
            made: float = count - before.xacts[name]
            if idle_per_s is not None:
                made = max(0.0, made - idle_per_s.get(name, 0.0) * seconds)
            per[name] = round(made / bookings, 4)
    per["total"] = round(sum(v for name, v in per.items() if name != MAINTENANCE_DATABASE), 4)
    return per


def log_rows(
    before: PgStats | None,
    after: PgStats | None,
    history: tuple[int, int] | None,
    *,
    bookings: int,
) -> tuple[float | None, str | None]:
    """Workflow log rows per booking and where the figure comes from."""
    if (
        before is not None
        and after is not None
        and before.log_rows is not None
        and after.log_rows is not None
        and bookings > 0
    ):
        return round((after.log_rows - before.log_rows) / bookings, 4), "pg_stat_user_tables"
    if history is not None and history[1] > 0:
        rows, sampled = history
        return round(rows / sampled, 4), f"GetBookingHistory of {sampled} bookings"
    return None, None


def run_json(m: RunMeasure) -> dict[str, Any]:
    """One timed run as the report shows it."""
    n = len(m.samples)
    latencies = final_latencies(m.samples)
    rows, rows_source = log_rows(m.pg_before, m.pg_after, m.history, bookings=n)
    return {
        "mode": m.mode,
        "concurrency": m.concurrency,
        "bookings": n,
        "accounts": m.accounts,
        "events": m.events,
        "elapsed_s": round(m.load_s, 3),
        "window_s": round(m.window_s, 3),
        "bookings_per_s": _round(rate(len(latencies), m.load_s), 3),
        "latency_ms": latency_summary(latencies),
        "outcomes": outcome_counts(m.samples),
        "failure_reasons": failure_reasons(m.samples),
        "all_sagas_finished": m.quiet,
        "cpu": cpu_report(m.cpu_before, m.cpu_after, bookings=n, window_s=m.window_s),
        "log_rows_per_booking": rows,
        "log_rows_source": rows_source,
        "db_xacts_per_booking": xacts_per_booking(
            m.pg_before, m.pg_after, bookings=n, idle_per_s=m.idle_xacts_per_s
        ),
        "db_xacts_per_booking_raw": xacts_per_booking(m.pg_before, m.pg_after, bookings=n),
        "db_idle_xacts_per_s": dict(m.idle_xacts_per_s) if m.idle_xacts_per_s else None,
        "peak_rss_kib": dict(m.peak_rss) if m.peak_rss is not None else None,
    }


def run_problems(run: Mapping[str, Any]) -> list[str]:
    """What went wrong in a run: every booking should confirm, since seats and money suffice."""
    label = f"throughput {run['mode']} c={run['concurrency']}"
    problems = []
    unconfirmed = run["bookings"] - run["outcomes"].get("CONFIRMED", 0)
    if unconfirmed:
        problems.append(
            f"{label}: {unconfirmed} of {run['bookings']} bookings did not confirm"
            f" though seats and funds suffice: {run['outcomes']}"
        )
    if not run["all_sagas_finished"]:
        problems.append(f"{label}: sagas were still running when the run ended")
    return problems


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def ratios(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """saga / direct at each concurrency that ran both: what durability costs."""
    by_key = {(r["mode"], r["concurrency"]): r for r in runs}
    found = []
    for concurrency in sorted({r["concurrency"] for r in runs}):
        saga, direct = by_key.get(("saga", concurrency)), by_key.get(("direct", concurrency))
        if saga is None or direct is None:
            continue

        def cpu(run: Mapping[str, Any]) -> float | None:
            value: float | None = (run["cpu"] or {}).get("per_booking_s", {}).get("system_total")
            return value

        found.append(
            {
                "concurrency": concurrency,
                "throughput": _ratio(saga["bookings_per_s"], direct["bookings_per_s"]),
                "p50": _ratio(saga["latency_ms"]["p50"], direct["latency_ms"]["p50"]),
                "p99": _ratio(saga["latency_ms"]["p99"], direct["latency_ms"]["p99"]),
                "cpu_per_booking": _ratio(cpu(saga), cpu(direct)),
            }
        )
    return found


def contention_json(m: ContentionMeasure) -> dict[str, Any]:
    outcomes = outcome_counts(m.samples)
    confirmed_by_account: Counter[int] = Counter()
    for s in m.samples:
        if s.outcome == "CONFIRMED":
            confirmed_by_account[s.account] += s.amount_cents
    confirmed_amount = sum(confirmed_by_account.values())
    charged = sum(m.net_charged)
    mismatched = sum(
        1 for account, net in enumerate(m.net_charged) if net != confirmed_by_account[account]
    )
    confirmed = outcomes.get("CONFIRMED", 0)
    return {
        "bookings": len(m.samples),
        "seats": m.seats,
        "concurrency": m.concurrency,
        "elapsed_s": round(m.load_s, 3),
        "latency_ms": latency_summary(final_latencies(m.samples)),
        "outcomes": outcomes,
        "confirmed": confirmed,
        "failed": outcomes.get("FAILED", 0),
        "not_final": sum(n for o, n in outcomes.items() if o not in FINAL_OUTCOMES),
        "failure_reasons": failure_reasons(m.samples),
        "event": {
            "capacity": m.capacity,
            "sold": m.sold,
            "held": m.held,
            "available": m.available,
        },
        "charged_net_cents": charged,
        "confirmed_amount_cents": confirmed_amount,
        "charged_for_unconfirmed_cents": charged - confirmed_amount,
        "accounts_charged_wrongly": mismatched,
        "nothing_charged_for_failed": charged == confirmed_amount and mismatched == 0,
        "exactly_capacity_confirmed": confirmed == min(m.seats, len(m.samples)),
        "all_sagas_finished": m.quiet,
        "cpu": cpu_report(m.cpu_before, m.cpu_after, bookings=len(m.samples), window_s=m.window_s),
    }


def contention_problems(c: Mapping[str, Any]) -> list[str]:
    problems = []
    if not c["exactly_capacity_confirmed"]:
        problems.append(
            f"contention: {c['confirmed']} bookings confirmed for {c['seats']} seats"
            f" and {c['bookings']} bookings"
        )
    event = c["event"]
    if event["sold"] != c["confirmed"] or event["held"] != 0:
        problems.append(
            f"contention: the event sold {event['sold']} and holds {event['held']} seats"
            f" for {c['confirmed']} confirmed bookings"
        )
    if event["sold"] + event["held"] + event["available"] != event["capacity"]:
        problems.append(f"contention: held + sold + available is not the capacity: {event}")
    if not c["nothing_charged_for_failed"]:
        problems.append(
            f"contention: {c['charged_for_unconfirmed_cents']} cents charged beyond the confirmed"
            f" bookings, {c['accounts_charged_wrongly']} accounts charged wrongly"
        )
    if c["not_final"]:
        problems.append(f"contention: {c['not_final']} bookings did not reach a final status")
    if not c["all_sagas_finished"]:
        problems.append("contention: sagas were still running at the end")
    return problems


def recovery_json(m: RecoveryMeasure) -> dict[str, Any]:
    accepted = m.submitted.get("PENDING", 0) + sum(
        n for o, n in m.submitted.items() if o in FINAL_OUTCOMES
    )
    final = sum(n for o, n in m.final.items() if o in FINAL_OUTCOMES)
    return {
        "bookings": m.bookings,
        "accepted": accepted,
        "submitted": dict(m.submitted),
        "running_at_kill": m.running_at_kill,
        "kill_to_healthy_s": round(m.kill_to_healthy_s, 3),
        "kill_to_bookings_final_s": _round(m.kill_to_bookings_final_s, 3),
        "kill_to_all_final_s": _round(m.kill_to_final_s, 3),
        "healthy_to_all_final_s": _round(
            None if m.kill_to_final_s is None else m.kill_to_final_s - m.kill_to_healthy_s, 3
        ),
        "lease_s": m.lease_s,
        "outcomes": dict(m.final),
        "all_final": final == accepted and m.kill_to_bookings_final_s is not None,
        "all_sagas_finished": m.quiet,
    }


def recovery_problems(r: Mapping[str, Any]) -> list[str]:
    problems = []
    if r["accepted"] != r["bookings"]:
        problems.append(f"recovery: only {r['accepted']} of {r['bookings']} bookings accepted")
    if not r["all_final"]:
        problems.append(f"recovery: not every booking became final: {r['outcomes']}")
    if not r["all_sagas_finished"]:
        problems.append("recovery: sagas were still running at the end")
    return problems


def build_report(
    ctx: Context,
    *,
    runs: Sequence[RunMeasure] = (),
    contention: ContentionMeasure | None = None,
    recovery: RecoveryMeasure | None = None,
) -> dict[str, Any]:
    """The whole JSON document; `ok` is False when any problem was found."""
    problems: list[str] = []
    throughput = None
    if runs:
        shown = [run_json(m) for m in runs]
        for run in shown:
            problems += run_problems(run)
        throughput = {"runs": shown, "ratios_saga_over_direct": ratios(shown)}
    contention_part = contention_json(contention) if contention else None
    if contention_part:
        problems += contention_problems(contention_part)
    recovery_part = recovery_json(recovery) if recovery else None
    if recovery_part:
        problems += recovery_problems(recovery_part)
    if ctx.stuck_sagas:
        problems.append(f"{ctx.stuck_sagas} sagas are STUCK")
    spans = ctx.spans
    return {
        "report_version": REPORT_VERSION,
        "started_at": ctx.started_at,
        "duration_s": round(ctx.duration_s, 3),
        "system": dict(ctx.system),
        "config": dict(ctx.config),
        "throughput": throughput,
        "contention": contention_part,
        "recovery": recovery_part,
        "tracing": {
            "enabled": ctx.tracing,
            "spans_received": spans["spans"] if spans else None,
            "export_requests": spans["export_requests"] if spans else None,
            "spans_by_service": spans["spans_by_service"] if spans else None,
        },
        "peak_rss_kib": dict(ctx.peak_rss) if ctx.peak_rss is not None else None,
        "stuck_sagas": ctx.stuck_sagas,
        "notes": list(ctx.notes),
        "problems": problems,
        "ok": not problems,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _latency(summary: LatencySummary) -> str:
    return f"p50 {_ms(summary['p50'])}  p95 {_ms(summary['p95'])}  p99 {_ms(summary['p99'])} ms"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The report for people: a table of runs, then each scenario in a line or two."""
    lines = [f"bench of the {report['system']['kind']} system, {report['duration_s']:.0f} s"]
    throughput = report["throughput"]
    if throughput:
        lines += [
            "",
            "throughput (CPU in ms per booking; log rows and db transactions per booking)",
        ]
        rows = [
            [
                "mode",
                "conc",
                "bookings/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                *(name.removesuffix("_svc") for name in SYSTEM_PROCESSES),
                "cpu total",
                "log rows",
                "xacts",
                "outcomes",
            ]
        ]
        for run in throughput["runs"]:
            per = (run["cpu"] or {}).get("per_booking_s", {})
            lat = run["latency_ms"]
            rows.append(
                [
                    run["mode"],
                    str(run["concurrency"]),
                    _num(run["bookings_per_s"]),
                    _ms(lat["p50"]),
                    _ms(lat["p95"]),
                    _ms(lat["p99"]),
                    *(
                        _num(None if per.get(n) is None else per[n] * 1000)
                        for n in (*SYSTEM_PROCESSES, "system_total")
                    ),
                    _num(run["log_rows_per_booking"]),
                    _num((run["db_xacts_per_booking"] or {}).get("total")),
                    " ".join(f"{o} {n}" for o, n in run["outcomes"].items()),
                ]
            )
        lines += ["  " + line for line in columns(rows)]
        for r in throughput["ratios_saga_over_direct"]:
            lines.append(
                f"  saga/direct at c={r['concurrency']}: throughput {_num(r['throughput'], '.2f')}x,"
                f" p50 {_num(r['p50'], '.2f')}x, p99 {_num(r['p99'], '.2f')}x,"
                f" CPU per booking {_num(r['cpu_per_booking'], '.2f')}x"
            )
    c = report["contention"]
    if c:
        lines += [
            "",
            f"contention: {c['bookings']} bookings at once for {c['seats']} seats:"
            f" {c['confirmed']} CONFIRMED, {c['failed']} FAILED, {c['not_final']} not final;"
            f" {_latency(c['latency_ms'])}",
            f"  charged {c['charged_net_cents']} cents for {c['confirmed_amount_cents']} confirmed:"
            f" {'nothing' if c['nothing_charged_for_failed'] else 'MONEY'} charged for failed"
            f" bookings; event sold {c['event']['sold']}, held {c['event']['held']}",
        ]
        if c.get("cpu"):
            per = c["cpu"]["per_booking_s"]
            lines.append(
                "  CPU ms per booking: "
                + ", ".join(
                    f"{name} {_num(None if v is None else v * 1000, '.1f')}"
                    for name, v in per.items()
                )
            )
    r = report["recovery"]
    if r:
        final = (
            f"every booking final {r['kill_to_all_final_s']:.2f} s after the kill"
            if r["kill_to_all_final_s"] is not None
            else "NOT every booking became final"
        )
        lines += [
            "",
            f"recovery: {r['accepted']} bookings in flight, {r['running_at_kill']} sagas running"
            f" when booking_svc was SIGKILLed; healthy again after {r['kill_to_healthy_s']:.2f} s;"
            f" {final} (lease {r['lease_s']:g} s); "
            + " ".join(f"{o} {n}" for o, n in r["outcomes"].items()),
        ]
    tracing = report["tracing"]
    lines += [""]
    if tracing["enabled"]:
        lines.append(
            f"tracing: {_num(tracing['spans_received'], 'd')} spans received by the OTLP sink"
        )
    else:
        lines.append("tracing: off")
    peaks = report["peak_rss_kib"]
    if peaks:
        shown = []
        for name, value in peaks.items():
            if isinstance(value, dict):
                if value.get("root") is not None:
                    largest = value.get("max_child") or 0
                    shown.append(
                        f"{name} {value['root'] / 1024:.0f} (largest backend {largest / 1024:.0f},"
                        f" {value['processes']} processes)"
                    )
            elif value is not None:
                shown.append(f"{name} {value / 1024:.0f}")
        lines.append("peak RSS MiB: " + ", ".join(shown))
    for note in report["notes"]:
        lines.append(f"note: {note}")
    if report["problems"]:
        lines += ["", "problems:"] + [f"  {p}" for p in report["problems"]]
    else:
        lines += ["", "no problems found"]
    return lines
