"""Find an account by its token's hash: every authenticated call does.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("accounts_by_token_hash", "accounts", ["api_token_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("accounts_by_token_hash", table_name="accounts")
