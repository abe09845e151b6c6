"""Bookings, saga rows and the append-only saga step log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bookings",
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
    )
    op.create_index(
        "bookings_by_account",
        "bookings",
        ["account_id", sa.text("created_at DESC"), sa.text("booking_id DESC")],
    )
    op.create_table(
        "saga",
        sa.Column("saga_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column(
            "booking_id",
            UUID(as_uuid=True),
            sa.ForeignKey("bookings.booking_id"),
            nullable=False,
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
        sa.CheckConstraint("kind IN ('booking', 'cancel')", name="known_saga_kind"),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'STUCK')",
            name="known_saga_status",
        ),
    )
    op.create_index("saga_by_status_lease", "saga", ["status", "lease_expires_at"])
    op.create_index("saga_by_booking", "saga", ["booking_id"])
    op.create_table(
        "saga_step_log",
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
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("phase IN ('ACTION', 'COMPENSATION')", name="known_phase"),
        sa.CheckConstraint(
            "event IN ('STARTED', 'SUCCEEDED', 'FAILED', 'RETRYING')", name="known_event"
        ),
        sa.CheckConstraint("attempt >= 1", name="attempt_positive"),
    )
    op.create_index("saga_step_log_by_saga", "saga_step_log", ["saga_id", "seq"])
    # The log is the saga's memory: the database itself refuses to rewrite it.
    op.execute(
        """
        CREATE FUNCTION saga_step_log_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'saga_step_log is append-only';
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER saga_step_log_append_only
        BEFORE UPDATE OR DELETE ON saga_step_log
        FOR EACH ROW EXECUTE FUNCTION saga_step_log_append_only()
        """
    )


def downgrade() -> None:
    op.drop_table("saga_step_log")
    op.execute("DROP FUNCTION saga_step_log_append_only()")
    op.drop_table("saga")
    op.drop_table("bookings")
