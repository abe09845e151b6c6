"""`bookingctl chaos`: bookings and cancellations under injected faults, then the checker.

A run starts its own embedded system (PostgreSQL and the four services, on free
ports, every service with fault control on), makes accounts and a few small
events, and then, for the duration, keeps `concurrency` clients booking and
cancelling while it

- sets fault rules (`error`, `delay`, `lost_reply`, `crash`) on the participant
  methods and on booking_svc's own CreateBooking and CancelBooking, a window at a
  time per service, through each server's FaultService;
- kills service processes with SIGKILL (booking_svc first) and restarts them;
  a process that a `crash` rule ended (exit code 87) is restarted as well;
- stops PostgreSQL once, as abruptly as a crash (`immediate`), and starts it again.

Then it clears every rule, makes sure everything runs, waits until no saga is
RUNNING or COMPENSATING and no booking PENDING or CANCELLING, runs the seven
invariants of the checker, and summarises.

The pieces are separate so the pure ones are tested alone: `make_schedule`
(the seeded fault plan) and `make_workload` (accounts and events) are pure
functions of the seed; `Tally` counts; `progress_line`, `summary_json` and
`summary_lines` present. `Supervisor` kills, restarts and watches processes,
`FaultDriver` applies the rule windows, `Workload` runs the clients, and `run`
puts them together.

`--seed` repeats the schedule and the clients' random draws; the real processes
still answer differently from run to run, so the counts differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventbooking import checker, fault_injection
from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.booking.v1 import booking_pb2, booking_pb2_grpc
from eventbooking.clock import utcnow
from eventbooking.event.v1 import event_pb2, event_pb2_grpc
from eventbooking.fault_injection import Rule
from eventbooking.faultctl import CHANNEL_OPTIONS, FaultControl
from eventbooking.local import SERVICES, LocalSystem, Running, UpError
from eventbooking.localpg import free_port

RULE_KINDS: tuple[str, ...] = ("error", "delay", "lost_reply", "crash")
PROCESS_KINDS: tuple[str, ...] = ("kill", "postgres")
FAULT_KINDS: tuple[str, ...] = RULE_KINDS + PROCESS_KINDS
MODULES: tuple[str, ...] = tuple(spec.module for spec in SERVICES)
DATABASE_MODULES = frozenset(spec.module for spec in SERVICES if spec.database)

# The methods rules aim at, weighted by how often the workload makes them run.
METHODS: Mapping[str, tuple[tuple[str, int], ...]] = {
    "account_svc": (("Charge", 3), ("Refund", 1)),
    "event_svc": (("ReserveSeats", 3), ("ConfirmReservation", 2), ("ReleaseReservation", 1)),
    "booking_svc": (("CreateBooking", 3), ("CancelBooking", 1)),
    "notification_svc": (("SendNotification", 1),),
}
KILL_WEIGHTS: Mapping[str, int] = {
    "booking_svc": 3,
    "account_svc": 2,
    "event_svc": 2,
    "notification_svc": 1,
}
# How often each kind leads a rule window, once every kind has had one. Each crash costs
# seconds of downtime while the process starts again, so crashes come less often.
PRIMARY_WEIGHTS: Mapping[str, int] = {"error": 3, "delay": 3, "lost_reply": 3, "crash": 1}
# Only codes the callers retry: a refusal past the pivot would park a saga STUCK by design,
# which is an operator's business, not a fault the system is meant to ride out alone.
ERROR_CODES: tuple[str, ...] = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
MIN_DURATION_SECONDS = 20
# Seconds before the PostgreSQL outage when no kill starts: down time plus a restart.
KILL_CLEARANCE = 10.0

# The settings the embedded system runs with, on top of what LocalSystem passes.
STEP_DEADLINE_SECONDS = 2.0
COMMON_ENV = {"FAULT_CONTROL": "true", "LOG_LEVEL": "WARNING"}
BOOKING_ENV = {
    "RECOVERY_INTERVAL_SECONDS": "0.5",
    # Below the longest injected delay, so some delayed calls time out and are repeated.
    "STEP_DEADLINE_SECONDS": str(STEP_DEADLINE_SECONDS),
    # Sagas retry soon after a fault ends, so quiescence follows the faults closely.
    "MAX_BACKOFF_SECONDS": "2",
}
SINK_FILE = "notifications.jsonl"

RICH_BALANCE_CENTS = 10_000_000
POOR_SHARE = 0.25
QUANTITIES: tuple[int, ...] = (1, 1, 1, 2, 2, 3, 4)
# A worker's next operation: cancel one of its CONFIRMED bookings, or book and cancel at once.
CANCEL_SHARE = 0.15
BOOK_AND_CANCEL_SHARE = 0.05
CALL_TIMEOUT_SECONDS = 10.0
# How long a client repeats one request through UNAVAILABLE and friends before it gives up.
CLIENT_GIVE_UP_SECONDS = 60.0
CLIENT_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

RESTART_PAUSE_SECONDS = 0.5
START_TIMEOUT_SECONDS = 60.0
MAX_START_ATTEMPTS = 8
POLL_SECONDS = 1.0
DRAIN_SECONDS = 75.0
LIVE_SAGA_STATUSES = (booking_pb2.SAGA_STATUS_RUNNING, booking_pb2.SAGA_STATUS_COMPENSATING)
IN_FLIGHT_STATUSES = frozenset({"PENDING", "CANCELLING"})
OUTCOMES: tuple[str, ...] = ("CONFIRMED", "FAILED", "CANCELLED", "PENDING", "CANCELLING")


class ChaosError(RuntimeError):
    """The run could not go on (the system would not start, or not come back); says why."""


def parse_kinds(text: str) -> frozenset[str]:
    """Fault kinds from "all", "none" or a comma-separated list; ValueError names a bad one."""
    cleaned = text.strip().lower()
    if cleaned == "all":
        return frozenset(FAULT_KINDS)
    if cleaned == "none":
        return frozenset()
    names = [part.strip() for part in cleaned.split(",") if part.strip()]
    unknown = [name for name in names if name not in FAULT_KINDS]
    if unknown or not names:
        shown = unknown[0] if unknown else text
        raise ValueError(
            f"{shown!r} is not a fault kind; give all, none, or some of {', '.join(FAULT_KINDS)}"
        )
    return frozenset(names)


def ordered(kinds: Iterable[str]) -> list[str]:
    """Fault kinds in the order of FAULT_KINDS."""
    wanted = set(kinds)
    return [kind for kind in FAULT_KINDS if kind in wanted]


# The schedule.


@dataclass(frozen=True)
class RuleWindow:
    """Fault rules on one service from `at` until `until` (seconds into the run)."""

    at: float
    until: float
    module: str
    rules: tuple[Rule, ...]
    # Seeds the server's draws, so the same calls in the same order get the same faults.
    seed: int


@dataclass(frozen=True)
class Kill:
    """SIGKILL `module` at `at`; start it again `down` seconds later."""

    at: float
    module: str
    down: float


@dataclass(frozen=True)
class PostgresOutage:
    """Stop PostgreSQL (mode immediate) at `at`; start it again `down` seconds later."""

    at: float
    down: float


@dataclass(frozen=True)
class Schedule:
    """Every fault of a run, decided up front from the seed."""

    seed: int
    duration: float
    kinds: frozenset[str]
    windows: tuple[RuleWindow, ...]
    kills: tuple[Kill, ...]
    outage: PostgresOutage | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "duration_seconds": self.duration,
            "kinds": ordered(self.kinds),
            "windows": [
                {
                    "at": w.at,
                    "until": w.until,
                    "module": w.module,
                    "seed": w.seed,
                    "rules": [rule.to_json() for rule in w.rules],
                }
                for w in self.windows
            ],
            "kills": [{"at": k.at, "module": k.module, "down": k.down} for k in self.kills],
            "postgres_outage": (
                {"at": self.outage.at, "down": self.outage.down} if self.outage else None
            ),
        }

    def digest(self) -> str:
        """A short fingerprint: two runs with the same one had the same schedule."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def planned(self) -> dict[str, int]:
        """How many faults of each kind the schedule sets up (rules fire as calls come)."""
        counts: Counter[str] = Counter(rule.kind for w in self.windows for rule in w.rules)
        counts["kill"] = len(self.kills)
        counts["postgres"] = 1 if self.outage else 0
        return {kind: counts[kind] for kind in ordered(self.kinds)}


