"""Events and seat reservations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
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
    )
    op.create_index("events_by_start", "events", ["starts_at", "event_id"])
    op.create_table(
        "reservations",
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
        sa.CheckConstraint(
            "(event_id IS NOT NULL AND quantity > 0 AND expires_at IS NOT NULL)"
            " OR (event_id IS NULL AND quantity = 0 AND status = 'RELEASED')",
            name="seats_or_tombstone",
        ),
    )
    op.create_index(
        "held_by_expiry",
        "reservations",
        ["expires_at"],
        postgresql_where=sa.text("status = 'HELD'"),
    )
    op.create_index(
        "held_by_event",
        "reservations",
        ["event_id", "expires_at"],
        postgresql_where=sa.text("status = 'HELD'"),
    )


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("events")
