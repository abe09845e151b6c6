"""The bench's runs: setup, load at a given concurrency, and the readings around each run.

Everything here drives a `Target` through `BenchClient` in one event loop;
blocking work (PostgreSQL statistics, killing and restarting booking_svc)
runs in threads so that the load never stalls. What comes out are the
measures that `report` turns into the JSON document.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc

from eventbooking.bench.client import BenchClient, Booked, Fixtures, lease_seconds
from eventbooking.bench.report import (
    ContentionMeasure,
    Context,
    RecoveryMeasure,
    RunMeasure,
    build_report,
)
from eventbooking.bench.stats import PgStats, Sample, idle_rates, percentile, progress_line
from eventbooking.bench.target import Target
from eventbooking.booking.v1 import booking_pb2

MODES = ("saga", "direct")
SCENARIOS = ("throughput", "contention", "recovery")
# PostgreSQL (15+) backends publish their statistics when idle, at most once a second, and
# one that meets a lock while doing so tries again after PGSTAT_IDLE_INTERVAL (10 s).
STATS_SETTLE_SECONDS = 11.0
QUIET_WITHIN_SECONDS = 120.0
# How long the idle system is watched to learn what its background work costs in transactions.
IDLE_PROBE_SECONDS = 10.0
# Bookings whose history is read when the log's row count cannot come from the database.
HISTORY_SAMPLE = 50
TTY_REFRESH_SECONDS = 0.25
PLAIN_STEPS = 10


@dataclass(frozen=True)
class BenchConfig:
    """What to run; the defaults are `bookingctl bench`'s."""

    bookings: int = 1000
    concurrency: tuple[int, ...] = (32,)
    modes: tuple[str, ...] = MODES
    scenarios: tuple[str, ...] = ("throughput",)
    events: int = 10
    # At most the rate limiter's burst (40), so no account is ever throttled.
    bookings_per_account: int = 20
    price_cents: int = 1000
    warmup: int = 20
    contention_bookings: int = 1000
    contention_seats: int = 100
    recovery_bookings: int = 200
    timeout: float = 60.0

    def as_json(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["concurrency"] = list(self.concurrency)
        shown["modes"] = list(self.modes)
        shown["scenarios"] = list(self.scenarios)
        return shown


@dataclass
class Measured:
    runs: list[RunMeasure] = field(default_factory=list)
    contention: ContentionMeasure | None = None
    recovery: RecoveryMeasure | None = None
    stuck_sagas: int | None = None
    peak_rss: Mapping[str, Any] | None = None


class Progress:
    """A single updating line on a terminal; a line every tenth of the way otherwise."""

    def __init__(self, label: str, total: int, *, out: TextIO, tty: bool) -> None:
        self.label = label
        self.total = total
        self._out = out
        self._tty = tty
        self._start = time.monotonic()
        self._done = 0
        self._outcomes: dict[str, int] = {}
        self._latencies: list[float] = []
        self._next_step = 1
        self._task: asyncio.Task[None] | None = None

    def line(self) -> str:
        recent = self._latencies[-500:]
        p50 = percentile(recent, 50)
        return progress_line(
            self.label,
            done=self._done,
            total=self.total,
            elapsed=time.monotonic() - self._start,
            outcomes=self._outcomes,
            p50_ms=None if p50 is None else p50 * 1000,
        )

    def add(self, sample: Sample) -> None:
        self._done += 1
        self._latencies.append(sample.latency_s)
        self._outcomes[sample.outcome] = self._outcomes.get(sample.outcome, 0) + 1
        if (
            not self._tty
            and self.total
            and self._done * PLAIN_STEPS >= self._next_step * self.total
        ):
            self._next_step = self._done * PLAIN_STEPS // self.total + 1
            print(self.line(), file=self._out, flush=True)

    async def _refresh(self) -> None:
        while True:
            self._out.write("\r" + self.line() + "\x1b[K")
            self._out.flush()
            await asyncio.sleep(TTY_REFRESH_SECONDS)

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self._tty:
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            self._out.write("\r" + self.line() + "\x1b[K\n")
            self._out.flush()


Job = Callable[[int], Awaitable[Sample]]


async def drive(total: int, concurrency: int, job: Job, progress: Progress) -> list[Sample]:
    """Run job(0..total-1) with `concurrency` in flight; samples in the order they finished."""
    indexes = iter(range(total))
    samples: list[Sample] = []

    async def worker() -> None:
        for index in indexes:
            sample = await job(index)
            samples.append(sample)
            progress.add(sample)

    with progress:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, total))))
    return samples