def fault_bounds(duration: float) -> tuple[float, float]:
    """When faults may start (after a quiet start) and by when they end."""
    return min(5.0, duration * 0.1), duration


def _weighted(rng: random.Random, choices: Sequence[tuple[str, int]]) -> str:
    names = [name for name, _ in choices]
    weights = [weight for _, weight in choices]
    return rng.choices(names, weights=weights)[0]


def make_rule(rng: random.Random, module: str, kind: str, *, busiest: bool = False) -> Rule:
    """One rule of `kind` on a method of `module`, drawn from `rng`; with `busiest`, on the
    method the workload calls most, so that the rule is sure to fire."""
    method = METHODS[module][0][0] if busiest else _weighted(rng, METHODS[module])
    if kind == "error":
        code = rng.choice(ERROR_CODES)
        probability = round(rng.uniform(0.05, 0.4), 2)
        return Rule(
            module, method, "error", code=code, message=f"{code} (chaos)", probability=probability
        )
    if kind == "delay":
        seconds = round(rng.uniform(0.1, 3.0), 1)
        return Rule(
            module, method, "delay", seconds=seconds, probability=round(rng.uniform(0.1, 0.5), 2)
        )
    if kind == "lost_reply":
        return Rule(module, method, "lost_reply", probability=round(rng.uniform(0.05, 0.3), 2))
    if kind == "crash":
        # Once: the process is gone after it, and its restart starts with no rules.
        return Rule(module, method, "crash", when=rng.choice(("before", "after")), count=1)
    raise ValueError(f"{kind!r} is not a rule kind")


def make_schedule(seed: int, *, duration: float, kinds: Iterable[str]) -> Schedule:
    """The faults of a run of `duration` seconds, all drawn from `random.Random(seed)`.

    Rule windows follow each other on every service (one at a time per service,
    so setting one never replaces another). The first windows lead with each
    enabled kind once, on the busiest method of their service, so every kind
    comes early and fires; later ones draw their kind by PRIMARY_WEIGHTS, and
    some add a second rule (never a second crash). Kills follow each other with
    a pause, booking_svc first. The one PostgreSQL outage falls between 30% and
    60% of the run, with no kill or restart near it. Nothing starts in the quiet first
    seconds, and everything ends by the end of the run.
    """
    enabled = frozenset(kinds)
    unknown = enabled - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if duration < MIN_DURATION_SECONDS:
        raise ValueError(f"a chaos run lasts at least {MIN_DURATION_SECONDS} s")
    # Repeatable draws are the point here.
    rng = random.Random(seed)  # noqa: S311
    start, end = fault_bounds(duration)

    outage = None
    if "postgres" in enabled:
        outage = PostgresOutage(
            at=round(rng.uniform(0.3, 0.6) * duration, 2), down=round(rng.uniform(2.0, 5.0), 1)
        )

    windows: list[RuleWindow] = []
    rule_kinds = [kind for kind in RULE_KINDS if kind in enabled]
    if rule_kinds:
        slots: list[tuple[float, float, str]] = []
        for module in MODULES:
            at = start + rng.uniform(0.0, 4.0)
            while True:
                length = rng.uniform(3.0, 10.0)
                if at + length > end:
                    break
                slots.append((round(at, 2), round(at + length, 2), module))
                at += length + rng.uniform(2.0, 8.0)
        slots.sort()
        first = list(rule_kinds)
        rng.shuffle(first)
        weighted = [(kind, PRIMARY_WEIGHTS[kind]) for kind in rule_kinds]
        extras = [kind for kind in rule_kinds if kind != "crash"]
        for at, until, module in slots:
            covering = bool(first)
            lead = first.pop() if first else _weighted(rng, weighted)
            rules = [make_rule(rng, module, lead, busiest=covering)]
            if extras and rng.random() < 0.4:
                rules.append(make_rule(rng, module, rng.choice(extras)))
            windows.append(RuleWindow(at, until, module, tuple(rules), rng.randrange(2**31)))

    kills: list[Kill] = []
    if "kill" in enabled:
        modules = sorted(KILL_WEIGHTS.items())
        at = start + rng.uniform(1.0, 6.0)
        while True:
            # A kill (and the restart after it) keeps clear of the outage and the recovery.
            if outage and outage.at - KILL_CLEARANCE < at < outage.at + outage.down + 3.0:
                at = outage.at + outage.down + 3.5
            down = round(rng.uniform(0.5, 3.0), 1)
            if at + down > end:
                break
            module = "booking_svc" if not kills else _weighted(rng, modules)
            kills.append(Kill(round(at, 2), module, down))
            at += down + rng.uniform(8.0, 20.0)

    return Schedule(seed, duration, enabled, tuple(windows), tuple(kills), outage)


# The workload.


@dataclass(frozen=True)
class EventPlan:
    name: str
    capacity: int
    price_cents: int
    # How often a booking picks this event, relative to the others.
    weight: int


@dataclass(frozen=True)
class WorkloadPlan:
    balances: tuple[int, ...]
    events: tuple[EventPlan, ...]


