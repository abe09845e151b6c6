"""Random fault schedules over the real saga engine: every booking ends fully done or fully undone.

Each example is a `Schedule`: up to four bookings of one event with few seats,
from one or two accounts with little money. For each booking and participant
operation it lists the replies the calls get in turn (a business refusal,
UNAVAILABLE, a DEADLINE_EXCEEDED not applied, one applied late, a lost reply),
then success. Around them booking_svc processes die at random crash points and
start again, or another replica takes over once the leases ran out, or a
process stalls past its lease with calls in flight; bookings are made and
cancelled at random moments, holds lapse, late calls land. Engine, planner and
handlers are the real ones (`fakes.World`); time is the fake clock, which every
backoff moves.

Once the schedule has played out, an operator repairs whatever is STUCK (the
participants are healthy by then), the calls still on their way land, and:

- before the repair a saga is STUCK only where the design parks one: a refusal
  it cannot undo or, with a short give-up time, a step that kept failing past it;
- every saga ends COMPLETED or COMPENSATED, its booking CONFIRMED, FAILED or
  CANCELLED to match, and no persistent step retried past its give-up time;
- a CONFIRMED booking's seats are sold, its price charged once, and it was
  notified once; a FAILED or CANCELLED one holds no seats and has no net charge;
- the seats sold are the CONFIRMED bookings', never more than the capacity;
  balances plus net charges are what the accounts had; no participant call was
  made without its STARTED row, nor a budgeted step started past its budget.

A failing example prints the schedule and what happened, call by call.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from booking_svc.bootstrap import definitions
from booking_svc.domain.log import OPERATOR
from booking_svc.domain.model import LogRecord, SagaInstance
from booking_svc.domain.saga import (
    RetryKind,
    SagaDefinition,
    charge_key,
    participant_key,
    reservation_id,
)
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase
from eventbooking.errors import FailedPrecondition
from tests.unit.booking.fakes import (
    LIVE,
    OK,
    Crashed,
    FakeParticipants,
    Reply,
    World,
    lost_reply,
    refused,
    timed_out,
    transient,
)
from tests.unit.booking.fakes import settings as fake_settings

ACTION, COMPENSATION = StepPhase.ACTION, StepPhase.COMPENSATION
PRICE = FakeParticipants.PRICE_CENTS
OPERATIONS = (
    "reserve_seats",
    "charge",
    "confirm_reservation",
    "release_reservation",
    "refund",
    "send_notification",
)
# Refusing one of these sends a booking back; refusing any other call parks its saga STUCK.
GOES_BACK = frozenset({"reserve_seats", "charge", "confirm_reservation"})
REFUSAL = "refused by the schedule"
# The give-up time of persistent steps in the schedules that may park sagas for it.
GIVE_UP_SECONDS = 1.0
HOUR_GIVE_UP = fake_settings()
SHORT_GIVE_UP = fake_settings(give_up_after_seconds=GIVE_UP_SECONDS)
# More calls than any schedule needs: the engine is looping.
MAX_CALLS = 600


class Fault(enum.Enum):
    """What one participant call does."""

    OK = "ok"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    # DEADLINE_EXCEEDED: not applied, applied, or applied only later (when late calls land).
    TIMEOUT = "timeout"
    TIMEOUT_APPLIED = "timeout_applied"
    TIMEOUT_LATE = "timeout_late"
    # Applied, then the connection dropped before the reply came back.
    LOST_REPLY = "lost_reply"

    def __repr__(self) -> str:
        return self.name

    def reply(self) -> Reply:
        return {
            Fault.OK: OK,
            Fault.REFUSED: refused(REFUSAL),
            Fault.UNAVAILABLE: transient(),
            Fault.TIMEOUT: timed_out(),
            Fault.TIMEOUT_APPLIED: lost_reply(),
            Fault.TIMEOUT_LATE: timed_out(late=True),
            Fault.LOST_REPLY: Reply("UNAVAILABLE", "connection reset", applied=True),
        }[self]


def _compact(value: object) -> str:
    """A dataclass as its constructor call, leaving out the fields at their defaults."""
    shown = [
        f"{f.name}={getattr(value, f.name)!r}"
        for f in fields(value)  # type: ignore[arg-type]
        if getattr(value, f.name) != f.default
    ]
    return f"{type(value).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class BookingPlan:
    """One booking: whose, how many seats, its calls' faults per operation, when it is made and
    when it is cancelled.

    `start_at` and `cancel_at` are participant calls, counted over all bookings,
    at whose arrival the booking is made or cancelled; a moment that never comes
    means once the schedule has played out. It is made at the start without one.
    """

    account: int
    quantity: int
    faults: tuple[tuple[str, tuple[Fault, ...]], ...] = ()
    start_at: int | None = None
    cancel_at: int | None = None

    __repr__ = _compact


class Then(enum.Enum):
    """What becomes of a process at its crash point, and who runs its sagas next."""

    # It dies; the same instance starts again and takes its sagas back at once.
    RESTART = "restart"
    # It dies; another replica claims its sagas once their leases ran out.
    TAKEOVER = "takeover"
    # It stalls past its lease without dying: another replica claims its sagas while
    # their calls are in flight, and its own next writes find them taken.
    STALL = "stall"

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, repr=False)
class Crash:
    """A process reaches the `at`-th crash point it meets, counting from 0, and `then` happens."""

    at: int
    then: Then = Then.RESTART

    __repr__ = _compact


@dataclass(frozen=True, repr=False)
class Schedule:
    capacity: int
    # How many seats each account can pay for.
    balances: tuple[int, ...]
    bookings: tuple[BookingPlan, ...]
    # Process n crashes as crashes[n] says; processes past the list never do.
    crashes: tuple[Crash, ...] = ()
    # At the arrival of these calls every hold lapses, or the late calls arrive.
    expire_at: tuple[int, ...] = ()
    late_at: tuple[int, ...] = ()
    # Persistent steps give up after GIVE_UP_SECONDS instead of an hour.
    give_up: bool = False
    # The operator compensates a STUCK saga that has not passed its pivot, instead of retrying.
    operator_compensates: bool = False

    __repr__ = _compact


# The generator.

# OK twice, so that fewer steps spend their whole budget.
FAULTS = (*Fault, Fault.OK)
NEVER_REFUSED = tuple(f for f in FAULTS if f is not Fault.REFUSED)


class Refusals(enum.Enum):
    """Which calls a schedule refuses, besides sold out, insufficient funds and lapsed holds."""

    NONE = "none"
    GOING_BACK = "going_back"
    ANYWHERE = "anywhere"

    def alphabet(self, operation: str) -> tuple[Fault, ...]:
        if self is Refusals.ANYWHERE or (self is Refusals.GOING_BACK and operation in GOES_BACK):
            return FAULTS
        return NEVER_REFUSED


@st.composite
def booking_plans(
    draw: st.DrawFn, *, accounts: int, refusals: Refusals, max_faults: int
) -> BookingPlan:
    faults = []
    for operation in OPERATIONS:
        alphabet = refusals.alphabet(operation)
        replies = draw(st.lists(st.sampled_from(alphabet), max_size=max_faults))
        if replies:
            faults.append((operation, tuple(replies)))
    return BookingPlan(
        account=draw(st.integers(0, accounts - 1)),
        quantity=draw(st.integers(1, 3)),
        faults=tuple(faults),
        # One booking in three is made later, and one in four is cancelled.
        start_at=draw(st.integers(0, 30)) if draw(st.integers(0, 2)) == 2 else None,
        cancel_at=draw(st.integers(0, 40)) if draw(st.integers(0, 3)) == 3 else None,
    )


@st.composite
def schedules(draw: st.DrawFn, *, give_up: bool) -> Schedule:
    accounts = draw(st.integers(1, 2))
    plans = booking_plans(
        accounts=accounts,
        # Half the schedules refuse only what the participants' own rules refuse.
        refusals=draw(st.sampled_from((Refusals.NONE, *Refusals))),
        max_faults=5 if give_up else 3,
    )
    moments = st.lists(st.integers(0, 60), max_size=1).map(tuple)
    return Schedule(
        capacity=draw(st.integers(1, 10)),
        balances=tuple(draw(st.lists(st.integers(0, 12), min_size=accounts, max_size=accounts))),
        bookings=tuple(draw(st.lists(plans, min_size=1, max_size=4))),
        crashes=tuple(
            draw(
                st.lists(
                    st.builds(Crash, at=st.integers(0, 40), then=st.sampled_from(Then)),
                    max_size=3,
                )
            )
        ),
        expire_at=draw(moments),
        late_at=draw(moments),
        give_up=give_up,
        operator_compensates=draw(st.booleans()),
    )


# Playing a schedule.


class RanAway(BaseException):
    """The engine kept calling long after any schedule would have let it finish."""


class CrashHook:
    """A process's crash hook: at the crash point its `Crash` names, the process dies or stalls.

    A dead process dies at every crash point after, so its other sagas stop at
    their next one, as they would have at the same instant: they only ever meet
    each other in the database. A call already on its way still arrives.
    """

    def __init__(self, crash: Crash | None, *, name: str, play: Play) -> None:
        self.crash = crash
        self.name = name
        self.reached = 0
        self.died: str | None = None
        self.stalled: str | None = None
        self._play = play

    def __call__(self, point: str) -> None:
        if self.died is not None:
            raise Crashed(point)
        if self.crash is None or self.stalled is not None or self.reached < self.crash.at:
            self.reached += 1
            return
        if self.crash.then is Then.STALL:
            self.stalled = point
            self._play.events.append(f"{self.name} stalls at {point}")
            self._play.stalled()
            return
        self.died = point
        self._play.events.append(f"{self.name} dies at {point}")
        raise Crashed(point)


@dataclass
class Answer:
    booking: int | None
    fault: Fault


@dataclass
class Play:
    """One schedule played against a World, with what happened and what went wrong."""

    schedule: Schedule
    world: World = field(init=False)
    # Lines of what happened; an int is the index of a participant call in `answers`.
    events: list[str | int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    hooks: list[CrashHook] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    accounts: list[uuid.UUID] = field(default_factory=list)
    # Plan index -> booking, and back, for the bookings made so far.
    booking_ids: dict[int, uuid.UUID] = field(default_factory=dict)
    index_of: dict[uuid.UUID, int] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    # Once the operator steps in, every call succeeds and nothing else is injected.
    healthy: bool = False
    stuck: list[SagaInstance] = field(default_factory=list)
    _faults: dict[tuple[int, str], deque[Fault]] = field(default_factory=dict)
    _owner_of: dict[str, int] = field(default_factory=dict)
    _takeovers: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        prepared = SHORT_GIVE_UP if self.schedule.give_up else HOUR_GIVE_UP
        self.world = World(crash_hook=self._hook(0), sleep=self._sleep, prepared=prepared)
        for index, plan in enumerate(self.schedule.bookings):
            for operation, faults in plan.faults:
                self._faults[index, operation] = deque(faults)

    # The fakes' side.

    def _hook(self, process: int) -> CrashHook:
        crashes = self.schedule.crashes
        crash = crashes[process] if process < len(crashes) else None
        hook = CrashHook(crash, name=f"process {process}", play=self)
        self.hooks.append(hook)
        return hook

    def stalled(self) -> None:
        # The crash hook cannot wait: another replica takes over as soon as the stalled saga yields.
        self._takeovers.append(asyncio.get_running_loop().create_task(self.take_over()))

    async def _sleep(self, seconds: float) -> None:
        # Backoff takes time on the engine's clock, which give-up times are measured on.
        self.world.clock.advance(seconds)
        await asyncio.sleep(0)

    async def _answer(self, operation: str, key: str) -> Reply:
        arrival = len(self.answers)
        if arrival >= MAX_CALLS:
            self.problems.append(f"{MAX_CALLS} participant calls: the engine does not stop")
            raise RanAway
        if not self.healthy:
            for index, plan in enumerate(self.schedule.bookings):
                if plan.start_at == arrival:
                    await self.book(index)
            for index, plan in enumerate(self.schedule.bookings):
                if plan.cancel_at == arrival and index in self.booking_ids:
                    await self.cancel(index)
            if arrival in self.schedule.expire_at:
                self.world.participants.expire_holds()
                self.events.append("every hold lapses")
            if arrival in self.schedule.late_at:
                await self.deliver_late()
        p = self.world.participants
        taken = p.seats("HELD", "CONFIRMED", event_id=self.world.event_id)
        if taken > self.schedule.capacity:
            self.problems.append(
                f"call #{arrival}: {taken} seats taken of {self.schedule.capacity}"
            )
        who = self._booking_of(key)
        queue = self._faults.get((who, operation)) if who is not None else None
        fault = queue.popleft() if queue and not self.healthy else Fault.OK
        # Nothing awaits between here and the fake recording the call: the two lists align.
        self.events.append(len(self.answers))
        self.answers.append(Answer(who, fault))
        return fault.reply()

    def _booking_of(self, key: str) -> int | None:
        if key not in self._owner_of:
            store = self.world.store
            for index, booking_id in self.booking_ids.items():
                for saga in store.sagas_of(booking_id):
                    self._owner_of[participant_key(saga.saga_id, "notify")] = index
                    if saga.kind == "booking":
                        self._owner_of[str(reservation_id(saga.saga_id))] = index
                        self._owner_of[charge_key(saga.saga_id)] = index
        return self._owner_of.get(key)

    async def book(self, index: int) -> None:
        plan = self.schedule.bookings[index]
        app = self.world.apps[-1]
        booking = await self.world.book(
            quantity=plan.quantity,
            account_id=self.accounts[plan.account],
            key=f"booking-{index}",
            app=app,
        )
        self.booking_ids[index] = booking.booking_id
        self.index_of[booking.booking_id] = index
        self.events.append(f"booking {index} made ({app.engine.owner})")

    async def cancel(self, index: int) -> None:
        self.cancelled.add(index)
        try:
            booking = await self.world.apps[-1].handlers.cancel_booking(self.booking_ids[index])
        except FailedPrecondition:
            self.events.append(f"cancel booking {index}: refused, it FAILED")
        else:
            self.events.append(f"cancel booking {index}: {booking.status.value}")

    async def deliver_late(self) -> None:
        p = self.world.participants
        before = len(p.late_calls)
        await p.deliver_late()
        for operation, key, code in p.late_calls[before:]:
            self.events.append(f"late {operation} of booking {self._booking_of(key)} -> {code}")

    # The service's side.

    async def play(self) -> None:
        world, schedule = self.world, self.schedule
        p = world.participants
        p.capacity[world.event_id] = schedule.capacity
        for seats in schedule.balances:
            account = uuid.uuid4()
            self.accounts.append(account)
            p.balances[account] = seats * PRICE
        p.answer_with(self._answer)
        for index, plan in enumerate(schedule.bookings):
            if plan.start_at is None:
                await self.book(index)
        await self.quiesce()
        # What the schedule meant to do at moments that never came, it does now.
        for index in range(len(schedule.bookings)):
            if index not in self.booking_ids:
                await self.book(index)
        for index, plan in enumerate(schedule.bookings):
            if plan.cancel_at is not None and index not in self.cancelled:
                await self.cancel(index)
        await self.quiesce()

        self.stuck = [s for s in world.store.sagas.values() if s.status is SagaStatus.STUCK]
        self.problems.extend(stuck_problems(self))
        self.healthy = True
        for _ in range(3):
            stuck = [s for s in world.store.sagas.values() if s.status is SagaStatus.STUCK]
            if not stuck:
                break
            for saga in stuck:
                await self.repair(saga)
            await self.quiesce()
        await self.deliver_late()
        self.problems.extend(settled_problems(self))

    async def repair(self, saga: SagaInstance) -> None:
        """What an operator does with a STUCK saga, the participants' trouble fixed."""
        index = self.index_of[saga.booking_id]
        where = f"the STUCK {saga.kind} saga of booking {index} ({saga.note})"
        handlers = self.world.apps[-1].handlers
        if self.schedule.operator_compensates:
            try:
                await handlers.compensate_saga(saga.saga_id)
            except FailedPrecondition as refused:
                self.events.append(f"operator cannot compensate {where}: {refused}")
            else:
                self.events.append(f"operator compensates {where}")
                return
        self.events.append(f"operator retries {where}")
        await handlers.retry_saga(saga.saga_id)

    async def settle(self) -> None:
        """Let every process run, and every replica that takes over start, until all are idle."""
        while True:
            await self.world.settle()
            if not self._takeovers:
                return
            takeovers, self._takeovers = self._takeovers, []
            await asyncio.gather(*takeovers)

    async def quiesce(self) -> None:
        """Run until no saga is live, starting a process again after each one that died."""
        for _ in range(len(self.schedule.crashes) + 3):
            await self.settle()
            live = [s for s in self.world.store.sagas.values() if s.status in LIVE]
            if not live:
                return
            if self.hooks[-1].died is None:
                self.problems.append(
                    f"{self.hooks[-1].name} left {len(live)} live sagas without running them"
                )
            await self.restart()
        self.problems.append("sagas are still live after every restart")

    async def restart(self) -> None:
        """The last process died: it starts again, or another replica takes over."""
        world = self.world
        crash = self.hooks[-1].crash
        if crash is not None and crash.then is Then.TAKEOVER:
            await self.take_over()
            return
        hook = self._hook(len(world.apps))
        app = world.start(owner=world.apps[-1].engine.owner, crash_hook=hook)
        claimed = await app.engine.recover(include_own=True)
        self.events.append(f"{hook.name} ({app.engine.owner}) starts, claims {claimed} sagas")

    async def take_over(self) -> None:
        """Another replica claims every live saga once their leases have run out."""
        world = self.world
        world.clock.advance(world.settings.lease_seconds + 1)
        hook = self._hook(len(world.apps))
        app = world.start(owner=f"replica-{len(world.apps)}", crash_hook=hook)
        claimed = await app.engine.recover()
        self.events.append(f"{hook.name} ({app.engine.owner}) takes over {claimed} sagas")

    # What a failure prints.

    def report(self) -> str:
        calls = self.world.participants.calls
        lines = [f"schedule: {self.schedule!r}", "what happened:"]
        for happened in self.events:
            if isinstance(happened, int):
                call, answer = calls[happened], self.answers[happened]
                happened = (
                    f"#{happened} {call.operation} of booking {answer.booking}: "
                    f"{answer.fault.name} -> {call.code}"
                )
            lines.append(f"  {happened}")
        lines.append("the bookings:")
        for index, booking_id in sorted(self.booking_ids.items()):
            booking = self.world.booking(booking_id)
            sagas = ", ".join(
                f"{s.kind} {s.status.value}" for s in self.world.store.sagas_of(booking_id)
            )
            lines.append(f"  {index}: {booking.status.value} {booking.failure_reason!r} ({sagas})")
        lines.append("problems:")
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)