def _sample(started: float, index: int, booked: Booked) -> Sample:
    return Sample(
        latency_s=time.perf_counter() - started,
        outcome=booked.outcome,
        account=index,
        booking_id=booked.booking_id,
        amount_cents=booked.amount_cents,
        detail=booked.detail,
    )


class Bench:
    """The scenarios of one `bookingctl bench` against one target."""

    def __init__(
        self,
        target: Target,
        config: BenchConfig,
        client: BenchClient,
        *,
        out: TextIO,
        tty: bool,
    ) -> None:
        self.target = target
        self.config = config
        self.client = client
        self._out = out
        self._tty = tty

    def echo(self, message: str) -> None:
        print(message, file=self._out, flush=True)

    def _job(self, fixtures: Fixtures, mode: str, *, wait: bool = True) -> Job:
        async def job(index: int) -> Sample:
            account_index, account, event_id = fixtures.pick(index)
            started = time.perf_counter()
            try:
                if mode == "direct":
                    booked = await self.client.book_direct(account, event_id)
                else:
                    booked = await self.client.book(account, event_id, wait=wait)
            except grpc.aio.AioRpcError as err:
                booked = Booked(f"ERROR:{err.code().name}", detail=err.details() or "")
            return _sample(started, account_index, booked)

        return job

    async def _fixtures(
        self, bookings: int, *, events: int, seats_per_event: int | None = None
    ) -> Fixtures:
        return await self.client.fixtures(
            bookings=bookings,
            per_account=self.config.bookings_per_account,
            events=events,
            price_cents=self.config.price_cents,
            seats_per_event=seats_per_event,
        )

    def _progress(self, label: str, total: int) -> Progress:
        return Progress(label, total, out=self._out, tty=self._tty)

    async def _pg_stats(self) -> PgStats | None:
        return await asyncio.to_thread(self.target.pg_stats)

    async def warm_up(self) -> None:
        """A few untimed bookings in each mode: connections, caches and JIT-less code paths."""
        count = self.config.warmup
        if count <= 0:
            return
        for mode in self.config.modes:
            fixtures = await self._fixtures(count, events=1)
            job = self._job(fixtures, mode)
            await drive(count, min(8, count), job, self._progress(f"warm-up {mode}", count))
        await self.client.wait_quiet(within=QUIET_WITHIN_SECONDS)

    async def settle(self) -> PgStats | None:
        """PostgreSQL's counters once what happened so far has reached them; None (at once)
        when the database is not known."""
        if self.target.pg_url is None:
            return None
        await asyncio.sleep(STATS_SETTLE_SECONDS)
        return await self._pg_stats()

    async def throughputs(self) -> list[RunMeasure]:
        """Every throughput run: all accounts and events first, then the runs back to back,
        each run's closing reading of PostgreSQL being the next one's opening reading."""
        config = self.config
        plan = [(mode, c) for c in config.concurrency for mode in config.modes]
        self.echo(f"making accounts and events for {len(plan)} runs")
        fixtures = [await self._fixtures(config.bookings, events=config.events) for _ in plan]
        await self.warm_up()
        pg = await self.settle()
        idle = None
        if pg is not None:
            self.echo(f"watching the idle system for {IDLE_PROBE_SECONDS:g} s")
            await asyncio.sleep(IDLE_PROBE_SECONDS)
            idle_end = await self._pg_stats()
            if idle_end is not None:
                idle, pg = idle_rates(pg, idle_end), idle_end
        runs = []
        for (mode, concurrency), made in zip(plan, fixtures, strict=True):
            run = await self.throughput(mode, concurrency, made, pg_before=pg, idle=idle)
            runs.append(run)
            pg = run.pg_after
        return runs

    async def throughput(
        self,
        mode: str,
        concurrency: int,
        fixtures: Fixtures,
        *,
        pg_before: PgStats | None,
        idle: Mapping[str, float] | None = None,
    ) -> RunMeasure:
        n = self.config.bookings
        cpu_before = self.target.cpu()
        started = time.monotonic()
        progress = self._progress(f"throughput {mode} c={concurrency}", n)
        samples = await drive(n, concurrency, self._job(fixtures, mode), progress)
        load_s = time.monotonic() - started
        quiet = await self.client.wait_quiet(within=QUIET_WITHIN_SECONDS)
        window_s = time.monotonic() - started
        cpu_after = self.target.cpu()
        peak_rss = self.target.peak_rss()
        pg_after = await self.settle()
        history = None
        if mode == "saga" and (pg_after is None or pg_after.log_rows is None):
            history = await self._history_rows(fixtures, samples)
        return RunMeasure(
            mode=mode,
            concurrency=concurrency,
            samples=samples,
            load_s=load_s,
            window_s=window_s,
            quiet=quiet,
            cpu_before=cpu_before,
            cpu_after=cpu_after,
            pg_before=pg_before,
            pg_after=pg_after,
            history=history,
            peak_rss=peak_rss,
            accounts=len(fixtures.accounts),
            events=len(fixtures.events),
            idle_xacts_per_s=idle,
        )

    async def _history_rows(self, fixtures: Fixtures, samples: list[Sample]) -> tuple[int, int]:
        """Log rows of a sample of the run's bookings, through GetBookingHistory."""
        chosen = [s for s in samples if s.booking_id][:HISTORY_SAMPLE]
        rows = await asyncio.gather(
            *(self.client.history_rows(fixtures.accounts[s.account], s.booking_id) for s in chosen)
        )
        return sum(rows), len(chosen)

    async def contention(self) -> ContentionMeasure:
        n, seats = self.config.contention_bookings, self.config.contention_seats
        fixtures = await self._fixtures(n, events=1, seats_per_event=seats)
        cpu_before = self.target.cpu()
        started = time.monotonic()
        progress = self._progress(f"contention {n} for {seats} seats", n)
        samples = await drive(n, n, self._job(fixtures, "saga"), progress)
        load_s = time.monotonic() - started
        quiet = await self.client.wait_quiet(within=QUIET_WITHIN_SECONDS)
        window_s = time.monotonic() - started
        cpu_after = self.target.cpu()
        event = await self.client.event(fixtures.events[0])
        net = await asyncio.gather(*(self.client.net_charged(a) for a in fixtures.accounts))
        return ContentionMeasure(
            seats=seats,
            concurrency=n,
            samples=samples,
            load_s=load_s,
            quiet=quiet,
            capacity=event.capacity,
            sold=event.sold_seats,
            held=event.held_seats,
            available=event.available_seats,
            net_charged=net,
            window_s=window_s,
            cpu_before=cpu_before,
            cpu_after=cpu_after,
        )

    async def recovery(self) -> RecoveryMeasure:
        n = self.config.recovery_bookings
        fixtures = await self._fixtures(n, events=self.config.events)
        submitted = await drive(
            n,
            n,
            self._job(fixtures, "saga", wait=False),
            self._progress(f"recovery: submit {n}", n),
        )
        try:
            running: int | None = await self.client.count_sagas(booking_pb2.SAGA_STATUS_RUNNING)
        except grpc.aio.AioRpcError:
            running = None
        killed = time.monotonic()
        await asyncio.to_thread(self.target.kill_booking)
        self.echo(f"recovery: booking_svc killed with SIGKILL, {running} sagas running; restarting")
        await asyncio.to_thread(self.target.restart_booking)
        healthy = time.monotonic() - killed
        lease = lease_seconds()
        deadline = time.monotonic() + self.config.timeout + 3 * lease
        accepted = [s for s in submitted if s.booking_id]
        final = await self.client.poll_final(
            [(fixtures.accounts[s.account], s.booking_id) for s in accepted], deadline=deadline
        )
        bookings_final = time.monotonic() - killed
        all_final = all(status != "PENDING" for status in final.values())
        quiet = await self.client.wait_quiet(within=max(1.0, deadline - time.monotonic()))
        sagas_final = time.monotonic() - killed
        outcomes: dict[str, int] = {}
        for status in final.values():
            outcomes[status] = outcomes.get(status, 0) + 1
        submit_outcomes: dict[str, int] = {}
        for s in submitted:
            submit_outcomes[s.outcome] = submit_outcomes.get(s.outcome, 0) + 1
        return RecoveryMeasure(
            bookings=n,
            submitted=submit_outcomes,
            running_at_kill=running,
            kill_to_healthy_s=healthy,
            kill_to_bookings_final_s=bookings_final if all_final else None,
            kill_to_final_s=sagas_final if all_final and quiet else None,
            final=outcomes,
            quiet=quiet,
            lease_s=lease,
        )

    async def run(self) -> Measured:
        measured = Measured()
        config = self.config
        if "throughput" in config.scenarios:
            measured.runs = await self.throughputs()
        if "contention" in config.scenarios:
            measured.contention = await self.contention()
        if "recovery" in config.scenarios:
            measured.recovery = await self.recovery()
        measured.stuck_sagas = await self.client.count_sagas(booking_pb2.SAGA_STATUS_STUCK)
        measured.peak_rss = self.target.peak_rss()
        return measured