def make_workload(seed: int, *, concurrency: int, duration: float) -> WorkloadPlan:
    """Accounts and events for `concurrency` clients, drawn from the seed.

    Enough accounts that no account nears booking_svc's per-account rate limit
    (20 attempts a second); a quarter of them can pay for a few bookings only,
    so some bookings fail for funds. Three small events sell out early and
    live on cancellations; a larger one takes half the bookings and lasts the
    run, so bookings keep being confirmed throughout.
    """
    # A different stream from the schedule's, so changing one never shifts the other.
    rng = random.Random(f"workload-{seed}")  # noqa: S311
    events = [
        EventPlan(f"chaos small {n}", rng.randint(10, 40), rng.randrange(500, 3001, 100), weight=1)
        for n in (1, 2)
    ]
    events.append(EventPlan("chaos medium", rng.randint(60, 200), rng.randrange(500, 3001, 100), 1))
    # Roughly what the run could sell, so it does not sell out; capacity is capped at 100,000.
    big = min(100_000, max(500, int(concurrency * duration * 6)))
    events.append(EventPlan("chaos large", big, rng.randrange(500, 3001, 100), weight=3))
    top_price = max(e.price_cents for e in events) * max(QUANTITIES)
    accounts = max(16, 4 * concurrency)
    balances = tuple(
        top_price * rng.randint(1, 3) if rng.random() < POOR_SHARE else RICH_BALANCE_CENTS
        for _ in range(accounts)
    )
    return WorkloadPlan(balances, tuple(events))


# What happened.


