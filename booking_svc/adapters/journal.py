"""The saga journal on PostgreSQL: every write one statement, one round trip, its own transaction.

The engine writes once per participant reply. Through SQLAlchemy that was
a pool check, BEGIN, two or three statements and COMMIT, and the ORM-free
Core layer still cost more CPU than the rest of the saga. Here a transition
is one data-modifying CTE in autocommit: it bumps the saga's version under
the owner/version guard, appends the log rows and updates the booking, and
the rows and the booking change only when the guard matched, so the
statement is the transaction. Statements are prepared once per connection.
The schema is the one migrations/ create; tables.py describes it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from booking_svc.domain.model import Booking, LeaseLost, LogRecord, SagaInstance, Written
from booking_svc.domain.states import BookingStatus, SagaStatus

_LOG_COLUMNS = (
    "owner, saga_id, step, phase, event, attempt, request_summary, response_summary,"
    " code, message, trace_id, span_id, at"
)

# The log rows come as one JSON array, expanded in order, so any number of
# rows costs one parameter and one statement.
_ROWS = """
    jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(row, n)
"""

_ROW_VALUES = """
    e.row->>'step', e.row->>'phase', e.row->>'event', (e.row->>'attempt')::int,
    e.row->'request_summary', NULLIF(e.row->'response_summary', 'null'::jsonb),
    e.row->>'code', e.row->>'message', e.row->>'trace_id', e.row->>'span_id',
    (e.row->>'at')::timestamptz
