"""The booking database's tables, as SQLAlchemy Core metadata.

`saga_step_log` is append-only: the repository only inserts into it, and
migration 0001 adds a trigger that refuses UPDATE and DELETE.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = sa.MetaData()

bookings = sa.Table(
    "bookings",
    metadata,
    sa.Column("booking_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("event_id", UUID(as_uuid=True), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("failure_reason", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint("amount_cents >= 0", name="amount_not_negative"),
    sa.CheckConstraint(
        "status IN ('PENDING', 'CONFIRMED', 'FAILED', 'CANCELLING', 'CANCELLED')",
        name="known_booking_status",
    ),
    sa.UniqueConstraint("account_id", "idempotency_key", name="booking_key_once"),
    sa.Index(
        "bookings_by_account",
        "account_id",
        sa.text("created_at DESC"),
        sa.text("booking_id DESC"),
    ),
)

saga = sa.Table(
    "saga",
    metadata,
    sa.Column("saga_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column(
        "booking_id", UUID(as_uuid=True), sa.ForeignKey("bookings.booking_id"), nullable=False
    ),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("current_step", sa.Text, nullable=False),
    sa.Column("owner", sa.Text, nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("trace_context", JSONB, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.CheckConstraint("kind IN ('booking', 'cancel')", name="known_saga_kind"),
    sa.CheckConstraint(
        "status IN ('RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'STUCK')",
        name="known_saga_status",
    ),
    # Recovery looks for live sagas whose lease ran out.
    sa.Index("saga_by_status_lease", "status", "lease_expires_at"),
    sa.Index("saga_by_booking", "booking_id"),
    sa.UniqueConstraint("booking_id", "kind", name="one_saga_per_kind"),
)

saga_step_log = sa.Table(
    "saga_step_log",
    metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("saga_id", UUID(as_uuid=True), sa.ForeignKey("saga.saga_id"), nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("request_summary", JSONB, nullable=False),
    sa.Column("response_summary", JSONB, nullable=True),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("trace_id", sa.Text, nullable=True),
    sa.Column("span_id", sa.Text, nullable=True),
    sa.Column("owner", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("phase IN ('ACTION', 'COMPENSATION')", name="known_phase"),
    sa.CheckConstraint(
        "event IN ('STARTED', 'SUCCEEDED', 'FAILED', 'RETRYING')", name="known_event"
    ),
    sa.CheckConstraint("attempt >= 1", name="attempt_positive"),
    sa.Index("saga_step_log_by_saga", "saga_id", "seq"),
)