@dataclass
class Tally:
    """Counts of everything the run did and saw, for the progress line and the summary."""

    started: float = field(default_factory=time.monotonic)
    requests: Counter[str] = field(default_factory=Counter)
    # CreateBooking replies by the status they carried, and CancelBooking's likewise.
    booked: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    gave_up: Counter[str] = field(default_factory=Counter)
    # (window index, rule index) -> times fired, and that rule's kind.
    fired: dict[tuple[int, int], int] = field(default_factory=dict)
    fired_kind: dict[tuple[int, int], str] = field(default_factory=dict)
    fired_module: dict[tuple[int, int], str] = field(default_factory=dict)
    windows_applied: int = 0
    windows_missed: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    kills_skipped: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    failed_starts: Counter[str] = field(default_factory=Counter)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    postgres_outages: int = 0
    # What is down now (services and "postgres"), since when, and for how long in all.
    down_since: dict[str, float] = field(default_factory=dict)
    downtime: dict[str, float] = field(default_factory=dict)
    # Seconds into the run when the last fault ended (a rule cleared, a process back).
    last_fault_end: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self.down_since)

    def went_down(self, name: str) -> None:
        self.down_since.setdefault(name, self.elapsed())

    def came_up(self, name: str) -> None:
        """`name` is back: its downtime counts, and so does the end of a fault."""
        since = self.down_since.pop(name, None)
        if since is not None:
            self.downtime[name] = self.downtime.get(name, 0.0) + self.elapsed() - since
        self.fault_ended()

    def fault_ended(self) -> None:
        self.last_fault_end = max(self.last_fault_end, self.elapsed())

    def record_fired(
        self, window: int, module: str, rules: Sequence[Rule], fired: Sequence[int]
    ) -> None:
        for index, (rule, count) in enumerate(zip(rules, fired, strict=True)):
            key = (window, index)
            self.fired_kind[key] = rule.kind
            self.fired_module[key] = module
            self.fired[key] = max(self.fired.get(key, 0), count)

    def faults(self) -> dict[str, int]:
        """Faults injected so far, by kind. A crash rule's own count dies with its process,
        so crashes are the exits with code 87 the supervisor saw."""
        counts: Counter[str] = Counter()
        for key, count in self.fired.items():
            if self.fired_kind[key] != "crash":
                counts[self.fired_kind[key]] += count
        counts["crash"] = sum(self.crashes.values())
        counts["kill"] = sum(self.kills.values())
        counts["postgres"] = self.postgres_outages
        return {kind: counts[kind] for kind in FAULT_KINDS}

    def faults_by_module(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = {module: Counter() for module in MODULES}
        for key, count in self.fired.items():
            if self.fired_kind[key] != "crash" and count:
                table[self.fired_module[key]][self.fired_kind[key]] += count
        for module in MODULES:
            if self.crashes[module]:
                table[module]["crash"] = self.crashes[module]
            if self.kills[module]:
                table[module]["kill"] = self.kills[module]
        return {module: dict(sorted(c.items())) for module, c in table.items()}


def _count_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"


def format_seconds(seconds: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_line(tally: Tally, *, elapsed: float, duration: float, phase: str = "") -> str:
    """One line: time, bookings by the status their replies carried, faults, processes down."""
    booked = sum(tally.booked.values())
    faults = tally.faults()
    down = f"  down: {', '.join(sorted(tally.down))}" if tally.down else ""
    shown_booked = {k: tally.booked[k] for k in ("CONFIRMED", "FAILED", "PENDING")}
    cancels = sum(tally.cancelled.values())
    errors = sum(tally.client_errors.values())
    head = phase or f"{format_seconds(min(elapsed, duration))}/{format_seconds(duration)}"
    return (
        f"chaos {head}  bookings {booked} ({_count_text(shown_booked)})  cancels {cancels}"
        f"  client errors {errors}  faults {sum(faults.values())} ({_count_text(faults)}){down}"
    )


# Processes.


async def serving(port: int, *, alive: Callable[[], bool], within: float) -> bool:
    """Poll the health service on `port` until SERVING; False after `within` seconds or
    once the process is not alive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while loop.time() < deadline and alive():
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            await asyncio.sleep(0.1)
    return False


async def control_postgres(system: LocalSystem, action: str, *, mode: str = "fast") -> None:
    """Stop (`mode` as pg_ctl's) or start the system's PostgreSQL, in a worker thread.

    pg_ctl runs as a subprocess; gRPC's fork handlers could once kill it between
    fork and exec, which eventbooking/__init__.py prevents for every process of ours.
    """
    try:
        if action == "stop":
            await asyncio.to_thread(system.stop_postgres, mode=mode)
        else:
            await asyncio.to_thread(system.start_postgres)
    except UpError as err:
        raise ChaosError(f"PostgreSQL did not {action}: {err}") from None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class Supervisor:
    """Kills, restarts and watches the service processes and PostgreSQL of one system.

    `watch` notices a process that ended on its own (a crash rule's exit 87, or
    anything else, which is reported as unexpected) and starts it again. A
    database-owning service is only started while PostgreSQL is up. `guard`
    wraps each restart started that way, so that one failing ends the run.
    """

    def __init__(
        self,
        system: LocalSystem,
        tally: Tally,
        *,
        guard: Callable[[Awaitable[None]], Coroutine[Any, Any, None]],
    ) -> None:
        self._system = system
        self._tally = tally
        self._guard = guard
        # Modules being killed or restarted right now: `watch` leaves them alone.
        self._held: set[str] = set()
        self._killed: set[int] = set()
        self._restarts: dict[str, asyncio.Task[None]] = {}
        self._pg_op: asyncio.Future[None] | None = None
        self.postgres_up = asyncio.Event()
        self.postgres_up.set()

    def _run(self, module: str) -> Running:
        return self._system.service(module)

    async def watch(self) -> None:
        while True:
            for module in MODULES:
                if module in self._held:
                    continue
                run = self._run(module)
                code = run.process.poll()
                if code is None:
                    continue
                self._held.add(module)
                self._tally.went_down(module)
                if run.process.pid not in self._killed:
                    self._record_exit(module, run, code)
                self._restarts[module] = asyncio.create_task(
                    self._guard(self._restart_after_exit(module))
                )
            await asyncio.sleep(0.2)

    def _record_exit(self, module: str, run: Running, code: int) -> None:
        if code == fault_injection.EXIT_CODE:
            self._tally.crashes[module] += 1
            return
        self._tally.unexpected_exits.append(
            {
                "module": module,
                "exit_code": code,
                "at_seconds": round(self._tally.elapsed(), 1),
                "log_tail": _tail(run.log_path),
            }
        )

    async def _restart_after_exit(self, module: str) -> None:
        try:
            await asyncio.sleep(RESTART_PAUSE_SECONDS)
            await self._start(module)
        finally:
            self._held.discard(module)

    async def _start(self, module: str) -> None:
        """Start `module` again and wait until it serves, trying again if it dies first."""
        for attempt in range(1, MAX_START_ATTEMPTS + 1):
            if module in DATABASE_MODULES:
                await self.postgres_up.wait()
            run = self._system.restart(module, wait=False)
            if await serving(run.port, alive=run.alive, within=START_TIMEOUT_SECONDS):
                self._tally.restarts[module] += 1
                self._tally.came_up(module)
                return
            self._tally.failed_starts[module] += 1
            if run.alive():
                self._killed.add(run.process.pid)
                run.process.kill()
            await self._reaped(run)
            await asyncio.sleep(min(5.0, 0.5 * attempt))
        run = self._run(module)
        raise ChaosError(
            f"{module} did not start again after {MAX_START_ATTEMPTS} attempts; the end of"
            f" {run.log_path}:\n{_tail(run.log_path)}"
        )

    @staticmethod
    async def _reaped(run: Running) -> int:
        # Popen offers nothing to await; its exit is polled.
        while (code := run.process.poll()) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return code

    async def kill(self, module: str, *, down: float) -> None:
        """SIGKILL `module`, leave it down for `down` seconds, and start it again."""
        # A process that is coming back from a crash gets a moment before it is killed.
        for _ in range(100):
            if module not in self._held:
                break
            await asyncio.sleep(0.1)
        else:
            self._tally.kills_skipped += 1
            return
        self._held.add(module)
        try:
            self._tally.went_down(module)
            run = self._run(module)
            self._killed.add(run.process.pid)
            if run.alive():
                run.process.send_signal(signal.SIGKILL)
            await self._reaped(run)
            self._tally.kills[module] += 1
            await asyncio.sleep(down)
            await self._start(module)
        finally:
            # Cancelled while down, `ensure_all_up` starts it.
            self._held.discard(module)

    async def _postgres(self, action: str, *, mode: str = "fast") -> None:
        # Shielded: pg_ctl runs on even if the run is cancelled, and `ensure_all_up`
        # waits for it rather than racing it.
        self._pg_op = asyncio.ensure_future(control_postgres(self._system, action, mode=mode))
        await asyncio.shield(self._pg_op)

    async def postgres_outage(self, *, down: float) -> None:
        """Stop PostgreSQL as abruptly as a crash, and start it again `down` seconds later."""
        self.postgres_up.clear()
        self._tally.went_down("postgres")
        await self._postgres("stop", mode="immediate")
        self._tally.postgres_outages += 1
        await asyncio.sleep(down)
        await self._postgres("start")
        self.postgres_up.set()
        self._tally.came_up("postgres")

    async def ensure_all_up(self) -> None:
        """PostgreSQL and every service running and serving, whatever the faults left behind."""
        if self._pg_op is not None:
            with contextlib.suppress(Exception):
                await self._pg_op
        if not self.postgres_up.is_set():
            await self._postgres("start")
            self.postgres_up.set()
            self._tally.came_up("postgres")
        for task in list(self._restarts.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for module in MODULES:
            run = self._run(module)
            if not run.alive():
                self._held.add(module)
                try:
                    await self._start(module)
                finally:
                    self._held.discard(module)
            elif not await serving(run.port, alive=run.alive, within=START_TIMEOUT_SECONDS):
                raise ChaosError(f"{module} is running but does not serve:\n{_tail(run.log_path)}")
            if module in self._tally.down_since:
                self._tally.came_up(module)


# Fault rules.


class FaultDriver:
    """Applies the schedule's rule windows through each server's FaultService."""

    def __init__(self, controls: Mapping[str, FaultControl], tally: Tally) -> None:
        self._controls = controls
        self._tally = tally

    async def drive(self, module: str, windows: Sequence[tuple[int, RuleWindow]]) -> None:
        """The windows of one service, one after another, at their times."""
        control = self._controls[module]
        for index, window in windows:
            await _sleep_until(self._tally, window.at)
            if not await self._apply(control, window):
                self._tally.windows_missed += 1
                continue
            self._tally.windows_applied += 1
            while self._tally.elapsed() < window.until:
                await asyncio.sleep(
                    min(POLL_SECONDS, max(0.0, window.until - self._tally.elapsed()))
                )
                await self._poll(control, index, window)
            await self._poll(control, index, window)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await control.clear()
            self._tally.fault_ended()

    async def _apply(self, control: FaultControl, window: RuleWindow) -> bool:
        # The service may be down (killed, or crashed by an earlier rule): try until it is back.
        while self._tally.elapsed() < window.until:
            try:
                await control.set(window.rules, seed=window.seed)
                return True
            except grpc.aio.AioRpcError as err:
                if err.code() not in CLIENT_RETRY_CODES:
                    raise ChaosError(
                        f"{window.module} refused its fault rules: {err.code().name}:"
                        f" {err.details()}"
                    ) from None
                await asyncio.sleep(0.3)
        return False

    async def _poll(self, control: FaultControl, index: int, window: RuleWindow) -> None:
        try:
            live = await control.list()
        except grpc.aio.AioRpcError:
            return
        # After a restart the server has no rules: what the old process counted is kept.
        same = [(s.rule.method, s.rule.kind) for s in live] == [
            (r.method, r.kind) for r in window.rules
        ]
        if same:
            self._tally.record_fired(index, window.module, window.rules, [s.fired for s in live])

    async def clear_all(self, *, within: float = 60.0) -> None:
        """ClearFaults on every service, trying until each answers."""
        deadline = time.monotonic() + within
        for module, control in self._controls.items():
            while True:
                try:
                    await control.clear()
                    break
                except grpc.aio.AioRpcError as err:
                    if time.monotonic() > deadline:
                        raise ChaosError(
                            f"cannot clear the fault rules of {module}: {err.code().name}"
                        ) from None
                    await asyncio.sleep(0.3)


async def _sleep_until(tally: Tally, at: float) -> None:
    delay = at - tally.elapsed()
    if delay > 0:
        await asyncio.sleep(delay)


# Clients.


@dataclass(frozen=True)
class Customer:
    account_id: str
    token: str = field(repr=False)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _status(booking: booking_pb2.Booking) -> str:
    name: str = booking_pb2.BookingStatus.Name(booking.status)
    return name.removeprefix("BOOKING_STATUS_")


class Workload:
    """`concurrency` clients booking and cancelling as real users would, until told to stop.

    Each CreateBooking carries an idempotency key and, on UNAVAILABLE,
    DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED, is sent again with the same key
    after a pause, for up to a minute; every error is counted by method and code.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        customers: Sequence[Customer],
        events: Sequence[tuple[str, EventPlan]],
        seed: int,
        tally: Tally,
    ) -> None:
        self._bookings = booking_pb2_grpc.BookingServiceStub(channel)
        self._customers = customers
        self._events = events
        self._seed = seed
        self._tally = tally
        self.stop = asyncio.Event()

    async def run(self, concurrency: int) -> None:
        await asyncio.gather(*(self._worker(n) for n in range(concurrency)))

    async def _worker(self, number: int) -> None:
        # One stream for what a client does, another for its pauses, so timing never
        # changes its choices.
        choices = random.Random(f"client-{self._seed}-{number}")  # noqa: S311
        pauses = random.Random(f"pauses-{self._seed}-{number}")  # noqa: S311
        confirmed: list[tuple[str, Customer]] = []
        names = [event_id for event_id, _ in self._events]
        weights = [plan.weight for _, plan in self._events]
        made = 0
        while not self.stop.is_set():
            draw = choices.random()
            if confirmed and draw < CANCEL_SHARE:
                booking_id, customer = confirmed.pop(choices.randrange(len(confirmed)))
                await self._cancel(booking_id, customer, pauses)
                continue
            customer = choices.choice(self._customers)
            event_id = choices.choices(names, weights=weights)[0]
            quantity = choices.choice(QUANTITIES)
            at_once = choices.random() < BOOK_AND_CANCEL_SHARE
            made += 1
            request = booking_pb2.CreateBookingRequest(
                account_id=customer.account_id,
                event_id=event_id,
                quantity=quantity,
                idempotency_key=f"chaos-{self._seed}-{number}-{made}",
                wait_for_outcome=not at_once,
            )
            booking = await self._book(request, customer, pauses)
            if booking is None:
                continue
            if at_once:
                # Cancel while the saga runs: it must compensate at its next step boundary.
                await self._cancel(booking.booking_id, customer, pauses)
            elif booking.status == booking_pb2.BOOKING_STATUS_CONFIRMED:
                confirmed.append((booking.booking_id, customer))

    async def _book(
        self, request: booking_pb2.CreateBookingRequest, customer: Customer, pauses: random.Random
    ) -> booking_pb2.Booking | None:
        reply = await self._call(
            "CreateBooking",
            lambda: self._bookings.CreateBooking(
                request, timeout=CALL_TIMEOUT_SECONDS, metadata=_bearer(customer.token)
            ),
            pauses,
        )
        if reply is None:
            return None
        self._tally.booked[_status(reply.booking)] += 1
        booking: booking_pb2.Booking = reply.booking
        return booking

    async def _cancel(self, booking_id: str, customer: Customer, pauses: random.Random) -> None:
        request = booking_pb2.CancelBookingRequest(booking_id=booking_id, wait_for_outcome=True)
        reply = await self._call(
            "CancelBooking",
            lambda: self._bookings.CancelBooking(
                request, timeout=CALL_TIMEOUT_SECONDS, metadata=_bearer(customer.token)
            ),
            pauses,
        )
        if reply is not None:
            self._tally.cancelled[_status(reply.booking)] += 1

    async def _call(self, method: str, send: Callable[[], Any], pauses: random.Random) -> Any:
        """`send()` until it answers, repeating it through transient codes for a while."""
        self._tally.requests[method] += 1
        began = time.monotonic()
        attempt = 0
        while True:
            try:
                return await send()
            except grpc.aio.AioRpcError as err:
                code = err.code()
                self._tally.client_errors[(method, code.name)] += 1
                if code not in CLIENT_RETRY_CODES:
                    return None
                if time.monotonic() - began > CLIENT_GIVE_UP_SECONDS:
                    self._tally.gave_up[method] += 1
                    return None
            attempt += 1
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + pauses.random()))