"""

_CREATE = f"""
WITH b AS (
    INSERT INTO bookings (booking_id, account_id, event_id, quantity, amount_cents, status,
                          failure_reason, idempotency_key, created_at, updated_at)
    VALUES (%(booking_id)s, %(account_id)s, %(event_id)s, %(quantity)s, %(amount_cents)s,
            %(booking_status)s, %(failure_reason)s, %(idempotency_key)s, %(booking_created_at)s,
            %(booking_updated_at)s)
    ON CONFLICT (account_id, idempotency_key) DO NOTHING
    RETURNING *
), s AS (
    INSERT INTO saga (saga_id, kind, booking_id, status, current_step, owner, lease_expires_at,
                      version, trace_context, cancel_requested, note, created_at, updated_at)
    SELECT %(saga_id)s, %(kind)s, b.booking_id, %(status)s, %(current_step)s, %(owner)s,
           %(lease_expires_at)s, %(version)s, %(trace_context)s, %(cancel_requested)s, %(note)s,
           %(created_at)s, %(updated_at)s
    FROM b
    RETURNING saga_id
), l AS (
    INSERT INTO saga_step_log ({_LOG_COLUMNS})
    SELECT %(owner)s, s.saga_id, {_ROW_VALUES}
    FROM s, {_ROWS}
    ORDER BY e.n
)
SELECT * FROM b
"""  # noqa: S608 (made of the constants above only)

_EXISTING = "SELECT * FROM bookings WHERE account_id = %(account_id)s AND idempotency_key = %(key)s"

_APPEND = f"""
WITH s AS (
    UPDATE saga SET
        version = version + 1,
        updated_at = %(now)s,
        status = COALESCE(%(status)s, status),
        current_step = COALESCE(%(current_step)s, current_step),
        lease_expires_at = COALESCE(%(lease_expires_at)s, lease_expires_at),
        note = COALESCE(%(note)s, note)
    WHERE saga_id = %(saga_id)s AND owner = %(owner)s AND version = %(version)s
      AND NOT (%(unless_cancelled)s AND cancel_requested)
    RETURNING booking_id, version, cancel_requested
), l AS (
    INSERT INTO saga_step_log ({_LOG_COLUMNS})
    SELECT %(owner)s, %(saga_id)s, {_ROW_VALUES}
    FROM s, {_ROWS}
    ORDER BY e.n
), b AS (
    UPDATE bookings SET
        updated_at = %(now)s,
        status = COALESCE(%(booking_status)s, bookings.status),
        amount_cents = COALESCE(%(booking_amount_cents)s, bookings.amount_cents),
        failure_reason = COALESCE(%(failure_reason)s, bookings.failure_reason)
    FROM s
    WHERE bookings.booking_id = s.booking_id AND %(touch_booking)s
)
SELECT version, cancel_requested FROM s
"""  # noqa: S608 (made of the constants above only)

# Why a guarded write matched nothing: the lease is gone, or a cancel is waiting.
_WHY = "SELECT owner, version, cancel_requested FROM saga WHERE saga_id = %(saga_id)s"


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
        min_size=min(4, max_size),
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": 0},
        # With the database down no connection comes: fail as an outage (UNAVAILABLE to a
        # caller, a retry to the engine) rather than wait out psycopg_pool's 30 s default.
        timeout=CONNECTION_WAIT_SECONDS,
        open=False,
        name="saga-journal",
    )


def _rows(records: Sequence[LogRecord]) -> dict[str, str]:
    """The `rows` parameter: the records as one JSON array, times in ISO 8601 with offset."""
    return {
        "rows": json.dumps(
            [
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
        )
    }


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


class PgJournal:
    """The Journal of booking_svc.service_layer.unit_of_work over a psycopg pool."""

    def __init__(self, connections: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self._pool = connections

    async def create(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking:
        params = {
            "booking_id": booking.booking_id,
            "account_id": booking.account_id,
            "event_id": booking.event_id,
            "quantity": booking.quantity,
            "amount_cents": booking.amount_cents,
            "booking_status": booking.status.value,
            "failure_reason": booking.failure_reason,
            "idempotency_key": booking.idempotency_key,
            "booking_created_at": booking.created_at,
            "booking_updated_at": booking.updated_at,
            "saga_id": saga_instance.saga_id,
            "kind": saga_instance.kind,
            "status": saga_instance.status.value,
            "current_step": saga_instance.current_step,
            "owner": saga_instance.owner,
            "lease_expires_at": saga_instance.lease_expires_at,
            "version": saga_instance.version,
            "trace_context": Jsonb(saga_instance.trace_context),
            "cancel_requested": saga_instance.cancel_requested,
            "note": saga_instance.note,
            "created_at": saga_instance.created_at,
            "updated_at": saga_instance.updated_at,
            **_rows([first_entry]),
        }
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            row = await (await cur.execute(_CREATE, params)).fetchone()
            if row is None:
                # ON CONFLICT waited for the first writer to commit, so this read sees its row.
                key = {"account_id": booking.account_id, "key": booking.idempotency_key}
                row = await (await cur.execute(_EXISTING, key)).fetchone()
        if row is None:
            raise RuntimeError(f"booking under key {booking.idempotency_key!r} vanished")
        return _booking(row)

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
        params = {
            "saga_id": saga_id,
            "owner": owner,
            "version": version,
            "now": now,
            "status": None if status is None else status.value,
            "current_step": current_step,
            "lease_expires_at": lease_expires_at,
            "note": note,
            "unless_cancelled": unless_cancelled,
            "booking_status": None if booking_status is None else booking_status.value,
            "booking_amount_cents": booking_amount_cents,
            "failure_reason": failure_reason,
            "touch_booking": (booking_status, booking_amount_cents, failure_reason)
            != (None, None, None),
            **_rows(entries),
        }
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_APPEND, params)).fetchone()
            if row is not None:
                return Written(version=row[0], cancel_requested=row[1])
            now_held = await (await conn.execute(_WHY, {"saga_id": saga_id})).fetchone()
        if now_held is not None and (now_held[0], now_held[1]) == (owner, version) and now_held[2]:
            return Written(version=version, cancel_requested=True)
        raise LeaseLost(f"saga {saga_id} is no longer held by {owner} at version {version}")
