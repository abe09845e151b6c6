"""Repositories of the account database over one connection in a transaction.

Balance changes are single conditional UPDATEs, so the balance can never go
negative whatever runs at once; the charge key row is the point where a
Charge and a Refund with the same key serialise.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from account_svc.adapters.tables import accounts, charge_keys, transactions
from account_svc.domain.model import (
    Account,
    ChargeKey,
    ChargeKeyState,
    Transaction,
    TransactionKind,
)


class AccountRepository(Protocol):
    async def add(self, account: Account, *, api_token_hash: str) -> bool: ...
    async def get(self, account_id: uuid.UUID) -> Account | None: ...
    async def change_balance(self, account_id: uuid.UUID, delta_cents: int) -> int | None: ...
    async def set_token_hash(self, account_id: uuid.UUID, *, api_token_hash: str) -> bool: ...
    async def holder_of(self, api_token_hash: str) -> uuid.UUID | None: ...
    async def page(
        self, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Account]: ...


class LedgerRepository(Protocol):
    async def add(self, txn: Transaction) -> bool: ...
    async def find(
        self, kind: TransactionKind, idempotency_key: str, *, account_id: uuid.UUID | None = None
    ) -> Transaction | None: ...
    async def page(
        self, account_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Transaction]: ...
    async def claim_key(self, key: ChargeKey, *, now: datetime) -> bool: ...
    async def lock_key(self, idempotency_key: str) -> ChargeKey: ...
    async def set_key_state(
        self, idempotency_key: str, state: ChargeKeyState, *, now: datetime
    ) -> None: ...


def _account(row: sa.Row[tuple[object, ...]]) -> Account:
    m = row._mapping
    return Account(
        account_id=m["account_id"],
        email=m["email"],
        display_name=m["display_name"],
        balance_cents=m["balance_cents"],
        created_at=m["created_at"],
    )


def _transaction(row: sa.Row[tuple[object, ...]]) -> Transaction:
    m = row._mapping
    return Transaction(
        transaction_id=m["transaction_id"],
        account_id=m["account_id"],
        kind=TransactionKind(m["kind"]),
        amount_cents=m["amount_cents"],
        idempotency_key=m["idempotency_key"] or "",
        reference=m["reference"],
        created_at=m["created_at"],
    )


class SqlAccountRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, account: Account, *, api_token_hash: str) -> bool:
        """Insert the account; False when its email is taken."""
        stmt = (
            insert(accounts)
            .values(
                account_id=account.account_id,
                email=account.email,
                display_name=account.display_name,
                balance_cents=account.balance_cents,
                api_token_hash=api_token_hash,
                created_at=account.created_at,
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(accounts.c.account_id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def get(self, account_id: uuid.UUID) -> Account | None:
        row = (
            await self._conn.execute(sa.select(accounts).where(accounts.c.account_id == account_id))
        ).first()
        return _account(row) if row else None

    async def change_balance(self, account_id: uuid.UUID, delta_cents: int) -> int | None:
        """Add `delta_cents` (negative to take); None if the account is missing or too poor."""
        stmt = (
            sa.update(accounts)
            .where(accounts.c.account_id == account_id)
            .where(accounts.c.balance_cents + delta_cents >= 0)
            .values(balance_cents=accounts.c.balance_cents + delta_cents)
            .returning(accounts.c.balance_cents)
        )
        balance: int | None = (await self._conn.execute(stmt)).scalar_one_or_none()
        return balance

    async def set_token_hash(self, account_id: uuid.UUID, *, api_token_hash: str) -> bool:
        """Replace the account's token hash; False when the account is missing."""
        stmt = (
            sa.update(accounts)
            .where(accounts.c.account_id == account_id)
            .values(api_token_hash=api_token_hash)
            .returning(accounts.c.account_id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def holder_of(self, api_token_hash: str) -> uuid.UUID | None:
        """The account whose token has this hash, if any."""
        query = sa.select(accounts.c.account_id).where(accounts.c.api_token_hash == api_token_hash)
        holder: uuid.UUID | None = (await self._conn.execute(query)).scalar_one_or_none()
        return holder

    async def page(self, *, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Account]:
        """Every account, oldest first, after the (created_at, account_id) cursor."""
        query = (
            sa.select(accounts).order_by(accounts.c.created_at, accounts.c.account_id).limit(limit)
        )
        if after is not None:
            query = query.where(
                sa.tuple_(accounts.c.created_at, accounts.c.account_id) > sa.tuple_(*after)
            )
        return [_account(row) for row in await self._conn.execute(query)]


class SqlLedgerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, txn: Transaction) -> bool:
        """Insert a ledger row; False when its idempotency key was used already."""
        stmt = (
            insert(transactions)
            .values(
                transaction_id=txn.transaction_id,
                account_id=txn.account_id,
                kind=txn.kind.value,
                amount_cents=txn.amount_cents,
                idempotency_key=txn.idempotency_key or None,
                reference=txn.reference,
                created_at=txn.created_at,
            )
            .on_conflict_do_nothing()
            .returning(transactions.c.transaction_id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def find(
        self, kind: TransactionKind, idempotency_key: str, *, account_id: uuid.UUID | None = None
    ) -> Transaction | None:
        query = sa.select(transactions).where(
            transactions.c.kind == kind.value, transactions.c.idempotency_key == idempotency_key
        )
        if account_id is not None:
            query = query.where(transactions.c.account_id == account_id)
        row = (await self._conn.execute(query)).first()
        return _transaction(row) if row else None

    async def page(
        self, account_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Transaction]:
        query = (
            sa.select(transactions)
            .where(transactions.c.account_id == account_id)
            .order_by(transactions.c.created_at.desc(), transactions.c.transaction_id.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                sa.tuple_(transactions.c.created_at, transactions.c.transaction_id)
                < sa.tuple_(*after)
            )
        return [_transaction(row) for row in await self._conn.execute(query)]

    async def claim_key(self, key: ChargeKey, *, now: datetime) -> bool:
        """Insert the key row; False when it exists (then waits for its writer to finish)."""
        stmt = (
            insert(charge_keys)
            .values(
                idempotency_key=key.idempotency_key,
                state=key.state.value,
                account_id=key.account_id,
                amount_cents=key.amount_cents,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(charge_keys.c.idempotency_key)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def lock_key(self, idempotency_key: str) -> ChargeKey:
        row = (
            await self._conn.execute(
                sa.select(charge_keys)
                .where(charge_keys.c.idempotency_key == idempotency_key)
                .with_for_update()
            )
        ).one()
        m = row._mapping
        return ChargeKey(
            idempotency_key=m["idempotency_key"],
            state=ChargeKeyState(m["state"]),
            account_id=m["account_id"],
            amount_cents=m["amount_cents"],
        )

    async def set_key_state(
        self, idempotency_key: str, state: ChargeKeyState, *, now: datetime
    ) -> None:
        await self._conn.execute(
            sa.update(charge_keys)
            .where(charge_keys.c.idempotency_key == idempotency_key)
            .values(state=state.value, updated_at=now)
        )