def replay(schedule: Schedule) -> Play:
    """Play `schedule` in an event loop of its own, so nothing leaks between examples."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        played = runner.run(_play(schedule))
    return played


async def _play(schedule: Schedule) -> Play:
    played = Play(schedule)
    try:
        # Wall time, only to turn a hang into a failure with a report.
        await asyncio.wait_for(played.play(), timeout=10)
    except TimeoutError:
        played.problems.append("the schedule did not finish within 10 s")
    finally:
        await played.world.close()
    return played


# The checks.


def _track(rows: Sequence[LogRecord], step: str, phase: StepPhase) -> list[LogRecord]:
    return [r for r in rows if r.step == step and r.phase is phase]


def _clock_start(track: Sequence[LogRecord]) -> int:
    """Where a track's give-up clock starts: its last operator row, else its first row."""
    return max((i for i, r in enumerate(track) if r.code == OPERATOR), default=0)


def stuck_problems(played: Play) -> list[str]:
    """Every STUCK saga is parked for a reason the design gives, its booking where it was."""
    world = played.world
    problems: list[str] = []
    limit = timedelta(seconds=world.settings.give_up_after_seconds)
    for saga in played.stuck:
        index = played.index_of[saga.booking_id]
        where = f"booking {index}: {saga.kind} saga STUCK ({saga.note})"
        last = world.log(saga.saga_id)[-1]
        track = _track(world.log(saga.saga_id), last.step, last.phase)
        if "kept failing for" in saga.note:
            start = track[_clock_start(track)].at
            if not played.schedule.give_up:
                problems.append(f"{where}: gave up although the give-up time is an hour")
            elif last.event is not StepEvent.RETRYING or last.at - start < limit:
                problems.append(f"{where}: gave up after {last.at - start}, before {limit}")
        elif "refused" in saga.note:
            if (last.event, last.message) != (StepEvent.FAILED, REFUSAL):
                problems.append(f"{where}: no refusal in the schedule, last row {last}")
        else:
            problems.append(f"{where}: the design parks a saga for no such reason")
        status = world.booking(saga.booking_id).status
        if saga.kind == "cancel":
            allowed = {BookingStatus.CANCELLING}
        elif last.phase is COMPENSATION or last.step == "confirm_seats":
            allowed = {BookingStatus.PENDING, BookingStatus.CANCELLING}
        else:
            allowed = {BookingStatus.CONFIRMED, BookingStatus.CANCELLING, BookingStatus.CANCELLED}
        if status not in allowed:
            problems.append(f"{where}: the booking is {status.value}")
    return problems


