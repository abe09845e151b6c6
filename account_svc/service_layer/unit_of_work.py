"""The account service's unit of work."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from account_svc.adapters.repository import (
    AccountRepository,
    LedgerRepository,
    SqlAccountRepository,
    SqlLedgerRepository,
)
from eventbooking.uow import SqlUnitOfWork
from eventbooking.uow import UnitOfWork as BaseUnitOfWork


class UnitOfWork(BaseUnitOfWork, Protocol):
    accounts: AccountRepository
    ledger: LedgerRepository


class SqlAccountUnitOfWork(SqlUnitOfWork):
    accounts: AccountRepository
    ledger: LedgerRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.accounts = SqlAccountRepository(conn)
        self.ledger = SqlLedgerRepository(conn)
