"""Who wrote each log row, why a saga is parked, and one saga of each kind per booking.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The replica that wrote a row: shows that no saga ran in two places at once.
    op.add_column("saga_step_log", sa.Column("owner", sa.Text, nullable=True))
    # Why a saga is STUCK, or what an operator did to it; empty otherwise.
    op.add_column("saga", sa.Column("note", sa.Text, nullable=False, server_default=sa.text("''")))
    # Two concurrent cancels of one booking cannot both start a cancel saga.
    op.create_unique_constraint("one_saga_per_kind", "saga", ["booking_id", "kind"])


def downgrade() -> None:
    op.drop_constraint("one_saga_per_kind", "saga")
    op.drop_column("saga", "note")
    op.drop_column("saga_step_log", "owner")
