"""Who may call each AccountService RPC, over the in-process server with its real checks.

Given an owner with money and a charge on its account and a second account,
every refusal gets its status code, leaves balances, ledgers, charge keys and
token hashes as they were, and names no token in its message or in the logs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from account_svc.adapters.tables import accounts, charge_keys, transactions
from eventbooking import db
from eventbooking.account.v1 import account_pb2 as pb
from eventbooking.account.v1.account_pb2_grpc import AccountServiceStub
from tests.conftest import unique_email
from tests.integration.account.callers import (
    ADMIN,
    ADMIN_TOKEN,
    SERVICE,
    SERVICE_CREDENTIAL,
    UNKNOWN_TOKEN,
    Metadata,
    bearer,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Code = grpc.StatusCode
USER_RPCS = ("GetAccount", "Deposit", "ListTransactions", "RotateToken")
SERVICE_RPCS = ("Charge", "Refund", "AuthenticateToken")
ADMIN_RPCS = ("ListAccounts",)


@dataclass(frozen=True)
class Scene:
    owner_id: str
    owner_token: str
    other_id: str
    other_token: str
    # A charge of 300 cents on the owner's account, made by a service.
    charge_key: str

    @property
    def tokens(self) -> tuple[str, ...]:
        return (self.owner_token, self.other_token, ADMIN_TOKEN, SERVICE_CREDENTIAL, UNKNOWN_TOKEN)


CALLERS: dict[str, Callable[[Scene], Metadata]] = {
    "no token": lambda s: (),
    "an unknown token": lambda s: bearer(UNKNOWN_TOKEN),
    "a header that is not Bearer": lambda s: (("authorization", f"Basic {s.owner_token}"),),
    "an empty Bearer": lambda s: (("authorization", "Bearer "),),
    "the owner's token": lambda s: bearer(s.owner_token),
    "another account's token": lambda s: bearer(s.other_token),
    "the admin token": lambda s: ADMIN,
    "the service credential": lambda s: SERVICE,
}

REQUESTS: dict[str, Callable[[Scene], Any]] = {
    "CreateAccount": lambda s: pb.CreateAccountRequest(email=unique_email(), display_name="New"),
    "GetAccount": lambda s: pb.GetAccountRequest(account_id=s.owner_id),
    "Deposit": lambda s: pb.DepositRequest(
        account_id=s.owner_id, amount_cents=500, idempotency_key=f"d-{uuid.uuid4()}"
    ),
    "ListTransactions": lambda s: pb.ListTransactionsRequest(account_id=s.owner_id),
    "RotateToken": lambda s: pb.RotateTokenRequest(account_id=s.owner_id),
    "Charge": lambda s: pb.ChargeRequest(
        account_id=s.owner_id, amount_cents=100, idempotency_key=f"c-{uuid.uuid4()}"
    ),
    "Refund": lambda s: pb.RefundRequest(idempotency_key=s.charge_key, reason="refused"),
    "AuthenticateToken": lambda s: pb.AuthenticateTokenRequest(token=s.owner_token),
    "ListAccounts": lambda s: pb.ListAccountsRequest(page_size=10),
}

REFUSALS: list[tuple[str, str, grpc.StatusCode]] = [
    *[
        (rpc, caller, Code.UNAUTHENTICATED)
        for rpc in (*USER_RPCS, *SERVICE_RPCS, *ADMIN_RPCS)
        for caller in (
            "no token",
            "an unknown token",
            "a header that is not Bearer",
            "an empty Bearer",
        )
    ],
    *[(rpc, "another account's token", Code.PERMISSION_DENIED) for rpc in USER_RPCS],
    *[(rpc, "the service credential", Code.PERMISSION_DENIED) for rpc in USER_RPCS],
    *[
        (rpc, caller, Code.PERMISSION_DENIED)
        for rpc in SERVICE_RPCS
        for caller in ("the owner's token", "another account's token", "the admin token")
    ],
    *[
        (rpc, caller, Code.PERMISSION_DENIED)
        for rpc in ADMIN_RPCS
        for caller in ("the owner's token", "another account's token", "the service credential")
    ],
]

ALLOWED: list[tuple[str, str]] = [
    ("CreateAccount", "no token"),
    *[(rpc, caller) for rpc in USER_RPCS for caller in ("the owner's token", "the admin token")],
    *[(rpc, "the service credential") for rpc in SERVICE_RPCS],
    *[(rpc, "the admin token") for rpc in ADMIN_RPCS],
]


async def scene(stub: AccountServiceStub) -> Scene:
    owner = await stub.CreateAccount(
        pb.CreateAccountRequest(email=unique_email(), display_name="Owner")
    )
    other = await stub.CreateAccount(
        pb.CreateAccountRequest(email=unique_email(), display_name="Other")
    )
    owner_id = owner.account.account_id
    await stub.Deposit(
        pb.DepositRequest(account_id=owner_id, amount_cents=1000, idempotency_key="first"),
        metadata=bearer(owner.api_token),
    )
    charge_key = f"charge-{uuid.uuid4()}"
    await stub.Charge(
        pb.ChargeRequest(account_id=owner_id, amount_cents=300, idempotency_key=charge_key),
        metadata=SERVICE,
    )
    return Scene(
        owner_id=owner_id,
        owner_token=owner.api_token,
        other_id=other.account.account_id,
        other_token=other.api_token,
        charge_key=charge_key,
    )


async def snapshot(url: str, given: Scene) -> dict[str, object]:
    """Everything a call could change about the scene, read straight from the tables."""
    ids = [uuid.UUID(given.owner_id), uuid.UUID(given.other_id)]
    engine = db.create_engine(url, pool_size=1)
    async with engine.connect() as conn:
        holders = await conn.execute(
            sa.select(accounts.c.account_id, accounts.c.balance_cents, accounts.c.api_token_hash)
            .where(accounts.c.account_id.in_(ids))
            .order_by(accounts.c.account_id)
        )
        ledger = await conn.execute(
            sa.select(
                transactions.c.account_id,
                transactions.c.kind,
                transactions.c.amount_cents,
                transactions.c.idempotency_key,
            )
            .where(transactions.c.account_id.in_(ids))
            .order_by(transactions.c.transaction_id)
        )
        key = await conn.execute(
            sa.select(charge_keys.c.state, charge_keys.c.amount_cents).where(
                charge_keys.c.idempotency_key == given.charge_key
            )
        )
        state: dict[str, object] = {
            "accounts": [tuple(r) for r in holders],
            "ledger": [tuple(r) for r in ledger],
            "charge key": [tuple(r) for r in key],
        }
    await engine.dispose()
    return state


@pytest.mark.parametrize(("rpc", "caller", "code"), REFUSALS)
async def test_a_refused_call_gets_its_code_changes_nothing_and_names_no_token(
    stub: AccountServiceStub,
    account_db: str,
    caplog: pytest.LogCaptureFixture,
    rpc: str,
    caller: str,
    code: grpc.StatusCode,
) -> None:
    caplog.set_level(logging.DEBUG)
    given = await scene(stub)
    before = await snapshot(account_db, given)
    assert before["charge key"] == [("CHARGED", 300)]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, rpc)(REQUESTS[rpc](given), metadata=CALLERS[caller](given))

    assert refused.value.code() is code, refused.value.details()
    for token in given.tokens:
        assert token not in (refused.value.details() or "")
        assert token not in str(refused.value)
        assert token not in caplog.text
    assert await snapshot(account_db, given) == before


@pytest.mark.parametrize(("rpc", "caller"), ALLOWED)
async def test_the_right_caller_gets_through(
    stub: AccountServiceStub, rpc: str, caller: str
) -> None:
    given = await scene(stub)
    await getattr(stub, rpc)(REQUESTS[rpc](given), metadata=CALLERS[caller](given))


async def test_the_owner_sees_its_own_account_and_ledger(stub: AccountServiceStub) -> None:
    given = await scene(stub)
    mine = bearer(given.owner_token)
    got = await stub.GetAccount(pb.GetAccountRequest(account_id=given.owner_id), metadata=mine)
    assert got.account.balance_cents == 700
    listed = await stub.ListTransactions(
        pb.ListTransactionsRequest(account_id=given.owner_id), metadata=mine
    )
    assert [t.amount_cents for t in listed.transactions] == [300, 1000]


async def test_a_user_naming_a_missing_account_is_refused_not_told_it_is_missing(
    stub: AccountServiceStub,
) -> None:
    given = await scene(stub)
    mine = bearer(given.owner_token)
    missing = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetAccount(pb.GetAccountRequest(account_id=missing), metadata=mine)
    assert refused.value.code() is Code.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Deposit(pb.DepositRequest(account_id=missing, amount_cents=1), metadata=mine)
    assert refused.value.code() is Code.PERMISSION_DENIED


async def test_the_admin_lists_every_account_oldest_first_page_by_page(
    stub: AccountServiceStub,
) -> None:
    given = await scene(stub)
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListAccounts(
            pb.ListAccountsRequest(page_size=2, page_token=token), metadata=ADMIN
        )
        assert len(page.accounts) <= 2
        seen += [a.account_id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert seen.index(given.owner_id) < seen.index(given.other_id)
    listed = await stub.ListAccounts(pb.ListAccountsRequest(page_size=500), metadata=ADMIN)
    by_id = {a.account_id: a for a in listed.accounts}
    assert by_id[given.owner_id].balance_cents == 700
