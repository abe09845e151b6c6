"""The account service's unit of work."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from sqlalchemy.ext.asyncio import AsyncConnection

from account_svc.adapters.repository import (
    AccountRepository,
    LedgerRepository,
    SqlAccountRepository,
    SqlLedgerRepository,
)
from eventbooking.uow import SqlUnitOfWork


class UnitOfWork(Protocol):
    accounts: AccountRepository
    ledger: LedgerRepository

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def commit(self) -> None: ...


class SqlAccountUnitOfWork(SqlUnitOfWork):
    accounts: AccountRepository
    ledger: LedgerRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.accounts = SqlAccountRepository(conn)
        self.ledger = SqlLedgerRepository(conn)
