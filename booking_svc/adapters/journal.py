"""The saga journal on PostgreSQL: each write one statement, shared by concurrent sagas.

The engine writes once per participant reply. Through SQLAlchemy that was
a pool check, BEGIN, two or three statements and COMMIT, and the ORM-free
Core layer still cost more CPU than the rest of the saga. Here a write is
one data-modifying CTE in autocommit: it bumps the saga's version under
the owner/version guard, appends the log rows and updates the booking, and
the rows and the booking change only when the guard matched, so the
statement is the transaction. Writes that arrive while a statement is in
flight join the next one (group commit), each under its own guard.
Statements are prepared once per connection. The schema is the one
migrations/ create; tables.py describes it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from booking_svc.domain.model import Booking, LeaseLost, LogRecord, SagaInstance, Written
from booking_svc.domain.states import BookingStatus, SagaStatus
from eventbooking import db

_LOG_COLUMNS = (
    "owner, saga_id, step, phase, event, attempt, request_summary, response_summary,"
    " code, message, trace_id, span_id, at"
)

# The log rows come as one JSON array, expanded in order, so any number of
# rows costs one parameter and one statement.
# Each item's log rows come as a JSON array, expanded in order.
_ROW_VALUES = """
    e.row->>'step', e.row->>'phase', e.row->>'event', (e.row->>'attempt')::int,
    e.row->'request_summary', NULLIF(e.row->'response_summary', 'null'::jsonb),
    e.row->>'code', e.row->>'message', e.row->>'trace_id', e.row->>'span_id',
    (e.row->>'at')::timestamptz