async def measure(target: Target, config: BenchConfig, *, out: TextIO, tty: bool) -> Measured:
    """Run every scenario of `config` against `target`."""
    client = BenchClient(
        target.addresses,
        admin_token=target.admin_token,
        service_credential=target.service_credential,
        credentials=target.credentials,
        timeout=config.timeout,
    )
    try:
        return await Bench(target, config, client, out=out, tty=tty).run()
    finally:
        await client.close()


def _system_json(target: Target, *, tracing: bool) -> dict[str, Any]:
    return {
        "kind": target.kind,
        "addresses": dict(target.addresses),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tracing": tracing,
        "otlp_endpoint": target.otlp_endpoint,
        "pg_stats": target.pg_url is not None,
        "local_processes": target.embedded,
        "lease_s": lease_seconds(),
        "home": str(target.home) if target.home else None,
        "home_kept": target.keep_home,
    }


NOTES = (
    "CPU of 'bench' is the bench's own process, which shares the machine with the system:"
    " in direct mode it makes four calls per booking, in saga mode one (more if it polls)",
    "CPU figures cover each run's window: first request to no saga running",
    "database figures cover the run and the wait for PostgreSQL's statistics to settle;"
    " db_xacts_per_booking leaves out what the idle system does in that time"
    " (db_idle_xacts_per_s), db_xacts_per_booking_raw does not",
)
RECOVERY_NOTE = (
    "the restarted booking_svc keeps its instance id (host:port), so it takes its own sagas"
    " back at start rather than after their lease runs out"
)


def run_bench(
    config: BenchConfig,
    *,
    target: Callable[[], contextlib.AbstractContextManager[Target]],
    tracing: bool,
    out: TextIO,
    tty: bool,
) -> dict[str, Any]:
    """Run `config` against the target that `target()` provides, and build the report.

    The target is entered and left here, so an embedded system is stopped
    (and its spans counted) before the report is made.
    """
    started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    started = time.monotonic()
    with target() as system:
        measured = asyncio.run(measure(system, config, out=out, tty=tty))
        system_json = _system_json(system, tracing=tracing)
    notes = [*NOTES, *([RECOVERY_NOTE] if measured.recovery else [])]
    ctx = Context(
        config=config.as_json(),
        system=system_json,
        started_at=started_at,
        duration_s=time.monotonic() - started,
        tracing=tracing,
        spans=system.span_stats(),
        peak_rss=measured.peak_rss,
        stuck_sagas=measured.stuck_sagas,
        notes=notes,
    )
    return build_report(
        ctx, runs=measured.runs, contention=measured.contention, recovery=measured.recovery
    )
