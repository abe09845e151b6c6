"""The account rules over fakes: balances, idempotent charges, refunds in any order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from account_svc.domain import commands
from account_svc.domain.model import TransactionKind
from account_svc.service_layer.handlers import AccountHandlers
from eventbooking.auth import token_key
from eventbooking.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tests.unit.account.fakes import FakeUnitOfWork, new_store


class TickingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def store():
    return new_store()


@pytest.fixture
def handlers(store) -> AccountHandlers:
    return AccountHandlers(lambda: FakeUnitOfWork(store), clock=TickingClock())


async def funded(handlers: AccountHandlers, cents: int) -> uuid.UUID:
    created = await handlers.create_account(
        commands.CreateAccount.parse(email=f"{uuid.uuid4().hex}@example.com", display_name="Ada")
    )
    if cents:
        await handlers.deposit(
            commands.Deposit.parse(
                account_id=str(created.account.account_id), amount_cents=cents, idempotency_key=""
            )
        )
    return created.account.account_id


def charge(account_id: uuid.UUID, cents: int, key: str) -> commands.Charge:
    return commands.Charge.parse(
        account_id=str(account_id), amount_cents=cents, idempotency_key=key, reference="b-1"
    )


def refund(key: str) -> commands.Refund:
    return commands.Refund.parse(idempotency_key=key, reason="test")


async def test_create_account_returns_a_token_and_refuses_a_taken_email(handlers) -> None:
    cmd = commands.CreateAccount.parse(email="Ada@Example.com", display_name="Ada")
    created = await handlers.create_account(cmd)
    assert created.account.email == "ada@example.com"
    assert created.account.balance_cents == 0
    assert len(created.api_token) >= 32
    with pytest.raises(AlreadyExists, match=r"ada@example\.com"):
        await handlers.create_account(cmd)


async def test_the_token_is_stored_only_as_its_hash_and_finds_its_account(handlers, store) -> None:
    cmd = commands.CreateAccount.parse(email=f"{uuid.uuid4().hex}@example.com", display_name="Ada")
    created = await handlers.create_account(cmd)
    account_id = created.account.account_id
    assert store.token_hashes[account_id] == token_key(created.api_token)
    assert created.api_token not in store.token_hashes.values()
    assert await handlers.authenticate(created.api_token) == account_id
    assert await handlers.authenticate(created.api_token + "x") is None
    assert await handlers.authenticate("") is None


async def test_rotate_token_makes_the_old_token_stop_and_the_new_one_work(handlers, store) -> None:
    cmd = commands.CreateAccount.parse(email=f"{uuid.uuid4().hex}@example.com", display_name="Ada")
    created = await handlers.create_account(cmd)
    account_id = created.account.account_id
    new = await handlers.rotate_token(account_id)
    assert new != created.api_token
    assert len(new) >= 32
    assert await handlers.authenticate(created.api_token) is None
    assert await handlers.authenticate(new) == account_id
    assert store.token_hashes[account_id] == token_key(new)


async def test_rotate_token_of_an_unknown_account_is_not_found(handlers, store) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await handlers.rotate_token(uuid.uuid4())
    assert store.token_hashes == {}


async def test_charge_twice_with_one_key_moves_money_once(handlers, store) -> None:
    account = await funded(handlers, 1000)
    first = await handlers.charge(charge(account, 300, "k1"))
    second = await handlers.charge(charge(account, 300, "k1"))
    assert first == second
    assert first.balance_cents == 700
    assert (await handlers.get_account(account)).balance_cents == 700
    assert [t.kind for t in store.transactions].count(TransactionKind.CHARGE) == 1


async def test_insufficient_funds_is_refused_and_leaves_nothing(handlers, store) -> None:
    account = await funded(handlers, 100)
    with pytest.raises(FailedPrecondition, match="insufficient funds: balance is 100 cents"):
        await handlers.charge(charge(account, 300, "k2"))
    assert "k2" not in store.keys
    assert (await handlers.get_account(account)).balance_cents == 100


async def test_refund_gives_the_money_back_once(handlers) -> None:
    account = await funded(handlers, 1000)
    await handlers.charge(charge(account, 400, "k3"))
    first = await handlers.refund(refund("k3"))
    second = await handlers.refund(refund("k3"))
    assert first is not None
    assert first == second
    assert first.amount_cents == 400
    assert (await handlers.get_account(account)).balance_cents == 1000
    with pytest.raises(Aborted, match="refunded already"):
        await handlers.charge(charge(account, 400, "k3"))


async def test_refund_before_charge_kills_the_key(handlers) -> None:
    account = await funded(handlers, 1000)
    assert await handlers.refund(refund("k4")) is None
    with pytest.raises(Aborted, match="cancelled before it arrived"):
        await handlers.charge(charge(account, 400, "k4"))
    assert (await handlers.get_account(account)).balance_cents == 1000
    assert await handlers.refund(refund("k4")) is None


async def test_a_key_reused_for_another_charge_is_aborted(handlers) -> None:
    account = await funded(handlers, 1000)
    await handlers.charge(charge(account, 100, "k5"))
    with pytest.raises(Aborted, match="different charge"):
        await handlers.charge(charge(account, 200, "k5"))


async def test_charge_of_an_unknown_account_is_not_found(handlers) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await handlers.charge(charge(uuid.uuid4(), 100, "k6"))


async def test_deposit_key_applies_once_and_refuses_another_amount(handlers) -> None:
    account = await funded(handlers, 0)
    dep = commands.Deposit.parse(account_id=str(account), amount_cents=500, idempotency_key="d1")
    (_, first), (_, second) = await handlers.deposit(dep), await handlers.deposit(dep)
    assert first == second
    assert (await handlers.get_account(account)).balance_cents == 500
    other = commands.Deposit.parse(account_id=str(account), amount_cents=600, idempotency_key="d1")
    with pytest.raises(Aborted, match="500 cents, not 600"):
        await handlers.deposit(other)


async def test_transactions_page_newest_first(handlers) -> None:
    account = await funded(handlers, 0)
    for i in range(5):
        await handlers.deposit(
            commands.Deposit.parse(account_id=str(account), amount_cents=i + 1, idempotency_key="")
        )
    first = await handlers.list_transactions(
        commands.ListTransactions.parse(account_id=str(account), size=3, after=None)
    )
    assert [t.amount_cents for t in first.transactions] == [5, 4, 3]
    rest = await handlers.list_transactions(
        commands.ListTransactions.parse(account_id=str(account), size=3, after=first.next_after)
    )
    assert [t.amount_cents for t in rest.transactions] == [2, 1]
    assert rest.next_after is None


async def test_accounts_page_oldest_first_across_every_account(handlers) -> None:
    made = [await funded(handlers, 0) for _ in range(5)]
    first = await handlers.list_accounts(commands.ListAccounts.parse(size=3, after=None))
    assert [a.account_id for a in first.accounts] == made[:3]
    rest = await handlers.list_accounts(commands.ListAccounts.parse(size=3, after=first.next_after))
    assert [a.account_id for a in rest.accounts] == made[3:]
    assert rest.next_after is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"account_id": "nope", "amount_cents": 1, "idempotency_key": "k", "reference": ""},
            "account_id must be a UUID",
        ),
        (
            {
                "account_id": str(uuid.uuid4()),
                "amount_cents": 0,
                "idempotency_key": "k",
                "reference": "",
            },
            "amount_cents must be between 1",
        ),
        (
            {
                "account_id": str(uuid.uuid4()),
                "amount_cents": -5,
                "idempotency_key": "k",
                "reference": "",
            },
            "amount_cents must be between 1",
        ),
        (
            {
                "account_id": str(uuid.uuid4()),
                "amount_cents": 10**15,
                "idempotency_key": "k",
                "reference": "",
            },
            "amount_cents must be between 1",
        ),
        (
            {
                "account_id": str(uuid.uuid4()),
                "amount_cents": 1,
                "idempotency_key": "",
                "reference": "",
            },
            "idempotency_key is required",
        ),
        (
            {
                "account_id": str(uuid.uuid4()),
                "amount_cents": 1,
                "idempotency_key": "k" * 201,
                "reference": "",
            },
            "idempotency_key is 201 characters",
        ),
    ],
)
def test_charge_commands_explain_bad_input(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        commands.Charge.parse(**fields)


@pytest.mark.parametrize(
    ("email", "name", "message"),
    [
        ("", "Ada", "email is required"),
        ("not-an-email", "Ada", "is not an email address"),
        ("a@b.co", "", "display_name is required"),
        ("a@b.co", "x" * 1_000_000, "display_name is 1000000 characters long"),
        ("a@b.co", "bad\x00name", "NUL"),
    ],
)
def test_create_account_explains_bad_input(email: str, name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        commands.CreateAccount.parse(email=email, display_name=name)