# The run.


@dataclass(frozen=True)
class ChaosOptions:
    duration: float
    concurrency: int
    seed: int
    kinds: frozenset[str]
    settle_timeout: float = 120.0


def chaos_env() -> dict[str, dict[str, str]]:
    """Per service, the settings a chaos system adds: fault control on, quieter logs, and
    for booking_svc quick recovery and short participant deadlines."""
    env: dict[str, dict[str, str]] = {}
    for spec in SERVICES:
        extra = {f"{spec.env_prefix}{name}": value for name, value in COMMON_ENV.items()}
        if spec.module == "booking_svc":
            extra |= {f"{spec.env_prefix}{name}": value for name, value in BOOKING_ENV.items()}
        env[spec.module] = extra
    return env


def chaos_system(home: Path, *, echo: Callable[[str], None]) -> LocalSystem:
    """The embedded system on free ports under `home`, set up for a chaos run.

    notification_svc delivers to a JSON Lines file: its history is in memory
    only and does not survive the restarts, so the file is what shows that every
    CONFIRMED booking was notified.
    """
    env = chaos_env()
    prefix = "NOTIFICATION_SVC_"
    env["notification_svc"] |= {
        f"{prefix}SINKS": "jsonl",
        f"{prefix}JSONL_PATH": str(home.absolute() / SINK_FILE),
    }
    return LocalSystem(
        home,
        {spec.module: free_port() for spec in SERVICES},
        pg_port=free_port(),
        echo=echo,
        env=env,
    )


@dataclass(frozen=True)
class Settled:
    """Whether quiescence came, and when (seconds into the run; the timeout's end if not)."""

    reached: bool
    at: float


@dataclass
class Outcome:
    """What the async part of a run hands to the checker and the summary."""

    tally: Tally
    schedule: Schedule
    workload: WorkloadPlan
    # Seconds into the run: every rule cleared and everything running; clients finished.
    faults_stopped_at: float
    load_stopped_at: float
    settled: Settled
    bookings: list[booking_pb2.Booking]


@dataclass(frozen=True)
class Judgement:
    """The checker's report, and what the snapshot it judged still had in flight."""

    report: checker.Report
    live_sagas: int
    stuck_sagas: int
    in_flight_bookings: int
    sink_bad_lines: int


async def _list_bookings(
    stub: booking_pb2_grpc.BookingServiceAsyncStub, token: str
) -> list[booking_pb2.Booking]:
    found: list[booking_pb2.Booking] = []
    page = ""
    while True:
        reply = await stub.ListBookings(
            booking_pb2.ListBookingsRequest(page_size=checker.MAX_PAGE_SIZE, page_token=page),
            timeout=30,
            metadata=_bearer(token),
        )
        found.extend(reply.bookings)
        page = reply.next_page_token
        if not page:
            return found


async def _count_live_sagas(stub: booking_pb2_grpc.SagaAdminServiceAsyncStub, token: str) -> int:
    total = 0
    for status in LIVE_SAGA_STATUSES:
        page = ""
        while True:
            reply = await stub.ListSagas(
                booking_pb2.ListSagasRequest(
                    status=status, page_size=checker.MAX_PAGE_SIZE, page_token=page
                ),
                timeout=30,
                metadata=_bearer(token),
            )
            total += len(reply.sagas)
            page = reply.next_page_token
            if not page:
                break
    return total


