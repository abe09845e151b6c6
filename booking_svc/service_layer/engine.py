"""The saga engine: runs any saga definition from its log, one guarded transaction a transition.

A saga runs in a task of its own. Each turn of its loop is

1. plan the next move from the definition and the log (`domain.planner.plan`);
2. write, in one transaction guarded by owner and version, the row that
   recorded the last call, any status change the plan makes, and the
   STARTED row of the next call (so a step costs one transaction, not two);
3. make that call, under the step's named tenacity policy, with a deadline.

The STARTED row is committed before the participant is called: a call that
timed out may have taken effect, and the log says so. Every call carries a
key derived from saga id and step (`domain.saga.call_key`), so repeating it
after a crash or a lost reply applies it once.

A replica whose lease was taken over gets `LeaseLost` at its next write and
stops; one that meets an unexpected error logs it with the saga id, and after
a few such errors in a row parks the saga STUCK for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from tenacity import RetryCallState, stop_after_attempt

from booking_svc.adapters.participants import ParticipantError, Participants
from booking_svc.domain.log import OPERATOR, LogEntry, Progress, advance, read_log
from booking_svc.domain.model import Booking, LeaseLost, LogRecord, SagaInstance
from booking_svc.domain.planner import (
    Compensated,
    Complete,
    RunAction,
    RunCompensation,
    StartCompensating,
    Stuck,
    next_move,
)
from booking_svc.domain.saga import (
    DEFINITIONS,
    InvalidDefinition,
    RetryKind,
    RetryPolicy,
    SagaDefinition,
    Step,
)
from booking_svc.domain.states import (
    BookingStatus,
    SagaStatus,
    StepEvent,
    StepPhase,
    transition,
)
from booking_svc.service_layer import crash as crash_points
from booking_svc.service_layer import observe
from booking_svc.service_layer.calls import Call, call_for
from booking_svc.service_layer.changes import BookingChanges
from booking_svc.service_layer.unit_of_work import Journal, UnitOfWork, UowJournal
from eventbooking import db, logs, retry, telemetry
from eventbooking.clock import Clock
from eventbooking.retry import Sleep

log = logging.getLogger(__name__)

T = TypeVar("T")

CallMove = RunAction | RunCompensation
# The statuses a run ends in: counted as finished by the metrics.
_FINISHED = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK})


@dataclass
class Run:
    """A saga this process runs: its row and log as of the last write it made."""

    definition: SagaDefinition
    saga: SagaInstance
    booking: Booking
    # The booking saga's id names the reservation and the charge, in either saga.
    booking_saga_id: uuid.UUID
    entries: list[LogEntry]
    # The saga span opened when a new saga was created, so its first row names it.
    span: trace.Span | None = None
    # The tracks of the first `_read` entries, so planning reads each row once, not every time.
    _tracks: Progress | None = field(default=None, init=False, repr=False, compare=False)
    _read: int = field(default=0, init=False, repr=False, compare=False)
    # Each call this run made, by step and phase, with the booking fields it was built from.
    calls: dict[tuple[str, StepPhase], tuple[tuple[object, ...], Call]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def saga_id(self) -> uuid.UUID:
        return self.saga.saga_id

    @cached_property
    def saga_id_text(self) -> str:
        """str(saga_id), for span attributes and log fields on every step."""
        return str(self.saga.saga_id)

    @cached_property
    def booking_id_text(self) -> str:
        return str(self.booking.booking_id)

    def record(self, record: LogRecord) -> None:
        """Add a committed row to what this run knows of its log."""
        self.entries.append(numbered(self.entries, self.saga_id, record))

    def extend(self, entries: Sequence[LogEntry], *, tracks: Progress | None) -> None:
        """Add committed rows numbered by `numbered`; `tracks`, if read, are those of the log
        up to and including them."""
        caught_up = self._tracks is not None and self._read == len(self.entries)
        self.entries.extend(entries)
        if tracks is not None and caught_up:
            self._tracks, self._read = tracks, len(self.entries)

    def progress(self) -> Progress:
        """The tracks of every recorded row; LogMismatch, as `read_log`, if one is wrong."""
        if self._tracks is None:
            self._tracks = read_log(self.definition, self.entries)
            self._read = len(self.entries)
        # The rows recorded since the last call: numbered in order, all of this saga.
        while self._read < len(self.entries):
            self._tracks = advance(self._tracks, self.definition, self.entries[self._read])
            self._read += 1
        return self._tracks


def numbered(entries: Sequence[LogEntry], saga_id: uuid.UUID, record: LogRecord) -> LogEntry:
    """`record` as the planner reads it, numbered after `entries`.

    The database numbers rows from one sequence for all sagas; the planner
    only needs their order, so a run numbers the rows it knows itself.
    """
    return LogEntry(
        seq=entries[-1].seq + 1 if entries else 1,
        saga_id=saga_id,
        step=record.step,
        phase=record.phase,
        event=record.event,
        attempt=record.attempt,
        code=record.code,
        message=record.message,
        at=record.at,
    )


@dataclass(frozen=True)
class Outcome:
    """What a call left behind: its last row, and a note when its policy gave up."""

    rows: Sequence[LogRecord] = ()
    gave_up: str | None = None
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """One transaction's worth of changes, decided before it is written."""

    rows: list[LogRecord]
    # The rows as the planner reads them, numbered after the run's, and the run's tracks
    # with them when the plan read them (not when the saga gave up).
    entries: list[LogEntry]
    tracks: Progress | None
    status: SagaStatus
    current_step: str
    move: CallMove | None
    note: str | None = None
    booking_status: BookingStatus | None = None
    amount_cents: int | None = None
    failure_reason: str | None = None
    # A booking saga that finished after its booking was cancelled hands over to this
    # cancel saga, whose first STARTED row is written in the same transaction.
    cancel_saga: tuple[Run, LogRecord] | None = None


