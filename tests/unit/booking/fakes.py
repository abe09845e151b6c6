"""In-memory doubles of the booking service's neighbours, with the rules of the real ones.

- `FakeSagaRepository` keeps `SqlSagaRepository`'s rules: guarded writes raise
  LeaseLost and write nothing, every write bumps the version, a cancel flag and a
  lease renewal do not, a claim takes only live sagas whose lease ran out.
- `FakeUnitOfWork` stages every change and applies it on commit; leaving it
  without a commit throws the changes away, as a rollback does.
- `FakeParticipants` models event_svc, account_svc and notification_svc: seats
  per reservation id, charges and refunds per key (a refund that comes first
  kills the key, so a late charge is ABORTED), notifications per key. Replies
  are scripted per operation: a success, a refusal, a transient error, or a
  DEADLINE_EXCEEDED whose call was applied (the reply was lost) or not (it may
  still arrive late). A chooser can pick each reply from the call's key instead,
  and an event given a capacity refuses reservations past it as sold out.
- `World` wires them to the real engine and handlers through `bootstrap`.
- `FakeAccountTokens` stands in for account_svc's token check: token -> account id.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from booking_svc.adapters.participants import (
    Charged,
    Held,
    Notified,
    ParticipantError,
    Refunded,
    ReservationState,
)
from booking_svc.adapters.repository import SagaRepository
from booking_svc.bootstrap import App, bootstrap
from booking_svc.domain import commands
from booking_svc.domain.log import LogEntry
from booking_svc.domain.model import (
    Booking,
    LeaseLost,
    LogDetail,
    LogRecord,
    SagaInstance,
    Written,
)
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase
from booking_svc.service_layer import crash
from booking_svc.service_layer.limits import BookingRateLimit
from booking_svc.settings import Settings
from eventbooking.errors import NotFound
from eventbooking.retry import Sleep

T = TypeVar("T")

START = datetime(2030, 1, 1, tzinfo=UTC)
# Only these may be claimed by recovery, as in the SQL repository.
LIVE = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING})


# The saga repository and its unit of work.


@dataclass(frozen=True)
class StoredRow:
    """A committed log row, numbered from one sequence for all sagas like the database does."""

    seq: int
    saga_id: uuid.UUID
    record: LogRecord
    owner: str | None


@dataclass
class SagaStore:
    """What the booking database holds after the last commit."""

    bookings: dict[uuid.UUID, Booking] = field(default_factory=dict)
    sagas: dict[uuid.UUID, SagaInstance] = field(default_factory=dict)
    rows: list[StoredRow] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0
    # Raised, one each, by the next append_txn calls: a broken statement or an outage.
    fail_appends: list[Exception] = field(default_factory=list)

    def rows_of(self, saga_id: uuid.UUID) -> list[StoredRow]:
        return [row for row in self.rows if row.saga_id == saga_id]

    def sagas_of(self, booking_id: uuid.UUID) -> list[SagaInstance]:
        return sorted(
            (s for s in self.sagas.values() if s.booking_id == booking_id),
            key=lambda s: (s.created_at, s.saga_id),
        )


class _Transaction:
    """Changes staged over the store: reads see them, the store only after `commit`."""

    def __init__(self, store: SagaStore) -> None:
        self.store = store
        self._bookings: dict[uuid.UUID, Booking] = {}
        self._sagas: dict[uuid.UUID, SagaInstance] = {}
        self._rows: list[tuple[uuid.UUID, LogRecord, str | None]] = []
        # What each staged row was when this transaction first changed it.
        self._read_bookings: dict[uuid.UUID, Booking | None] = {}
        self._read_sagas: dict[uuid.UUID, SagaInstance | None] = {}

    @property
    def dirty(self) -> bool:
        return bool(self._bookings or self._sagas or self._rows)

    def booking(self, booking_id: uuid.UUID) -> Booking | None:
        return self._bookings.get(booking_id) or self.store.bookings.get(booking_id)

    def bookings(self) -> list[Booking]:
        return list({**self.store.bookings, **self._bookings}.values())

    def saga(self, saga_id: uuid.UUID) -> SagaInstance | None:
        return self._sagas.get(saga_id) or self.store.sagas.get(saga_id)

    def sagas(self) -> list[SagaInstance]:
        return list({**self.store.sagas, **self._sagas}.values())

    def put_booking(self, booking: Booking) -> None:
        self._read_bookings.setdefault(
            booking.booking_id, self.store.bookings.get(booking.booking_id)
        )
        self._bookings[booking.booking_id] = booking

    def put_saga(self, saga: SagaInstance) -> None:
        self._read_sagas.setdefault(saga.saga_id, self.store.sagas.get(saga.saga_id))
        self._sagas[saga.saga_id] = saga

    def add_row(self, saga_id: uuid.UUID, record: LogRecord, owner: str | None) -> None:
        self._rows.append((saga_id, record, owner))

    def rows_of(self, saga_id: uuid.UUID) -> list[StoredRow]:
        """Committed rows, then this transaction's, numbered as they would be on commit."""
        rows = self.store.rows_of(saga_id)
        seq = len(self.store.rows)
        for staged_saga, record, owner in self._rows:
            seq += 1
            if staged_saga == saga_id:
                rows.append(StoredRow(seq, staged_saga, record, owner))
        return rows

    def commit(self) -> None:
        # Nothing in these doubles suspends inside a transaction, so two never interleave;
        # if a test made them, the real database would serialise them, which this cannot.
        for booking_id, read in self._read_bookings.items():
            if self.store.bookings.get(booking_id) is not read:
                raise RuntimeError(f"fake: booking {booking_id} changed under a transaction")
        for saga_id, read_saga in self._read_sagas.items():
            if self.store.sagas.get(saga_id) is not read_saga:
                raise RuntimeError(f"fake: saga {saga_id} changed under a transaction")
        self.store.bookings.update(self._bookings)
        self.store.sagas.update(self._sagas)
        for saga_id, record, owner in self._rows:
            self.store.rows.append(StoredRow(len(self.store.rows) + 1, saga_id, record, owner))
        self.store.commits += 1
        self.rollback()

    def rollback(self) -> None:
        self._bookings.clear()
        self._sagas.clear()
        self._rows.clear()
        self._read_bookings.clear()
        self._read_sagas.clear()


