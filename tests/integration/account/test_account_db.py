"""Account handlers on a real PostgreSQL: idempotency, ordering and races."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from account_svc.domain import commands
from account_svc.service_layer.handlers import AccountHandlers
from eventbooking import db
from eventbooking.errors import Aborted, FailedPrecondition
from tests.conftest import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def funded(handlers: AccountHandlers, cents: int) -> uuid.UUID:
    created = await handlers.create_account(
        commands.CreateAccount.parse(email=unique_email(), display_name="Grace")
    )
    account_id = created.account.account_id
    await handlers.deposit(
        commands.Deposit.parse(account_id=str(account_id), amount_cents=cents, idempotency_key="")
    )
    return account_id


def charge(account_id: uuid.UUID, cents: int, key: str) -> commands.Charge:
    return commands.Charge.parse(
        account_id=str(account_id), amount_cents=cents, idempotency_key=key, reference="ref"
    )


async def ledger_rows(url: str, key: str) -> list[tuple[str, int]]:
    engine = db.create_engine(url, pool_size=1)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT kind, amount_cents FROM transactions WHERE idempotency_key = :k ORDER BY kind"
            ),
            {"k": key},
        )
        result = [(r.kind, r.amount_cents) for r in rows]
    await engine.dispose()
    return result


async def test_same_charge_twice_makes_one_ledger_row_and_the_same_reply(
    handlers: AccountHandlers, account_db: str
) -> None:
    account = await funded(handlers, 1000)
    key = f"charge-{uuid.uuid4()}"
    first = await handlers.charge(charge(account, 250, key))
    second = await handlers.charge(charge(account, 250, key))
    assert first == second
    assert await ledger_rows(account_db, key) == [("CHARGE", 250)]
    assert (await handlers.get_account(account)).balance_cents == 750


async def test_refund_before_charge_makes_the_late_charge_aborted(
    handlers: AccountHandlers, account_db: str
) -> None:
    account = await funded(handlers, 1000)
    key = f"charge-{uuid.uuid4()}"
    assert (
        await handlers.refund(commands.Refund.parse(idempotency_key=key, reason="timeout")) is None
    )
    with pytest.raises(Aborted):
        await handlers.charge(charge(account, 250, key))
    assert await ledger_rows(account_db, key) == []
    assert (await handlers.get_account(account)).balance_cents == 1000


async def test_concurrent_charges_with_one_key_charge_once(
    handlers: AccountHandlers, account_db: str
) -> None:
    account = await funded(handlers, 1000)
    key = f"charge-{uuid.uuid4()}"
    replies = await asyncio.gather(*(handlers.charge(charge(account, 100, key)) for _ in range(8)))
    assert len({r.transaction.transaction_id for r in replies}) == 1
    assert (await handlers.get_account(account)).balance_cents == 900
    assert await ledger_rows(account_db, key) == [("CHARGE", 100)]


async def test_charge_racing_its_refund_ends_with_zero_net_charge(
    handlers: AccountHandlers, account_db: str
) -> None:
    for _ in range(10):
        account = await funded(handlers, 1000)
        key = f"charge-{uuid.uuid4()}"
        results = await asyncio.gather(
            handlers.charge(charge(account, 100, key)),
            handlers.refund(commands.Refund.parse(idempotency_key=key, reason="race")),
            return_exceptions=True,
        )
        # Whichever came first, the money is where it started.
        assert (await handlers.get_account(account)).balance_cents == 1000
        charged = not isinstance(results[0], BaseException)
        rows = await ledger_rows(account_db, key)
        assert rows == ([("CHARGE", 100), ("REFUND", 100)] if charged else [])


async def test_concurrent_charges_never_overdraw(handlers: AccountHandlers) -> None:
    account = await funded(handlers, 500)
    results = await asyncio.gather(
        *(handlers.charge(charge(account, 100, f"c-{uuid.uuid4()}")) for _ in range(9)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(refused) == 4
    assert (await handlers.get_account(account)).balance_cents == 0