class SagaEngine:
    """Runs sagas in tasks, renews their leases, and claims those whose owners went away."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        participants: Participants,
        *,
        owner: str,
        clock: Clock,
        lease: timedelta,
        hold_seconds: int,
        changes: BookingChanges,
        definitions: Mapping[str, SagaDefinition] = DEFINITIONS,
        crash: crash_points.Crash = crash_points.never,
        sleep: Sleep = asyncio.sleep,
        max_running: int = 1000,
        claim_batch: int = 100,
        park_after_errors: int = 3,
        journal: Journal | None = None,
    ) -> None:
        self._uow = uow
        # The hot path: creating a booking's saga and each transition after a reply.
        self.journal: Journal = journal or UowJournal(uow)
        self._participants = participants
        self.owner = owner
        self._clock = clock
        self.lease = lease
        self._hold_seconds = hold_seconds
        self._changes = changes
        self._definitions = definitions
        self._crash = crash
        self._sleep = sleep
        self._max_running = max_running
        self._claim_batch = claim_batch
        self._park_after_errors = park_after_errors
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._errors: dict[uuid.UUID, int] = {}
        self._stopping = False

    def started(
        self, run: Run, move: CallMove, *, at: datetime, booking: Booking | None = None
    ) -> LogRecord:
        """The STARTED row that opens attempt `move.attempt` of a call.

        `booking` is the run's booking as the call will see it, if it is about to change.
        """
        trace_id, span_id = telemetry.current_ids()
        return LogRecord(
            trace_id=trace_id,
            span_id=span_id,
            step=move.step.name,
            phase=_phase(move),
            event=StepEvent.STARTED,
            attempt=move.attempt,
            # A copy: the call's own summary is reused by its later attempts.
            request_summary=dict(self._call(run, move, booking or run.booking).summary),
            at=at,
        )

    def new_cancel_saga(
        self, booking: Booking, *, booking_saga_id: uuid.UUID, now: datetime
    ) -> tuple[Run, RunAction, LogRecord]:
        """A cancel saga for a CANCELLING booking, leased to this process, and its first row."""
        definition = self.definition("cancel")
        saga = SagaInstance(
            saga_id=uuid.uuid4(),
            kind=definition.kind,
            booking_id=booking.booking_id,
            status=SagaStatus.RUNNING,
            current_step=definition.steps[0].name,
            owner=self.owner,
            lease_expires_at=now + self.lease,
            trace_context=telemetry.inject(),
            created_at=now,
            updated_at=now,
        )
        run = Run(definition, saga, booking, booking_saga_id, entries=[])
        move = RunAction(definition.steps[0], 1)
        first = self.first_row(run, move, at=now)
        run.record(first)
        return run, move, first

    def first_row(self, run: Run, move: RunAction, *, at: datetime) -> LogRecord:
        """A new saga's first STARTED row, written under the saga span it opens here.

        The span ends with the saga's run; a saga whose creation is rolled
        back drops it unended, so it is never exported.
        """
        run.span = self.open_span(run, resumed=False)
        with trace.use_span(run.span, end_on_exit=False):
            return self.started(run, move, at=at)

    def open_span(self, run: Run, *, resumed: bool) -> trace.Span:
        """The span of one run of a saga, a child of the request that started the saga.

        A resumed run links to the span that wrote the saga's last row: the
        interrupted run's saga span, or the step it was in.
        """
        last = run.entries[-1] if run.entries else None
        return observe.tracer.start_span(
            f"saga {run.definition.kind}",
            context=telemetry.extract(run.saga.trace_context),
            links=observe.link_to(last.trace_id, last.span_id) if resumed and last else [],
            attributes={
                "saga.id": run.saga_id_text,
                "booking.id": run.booking_id_text,
                "saga.kind": run.definition.kind,
                "saga.resumed": resumed,
            },
        )

    def _call(self, run: Run, move: CallMove, booking: Booking) -> Call:
        """The call `move` makes with `booking`: built once a run, for its STARTED rows and
        its invocations, and again only if a booking field the call sends has changed."""
        step: Step = move.step
        key = (step.name, _phase(move))
        sent = _call_fields(booking)
        cached = run.calls.get(key)
        if cached is not None and cached[0] == sent:
            return cached[1]
        operation = step.action if isinstance(move, RunAction) else step.compensation
        assert operation is not None, "the planner compensates only steps that have a compensation"
        call = call_for(
            operation,
            kind=run.definition.kind,
            step_name=step.name,
            saga_id=run.saga_id,
            booking_saga_id=run.booking_saga_id,
            booking=booking,
            hold_seconds=self._hold_seconds,
        )
        run.calls[key] = (sent, call)
        return call

    def definition(self, kind: str) -> SagaDefinition:
        """The definition this engine runs for sagas of `kind`."""
        try:
            return self._definitions[kind]
        except KeyError:
            raise InvalidDefinition(f"no saga definition of kind {kind!r}") from None

    @property
    def running(self) -> frozenset[uuid.UUID]:
        """The sagas this process is running now."""
        return frozenset(self._tasks)

    def is_running(self, saga_id: uuid.UUID) -> bool:
        """Whether this process is running `saga_id` now."""
        return saga_id in self._tasks

    def launch(self, run: Run, move: CallMove | None = None) -> None:
        """Run `run` in a task; `move` is a call whose STARTED row is already committed."""
        if self._stopping or run.saga_id in self._tasks:
            return
        if move is not None:
            observe.SAGAS_STARTED.labels(run.definition.kind).inc()
        task = asyncio.create_task(self._drive(run, move), name=f"saga {run.saga_id}")
        self._tasks[run.saga_id] = task
        task.add_done_callback(lambda done: self._forget(run.saga_id, done))

    def _forget(self, saga_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if self._tasks.get(saga_id) is task:
            del self._tasks[saga_id]

    async def wait_idle(self) -> None:
        """Wait until no saga is running here; for tests and for a clean stop."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # Recovery and leases.

    async def recover(self, *, include_own: bool = False) -> int:
        """Claim live sagas whose lease ran out (and, with `include_own`, our own) and run them."""
        claimed_total = 0
        while not self._stopping:
            room = min(self._claim_batch, self._max_running - len(self._tasks))
            if room <= 0:
                break
            now = self._clock()
            async with self._uow() as uow:
                claimed = await uow.sagas.claim(
                    self.owner,
                    now=now,
                    lease_until=now + self.lease,
                    limit=room,
                    include_own=include_own,
                    exclude=self.running,
                )
                await uow.commit()
            for saga in claimed:
                log.info(
                    "saga claimed",
                    extra={"saga_id": str(saga.saga_id), "previous_owner": saga.owner},
                )
                self.resume(saga.saga_id, version=saga.version)
            claimed_total += len(claimed)
            if len(claimed) < room:
                break
        return claimed_total

    def resume(self, saga_id: uuid.UUID, *, version: int | None = None) -> None:
        """Run a saga this process was just given (at `version`, if known), from its log."""
        if self._stopping or saga_id in self._tasks:
            return
        task = asyncio.create_task(self._resume(saga_id, version), name=f"saga {saga_id}")
        self._tasks[saga_id] = task
        task.add_done_callback(lambda done: self._forget(saga_id, done))

    async def recover_forever(self, *, interval: float) -> None:
        """On start take our own sagas back at once, then claim expired ones every `interval`."""
        include_own = True
        while True:
            try:
                await self.recover(include_own=include_own)
                include_own = False
                await self._measure_oldest()
            except Exception as exc:
                if not db.is_outage(exc):
                    raise
                log.warning("recovery could not reach the database; trying again")
            await asyncio.sleep(interval)

    async def _measure_oldest(self) -> None:
        async with self._uow() as uow:
            oldest = await uow.sagas.oldest_live_start()
        age = (self._clock() - oldest).total_seconds() if oldest else 0.0
        observe.OLDEST_RUNNING.set(max(0.0, age))

    async def renew_leases(self) -> None:
        """Extend the lease of every saga running here; stop the ones another process took."""
        running = self.running
        if not running:
            return
        async with self._uow() as uow:
            held = await uow.sagas.renew_leases(
                self.owner, running, until=self._clock() + self.lease
            )
            await uow.commit()
        for saga_id in running - held:
            task = self._tasks.get(saga_id)
            if task is not None:
                log.warning("saga lease lost; stopping it here", extra={"saga_id": str(saga_id)})
                task.cancel()

    async def heartbeat_forever(self) -> None:
        """Renew leases three times a lease, so a live process never loses one."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew_leases()
            except Exception as exc:
                if not db.is_outage(exc):
                    raise
                log.warning("lease renewal could not reach the database; trying again")

    async def stop(self) -> None:
        """Stop every saga here between two writes and let other replicas claim them at once."""
        self._stopping = True
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        if tasks:
            with contextlib.suppress(Exception):
                async with self._uow() as uow:
                    await uow.sagas.release(self.owner, list(tasks))
                    await uow.commit()
            log.info("sagas released", extra={"count": len(tasks)})

    # Running one saga.

    async def _resume(self, saga_id: uuid.UUID, version: int | None) -> None:
        try:
            run = await self._load(saga_id)
        except Exception as exc:  # noqa: BLE001 - one saga's failure must not end the others
            self._failed(saga_id, exc)
            if version is not None and self._errors.get(saga_id, 0) >= self._park_after_errors:
                note = f"parked after {self._park_after_errors} errors: {exc}"
                await self._park(saga_id, version, note)
            return
        if run.saga.owner != self.owner:
            return
        await self._drive(run, None)

    async def _load(self, saga_id: uuid.UUID) -> Run:
        async with self._uow() as uow:
            saga, entries = await uow.sagas.load(saga_id)
            booking = await uow.sagas.get_booking(saga.booking_id)
            booking_saga_id = saga.saga_id
            if saga.kind != "booking":
                sagas = await uow.sagas.sagas_of(saga.booking_id)
                booking_saga_id = next(s.saga_id for s in sagas if s.kind == "booking")
        if booking is None:
            raise LookupError(f"saga {saga_id} names booking {saga.booking_id}, which is missing")
        return Run(self.definition(saga.kind), saga, booking, booking_saga_id, entries)

    async def _drive(self, run: Run, move: CallMove | None) -> None:
        """Run the saga to its end here, in a span that continues the trace that started it.

        `move` is None when the saga is resumed (after a crash, a takeover or
        an operator's repair); its span then links to the interrupted run.
        """
        span, run.span = run.span or self.open_span(run, resumed=move is None), None
        with trace.use_span(span, end_on_exit=True):
            token = logs.saga_id.set(run.saga_id_text)
            try:
                await self._steps(run, move)
            finally:
                span.set_attribute("saga.status", run.saga.status.value)
                logs.saga_id.reset(token)

    async def _steps(self, run: Run, move: CallMove | None) -> None:
        try:
            if move is None:
                if run.saga.status not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
                    return
                move = await self._advance(run, Outcome())
            while move is not None:
                outcome = await self._perform(run, move)
                move = await self._advance(run, outcome)
                last = outcome.rows[-1]
                self._crash(
                    crash_points.point(run.definition.kind, last.step, last.phase, "after_log")
                )
            self._errors.pop(run.saga_id, None)
        except LeaseLost:
            log.info("saga taken over by another process", extra={"saga_id": run.saga_id_text})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one saga's failure must not end the others
            self._failed(run.saga_id, exc)
            if self._errors.get(run.saga_id, 0) >= self._park_after_errors:
                note = f"parked after {self._park_after_errors} errors: {exc}"
                await self._park(run.saga_id, run.saga.version, note)

    def _failed(self, saga_id: uuid.UUID, exc: Exception) -> None:
        if db.is_outage(exc):
            log.warning(
                "saga paused: the database is unavailable; recovery resumes it",
                extra={"saga_id": str(saga_id)},
            )
            return
        count = self._errors[saga_id] = self._errors.get(saga_id, 0) + 1
        log.error(
            "saga failed; recovery resumes it",
            exc_info=exc,
            extra={"saga_id": str(saga_id), "errors": count},
        )

    async def _park(self, saga_id: uuid.UUID, version: int, note: str) -> None:
        """STUCK with `note`, so an operator sees the saga instead of a crash loop."""
        try:
            async with self._uow() as uow:
                await uow.sagas.append_txn(
                    saga_id,
                    owner=self.owner,
                    version=version,
                    status=SagaStatus.STUCK,
                    note=note,
                    now=self._clock(),
                )
                await uow.commit()
            self._errors.pop(saga_id, None)
            log.error("saga parked STUCK", extra={"saga_id": str(saga_id), "note": note})
        except Exception:
            log.exception("saga could not be parked", extra={"saga_id": str(saga_id)})

    async def _perform(self, run: Run, move: CallMove) -> Outcome:
        """Make the call `move` asks for, in a span of its own, and time it."""
        step, phase = move.step, _phase(move)
        verb = "step" if phase is StepPhase.ACTION else "compensate"
        phase_name = _PHASE_NAMES[phase]
        # start_as_current_span's own, without its extra generator context manager.
        span = observe.tracer.start_span(
            f"{verb} {step.name}",
            attributes={
                "saga.id": run.saga_id_text,
                "booking.id": run.booking_id_text,
                "saga.kind": run.definition.kind,
                "saga.step": step.name,
                "saga.phase": phase_name,
                "saga.attempt": move.attempt,
            },
        )
        with trace.use_span(span, end_on_exit=True):
            began = time.perf_counter()
            outcome = await self._attempts(run, move)
            observe.step_duration(run.definition.kind, step.name, phase_name).observe(
                time.perf_counter() - began
            )
            last = outcome.rows[-1]
            span.set_attributes(
                {
                    "saga.attempt": last.attempt,
                    "saga.retries": last.attempt - move.attempt,
                    "saga.outcome": "gave_up" if outcome.gave_up else last.event.value.lower(),
                }
            )
            if last.event is not StepEvent.SUCCEEDED:
                span.set_status(Status(StatusCode.ERROR, f"{last.code}: {last.message}"))
            return outcome

    async def _attempts(self, run: Run, move: CallMove) -> Outcome:
        """Make the call `move` asks for, retrying transient failures as its policy says.

        Attempt `move.attempt` has its STARTED row already; each retry writes a
        RETRYING row for the failure, sleeps, and writes the next STARTED row.
        Most calls succeed at once, so the first try builds no retry loop.
        """
        step, phase = move.step, _phase(move)
        policy = step.retry if phase is StepPhase.ACTION else step.compensation_retry
        call = self._call(run, move, run.booking)
        kind = run.definition.kind
        attempt = move.attempt

        async def once(attempt: int) -> dict[str, Any]:
            if attempt > move.attempt:
                again = replace(move, attempt=attempt)
                await self._write(
                    run, [self.started(run, again, at=self._clock())], current_step=step.name
                )
            self._crash(crash_points.point(kind, step.name, phase, "before_call"))
            return await call.invoke(self._participants, policy.deadline_seconds)

        async def record_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            assert isinstance(error, ParticipantError)
            log.warning(
                "saga step failed; retrying",
                extra={
                    "saga_id": run.saga_id_text,
                    "step": step.name,
                    "attempt": attempt,
                    "code": error.code,
                },
            )
            observe.RETRIES.labels(step.name, error.code).inc()
            trace.get_current_span().add_event(
                "retry", {"saga.attempt": attempt, "rpc.grpc.status_code": error.code}
            )
            retry_row = _result_row(move, attempt, StepEvent.RETRYING, error, at=self._clock())
            await self._write(run, [retry_row], current_step=step.name)

        try:
            try:
                response = await once(attempt)
            except ParticipantError as first:
                if not first.transient:
                    raise
                retrying = retry.participant_calls(
                    stop=self._stop_for(run, move, policy),
                    max_backoff=policy.max_backoff_seconds,
                    before_sleep=record_retry,
                    sleep=self._sleep,
                )
                async for try_ in retrying:
                    with try_:
                        attempt = move.attempt + try_.retry_state.attempt_number - 1
                        if attempt == move.attempt:
                            # The first try, made above: tenacity counts it and backs off.
                            raise first
                        response = await once(attempt)
        except ParticipantError as error:
            self._crash(crash_points.point(kind, step.name, phase, "after_call"))
            if error.transient:
                row = _result_row(move, attempt, StepEvent.RETRYING, error, at=self._clock())
                gave_up = None
                if policy.kind is RetryKind.PERSISTENT:
                    gave_up = (
                        f"{step.name} kept failing for {policy.give_up_after_seconds:g} s; "
                        f"last reply {error.code}: {error.message}"
                    )
                return Outcome([row], gave_up=gave_up)
            return Outcome([_result_row(move, attempt, StepEvent.FAILED, error, at=self._clock())])
        self._crash(crash_points.point(kind, step.name, phase, "after_call"))
        trace_id, span_id = telemetry.current_ids()
        done = LogRecord(
            step=step.name,
            phase=phase,
            event=StepEvent.SUCCEEDED,
            attempt=attempt,
            code="OK",
            response_summary=response,
            trace_id=trace_id,
            span_id=span_id,
            at=self._clock(),
        )
        return Outcome([done], response=response)

    def _stop_for(self, run: Run, move: CallMove, policy: RetryPolicy) -> retry.Stop:
        """What is left of the policy, counting attempts and time spent before a crash too."""
        if policy.kind is RetryKind.BUDGETED:
            return stop_after_attempt(max(1, (policy.attempts or 1) - move.attempt + 1))
        # The give-up clock starts at the track's first call, or at an operator's retry of it.
        track = [e for e in run.entries if e.step == move.step.name and e.phase is _phase(move)]
        reopened = [e.at for e in track if e.code == OPERATOR]
        started = [e.at for e in track if e.event is StepEvent.STARTED]
        first = reopened[-1] if reopened else started[0] if started else self._clock()
        limit = timedelta(seconds=policy.give_up_after_seconds or 0)
        return retry.deadline_passed(first + limit, self._clock)

    async def _through_outages(self, write: Callable[[], Awaitable[T]]) -> T:
        """`write`, tried again while the database cannot be reached, for half a lease.

        The call a write records already happened; giving up sooner would make
        another replica repeat it, which is safe but wasted. Most writes succeed
        at once, so the first try builds no retry loop.
        """
        try:
            return await write()
        except Exception as exc:
            if not db.is_outage(exc):
                raise
        retrying = retry.database_outages(
            until=self._clock() + self.lease / 2, clock=self._clock, sleep=self._sleep
        )
        async for attempt in retrying:
            with attempt:
                return await write()
        raise AssertionError("database_outages re-raises once it gives up")

    async def _advance(self, run: Run, outcome: Outcome) -> CallMove | None:
        """Write what `outcome` and the plan after it change; return the next call, if any."""
        return await self._through_outages(lambda: self._advance_once(run, outcome))

    async def _advance_once(self, run: Run, outcome: Outcome) -> CallMove | None:
        while True:
            change = self._decide(run, outcome)
            now = self._clock()
            fields: dict[str, Any] = {
                "owner": self.owner,
                "version": run.saga.version,
                "entries": change.rows,
                "status": change.status if change.status is not run.saga.status else None,
                "current_step": change.current_step,
                "lease_expires_at": now + self.lease,
                "note": change.note,
                "booking_status": change.booking_status,
                "booking_amount_cents": change.amount_cents,
                "failure_reason": change.failure_reason,
                "now": now,
            }
            if change.cancel_saga is None:
                # A cancel requested since our last write leaves this one unwritten.
                written = await self.journal.append(
                    run.saga_id, unless_cancelled=not run.saga.cancel_requested, **fields
                )
                cancelled_since = written.cancel_requested and not run.saga.cancel_requested
            else:
                async with self._uow() as uow:
                    written = await uow.sagas.append_txn(run.saga_id, **fields)
                    cancelled_since = written.cancel_requested and not run.saga.cancel_requested
                    if not cancelled_since:
                        handover, first = change.cancel_saga
                        await uow.sagas.add_saga_txn(handover.saga, first)
                        await uow.commit()
            if cancelled_since:
                # Cancelled since our last write: nothing was written; plan again.
                run.saga = replace(run.saga, cancel_requested=True)
                run.booking = replace(run.booking, status=BookingStatus.CANCELLING)
                continue
            self._applied(run, change, version=written.version, now=now)
            if change.cancel_saga is not None:
                handover = change.cancel_saga[0]
                self.launch(handover, RunAction(handover.definition.steps[0], 1))
            return change.move

    def _decide(self, run: Run, outcome: Outcome) -> Transition:
        """The rows and status changes `outcome` leads to, planning until the next call."""
        definition = run.definition
        now = self._clock()
        rows = list(outcome.rows)
        added: list[LogEntry] = []
        for row in rows:
            added.append(numbered(added or run.entries, run.saga_id, row))
        amount = None
        priced = run.booking
        if "amount_cents" in outcome.response and definition.kind == "booking":
            # The reserve step prices the booking; the next call (the charge) must see it.
            amount = int(outcome.response["amount_cents"])
            priced = replace(run.booking, amount_cents=amount)
        status = run.saga.status
        cancel = run.saga.cancel_requested
        note: str | None = None
        failure: str | None = None
        move: CallMove | None = None
        progress: Progress | None = None
        if outcome.gave_up is not None:
            status, note = transition(status, SagaStatus.STUCK), outcome.gave_up
        while outcome.gave_up is None:
            if progress is None:
                # The run's tracks, then the rows this transition adds; the run keeps only
                # rows once they are committed.
                progress = run.progress()
                for entry in added:
                    progress = advance(progress, definition, entry)
            planned = next_move(definition, progress, status=status, cancel_requested=cancel)
            if isinstance(planned, StartCompensating):
                status = transition(status, SagaStatus.COMPENSATING)
                if planned.reason != "cancel requested":
                    failure = _failure_text(planned.reason, [*run.entries, *added])
                continue
            if isinstance(planned, Complete):
                status = transition(status, SagaStatus.COMPLETED)
            elif isinstance(planned, Compensated):
                status = transition(status, SagaStatus.COMPENSATED)
                if not (cancel or run.booking.failure_reason or failure):
                    # Only an operator's compensate gets here without a failure to name.
                    failure = f"compensated by an operator: {run.saga.note}"
            elif isinstance(planned, Stuck):
                status, note = transition(status, SagaStatus.STUCK), planned.reason
            else:
                move = planned
                row = self.started(run, planned, at=now, booking=priced)
                rows.append(row)
                added.append(numbered(added or run.entries, run.saga_id, row))
                progress = advance(progress, definition, added[-1])
            break
        booking_status, cancel_saga = self._booking_after(run, rows, status, now=now)
        current = rows[-1].step if rows else run.saga.current_step
        return Transition(
            rows=rows,
            entries=added,
            tracks=progress,
            status=status,
            current_step=current,
            move=move,
            note=note,
            booking_status=booking_status,
            amount_cents=amount,
            failure_reason=failure,
            cancel_saga=cancel_saga,
        )

    def _booking_after(
        self, run: Run, rows: Sequence[LogRecord], status: SagaStatus, *, now: datetime
    ) -> tuple[BookingStatus | None, tuple[Run, LogRecord] | None]:
        """How the booking moves with these rows and this saga status, and any cancel saga."""
        current = run.booking.status
        cancel = run.saga.cancel_requested
        target: BookingStatus | None = None
        handover: tuple[Run, LogRecord] | None = None
        if run.definition.kind == "booking":
            pivot = run.definition.pivot_index
            pivot_name = run.definition.steps[pivot].name if pivot is not None else None
            passed_pivot = any(
                row.step == pivot_name
                and row.phase is StepPhase.ACTION
                and row.event is StepEvent.SUCCEEDED
                for row in rows
            )
            # After a cancel the booking stays CANCELLING; the cancel saga undoes it.
            if passed_pivot and not cancel:
                target = BookingStatus.CONFIRMED
            elif status is SagaStatus.COMPENSATED:
                target = BookingStatus.CANCELLED if cancel else BookingStatus.FAILED
            elif status is SagaStatus.COMPLETED and cancel:
                cancel_run, _, first = self.new_cancel_saga(
                    run.booking, booking_saga_id=run.saga_id, now=now
                )
                handover = (cancel_run, first)
        elif status is SagaStatus.COMPLETED:
            target = BookingStatus.CANCELLED
        if target is not None:
            transition(current, target)
        return target, handover

    def _applied(self, run: Run, change: Transition, *, version: int, now: datetime) -> None:
        """Bring the run up to date with a committed transition, and tell waiters."""
        previous = run.saga.status
        run.extend(change.entries, tracks=change.tracks)
        run.saga = replace(
            run.saga,
            status=change.status,
            current_step=change.current_step,
            version=version,
            note=change.note if change.note is not None else run.saga.note,
            lease_expires_at=now + self.lease,
            updated_at=now,
        )
        if change.booking_status or change.amount_cents is not None or change.failure_reason:
            run.booking = replace(
                run.booking,
                status=change.booking_status or run.booking.status,
                amount_cents=(
                    change.amount_cents
                    if change.amount_cents is not None
                    else run.booking.amount_cents
                ),
                failure_reason=(
                    change.failure_reason
                    if change.failure_reason is not None
                    else run.booking.failure_reason
                ),
                updated_at=now,
            )
            self._changes.publish(run.booking)
        if change.status is not previous and change.status in _FINISHED:
            observe.SAGAS_FINISHED.labels(run.definition.kind, change.status.value).inc()
        if change.status is SagaStatus.STUCK:
            log.error("saga STUCK", extra={"saga_id": run.saga_id_text, "note": run.saga.note})

    async def _write(self, run: Run, rows: list[LogRecord], *, current_step: str) -> None:
        """A transaction with rows and a fresh lease only: a retry's RETRYING or STARTED row."""
        await self._through_outages(lambda: self._write_once(run, rows, current_step=current_step))

    async def _write_once(self, run: Run, rows: list[LogRecord], *, current_step: str) -> None:
        now = self._clock()
        written = await self.journal.append(
            run.saga_id,
            owner=self.owner,
            version=run.saga.version,
            entries=rows,
            current_step=current_step,
            lease_expires_at=now + self.lease,
            now=now,
        )
        for row in rows:
            run.record(row)
        if written.cancel_requested and not run.saga.cancel_requested:
            run.booking = replace(run.booking, status=BookingStatus.CANCELLING)
        run.saga = replace(
            run.saga,
            version=written.version,
            current_step=current_step,
            cancel_requested=run.saga.cancel_requested or written.cancel_requested,
            lease_expires_at=now + self.lease,
        )


def _phase(move: CallMove) -> StepPhase:
    return StepPhase.ACTION if isinstance(move, RunAction) else StepPhase.COMPENSATION


# How spans and metrics name a phase.
_PHASE_NAMES = {phase: phase.value.lower() for phase in StepPhase}


def _call_fields(booking: Booking) -> tuple[object, ...]:
    """What `call_for` reads of a booking: a call built from equal fields is the same call."""
    return (
        booking.booking_id,
        booking.account_id,
        booking.event_id,
        booking.quantity,
        booking.amount_cents,
    )


def _result_row(
    move: CallMove, attempt: int, event: StepEvent, error: ParticipantError, *, at: datetime
) -> LogRecord:
    trace_id, span_id = telemetry.current_ids()
    return LogRecord(
        trace_id=trace_id,
        span_id=span_id,
        step=move.step.name,
        phase=_phase(move),
        event=event,
        attempt=attempt,
        code=error.code,
        message=error.message,
        at=at,
    )


def _failure_text(reason: str, entries: Sequence[LogEntry]) -> str:
    """The booking's failure reason: what the planner decided, with the reply that made it."""
    last = next(
        (e for e in reversed(entries) if e.event in (StepEvent.FAILED, StepEvent.RETRYING)), None
    )
    if last is None or not last.message:
        return reason
    return f"{reason}: {last.code}: {last.message}"