def _entry(row: StoredRow) -> LogEntry:
    r = row.record
    return LogEntry(
        seq=row.seq,
        saga_id=row.saga_id,
        step=r.step,
        phase=r.phase,
        event=r.event,
        attempt=r.attempt,
        code=r.code,
        message=r.message,
        at=r.at,
        trace_id=r.trace_id,
        span_id=r.span_id,
    )


class FakeSagaRepository:
    """`SagaRepository` over a staged transaction, with the SQL repository's guards."""

    def __init__(self, txn: _Transaction) -> None:
        self._t = txn

    async def create_txn(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking:
        for existing in self._t.bookings():
            if (existing.account_id, existing.idempotency_key) == (
                booking.account_id,
                booking.idempotency_key,
            ):
                return existing
        self._t.put_booking(booking)
        await self.add_saga_txn(saga_instance, first_entry)
        return booking

    async def add_saga_txn(self, saga_instance: SagaInstance, first_entry: LogRecord) -> None:
        if self._t.saga(saga_instance.saga_id) is not None:
            raise ValueError(f"fake: saga {saga_instance.saga_id} exists already")
        if self._t.booking(saga_instance.booking_id) is None:
            raise ValueError(f"fake: saga names booking {saga_instance.booking_id}, not stored")
        self._t.put_saga(saga_instance)
        self._t.add_row(saga_instance.saga_id, first_entry, saga_instance.owner)

    async def append_txn(
        self,
        saga_id: uuid.UUID,
        *,
        owner: str,
        version: int,
        entries: Sequence[LogRecord] = (),
        status: SagaStatus | None = None,
        current_step: str | None = None,
        lease_expires_at: datetime | None = None,
        note: str | None = None,
        booking_status: BookingStatus | None = None,
        booking_amount_cents: int | None = None,
        failure_reason: str | None = None,
        now: datetime,
    ) -> Written:
        if self._t.store.fail_appends:
            raise self._t.store.fail_appends.pop(0)
        saga = self._t.saga(saga_id)
        if saga is None or saga.owner != owner or saga.version != version:
            raise LeaseLost(f"saga {saga_id} is no longer held by {owner} at version {version}")
        saga = replace(
            saga,
            version=saga.version + 1,
            updated_at=now,
            status=status if status is not None else saga.status,
            current_step=current_step if current_step is not None else saga.current_step,
            lease_expires_at=(
                lease_expires_at if lease_expires_at is not None else saga.lease_expires_at
            ),
            note=note if note is not None else saga.note,
        )
        self._t.put_saga(saga)
        for entry in entries:
            self._t.add_row(saga_id, entry, owner)
        if booking_status is not None or booking_amount_cents is not None or failure_reason:
            booking = self._t.booking(saga.booking_id)
            assert booking is not None
            self._t.put_booking(
                replace(
                    booking,
                    updated_at=now,
                    status=booking_status or booking.status,
                    amount_cents=(
                        booking_amount_cents
                        if booking_amount_cents is not None
                        else booking.amount_cents
                    ),
                    failure_reason=(
                        failure_reason if failure_reason is not None else booking.failure_reason
                    ),
                )
            )
        return Written(version=saga.version, cancel_requested=saga.cancel_requested)

    async def renew_leases(
        self, owner: str, saga_ids: Collection[uuid.UUID], *, until: datetime
    ) -> set[uuid.UUID]:
        held: set[uuid.UUID] = set()
        for saga_id in saga_ids:
            saga = self._t.saga(saga_id)
            if saga is not None and saga.owner == owner:
                self._t.put_saga(replace(saga, lease_expires_at=until))
                held.add(saga_id)
        return held

    async def release(self, owner: str, saga_ids: Collection[uuid.UUID]) -> None:
        for saga_id in saga_ids:
            saga = self._t.saga(saga_id)
            if saga is not None and saga.owner == owner:
                self._t.put_saga(replace(saga, lease_expires_at=None))

    async def claim(
        self,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        include_own: bool = False,
        exclude: Collection[uuid.UUID] = (),
    ) -> list[SagaInstance]:
        def free(s: SagaInstance) -> bool:
            expired = s.lease_expires_at is None or s.lease_expires_at <= now
            return expired or (include_own and s.owner == owner)

        candidates = sorted(
            (
                s
                for s in self._t.sagas()
                if s.status in LIVE and free(s) and s.saga_id not in exclude
            ),
            key=lambda s: (s.lease_expires_at is not None, s.lease_expires_at or START, s.saga_id),
        )
        claimed = []
        for saga in candidates[:limit]:
            taken = replace(
                saga, owner=owner, lease_expires_at=lease_until, version=saga.version + 1
            )
            self._t.put_saga(taken)
            claimed.append(taken)
        return sorted(claimed, key=lambda s: (s.created_at, s.saga_id))

    async def take_over_txn(
        self,
        saga_id: uuid.UUID,
        *,
        expected: SagaStatus,
        owner: str,
        lease_until: datetime,
        status: SagaStatus,
        note: str,
        entries: Sequence[LogRecord] = (),
        now: datetime,
    ) -> SagaInstance | None:
        saga = self._t.saga(saga_id)
        if saga is None or saga.status is not expected:
            return None
        taken = replace(
            saga,
            status=status,
            owner=owner,
            lease_expires_at=lease_until,
            note=note,
            updated_at=now,
            version=saga.version + 1,
        )
        self._t.put_saga(taken)
        for entry in entries:
            self._t.add_row(saga_id, entry, owner)
        return taken

    async def load(self, saga_id: uuid.UUID) -> tuple[SagaInstance, list[LogEntry]]:
        saga = self._t.saga(saga_id)
        if saga is None:
            raise NotFound(f"saga {saga_id} does not exist")
        return saga, [_entry(row) for row in self._t.rows_of(saga_id)]

    async def get_saga(self, saga_id: uuid.UUID) -> SagaInstance | None:
        return self._t.saga(saga_id)

    async def details(self, saga_id: uuid.UUID) -> list[LogDetail]:
        return [
            LogDetail(
                entry=_entry(row),
                request_summary=dict(row.record.request_summary),
                response_summary=(
                    dict(row.record.response_summary)
                    if row.record.response_summary is not None
                    else None
                ),
                trace_id=row.record.trace_id,
                span_id=row.record.span_id,
                owner=row.owner,
            )
            for row in self._t.rows_of(saga_id)
        ]

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None,
        kind: str | None,
        step: str | None,
        created_before: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[SagaInstance]:
        rows = sorted(self._t.sagas(), key=lambda s: (s.created_at, s.saga_id))
        return [
            s
            for s in rows
            if (status is None or s.status is status)
            and (not kind or s.kind == kind)
            and (not step or s.current_step == step)
            and (created_before is None or s.created_at <= created_before)
            and (after is None or (s.created_at, s.saga_id) > after)
        ][:limit]

    async def get_booking(self, booking_id: uuid.UUID) -> Booking | None:
        return self._t.booking(booking_id)

    async def sagas_of(self, booking_id: uuid.UUID) -> list[SagaInstance]:
        return sorted(
            (s for s in self._t.sagas() if s.booking_id == booking_id),
            key=lambda s: (s.created_at, s.saga_id),
        )

    async def oldest_live_start(self) -> datetime | None:
        live = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)
        return min((s.created_at for s in self._t.sagas() if s.status in live), default=None)

    async def page_bookings(
        self, account_id: uuid.UUID | None, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Booking]:
        rows = sorted(
            (b for b in self._t.bookings() if account_id in (None, b.account_id)),
            key=lambda b: (b.created_at, b.booking_id),
            reverse=True,
        )
        if after is not None:
            rows = [b for b in rows if (b.created_at, b.booking_id) < after]
        return rows[:limit]

    async def set_booking_status_txn(
        self,
        booking_id: uuid.UUID,
        *,
        expected: BookingStatus,
        status: BookingStatus,
        now: datetime,
    ) -> Booking | None:
        booking = self._t.booking(booking_id)
        if booking is None or booking.status is not expected:
            return None
        moved = replace(booking, status=status, updated_at=now)
        self._t.put_booking(moved)
        return moved

    async def request_cancel(self, booking_id: uuid.UUID) -> bool:
        flagged = False
        for saga in self._t.sagas():
            if (
                saga.booking_id == booking_id
                and saga.kind == "booking"
                and saga.status in LIVE | {SagaStatus.STUCK}
            ):
                # The version stays: the flag comes from outside the owner.
                self._t.put_saga(replace(saga, cancel_requested=True))
                flagged = True
        return flagged