"""

# Bookings of many CreateBooking calls in one statement, each with its saga and first
# log row. A used idempotency key inserts nothing for its item (even when the same
# batch used it first); the caller then reads the booking stored under it.
_CREATE = f"""
WITH x AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS x(
        i int, booking_id uuid, account_id uuid, event_id uuid, quantity int,
        amount_cents bigint, booking_status text, failure_reason text, idempotency_key text,
        booking_created_at timestamptz, booking_updated_at timestamptz, saga_id uuid,
        kind text, status text, current_step text, owner text, lease_expires_at timestamptz,
        version bigint, trace_context jsonb, cancel_requested boolean, note text,
        created_at timestamptz, updated_at timestamptz, rows jsonb)
), b AS (
    INSERT INTO bookings (booking_id, account_id, event_id, quantity, amount_cents, status,
                          failure_reason, idempotency_key, created_at, updated_at)
    SELECT booking_id, account_id, event_id, quantity, amount_cents, booking_status,
           failure_reason, idempotency_key, booking_created_at, booking_updated_at
    FROM x ORDER BY x.i
    ON CONFLICT (account_id, idempotency_key) DO NOTHING
    RETURNING *
), s AS (
    INSERT INTO saga (saga_id, kind, booking_id, status, current_step, owner, lease_expires_at,
                      version, trace_context, cancel_requested, note, created_at, updated_at)
    SELECT x.saga_id, x.kind, b.booking_id, x.status, x.current_step, x.owner,
           x.lease_expires_at, x.version, x.trace_context, x.cancel_requested, x.note,
           x.created_at, x.updated_at
    FROM b JOIN x USING (booking_id)
    RETURNING saga_id
), l AS (
    INSERT INTO saga_step_log ({_LOG_COLUMNS})
    SELECT x.owner, s.saga_id, {_ROW_VALUES}
    FROM s JOIN x USING (saga_id), jsonb_array_elements(x.rows) WITH ORDINALITY AS e(row, n)
    ORDER BY x.i, e.n
)
SELECT b.*, x.i FROM b JOIN x USING (booking_id)
"""  # noqa: S608 (made of the constants above only)

_EXISTING = "SELECT * FROM bookings WHERE account_id = %(account_id)s AND idempotency_key = %(key)s"

# Transitions of many sagas in one statement: every running saga of this process
# that wrote meanwhile shares the next round trip and commit (group commit). Each
# saga keeps its own guard, so one that lost its lease just matches nothing. The
# saga rows are locked in id order, as lease renewal does, so the two never deadlock.
_APPEND = f"""
WITH x AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS x(
        i int, saga_id uuid, owner text, version bigint, now timestamptz, status text,
        current_step text, lease_expires_at timestamptz, note text, unless_cancelled boolean,
        booking_status text, booking_amount_cents bigint, failure_reason text,
        touch_booking boolean, rows jsonb)
), locked AS (
    SELECT saga.saga_id FROM saga JOIN x USING (saga_id) ORDER BY saga.saga_id FOR UPDATE OF saga
), s AS (
    UPDATE saga SET
        version = saga.version + 1,
        updated_at = x.now,
        status = COALESCE(x.status, saga.status),
        current_step = COALESCE(x.current_step, saga.current_step),
        lease_expires_at = COALESCE(x.lease_expires_at, saga.lease_expires_at),
        note = COALESCE(x.note, saga.note)
    FROM x JOIN locked USING (saga_id)
    WHERE saga.saga_id = x.saga_id AND saga.owner = x.owner AND saga.version = x.version
      AND NOT (x.unless_cancelled AND saga.cancel_requested)
    RETURNING x.i, x.saga_id, x.owner, x.rows, x.now, x.booking_status, x.booking_amount_cents,
              x.failure_reason, x.touch_booking, saga.booking_id, saga.version,
              saga.cancel_requested
), l AS (
    INSERT INTO saga_step_log ({_LOG_COLUMNS})
    SELECT s.owner, s.saga_id, {_ROW_VALUES}
    FROM s, jsonb_array_elements(s.rows) WITH ORDINALITY AS e(row, n)
    ORDER BY s.i, e.n
), b AS (
    UPDATE bookings SET
        updated_at = s.now,
        status = COALESCE(s.booking_status, bookings.status),
        amount_cents = COALESCE(s.booking_amount_cents, bookings.amount_cents),
        failure_reason = COALESCE(s.failure_reason, bookings.failure_reason)
    FROM s
    WHERE bookings.booking_id = s.booking_id AND s.touch_booking
)
SELECT i, version, cancel_requested FROM s
"""  # noqa: S608 (made of the constants above only)

# Why a guarded write matched nothing: the lease is gone, or a cancel is waiting.
_WHY = "SELECT saga_id, owner, version, cancel_requested FROM saga WHERE saga_id = ANY(%(ids)s)"

# At most this many transitions share one statement; more wait for the next.
MAX_BATCH = 64
# Statements in flight at once; each takes whatever transitions are waiting.
MAX_FLUSHES = 4


# How long a write waits for a free connection before it counts as a database outage.
CONNECTION_WAIT_SECONDS = 3.0


def conninfo(url: URL) -> str:
    """A libpq connection string from a service's SQLAlchemy database URL, password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def pool(url: URL, *, max_size: int) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """A pool of autocommit connections with statements prepared on first use; opened by
    `open()` at start and closed at shutdown. A connection broken by a database restart
    fails its statement once (the engine retries outages) and is not returned to the pool;
    while the database is down, waiting for a connection ends in PoolTimeout, an
    OperationalError like any other outage."""
    return AsyncConnectionPool(
        conninfo(url),
        # All open from the start, so a first burst of bookings waits for no connection.
        min_size=max_size,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": 0},
        # With the database down no connection comes: fail as an outage (UNAVAILABLE to a
        # caller, a retry to the engine) rather than wait out psycopg_pool's 30 s default.
        timeout=CONNECTION_WAIT_SECONDS,
        open=False,
        name="saga-journal",
    )


def _row_dicts(records: Sequence[LogRecord]) -> list[dict[str, Any]]:
    """The records as JSON objects, times in ISO 8601 with their offset."""
    return [
        {
            "step": r.step,
            "phase": r.phase.value,
            "event": r.event.value,
            "attempt": r.attempt,
            "request_summary": r.request_summary,
            "response_summary": r.response_summary,
            "code": r.code,
            "message": r.message,
            "trace_id": r.trace_id,
            "span_id": r.span_id,
            "at": r.at.isoformat(),
        }
        for r in records
    ]


def _booking(row: dict[str, Any]) -> Booking:
    return Booking(
        booking_id=row["booking_id"],
        account_id=row["account_id"],
        event_id=row["event_id"],
        quantity=row["quantity"],
        amount_cents=row["amount_cents"],
        status=BookingStatus(row["status"]),
        failure_reason=row["failure_reason"],
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


A = TypeVar("A")


@dataclass
class _Pending(Generic[A]):
    """One write waiting for a statement, and where its answer goes."""

    item: dict[str, Any]
    answer: asyncio.Future[A]


class _Batches(Generic[A]):
    """Writes that share statements: each waiting write joins the next one.

    `execute` writes a batch of items in one statement and returns one answer
    per item: a value, or an exception for that item alone. At most
    MAX_FLUSHES statements are in flight; each takes up to MAX_BATCH items.
    """

    def __init__(self, execute: Callable[[list[dict[str, Any]]], Awaitable[list[A | Exception]]]):
        self._execute = execute
        self._waiting: list[_Pending[A]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, item: dict[str, Any]) -> A:
        pending: _Pending[A] = _Pending(item, asyncio.get_running_loop().create_future())
        self._waiting.append(pending)
        if len(self._flushes) < MAX_FLUSHES:
            self._flushes.add(asyncio.create_task(self._flush_waiting()))
        return await pending.answer

    async def _flush_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._write(batch)
        finally:
            # In the same step as the last look at _waiting, so no write is stranded.
            task = asyncio.current_task()
            if task is not None:
                self._flushes.discard(task)

    async def _write(self, batch: list[_Pending[A]]) -> None:
        """Write `batch` in one statement and answer each waiter; never raises."""
        try:
            answers = await self._execute([{**p.item, "i": i} for i, p in enumerate(batch)])
        except Exception as exc:  # noqa: BLE001 (every error goes to the waiters)
            if len(batch) > 1 and not db.is_outage(exc):
                # One bad write must not fail the others: write each on its own.
                for pending in batch:
                    await self._write([pending])
                return
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(exc)
            return
        for pending, answer in zip(batch, answers, strict=True):
            if pending.answer.done():
                continue
            if isinstance(answer, Exception):
                pending.answer.set_exception(answer)
            else:
                pending.answer.set_result(answer)


class PgJournal:
    """The Journal of booking_svc.service_layer.unit_of_work over a psycopg pool."""

    def __init__(self, connections: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self._pool = connections
        self._creates: _Batches[Booking] = _Batches(self._execute_creates)
        self._appends: _Batches[Written] = _Batches(self._execute_appends)

    async def create(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking:
        return await self._creates.submit(
            {
                "booking_id": str(booking.booking_id),
                "account_id": str(booking.account_id),
                "event_id": str(booking.event_id),
                "quantity": booking.quantity,
                "amount_cents": booking.amount_cents,
                "booking_status": booking.status.value,
                "failure_reason": booking.failure_reason,
                "idempotency_key": booking.idempotency_key,
                "booking_created_at": booking.created_at.isoformat(),
                "booking_updated_at": booking.updated_at.isoformat(),
                "saga_id": str(saga_instance.saga_id),
                "kind": saga_instance.kind,
                "status": saga_instance.status.value,
                "current_step": saga_instance.current_step,
                "owner": saga_instance.owner,
                "lease_expires_at": (
                    None
                    if saga_instance.lease_expires_at is None
                    else saga_instance.lease_expires_at.isoformat()
                ),
                "version": saga_instance.version,
                "trace_context": saga_instance.trace_context,
                "cancel_requested": saga_instance.cancel_requested,
                "note": saga_instance.note,
                "created_at": saga_instance.created_at.isoformat(),
                "updated_at": saga_instance.updated_at.isoformat(),
                "rows": _row_dicts([first_entry]),
            }
        )

    async def _execute_creates(self, items: list[dict[str, Any]]) -> list[Booking | Exception]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_CREATE, {"items": json.dumps(items)})
            stored = {row["i"]: _booking(row) for row in await cur.fetchall()}
            answers: list[Booking | Exception] = []
            for item in items:
                if item["i"] in stored:
                    answers.append(stored[item["i"]])
                    continue
                # The key was used: ON CONFLICT waited for its writer to commit, so it shows.
                key = {"account_id": item["account_id"], "key": item["idempotency_key"]}
                row = await (await cur.execute(_EXISTING, key)).fetchone()
                answers.append(
                    _booking(row)
                    if row is not None
                    else RuntimeError(f"booking under key {item['idempotency_key']!r} vanished")
                )
        return answers

    async def append(
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
        unless_cancelled: bool = False,
        now: datetime,
    ) -> Written:
        return await self._appends.submit(
            {
                "saga_id": str(saga_id),
                "owner": owner,
                "version": version,
                "now": now.isoformat(),
                "status": None if status is None else status.value,
                "current_step": current_step,
                "lease_expires_at": (
                    None if lease_expires_at is None else lease_expires_at.isoformat()
                ),
                "note": note,
                "unless_cancelled": unless_cancelled,
                "booking_status": None if booking_status is None else booking_status.value,
                "booking_amount_cents": booking_amount_cents,
                "failure_reason": failure_reason,
                "touch_booking": (booking_status, booking_amount_cents, failure_reason)
                != (None, None, None),
                "rows": _row_dicts(entries),
            }
        )

    async def _execute_appends(self, items: list[dict[str, Any]]) -> list[Written | Exception]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_APPEND, {"items": json.dumps(items)})
            written = {
                row[0]: Written(version=row[1], cancel_requested=row[2])
                for row in await cur.fetchall()
            }
            missed = [item for item in items if item["i"] not in written]
            held: dict[str, tuple[str, int, bool]] = {}
            if missed:
                ids = [uuid.UUID(item["saga_id"]) for item in missed]
                why = await conn.execute(_WHY, {"ids": ids})
                held = {str(row[0]): (row[1], row[2], row[3]) for row in await why.fetchall()}
        answers: list[Written | Exception] = []
        for item in items:
            if item["i"] in written:
                answers.append(written[item["i"]])
                continue
            now_held = held.get(item["saga_id"])
            if now_held and now_held[:2] == (item["owner"], item["version"]) and now_held[2]:
                # Its cancel flag is set and it asked to be left alone then: nothing written.
                answers.append(Written(version=item["version"], cancel_requested=True))
            else:
                answers.append(
                    LeaseLost(
                        f"saga {item['saga_id']} is no longer held by {item['owner']}"
                        f" at version {item['version']}"
                    )
                )
        return answers