def overdue_retries(
    definition: SagaDefinition, rows: Sequence[LogRecord], limit: float
) -> list[str]:
    """Retries of a persistent track made past its give-up time: it should have been parked."""
    problems: list[str] = []
    # The few milliseconds of fake clock between the give-up check and the row it leads to.
    margin = timedelta(seconds=0.05)
    for step in definition.steps:
        for phase, policy in ((ACTION, step.retry), (COMPENSATION, step.compensation_retry)):
            if policy.kind is not RetryKind.PERSISTENT:
                continue
            track = _track(rows, step.name, phase)
            start = None
            for position, row in enumerate(track):
                if row.code == OPERATOR or start is None:
                    start = row.at
                overdue = row.at - start > timedelta(seconds=limit) + margin
                # Parked: nothing follows the row that gave up but an operator's retry.
                resumed = position + 1 < len(track) and track[position + 1].code != OPERATOR
                if row.event is StepEvent.RETRYING and overdue and resumed:
                    problems.append(
                        f"{definition.kind} {step.name} {phase.value} retried "
                        f"{row.at - start} after its first call, past {limit} s"
                    )
    return problems


def settled_problems(played: Play) -> list[str]:
    """Every booking fully done or fully undone, and the participants agree."""
    world = played.world
    problems: list[str] = []
    p = world.participants
    sagas_by_kind = definitions(world.settings)
    attempts = world.settings.step_attempts
    confirmed_seats = 0
    for index, booking_id in sorted(played.booking_ids.items()):
        booking = world.booking(booking_id)
        where = f"booking {index} ({booking.status.value})"
        kinds_run = [s.kind for s in world.store.sagas_of(booking_id)]
        if sorted(set(kinds_run)) != sorted(kinds_run):
            problems.append(f"{where}: more than one saga of a kind: {kinds_run}")
        sagas = {s.kind: s for s in world.store.sagas_of(booking_id)}
        booking_saga, cancel_saga = sagas["booking"], sagas.get("cancel")
        if index not in played.cancelled and (
            cancel_saga is not None or booking_saga.cancel_requested
        ):
            problems.append(f"{where}: cancelled, though nobody asked")
        for saga in sagas.values():
            if saga.status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
                problems.append(f"{where}: its {saga.kind} saga ended {saga.status.value}")
            rows = world.log(saga.saga_id)
            problems.extend(
                f"{where}: {problem}"
                for problem in overdue_retries(
                    sagas_by_kind[saga.kind], rows, world.settings.give_up_after_seconds
                )
            )
        if cancel_saga is not None and cancel_saga.status is not SagaStatus.COMPLETED:
            problems.append(f"{where}: its cancel saga ended {cancel_saga.status.value}")
        if booking_saga.status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
            continue
        if booking_saga.status is SagaStatus.COMPENSATED:
            expected = (
                BookingStatus.CANCELLED if booking_saga.cancel_requested else BookingStatus.FAILED
            )
            if cancel_saga is not None:
                problems.append(f"{where}: a compensated booking saga has a cancel saga")
        elif cancel_saga is not None:
            expected = BookingStatus.CANCELLED
        else:
            expected = BookingStatus.CONFIRMED
        if booking.status is not expected:
            problems.append(f"{where}: expected {expected.value} after its sagas")
        if booking.status is BookingStatus.FAILED and not booking.failure_reason:
            problems.append(f"{where}: no failure reason")

        # Before the pivot the budget counts every started call, crashes included.
        booking_rows = world.log(booking_saga.saga_id)
        for step in ("reserve_seats", "charge_account"):
            started = [
                r for r in _track(booking_rows, step, ACTION) if r.event is StepEvent.STARTED
            ]
            if len(started) > attempts:
                problems.append(f"{where}: {step} started {len(started)} times, budget {attempts}")

        reservation = p.reservations.get(reservation_id(booking_saga.saga_id))
        charge = p.charges.get(charge_key(booking_saga.saga_id))
        kinds = sorted(n.kind for n in p.notifications.values() if n.booking_id == booking_id)
        if len(p.charges_for(booking_id)) > 1:
            problems.append(f"{where}: charged under {len(p.charges_for(booking_id))} keys")
        if booking.status is BookingStatus.CONFIRMED:
            confirmed_seats += booking.quantity
            if reservation is None or (reservation.status, reservation.quantity) != (
                "CONFIRMED",
                booking.quantity,
            ):
                problems.append(f"{where}: its seats are not sold: {reservation}")
            amount = booking.quantity * PRICE
            if booking.amount_cents != amount:
                problems.append(f"{where}: amount {booking.amount_cents}, not {amount}")
            if charge is None or (charge.state, charge.amount_cents) != ("CHARGED", amount):
                problems.append(f"{where}: not charged {amount} once: {charge}")
            elif charge.account_id != played.accounts[played.schedule.bookings[index].account]:
                problems.append(f"{where}: charged to another account")
            if kinds != ["booking_confirmed"]:
                problems.append(f"{where}: notified {kinds}")
        else:
            if reservation is not None and reservation.status in ("HELD", "CONFIRMED"):
                problems.append(f"{where}: still holds seats: {reservation}")
            if charge is not None and charge.state == "CHARGED":
                problems.append(f"{where}: still charged: {charge}")
            passed_pivot = booking_saga.status is SagaStatus.COMPLETED
            expected_kinds = ["booking_cancelled", "booking_confirmed"] if passed_pivot else []
            if kinds != expected_kinds:
                problems.append(f"{where}: notified {kinds}, expected {expected_kinds}")

    problems.extend(_calls_were_logged_first(played))
    event_id = world.event_id
    held, sold = p.seats("HELD", event_id=event_id), p.seats("CONFIRMED", event_id=event_id)
    if held:
        problems.append(f"{held} seats still held with every booking settled")
    if sold != confirmed_seats:
        problems.append(f"{sold} seats sold, {confirmed_seats} for confirmed bookings")
    if held + sold > played.schedule.capacity:
        problems.append(f"{held + sold} seats taken of {played.schedule.capacity}")
    for account, seats in zip(played.accounts, played.schedule.balances, strict=True):
        balance = p.balances[account]
        if balance < 0 or balance + p.net_charged(account) != seats * PRICE:
            problems.append(
                f"account {played.accounts.index(account)}: balance {balance} and "
                f"{p.net_charged(account)} charged, of {seats * PRICE}"
            )
    return problems