def _as_repository(repository: FakeSagaRepository) -> SagaRepository:
    """Fails type checking if the fake drifts from the Protocol."""
    return repository


class FakeUnitOfWork:
    """One staged transaction over a `SagaStore`: committed, or thrown away on exit."""

    sagas: SagaRepository

    def __init__(self, store: SagaStore) -> None:
        self._store = store
        self._txn: _Transaction | None = None

    async def __aenter__(self) -> Self:
        self._txn = _Transaction(self._store)
        self.sagas = _as_repository(FakeSagaRepository(self._txn))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        txn, self._txn = self._txn, None
        if txn is not None and txn.dirty:
            txn.rollback()
            self._store.rollbacks += 1

    async def commit(self) -> None:
        if self._txn is None:
            raise RuntimeError("commit outside `async with`")
        self._txn.commit()


# The participants.


@dataclass(frozen=True)
class Reply:
    """What a participant call does: OK, or an error code, having applied the call or not."""

    code: str = "OK"
    message: str = ""
    # The participant applied the call, but its reply was lost on the way back.
    applied: bool = False
    # The call was not applied yet, but it is still on its way: `deliver_late` applies it.
    late: bool = False
    # Raised as it is: a bug in the client, not a participant's reply.
    error: Exception | None = None


OK = Reply()