class _Run:
    """One run's async part: setup, faults and load for the duration, then settling."""

    def __init__(
        self,
        system: LocalSystem,
        options: ChaosOptions,
        *,
        token: str,
        progress: Callable[[str], None],
        progress_every: float,
    ) -> None:
        self.system = system
        self.options = options
        self.token = token
        self.progress = progress
        self.progress_every = progress_every
        self.tally = Tally()
        self.schedule = make_schedule(options.seed, duration=options.duration, kinds=options.kinds)
        self.workload = make_workload(
            options.seed, concurrency=options.concurrency, duration=options.duration
        )
        self.phase = "setting up"
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()

    def address(self, module: str) -> str:
        return f"127.0.0.1:{self.system.ports[module]}"

    def channel(self, module: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address(module), options=CHANNEL_OPTIONS)

    async def _guard(self, job: Awaitable[None]) -> None:
        """Run a background job; its failure ends the run."""
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the run, which reports it
            if self.failure is None:
                self.failure = exc
            self.failed.set()

    async def _report(self) -> None:
        while True:
            self.progress(self._line())
            await asyncio.sleep(self.progress_every)

    def _line(self) -> str:
        elapsed = self.tally.elapsed()
        phase = "" if self.phase == "running" else self.phase
        return progress_line(
            self.tally, elapsed=elapsed, duration=self.options.duration, phase=phase
        )

    async def setup(self) -> tuple[list[Customer], list[tuple[str, EventPlan]]]:
        """Accounts with their deposits, and the events, before any fault."""
        async with (
            self.channel("account_svc") as accounts_channel,
            self.channel("event_svc") as events_channel,
        ):
            accounts = account_pb2_grpc.AccountServiceStub(accounts_channel)
            events = event_pb2_grpc.EventServiceStub(events_channel)
            limit = asyncio.Semaphore(max(4, self.options.concurrency))

            async def customer(number: int, balance: int) -> Customer:
                async with limit:
                    made = await accounts.CreateAccount(
                        account_pb2.CreateAccountRequest(
                            email=f"chaos-{self.options.seed}-{number}-{time.time_ns()}@example.com",
                            display_name=f"Chaos {number}",
                        ),
                        timeout=30,
                    )
                    await accounts.Deposit(
                        account_pb2.DepositRequest(
                            account_id=made.account.account_id,
                            amount_cents=balance,
                            idempotency_key=f"chaos-deposit-{made.account.account_id}",
                        ),
                        timeout=30,
                        metadata=_bearer(made.api_token),
                    )
                    return Customer(made.account.account_id, made.api_token)

            async def event(plan: EventPlan) -> tuple[str, EventPlan]:
                request = event_pb2.CreateEventRequest(
                    name=plan.name,
                    venue="Chaos Hall",
                    capacity=plan.capacity,
                    price_cents=plan.price_cents,
                )
                request.starts_at.FromDatetime(utcnow() + timedelta(days=30))
                made = await events.CreateEvent(request, timeout=30, metadata=_bearer(self.token))
                return made.event.event_id, plan

            customers = await asyncio.gather(
                *(customer(n, b) for n, b in enumerate(self.workload.balances))
            )
            made_events = [await event(plan) for plan in self.workload.events]
        return list(customers), made_events

    async def main(self) -> Outcome:
        reporter = asyncio.create_task(self._report())
        try:
            return await self._main()
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter

    async def _main(self) -> Outcome:
        customers, events = await self.setup()
        supervisor = Supervisor(self.system, self.tally, guard=self._guard)
        controls = {
            module: FaultControl(self.address(module), token=self.token) for module in MODULES
        }
        booking_channel = self.channel("booking_svc")
        background: list[asyncio.Task[None]] = []
        try:
            driver = FaultDriver(controls, self.tally)
            workload = Workload(
                booking_channel,
                customers=customers,
                events=events,
                seed=self.options.seed,
                tally=self.tally,
            )
            self.tally.started = time.monotonic()
            self.phase = "running"
            watcher = asyncio.create_task(self._guard(supervisor.watch()))
            background.append(watcher)
            faults = [
                asyncio.create_task(self._guard(job))
                for job in self._fault_jobs(supervisor, driver)
            ]
            background += faults
            clients = asyncio.create_task(self._guard(workload.run(self.options.concurrency)))
            background.append(clients)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.failed.wait(), timeout=self.options.duration)
            self._raise_failure()

            self.phase = "stopping faults"
            workload.stop.set()
            _, late = await asyncio.wait(faults, timeout=30) if faults else (set(), set())
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            self._raise_failure()
            await supervisor.ensure_all_up()
            await driver.clear_all()
            faults_stopped_at = self.tally.elapsed()
            if late:
                # Faults cut short by the end of the run ended only now.
                self.tally.fault_ended()

            self.phase = "letting the clients finish"
            done, _ = await asyncio.wait([clients], timeout=DRAIN_SECONDS)
            if not done:
                clients.cancel()
                await asyncio.gather(clients, return_exceptions=True)
            self._raise_failure()
            load_stopped_at = self.tally.elapsed()

            settled = await self._settle(booking_channel)
            self._raise_failure()
            stub = booking_pb2_grpc.BookingServiceStub(booking_channel)
            bookings = await _list_bookings(stub, self.token)
            return Outcome(
                self.tally,
                self.schedule,
                self.workload,
                faults_stopped_at=faults_stopped_at,
                load_stopped_at=load_stopped_at,
                settled=settled,
                bookings=bookings,
            )
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await booking_channel.close(None)
            for control in controls.values():
                await control.close()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            if isinstance(self.failure, ChaosError):
                raise self.failure
            raise ChaosError(f"the run failed: {self.failure!r}") from self.failure

    def _fault_jobs(self, supervisor: Supervisor, driver: FaultDriver) -> list[Any]:
        jobs: list[Any] = []
        by_module: dict[str, list[tuple[int, RuleWindow]]] = {}
        for index, window in enumerate(self.schedule.windows):
            by_module.setdefault(window.module, []).append((index, window))
        jobs += [driver.drive(module, windows) for module, windows in by_module.items()]
        if self.schedule.kills:
            jobs.append(self._kills(supervisor))
        if self.schedule.outage:
            jobs.append(self._outage(supervisor, self.schedule.outage))
        return jobs

    async def _kills(self, supervisor: Supervisor) -> None:
        for kill in self.schedule.kills:
            await _sleep_until(self.tally, kill.at)
            await supervisor.kill(kill.module, down=kill.down)

    async def _outage(self, supervisor: Supervisor, outage: PostgresOutage) -> None:
        await _sleep_until(self.tally, outage.at)
        await supervisor.postgres_outage(down=outage.down)

    async def _settle(self, channel: grpc.aio.Channel) -> Settled:
        """Wait until no saga runs and no booking is in flight, or the settle timeout."""
        sagas = booking_pb2_grpc.SagaAdminServiceStub(channel)
        bookings = booking_pb2_grpc.BookingServiceStub(channel)
        deadline = time.monotonic() + self.options.settle_timeout
        live = flying = -1
        while True:
            try:
                live = await _count_live_sagas(sagas, self.token)
                flying = -1
                if live == 0:
                    listed = await _list_bookings(bookings, self.token)
                    flying = sum(1 for b in listed if _status(b) in IN_FLIGHT_STATUSES)
                shown = "?" if flying < 0 else str(flying)
                self.phase = f"settling: {live} saga(s) running, {shown} booking(s) in flight"
            except grpc.aio.AioRpcError as err:
                self.phase = f"settling: booking_svc does not answer yet ({err.code().name})"
            if live == 0 and flying == 0:
                return Settled(True, self.tally.elapsed())
            if time.monotonic() > deadline:
                return Settled(False, self.tally.elapsed())
            await asyncio.sleep(0.5)


