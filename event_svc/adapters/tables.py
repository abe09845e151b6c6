"""The event database's tables, as SQLAlchemy Core metadata."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("venue", sa.Text, nullable=False),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("held_seats", sa.Integer, nullable=False),
    sa.Column("sold_seats", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("capacity BETWEEN 1 AND 100000", name="capacity_in_range"),
    sa.CheckConstraint("price_cents >= 0", name="price_not_negative"),
    sa.CheckConstraint("held_seats >= 0", name="held_not_negative"),
    sa.CheckConstraint("sold_seats >= 0", name="sold_not_negative"),
    sa.CheckConstraint("held_seats + sold_seats <= capacity", name="never_over_capacity"),
    sa.Index("events_by_start", "starts_at", "event_id"),
)

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("reservation_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("event_id", UUID(as_uuid=True), sa.ForeignKey("events.event_id"), nullable=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(
        "status IN ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED')", name="known_status"
    ),
    sa.CheckConstraint("amount_cents >= 0", name="amount_not_negative"),
    # Either real seats on an event with a hold time, or the tombstone of an unknown id.
    sa.CheckConstraint(
        "(event_id IS NOT NULL AND quantity > 0 AND expires_at IS NOT NULL)"
        " OR (event_id IS NULL AND quantity = 0 AND status = 'RELEASED')",
        name="seats_or_tombstone",
    ),
    sa.Index(
        "held_by_expiry",
        "expires_at",
        postgresql_where=sa.text("status = 'HELD'"),
    ),
    sa.Index(
        "held_by_event",
        "event_id",
        "expires_at",
        postgresql_where=sa.text("status = 'HELD'"),
    ),
)
