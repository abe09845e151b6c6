"""The account database's tables, as SQLAlchemy Core metadata."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("balance_cents", sa.BigInteger, nullable=False),
    sa.Column("api_token_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("balance_cents >= 0", name="balance_never_negative"),
    # Every authenticated call finds its account by the token's hash.
    sa.Index("accounts_by_token_hash", "api_token_hash", unique=True),
)

transactions = sa.Table(
    "transactions",
    metadata,
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
    sa.Index(
        "transactions_by_account",
        "account_id",
        sa.text("created_at DESC"),
        sa.text("transaction_id DESC"),
    ),
    # A deposit key is unique per account; charge and refund keys are global.
    sa.Index(
        "deposit_key_once",
        "account_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("kind = 'DEPOSIT' AND idempotency_key IS NOT NULL"),
    ),
    sa.Index(
        "charge_refund_key_once",
        "kind",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("kind IN ('CHARGE', 'REFUND')"),
    ),
)

charge_keys = sa.Table(
    "charge_keys",
    metadata,
    sa.Column("idempotency_key", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("account_id", UUID(as_uuid=True), nullable=True),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('CHARGED', 'REFUNDED', 'DEAD')", name="known_state"),
)