# Judging and summarising.


def sink_notifications(path: Path) -> tuple[list[checker.Notification], int]:
    """The notifications the jsonl sink delivered, and how many lines could not be read."""
    found: list[checker.Notification] = []
    bad = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return [], 0
    for line in lines:
        try:
            row = json.loads(line)
            created = datetime.fromisoformat(row["created_at"])
            found.append(
                checker.Notification(
                    notification_id=row["notification_id"],
                    account_id=row["account_id"],
                    booking_id=row["booking_id"],
                    kind=row["kind"],
                    created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
                )
            )
        except (ValueError, KeyError, TypeError):
            bad += 1
    return found, bad


def with_delivered(
    snapshot: checker.Snapshot, delivered: Sequence[checker.Notification]
) -> checker.Snapshot:
    """`snapshot` with every delivered notification, which the listing may have lost in a
    restart. The sink's record is complete, so no account's history counts as cut short."""
    seen = {n.notification_id for n in snapshot.notifications}
    extra = [n for n in delivered if n.notification_id not in seen]
    return replace(
        snapshot,
        notifications=[*snapshot.notifications, *extra],
        notifications_truncated=frozenset(),
    )


def failure_kind(reason: str) -> str:
    """Why a booking FAILED, in a word: sold_out, insufficient_funds, retries_spent or other."""
    lowered = reason.lower()
    if "sold out" in lowered:
        return "sold_out"
    if "insufficient funds" in lowered:
        return "insufficient_funds"
    if "attempts" in lowered:
        return "retries_spent"
    return "other"


def booking_outcomes(
    bookings: Iterable[booking_pb2.Booking],
) -> tuple[dict[str, int], dict[str, int]]:
    """Bookings by status, and FAILED ones by `failure_kind`."""
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for booking in bookings:
        status = _status(booking)
        statuses[status] += 1
        if status == "FAILED":
            reasons[failure_kind(booking.failure_reason)] += 1
    return {s: statuses[s] for s in OUTCOMES}, dict(sorted(reasons.items()))


class SummaryJson(TypedDict):
    ok: bool
    seed: int
    duration_seconds: float
    concurrency: int
    fault_kinds: list[str]
    schedule: dict[str, Any]
    workload: dict[str, Any]
    bookings: dict[str, Any]
    requests: dict[str, Any]
    faults: dict[str, Any]
    processes: dict[str, Any]
    quiescence: dict[str, Any]
    invariants: dict[str, Any]
    notes: list[str]
    home: str
    home_kept: bool


def passed(outcome: Outcome, judgement: Judgement) -> bool:
    """Every invariant holds, quiescence came, and the snapshot the checker judged had no
    saga running or stuck and no booking in flight."""
    left = judgement.live_sagas + judgement.stuck_sagas + judgement.in_flight_bookings
    return judgement.report.holds and outcome.settled.reached and left == 0


def summary_json(
    outcome: Outcome, *, options: ChaosOptions, judgement: Judgement, home: Path, home_kept: bool
) -> SummaryJson:
    """Everything a run found, for scripts; `summary_lines` prints it for people.

    `ok` as `passed` says.
    """
    tally = outcome.tally
    report = judgement.report
    statuses, reasons = booking_outcomes(outcome.bookings)
    settled = outcome.settled
    notes = [
        "invariant 6 is judged against the notifications delivered to notification_svc's"
        " jsonl sink, since its in-memory listing does not survive a restart"
    ]
    if judgement.sink_bad_lines:
        notes.append(f"{judgement.sink_bad_lines} line(s) of the jsonl sink could not be read")
    if tally.unexpected_exits:
        notes.append(
            f"{len(tally.unexpected_exits)} process(es) ended with an exit code no fault asked"
            " for; see processes.unexpected_exits"
        )
    errors: dict[str, dict[str, int]] = {}
    for (method, code), count in sorted(tally.client_errors.items()):
        errors.setdefault(method, {})[code] = count
    return SummaryJson(
        ok=passed(outcome, judgement),
        seed=options.seed,
        duration_seconds=options.duration,
        concurrency=options.concurrency,
        fault_kinds=ordered(options.kinds),
        schedule={
            "digest": outcome.schedule.digest(),
            "rule_windows": len(outcome.schedule.windows),
            "kills": len(outcome.schedule.kills),
            "postgres_outage": (
                {
                    "at_seconds": outcome.schedule.outage.at,
                    "down_seconds": outcome.schedule.outage.down,
                }
                if outcome.schedule.outage
                else None
            ),
            "planned": outcome.schedule.planned(),
        },
        workload={
            "accounts": len(outcome.workload.balances),
            "poor_accounts": sum(1 for b in outcome.workload.balances if b < RICH_BALANCE_CENTS),
            "events": [
                {"name": e.name, "capacity": e.capacity, "price_cents": e.price_cents}
                for e in outcome.workload.events
            ],
        },
        bookings={
            "total": len(outcome.bookings),
            "by_outcome": statuses,
            "failed_by_reason": reasons,
        },
        requests={
            "made": dict(sorted(tally.requests.items())),
            "replies": {
                "CreateBooking": dict(sorted(tally.booked.items())),
                "CancelBooking": dict(sorted(tally.cancelled.items())),
            },
            "client_errors": errors,
            "gave_up": dict(sorted(tally.gave_up.items())),
        },
        faults={
            "by_kind": tally.faults(),
            "by_module": tally.faults_by_module(),
            "rule_windows_applied": tally.windows_applied,
            "rule_windows_missed": tally.windows_missed,
        },
        processes={
            "crashes": dict(sorted(tally.crashes.items())),
            "kills": dict(sorted(tally.kills.items())),
            "kills_skipped": tally.kills_skipped,
            "restarts": dict(sorted(tally.restarts.items())),
            "downtime_seconds": {k: round(v, 1) for k, v in sorted(tally.downtime.items())},
            "failed_starts": dict(sorted(tally.failed_starts.items())),
            "unexpected_exits": tally.unexpected_exits,
            "postgres_restarts": tally.postgres_outages,
        },
        quiescence={
            "reached": settled.reached,
            "seconds_after_last_fault": round(settled.at - tally.last_fault_end, 1),
            "seconds_after_clients_stopped": round(settled.at - outcome.load_stopped_at, 1),
            "faults_stopped_at_seconds": round(outcome.faults_stopped_at, 1),
            "last_fault_end_seconds": round(tally.last_fault_end, 1),
            "timeout_seconds": options.settle_timeout,
            "sagas_left_running": judgement.live_sagas,
            "sagas_stuck": judgement.stuck_sagas,
            "bookings_left_in_flight": judgement.in_flight_bookings,
        },
        invariants=checker.report_json(report),
        notes=notes,
        home=str(home),
        home_kept=home_kept,
    )