# The participant call each track makes, by saga kind, step and phase.
_OPERATION_OF = {
    ("booking", "reserve_seats", ACTION): "reserve_seats",
    ("booking", "reserve_seats", COMPENSATION): "release_reservation",
    ("booking", "charge_account", ACTION): "charge",
    ("booking", "charge_account", COMPENSATION): "refund",
    ("booking", "confirm_seats", ACTION): "confirm_reservation",
    ("booking", "notify", ACTION): "send_notification",
    ("cancel", "release_seats", ACTION): "release_reservation",
    ("cancel", "refund", ACTION): "refund",
    ("cancel", "notify", ACTION): "send_notification",
}


def _calls_were_logged_first(played: Play) -> list[str]:
    """No participant call without a STARTED row for it: never more calls than STARTED rows."""
    world = played.world
    started: dict[tuple[str, str], int] = {}
    for booking_id in played.booking_ids.values():
        sagas = world.store.sagas_of(booking_id)
        booking_saga = next(s for s in sagas if s.kind == "booking")
        keys = {
            "reserve_seats": str(reservation_id(booking_saga.saga_id)),
            "confirm_reservation": str(reservation_id(booking_saga.saga_id)),
            "release_reservation": str(reservation_id(booking_saga.saga_id)),
            "charge": charge_key(booking_saga.saga_id),
            "refund": charge_key(booking_saga.saga_id),
        }
        for saga in sagas:
            for row in world.log(saga.saga_id):
                if row.event is StepEvent.STARTED:
                    operation = _OPERATION_OF[saga.kind, row.step, row.phase]
                    key = keys.get(operation, participant_key(saga.saga_id, "notify"))
                    started[operation, key] = started.get((operation, key), 0) + 1
    made: dict[tuple[str, str], int] = {}
    for call in world.participants.calls:
        made[call.operation, call.key] = made.get((call.operation, call.key), 0) + 1
    return [
        f"{count} {operation} calls with key {key}, {started.get((operation, key), 0)} STARTED rows"
        for (operation, key), count in made.items()
        if count > started.get((operation, key), 0)
    ]