def refused(message: str, *, code: str = "FAILED_PRECONDITION") -> Reply:
    """A business refusal: the call was not applied and repeating it gives the same answer."""
    return Reply(code, message)


def transient(code: str = "UNAVAILABLE", message: str = "connection refused") -> Reply:
    """A transient failure before the call reached the participant."""
    return Reply(code, message)


def lost_reply() -> Reply:
    """DEADLINE_EXCEEDED although the participant applied the call."""
    return Reply("DEADLINE_EXCEEDED", "deadline exceeded", applied=True)


def timed_out(*, late: bool = False) -> Reply:
    """DEADLINE_EXCEEDED for a call not applied (yet: with `late` it arrives afterwards)."""
    return Reply("DEADLINE_EXCEEDED", "deadline exceeded", late=late)


def broken(error: Exception) -> Reply:
    return Reply("INTERNAL", str(error), error=error)


@dataclass
class Reservation:
    reservation_id: uuid.UUID
    event_id: uuid.UUID | None
    quantity: int
    amount_cents: int
    # HELD, CONFIRMED, RELEASED or EXPIRED.
    status: str
    expires_at: datetime | None


@dataclass
class Charge:
    account_id: uuid.UUID | None
    amount_cents: int
    # CHARGED, REFUNDED, or DEAD: refunded before any charge came, so none may come now.
    state: str
    transaction_id: str = ""
    refund_id: str = ""
    # The booking it pays for: two charges with one reference are a double charge.
    reference: str = ""