def summary_lines(summary: SummaryJson) -> list[str]:
    """The summary for people; the invariants as `bookingctl check` prints them."""
    schedule = summary["schedule"]
    bookings = summary["bookings"]
    faults = summary["faults"]
    processes = summary["processes"]
    quiet = summary["quiescence"]
    outage = schedule["postgres_outage"]
    kinds = ", ".join(summary["fault_kinds"]) or "none"
    lines = [
        f"chaos: seed {summary['seed']}, {format_seconds(summary['duration_seconds'])} at"
        f" concurrency {summary['concurrency']}, faults: {kinds}",
        f"schedule {schedule['digest']}: {schedule['rule_windows']} rule windows,"
        f" {schedule['kills']} kills"
        + (
            f", PostgreSQL down at {format_seconds(outage['at_seconds'])} for"
            f" {outage['down_seconds']:g}s"
            if outage
            else ""
        ),
        f"bookings: {bookings['total']} ({_count_text(bookings['by_outcome'])});"
        f" failed by reason: {_count_text(bookings['failed_by_reason'])}",
    ]
    requests = summary["requests"]
    for method, made in requests["made"].items():
        errors = requests["client_errors"].get(method, {})
        gave_up = requests["gave_up"].get(method, 0)
        lines.append(
            f"  {method}: {made} requests, errors {_count_text(errors)}"
            + (f", gave up on {gave_up}" if gave_up else "")
        )
    lines += [
        f"faults: {sum(faults['by_kind'].values())} ({_count_text(faults['by_kind'])});"
        f" rule windows applied {faults['rule_windows_applied']},"
        f" missed {faults['rule_windows_missed']}",
        f"processes: crashed {_count_text(processes['crashes'])}; killed"
        f" {_count_text(processes['kills'])}; restarted {sum(processes['restarts'].values())};"
        f" PostgreSQL restarts {processes['postgres_restarts']};"
        f" unexpected exits {len(processes['unexpected_exits'])}",
        f"  down for: {_seconds_text(processes['downtime_seconds'])}",
    ]
    for exit_ in processes["unexpected_exits"]:
        lines.append(
            f"  ! {exit_['module']} exited with code {exit_['exit_code']} at"
            f" {format_seconds(exit_['at_seconds'])}"
        )
    left = (
        f"{quiet['sagas_left_running']} saga(s) running, {quiet['sagas_stuck']} stuck,"
        f" {quiet['bookings_left_in_flight']} booking(s) in flight"
    )
    if quiet["reached"]:
        lines.append(
            f"quiescence: {quiet['seconds_after_last_fault']:g}s after the last fault"
            f" ({quiet['seconds_after_clients_stopped']:g}s after the clients stopped); left: {left}"
        )
    else:
        lines.append(
            f"quiescence: NOT reached within {format_seconds(quiet['timeout_seconds'])}; left: {left}"
        )
    lines.append("invariants:")
    report = summary["invariants"]
    for result in report["invariants"]:
        examined = ", ".join(f"{n} {what}" for what, n in result["examined"].items())
        verdict = "ok" if result["holds"] else f"VIOLATED ({len(result['violations'])})"
        lines.append(f"  [{verdict}] {result['invariant']}. {result['title']}: examined {examined}")
        for violation in result["violations"][:20]:
            lines.append(f"      - {violation['message']} [ids: {' '.join(violation['ids'])}]")
        if len(result["violations"]) > 20:
            lines.append(f"      ... and {len(result['violations']) - 20} more (see --json)")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    if summary["home_kept"]:
        lines.append(f"logs: {summary['home']}/logs")
    lines.append(
        "result: PASS, every invariant holds and nothing is left running"
        if summary["ok"]
        else "result: FAIL"
    )
    return lines


def _seconds_text(seconds: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {format_seconds(n)}" for name, n in seconds.items()) or "nothing"


def judge(system: LocalSystem, token: str) -> Judgement:
    """The checker's report on the settled system, notifications taken from the sink."""
    reader = checker.Reader(
        checker.Addresses.on_localhost(system.ports),
        token=token,
        timeout=60,
    )
    try:
        snapshot = checker.read_snapshot(reader, now=utcnow)
    finally:
        reader.close()
    delivered, bad = sink_notifications(system.home / SINK_FILE)
    # Right after quiescence: anything still in flight is a violation, not young.
    report = checker.check(with_delivered(snapshot, delivered), saga_grace_seconds=0)
    return Judgement(
        report,
        live_sagas=sum(1 for s in snapshot.sagas if s.status in checker.LIVE_SAGA),
        stuck_sagas=sum(1 for s in snapshot.sagas if s.status == "STUCK"),
        in_flight_bookings=sum(1 for b in snapshot.bookings if b.status in checker.IN_FLIGHT),
        sink_bad_lines=bad,
    )


def run(
    options: ChaosOptions,
    *,
    home: Path | None,
    echo: Callable[[str], None],
    progress: Callable[[str], None],
    progress_every: float,
) -> SummaryJson:
    """A whole chaos run: start a system, load and fault it, settle, check, stop it.

    The system is stopped whatever happens: an error, Ctrl-C, or SIGTERM (taken as
    Ctrl-C while the run lasts). A temporary home is removed after a run that passed
    and kept, for its logs, after one that did not.
    """
    temporary = home is None
    where = Path(tempfile.mkdtemp(prefix="bookingctl-chaos-")) if home is None else home
    system = chaos_system(where, echo=echo)
    ok = False
    with _sigterm_as_interrupt():
        try:
            try:
                system.start()
            except UpError as err:
                raise ChaosError(f"the system did not start: {err}") from None
            token = system.admin_token()
            runner = _Run(
                system, options, token=token, progress=progress, progress_every=progress_every
            )
            try:
                outcome = asyncio.run(runner.main())
                judgement = judge(system, token)
            except grpc.RpcError as err:
                raise ChaosError(f"the services could not be read: {err}") from None
            ok = passed(outcome, judgement)
            return summary_json(
                outcome,
                options=options,
                judgement=judgement,
                home=where,
                home_kept=not (temporary and ok),
            )
        finally:
            echo("stopping the system")
            system.stop()
            if temporary and ok:
                shutil.rmtree(where, ignore_errors=True)
            elif temporary:
                echo(f"kept {where} for its logs")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so a terminated run stops its system."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