# The properties.

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(schedule: Schedule) -> None:
    played = replay(schedule)
    # What the examples reached, for --hypothesis-show-statistics.
    statuses = {played.world.booking(b).status.value for b in played.booking_ids.values()}
    event(f"bookings end {'+'.join(sorted(statuses))}")
    event(f"{sum(hook.died is not None for hook in played.hooks)} crashes")
    event(f"{len(played.stuck)} STUCK before the operator")
    event(f"{len(played.answers)} calls" if len(played.answers) < 20 else "20+ calls")
    assert not played.problems, played.report()


@settings(SETTINGS, max_examples=250)
@given(schedule=schedules(give_up=False))
@example(
    # The pivot is applied but times out, a cancel arrives while it is asked again, and the
    # process dies right after handing over to the cancel saga, which another replica finishes.
    schedule=Schedule(
        capacity=2,
        balances=(2,),
        bookings=(
            BookingPlan(
                account=0,
                quantity=2,
                faults=(("confirm_reservation", (Fault.TIMEOUT_APPLIED,)),),
                cancel_at=3,
            ),
        ),
        crashes=(Crash(at=12, then=Then.TAKEOVER),),
    )
)
@example(
    # A charge that times out on every try spends its budget; its three calls land just
    # before the refund, which gives the money back once.
    schedule=Schedule(
        capacity=3,
        balances=(3,),
        bookings=(
            BookingPlan(account=0, quantity=2, faults=(("charge", (Fault.TIMEOUT_LATE,) * 3),)),
            BookingPlan(account=0, quantity=1),
        ),
        late_at=(8,),
    )
)
@example(
    # The process stalls past its lease just before two charges; another replica claims
    # both sagas while those are on their way and makes them again: each applies once.
    schedule=Schedule(
        capacity=3,
        balances=(3,),
        bookings=(
            BookingPlan(account=0, quantity=2, faults=(("charge", (Fault.UNAVAILABLE,)),)),
            BookingPlan(account=0, quantity=1),
        ),
        crashes=(Crash(at=4, then=Then.STALL),),
    )
)
def test_every_schedule_ends_with_each_booking_fully_done_or_fully_undone(
    schedule: Schedule,
) -> None:
    check(schedule)


@settings(SETTINGS, max_examples=150)
@given(schedule=schedules(give_up=True))
@example(
    # The compensation of a refused charge keeps failing past the give-up time: STUCK,
    # then an operator's retry undoes it.
    schedule=Schedule(
        capacity=2,
        balances=(0,),
        bookings=(
            BookingPlan(account=0, quantity=1, faults=(("refund", (Fault.UNAVAILABLE,) * 6),)),
        ),
        give_up=True,
    )
)
def test_with_a_short_give_up_time_only_what_kept_failing_that_long_is_parked(
    schedule: Schedule,
) -> None:
    check(schedule)
