"""Accounts, the ledger and charge keys.

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
        "accounts",
        sa.Column("account_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("balance_cents", sa.BigInteger, nullable=False),
        sa.Column("api_token_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("balance_cents >= 0", name="balance_never_negative"),
    )
    op.create_table(
        "transactions",
        sa.Column("transaction_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.account_id"), nullable=False
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=True),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name="amount_positive"),
        sa.CheckConstraint("kind IN ('DEPOSIT', 'CHARGE', 'REFUND')", name="known_kind"),
    )
    op.create_index(
        "transactions_by_account",
        "transactions",
        ["account_id", sa.text("created_at DESC"), sa.text("transaction_id DESC")],
    )
    op.create_index(
        "deposit_key_once",
        "transactions",
        ["account_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("kind = 'DEPOSIT' AND idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "charge_refund_key_once",
        "transactions",
        ["kind", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("kind IN ('CHARGE', 'REFUND')"),
    )
    op.create_table(
        "charge_keys",
        sa.Column("idempotency_key", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("account_id", UUID(as_uuid=True), nullable=True),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('CHARGED', 'REFUNDED', 'DEAD')", name="known_state"),
    )


def downgrade() -> None:
    op.drop_table("charge_keys")
    op.drop_table("transactions")
    op.drop_table("accounts")