@dataclass(frozen=True)
class Notification:
    key: str
    account_id: uuid.UUID
    booking_id: uuid.UUID
    kind: str
    subject: str
    body: str


@dataclass(frozen=True)
class CallMade:
    """One call that reached a participant double, and the code it answered."""

    operation: str
    key: str
    deadline: float
    code: str


class Gate:
    """Holds the next call of one operation until `open`; `reached` is set once it waits."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._opened = asyncio.Event()

    def open(self) -> None:
        self._opened.set()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._opened.wait()


Hook = Callable[[], Awaitable[None] | None]
# Picks the reply to one call from its operation and key; None leaves it to the scripts.
Chooser = Callable[[str, str], Awaitable[Reply | None] | Reply | None]


class FakeParticipants:
    """event_svc, account_svc and notification_svc as one `Participants`, with scripted replies."""

    PRICE_CENTS = 2500
    OPENING_BALANCE = 1_000_000

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.reservations: dict[uuid.UUID, Reservation] = {}
        self.charges: dict[str, Charge] = {}
        self.balances: dict[uuid.UUID, int] = {}
        self.notifications: dict[str, Notification] = {}
        self.calls: list[CallMade] = []
        # (operation, key, code) of calls that arrived after the caller gave up on them.
        self.late_calls: list[tuple[str, str, str]] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._then: dict[str, Reply] = {}
        self._hooks: dict[str, Hook] = {}
        self._gates: dict[str, Gate] = {}
        self._chooser: Chooser | None = None
        # Seats per event; a ReserveSeats past them is refused as sold out. No entry, no limit.
        self.capacity: dict[uuid.UUID, int] = {}
        self._late: list[tuple[str, str, Callable[[], object]]] = []

    # Scripting.

    def script(self, operation: str, *replies: Reply, then: Reply = OK) -> None:
        """The next calls of `operation` answer `replies` in turn, and `then` after them."""
        self._scripts[operation] = deque(replies)
        self._then[operation] = then

    def answer_with(self, chooser: Chooser | None) -> None:
        """Ask `chooser(operation, key)` for the reply to every call before the scripts.

        It may be a coroutine, so it can act first (cancel a booking, let holds lapse).
        """
        self._chooser = chooser

    def on_call(self, operation: str, hook: Hook) -> None:
        """Run `hook` when the next call of `operation` arrives, before it is answered."""
        self._hooks[operation] = hook

    def gate(self, operation: str) -> Gate:
        """Hold the next call of `operation` until the returned gate is opened."""
        gate = self._gates[operation] = Gate()
        return gate

    def expire_holds(self) -> None:
        """Every hold lapses, as event_svc lets them after their hold time."""
        for reservation in self.reservations.values():
            if reservation.status == "HELD":
                reservation.status = "EXPIRED"

    async def deliver_late(self) -> None:
        """The calls that timed out arrive now, after the saga gave up on them."""
        late, self._late = self._late, []
        for operation, key, apply in late:
            try:
                apply()
            except ParticipantError as error:
                self.late_calls.append((operation, key, error.code))
            else:
                self.late_calls.append((operation, key, "OK"))

    # What the participants hold now.

    def seats(self, *statuses: str, event_id: uuid.UUID | None = None) -> int:
        """Seats in reservations with any of `statuses`, of one event if given."""
        return sum(
            r.quantity
            for r in self.reservations.values()
            if r.status in statuses and event_id in (None, r.event_id)
        )

    def net_charged(self, account_id: uuid.UUID | None = None) -> int:
        """Money taken and not given back, for one account or all."""
        return sum(
            c.amount_cents
            for c in self.charges.values()
            if c.state == "CHARGED" and (account_id is None or c.account_id == account_id)
        )

    def charges_for(self, booking_id: uuid.UUID) -> list[Charge]:
        """Every charge that took money for a booking, refunded since or not."""
        return [c for c in self.charges.values() if c.reference == str(booking_id)]

    def operations(self, *only: str) -> list[str]:
        """The operation of every call made, in order; only those named, if any are."""
        return [c.operation for c in self.calls if not only or c.operation in only]

    # The calls.

    async def _call(self, operation: str, key: str, deadline: float, apply: Callable[[], T]) -> T:
        assert deadline > 0, f"{operation} was called without a deadline"
        # A network call suspends the caller, as the real one does.
        await asyncio.sleep(0)
        hook = self._hooks.pop(operation, None)
        if hook is not None:
            result = hook()
            if inspect.isawaitable(result):
                await result
        gate = self._gates.pop(operation, None)
        if gate is not None:
            await gate.pass_through()
        reply: Reply | None = None
        if self._chooser is not None:
            chosen = self._chooser(operation, key)
            reply = await chosen if inspect.isawaitable(chosen) else chosen
        if reply is None:
            queue = self._scripts.get(operation)
            reply = queue.popleft() if queue else self._then.get(operation, OK)
        if reply.error is not None:
            self.calls.append(CallMade(operation, key, deadline, reply.code))
            raise reply.error
        if reply.code == "OK":
            try:
                value = apply()
            except ParticipantError as error:
                self.calls.append(CallMade(operation, key, deadline, error.code))
                raise
            self.calls.append(CallMade(operation, key, deadline, "OK"))
            return value
        if reply.applied:
            # Whatever it answered, the answer was lost.
            with contextlib.suppress(ParticipantError):
                apply()
        if reply.late:
            self._late.append((operation, key, apply))
        self.calls.append(CallMade(operation, key, deadline, reply.code))
        raise ParticipantError(reply.code, reply.message)

    async def reserve_seats(
        self,
        *,
        reservation_id: uuid.UUID,
        event_id: uuid.UUID,
        quantity: int,
        hold_seconds: int,
        deadline: float,
    ) -> Held:
        def apply() -> Held:
            reservation = self.reservations.get(reservation_id)
            if reservation is None:
                limit = self.capacity.get(event_id)
                taken = self.seats("HELD", "CONFIRMED", event_id=event_id)
                if limit is not None and taken + quantity > limit:
                    raise ParticipantError(
                        "FAILED_PRECONDITION", f"sold out: {limit - taken} seats available"
                    )
                reservation = self.reservations[reservation_id] = Reservation(
                    reservation_id,
                    event_id,
                    quantity,
                    quantity * self.PRICE_CENTS,
                    "HELD",
                    self._clock() + timedelta(seconds=hold_seconds),
                )
            elif reservation.status == "RELEASED":
                raise ParticipantError("ABORTED", f"reservation {reservation_id} was released")
            return Held(reservation.amount_cents, reservation.expires_at, reservation.status)

        return await self._call("reserve_seats", str(reservation_id), deadline, apply)

    async def confirm_reservation(
        self, *, reservation_id: uuid.UUID, deadline: float
    ) -> ReservationState:
        def apply() -> ReservationState:
            reservation = self.reservations.get(reservation_id)
            if reservation is None:
                raise ParticipantError("NOT_FOUND", f"no reservation {reservation_id}")
            if reservation.status == "EXPIRED":
                raise ParticipantError("FAILED_PRECONDITION", "hold expired")
            if reservation.status == "RELEASED":
                raise ParticipantError("FAILED_PRECONDITION", "reservation released")
            reservation.status = "CONFIRMED"
            return ReservationState(reservation.status)

        return await self._call("confirm_reservation", str(reservation_id), deadline, apply)

    async def release_reservation(
        self, *, reservation_id: uuid.UUID, deadline: float
    ) -> ReservationState:
        def apply() -> ReservationState:
            reservation = self.reservations.get(reservation_id)
            if reservation is None:
                # Released before it was made: a late ReserveSeats is refused.
                reservation = self.reservations[reservation_id] = Reservation(
                    reservation_id, None, 0, 0, "RELEASED", None
                )
            reservation.status = "RELEASED"
            return ReservationState(reservation.status)

        return await self._call("release_reservation", str(reservation_id), deadline, apply)

    async def charge(
        self,
        *,
        account_id: uuid.UUID,
        amount_cents: int,
        idempotency_key: str,
        reference: str,
        deadline: float,
    ) -> Charged:
        def apply() -> Charged:
            balance = self.balances.setdefault(account_id, self.OPENING_BALANCE)
            charge = self.charges.get(idempotency_key)
            if charge is not None:
                if charge.state != "CHARGED":
                    raise ParticipantError("ABORTED", f"charge {idempotency_key} was refunded")
                return Charged(charge.transaction_id, balance)
            if amount_cents > balance:
                raise ParticipantError("FAILED_PRECONDITION", "insufficient funds")
            self.balances[account_id] = balance - amount_cents
            self.charges[idempotency_key] = Charge(
                account_id, amount_cents, "CHARGED", str(uuid.uuid4()), reference=reference
            )
            return Charged(self.charges[idempotency_key].transaction_id, balance - amount_cents)

        return await self._call("charge", idempotency_key, deadline, apply)

    async def refund(self, *, idempotency_key: str, reason: str, deadline: float) -> Refunded:
        def apply() -> Refunded:
            charge = self.charges.get(idempotency_key)
            if charge is None:
                self.charges[idempotency_key] = Charge(None, 0, "DEAD")
                return Refunded("")
            if charge.state == "CHARGED":
                assert charge.account_id is not None
                self.balances[charge.account_id] += charge.amount_cents
                charge.state, charge.refund_id = "REFUNDED", str(uuid.uuid4())
            return Refunded(charge.refund_id)

        return await self._call("refund", idempotency_key, deadline, apply)

    async def send_notification(
        self,
        *,
        idempotency_key: str,
        account_id: uuid.UUID,
        booking_id: uuid.UUID,
        kind: str,
        subject: str,
        body: str,
        deadline: float,
    ) -> Notified:
        def apply() -> Notified:
            duplicate = idempotency_key in self.notifications
            if not duplicate:
                self.notifications[idempotency_key] = Notification(
                    idempotency_key, account_id, booking_id, kind, subject, body
                )
            return Notified(idempotency_key, duplicate)

        return await self._call("send_notification", idempotency_key, deadline, apply)


# Time, crashes, and the service wired together.


class FakeClock:
    """Moves one millisecond each time it is read, so every write gets its own time."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeMonotonic:
    """A monotonic clock in seconds that moves only when told to, for the rate limit."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records the backoff asked for and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class Crashed(BaseException):
    """The process died: not an Exception, so nothing in the engine catches it."""


class CrashAt:
    """A crash hook that kills the 'process' at `point`; once dead it dies at every point."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.fired = False

    def __call__(self, name: str) -> None:
        if self.fired or name == self.point:
            self.fired = True
            raise Crashed(name)


