"""Bookings, saga instances and the log rows the engine writes, as frozen values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from booking_svc.domain.log import LogEntry
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase


class LeaseLost(Exception):
    """The saga row moved on (another owner or a newer version): this process must stop."""


@dataclass(frozen=True, kw_only=True)
class Booking:
    """A booking as the client sees it; amount_cents is 0 until the reserve step prices it."""

    booking_id: uuid.UUID
    account_id: uuid.UUID
    event_id: uuid.UUID
    quantity: int
    amount_cents: int = 0
    status: BookingStatus
    failure_reason: str = ""
    idempotency_key: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class SagaInstance:
    """One run of a saga definition (`kind` names it) for one booking.

    `owner` and `lease_expires_at` say which process runs it and until when;
    `version` grows with every write, so a write guarded by an old version fails.
    """

    saga_id: uuid.UUID
    kind: str
    booking_id: uuid.UUID
    status: SagaStatus
    current_step: str
    owner: str | None
    lease_expires_at: datetime | None
    version: int = 0
    # W3C traceparent/tracestate of the request that started the saga.
    trace_context: dict[str, str] = field(default_factory=dict)
    cancel_requested: bool = False
    # Why the saga is STUCK, or what an operator last did to it.
    note: str = ""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class LogRecord:
    """A log row to append; the database numbers it, and it reads back as a LogEntry."""

    step: str
    phase: StepPhase
    event: StepEvent
    attempt: int
    code: str = ""
    message: str = ""
    request_summary: dict[str, object] = field(default_factory=dict)
    response_summary: dict[str, object] | None = None
    trace_id: str | None = None
    span_id: str | None = None
    at: datetime


@dataclass(frozen=True, kw_only=True)
class LogDetail:
    """A log row as operators read it: the planner's view plus what was sent and who sent it."""

    entry: LogEntry
    request_summary: dict[str, object]
    response_summary: dict[str, object] | None
    trace_id: str | None
    span_id: str | None
    owner: str | None


@dataclass(frozen=True)
class Written:
    """What a guarded write returns: the saga's new version and whether a cancel is waiting."""

    version: int
    cancel_requested: bool
