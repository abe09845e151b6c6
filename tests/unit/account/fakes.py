"""In-memory repositories and unit of work with the same rules as the SQL ones."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Self

from account_svc.domain.model import (
    Account,
    ChargeKey,
    ChargeKeyState,
    Transaction,
    TransactionKind,
)


@dataclass
class _State:
    accounts: dict[uuid.UUID, Account] = field(default_factory=dict)
    transactions: list[Transaction] = field(default_factory=list)
    keys: dict[str, ChargeKey] = field(default_factory=dict)
    token_hashes: dict[uuid.UUID, str] = field(default_factory=dict)


class FakeAccounts:
    def __init__(self, state: _State) -> None:
        self.s = state

    async def add(self, account: Account, *, api_token_hash: str) -> bool:
        if any(a.email == account.email for a in self.s.accounts.values()):
            return False
        self.s.accounts[account.account_id] = account
        self.s.token_hashes[account.account_id] = api_token_hash
        return True

    async def get(self, account_id: uuid.UUID) -> Account | None:
        return self.s.accounts.get(account_id)

    async def change_balance(self, account_id: uuid.UUID, delta_cents: int) -> int | None:
        account = self.s.accounts.get(account_id)
        if account is None or account.balance_cents + delta_cents < 0:
            return None
        self.s.accounts[account_id] = replace(
            account, balance_cents=account.balance_cents + delta_cents
        )
        return account.balance_cents + delta_cents

    async def set_token_hash(self, account_id: uuid.UUID, *, api_token_hash: str) -> bool:
        if account_id not in self.s.accounts:
            return False
        self.s.token_hashes[account_id] = api_token_hash
        return True

    async def page(self, *, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Account]:
        rows = sorted(self.s.accounts.values(), key=lambda a: (a.created_at, a.account_id))
        if after is not None:
            rows = [a for a in rows if (a.created_at, a.account_id) > after]
        return rows[:limit]

    async def holder_of(self, api_token_hash: str) -> uuid.UUID | None:
        for account_id, stored in self.s.token_hashes.items():
            if stored == api_token_hash:
                return account_id
        return None


class FakeLedger:
    def __init__(self, state: _State) -> None:
        self.s = state

    async def add(self, txn: Transaction) -> bool:
        for t in self.s.transactions:
            same_key = txn.idempotency_key and t.idempotency_key == txn.idempotency_key
            if (
                same_key
                and t.kind == txn.kind
                and (txn.kind != TransactionKind.DEPOSIT or t.account_id == txn.account_id)
            ):
                return False
        self.s.transactions.append(txn)
        return True

    async def find(
        self, kind: TransactionKind, idempotency_key: str, *, account_id: uuid.UUID | None = None
    ) -> Transaction | None:
        for t in self.s.transactions:
            if (
                t.kind == kind
                and t.idempotency_key == idempotency_key
                and (account_id is None or t.account_id == account_id)
            ):
                return t
        return None

    async def page(
        self, account_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Transaction]:
        rows = sorted(
            (t for t in self.s.transactions if t.account_id == account_id),
            key=lambda t: (t.created_at, t.transaction_id),
            reverse=True,
        )
        if after is not None:
            rows = [t for t in rows if (t.created_at, t.transaction_id) < after]
        return rows[:limit]

    async def claim_key(self, key: ChargeKey, *, now: datetime) -> bool:
        if key.idempotency_key in self.s.keys:
            return False
        self.s.keys[key.idempotency_key] = key
        return True

    async def lock_key(self, idempotency_key: str) -> ChargeKey:
        return self.s.keys[idempotency_key]

    async def set_key_state(
        self, idempotency_key: str, state: ChargeKeyState, *, now: datetime
    ) -> None:
        self.s.keys[idempotency_key] = replace(self.s.keys[idempotency_key], state=state)


class FakeUnitOfWork:
    """Works on a copy of the shared state; commit publishes the copy."""

    def __init__(self, store: _State) -> None:
        self._store = store
        self.committed = False

    async def __aenter__(self) -> Self:
        self._work = copy.deepcopy(self._store)
        self.accounts = FakeAccounts(self._work)
        self.ledger = FakeLedger(self._work)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    async def commit(self) -> None:
        self._store.accounts = self._work.accounts
        self._store.transactions = self._work.transactions
        self._store.keys = self._work.keys
        self._store.token_hashes = self._work.token_hashes
        self.committed = True


def new_store() -> _State:
    return _State()