# The deployment's secrets in these tests; each at least 16 characters, as settings require.
ADMIN_TOKEN = "test-admin-token-0123456789"
SERVICE_CREDENTIAL = "test-service-credential-0123456789"


def bearer(token: str) -> tuple[tuple[str, str]]:
    """The metadata of a call made with `token`."""
    return (("authorization", f"Bearer {token}"),)


class FakeAccountTokens:
    """account_svc's AuthenticateToken as a lookup: tokens handed out here, and nothing else."""

    def __init__(self) -> None:
        self._accounts: dict[str, uuid.UUID] = {}
        self.lookups = 0

    def issue(self, account_id: uuid.UUID) -> str:
        token = f"user-token-{uuid.uuid4().hex}"
        self._accounts[token] = account_id
        return token

    async def __call__(self, token: str) -> uuid.UUID | None:
        self.lookups += 1
        return self._accounts.get(token)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "postgresql://unused/x",
        "admin_token": ADMIN_TOKEN,
        "service_credential": SERVICE_CREDENTIAL,
        "instance_id": "replica-a",
        "step_attempts": 3,
        "step_deadline_seconds": 2.0,
        "poll_interval_seconds": 0.01,
        **overrides,
    }
    return Settings(**values)


class World:
    """One booking database, one set of participants, and the booking service processes on them."""

    def __init__(
        self,
        *,
        crash_hook: crash.Crash = crash.never,
        sleep: Sleep | None = None,
        rate_limit: BookingRateLimit | None = None,
        prepared: Settings | None = None,
        **overrides: Any,
    ) -> None:
        # `prepared`: settings built once by a test that makes many worlds (building is slow).
        self.settings = (
            settings(**overrides) if prepared is None else prepared.model_copy(update=overrides)
        )
        self._rate_limit = rate_limit
        self.store = SagaStore()
        self.clock = FakeClock()
        self.sleep = FakeSleep()
        self._sleep: Sleep = sleep or self.sleep
        self.participants = FakeParticipants(self.clock)
        self.account_id = uuid.uuid4()
        self.event_id = uuid.uuid4()
        self.apps: list[App] = []
        self.app = self.start(crash_hook=crash_hook)

    def start(self, *, owner: str | None = None, crash_hook: crash.Crash = crash.never) -> App:
        """A booking service process on this world; the same owner as the first by default."""
        settings = self.settings
        if owner is not None:
            settings = settings.model_copy(update={"instance_id": owner})
        app = bootstrap(
            settings,
            uow=lambda: FakeUnitOfWork(self.store),
            participants=self.participants,
            clock=self.clock,
            sleep=self._sleep,
            crash_hook=crash_hook,
            rate_limit=self._rate_limit,
        )
        self.apps.append(app)
        return app

    async def book(
        self,
        *,
        quantity: int = 2,
        key: str | None = None,
        account_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
        wait: float | None = None,
        app: App | None = None,
    ) -> Booking:
        cmd = commands.CreateBooking(
            account_id=account_id or self.account_id,
            event_id=event_id or self.event_id,
            quantity=quantity,
            idempotency_key=key or f"key-{uuid.uuid4()}",
        )
        return await (app or self.app).handlers.create_booking(cmd, wait=wait)

    async def settle(self) -> None:
        """Let every saga of every process here run until none is left running."""
        while any(app.engine.running for app in self.apps):
            for app in self.apps:
                await app.engine.wait_idle()

    async def close(self) -> None:
        for app in self.apps:
            await app.engine.stop()

    # What the booking database holds.

    def booking(self, booking_id: uuid.UUID) -> Booking:
        return self.store.bookings[booking_id]

    def saga(self, booking_id: uuid.UUID, kind: str = "booking") -> SagaInstance:
        return next(s for s in self.store.sagas_of(booking_id) if s.kind == kind)

    def log(self, saga_id: uuid.UUID) -> list[LogRecord]:
        return [row.record for row in self.store.rows_of(saga_id)]

    def trail(
        self, saga_id: uuid.UUID, *, phase: StepPhase | None = None
    ) -> list[tuple[str, str, int]]:
        """(step, event, attempt) of each log row of a saga, of one phase if given."""
        return [
            (r.step, r.event.value, r.attempt)
            for r in self.log(saga_id)
            if phase is None or r.phase is phase
        ]

    def started(self, saga_id: uuid.UUID, phase: StepPhase) -> list[str]:
        """The steps whose `phase` call was started, in the order they were."""
        steps: list[str] = []
        for r in self.log(saga_id):
            if r.phase is phase and r.event is StepEvent.STARTED and r.step not in steps:
                steps.append(r.step)
        return steps
