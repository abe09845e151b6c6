"""What the account service does, one handler per use case.

Each handler opens a unit of work, loads, changes and commits; anything
raised before the commit rolls the whole change back.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from account_svc.domain import commands
from account_svc.domain.model import (
    Account,
    AccountPage,
    ChargeKey,
    ChargeKeyState,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from account_svc.service_layer.unit_of_work import UnitOfWork
from eventbooking.auth import token_key
from eventbooking.clock import Clock
from eventbooking.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from eventbooking.paging import split_page


@dataclass(frozen=True)
class Created:
    account: Account
    api_token: str


@dataclass(frozen=True)
class Moved:
    """The result of a deposit or a charge: the ledger row and the balance after it."""

    transaction: Transaction
    balance_cents: int


def new_token() -> str:
    """A fresh API token; only its `token_key` is ever stored."""
    return secrets.token_urlsafe(32)


class AccountHandlers:
    """The account service's use cases over a unit-of-work factory and a clock."""

    def __init__(self, uow: Callable[[], UnitOfWork], *, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def create_account(self, cmd: commands.CreateAccount) -> Created:
        account = Account(
            account_id=uuid.uuid4(),
            email=cmd.email,
            display_name=cmd.display_name,
            balance_cents=0,
            created_at=self._clock(),
        )
        token = new_token()
        async with self._uow() as uow:
            if not await uow.accounts.add(account, api_token_hash=token_key(token)):
                raise AlreadyExists(f"an account with email {cmd.email!r} exists already")
            await uow.commit()
        return Created(account=account, api_token=token)

    async def rotate_token(self, account_id: uuid.UUID) -> str:
        """Give the account a new token and return it; the old one stops working at once."""
        token = new_token()
        async with self._uow() as uow:
            if not await uow.accounts.set_token_hash(account_id, api_token_hash=token_key(token)):
                raise NotFound(f"account {account_id} does not exist")
            await uow.commit()
        return token

    async def authenticate(self, token: str) -> uuid.UUID | None:
        """The account holding `token`, or None: this service's `auth.TokenLookup`."""
        if not token:
            return None
        async with self._uow() as uow:
            return await uow.accounts.holder_of(token_key(token))

    async def get_account(self, account_id: uuid.UUID) -> Account:
        async with self._uow() as uow:
            return await _require_account_txn(uow, account_id)

    async def deposit(self, cmd: commands.Deposit) -> tuple[Account, Transaction]:
        txn = Transaction(
            transaction_id=uuid.uuid4(),
            account_id=cmd.account_id,
            kind=TransactionKind.DEPOSIT,
            amount_cents=cmd.amount_cents,
            idempotency_key=cmd.idempotency_key,
            reference="",
            created_at=self._clock(),
        )
        async with self._uow() as uow:
            await _require_account_txn(uow, cmd.account_id)
            if not await uow.ledger.add(txn):
                earlier = await uow.ledger.find(
                    TransactionKind.DEPOSIT, cmd.idempotency_key, account_id=cmd.account_id
                )
                assert earlier is not None
                if earlier.amount_cents != cmd.amount_cents:
                    raise Aborted(
                        f"idempotency_key {cmd.idempotency_key!r} was used for a deposit of "
                        f"{earlier.amount_cents} cents, not {cmd.amount_cents}"
                    )
                return await _require_account_txn(uow, cmd.account_id), earlier
            await uow.accounts.change_balance(cmd.account_id, cmd.amount_cents)
            account = await _require_account_txn(uow, cmd.account_id)
            await uow.commit()
        return account, txn

    async def list_accounts(self, cmd: commands.ListAccounts) -> AccountPage:
        async with self._uow() as uow:
            rows = await uow.accounts.page(after=cmd.after, limit=cmd.page_size + 1)
        page, next_after = split_page(
            rows, cmd.page_size, position=lambda a: (a.created_at, a.account_id)
        )
        return AccountPage(accounts=page, next_after=next_after)

    async def list_transactions(self, cmd: commands.ListTransactions) -> TransactionPage:
        async with self._uow() as uow:
            await _require_account_txn(uow, cmd.account_id)
            rows = await uow.ledger.page(cmd.account_id, after=cmd.after, limit=cmd.page_size + 1)
        page, next_after = split_page(
            rows, cmd.page_size, position=lambda t: (t.created_at, t.transaction_id)
        )
        return TransactionPage(transactions=page, next_after=next_after)

    async def charge(self, cmd: commands.Charge) -> Moved:
        now = self._clock()
        key = ChargeKey(
            idempotency_key=cmd.idempotency_key,
            state=ChargeKeyState.CHARGED,
            account_id=cmd.account_id,
            amount_cents=cmd.amount_cents,
        )
        async with self._uow() as uow:
            if not await uow.ledger.claim_key(key, now=now):
                return await _replay_charge_txn(uow, cmd)
            balance = await uow.accounts.change_balance(cmd.account_id, -cmd.amount_cents)
            if balance is None:
                account = await _require_account_txn(uow, cmd.account_id)
                # Raising rolls back the key too, so a later Refund finds no charge and kills it.
                raise FailedPrecondition(
                    f"insufficient funds: balance is {account.balance_cents} cents, "
                    f"the charge is {cmd.amount_cents}"
                )
            txn = Transaction(
                transaction_id=uuid.uuid4(),
                account_id=cmd.account_id,
                kind=TransactionKind.CHARGE,
                amount_cents=cmd.amount_cents,
                idempotency_key=cmd.idempotency_key,
                reference=cmd.reference,
                created_at=now,
            )
            await uow.ledger.add(txn)
            await uow.commit()
        return Moved(transaction=txn, balance_cents=balance)

    async def refund(self, cmd: commands.Refund) -> Transaction | None:
        """Give a charge back; None when there was no charge (the key is now dead)."""
        now = self._clock()
        dead = ChargeKey(
            idempotency_key=cmd.idempotency_key,
            state=ChargeKeyState.DEAD,
            account_id=None,
            amount_cents=0,
        )
        async with self._uow() as uow:
            if await uow.ledger.claim_key(dead, now=now):
                await uow.commit()
                return None
            key = await uow.ledger.lock_key(cmd.idempotency_key)
            if key.state is ChargeKeyState.DEAD:
                return None
            if key.state is ChargeKeyState.REFUNDED:
                return await uow.ledger.find(TransactionKind.REFUND, cmd.idempotency_key)
            assert key.account_id is not None
            txn = Transaction(
                transaction_id=uuid.uuid4(),
                account_id=key.account_id,
                kind=TransactionKind.REFUND,
                amount_cents=key.amount_cents,
                idempotency_key=cmd.idempotency_key,
                reference=cmd.reason,
                created_at=now,
            )
            await uow.accounts.change_balance(key.account_id, key.amount_cents)
            await uow.ledger.add(txn)
            await uow.ledger.set_key_state(cmd.idempotency_key, ChargeKeyState.REFUNDED, now=now)
            await uow.commit()
        return txn


async def _require_account_txn(uow: UnitOfWork, account_id: uuid.UUID) -> Account:
    account = await uow.accounts.get(account_id)
    if account is None:
        raise NotFound(f"account {account_id} does not exist")
    return account


async def _replay_charge_txn(uow: UnitOfWork, cmd: commands.Charge) -> Moved:
    """A Charge whose key exists: the same charge again, or a refused one."""
    key = await uow.ledger.lock_key(cmd.idempotency_key)
    if key.state is ChargeKeyState.DEAD:
        raise Aborted(f"charge {cmd.idempotency_key!r} was cancelled before it arrived")
    if key.state is ChargeKeyState.REFUNDED:
        raise Aborted(f"charge {cmd.idempotency_key!r} was refunded already")
    if not key.same_charge(cmd.account_id, cmd.amount_cents):
        raise Aborted(
            f"idempotency_key {cmd.idempotency_key!r} was used for a different charge "
            f"({key.amount_cents} cents on account {key.account_id})"
        )
    txn = await uow.ledger.find(TransactionKind.CHARGE, cmd.idempotency_key)
    account = await _require_account_txn(uow, cmd.account_id)
    assert txn is not None
    return Moved(transaction=txn, balance_cents=account.balance_cents)
