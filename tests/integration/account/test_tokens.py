"""API tokens over the in-process server: stored as a hash, rotated, checked for other services."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import pytest
import sqlalchemy as sa

from account_svc.adapters.tables import accounts
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


async def new_account(stub: AccountServiceStub) -> tuple[str, str]:
    """A new account's id and token."""
    created = await stub.CreateAccount(
        pb.CreateAccountRequest(email=unique_email(), display_name="Tok")
    )
    return created.account.account_id, created.api_token


async def refused(call: object, code: grpc.StatusCode, *secrets: str) -> str:
    """Await `call`, expect `code`, check no secret shows; return the message."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() is code, info.value.details()
    details = info.value.details() or ""
    for secret in secrets:
        assert secret not in details
        assert secret not in str(info.value)
    return details


async def get(stub: AccountServiceStub, account_id: str, metadata: Metadata) -> pb.Account:
    reply = await stub.GetAccount(pb.GetAccountRequest(account_id=account_id), metadata=metadata)
    return reply.account


async def stored_row(url: str, account_id: str) -> sa.Row[tuple[object, ...]]:
    engine = db.create_engine(url, pool_size=1)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(accounts).where(accounts.c.account_id == uuid.UUID(account_id))
            )
        ).one()
    await engine.dispose()
    return row


async def test_the_token_is_stored_only_as_its_sha256(
    stub: AccountServiceStub, account_db: str
) -> None:
    account_id, token = await new_account(stub)
    row = await stored_row(account_db, account_id)
    assert row.api_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for value in row)


async def test_rotate_token_stops_the_old_token_at_once_and_the_new_one_works(
    stub: AccountServiceStub, account_db: str
) -> None:
    account_id, old = await new_account(stub)
    reply = await stub.RotateToken(
        pb.RotateTokenRequest(account_id=account_id), metadata=bearer(old)
    )
    new = reply.api_token
    assert new != old
    assert len(new) >= 32

    await refused(get(stub, account_id, bearer(old)), Code.UNAUTHENTICATED, old, new)
    await refused(
        stub.RotateToken(pb.RotateTokenRequest(account_id=account_id), metadata=bearer(old)),
        Code.UNAUTHENTICATED,
        old,
        new,
    )
    assert (await get(stub, account_id, bearer(new))).account_id == account_id
    await refused(
        stub.AuthenticateToken(pb.AuthenticateTokenRequest(token=old), metadata=SERVICE),
        Code.UNAUTHENTICATED,
        old,
    )
    found = await stub.AuthenticateToken(pb.AuthenticateTokenRequest(token=new), metadata=SERVICE)
    assert found.account_id == account_id
    row = await stored_row(account_db, account_id)
    assert row.api_token_hash == hashlib.sha256(new.encode()).hexdigest()


async def test_the_admin_may_rotate_any_accounts_token(stub: AccountServiceStub) -> None:
    account_id, old = await new_account(stub)
    reply = await stub.RotateToken(pb.RotateTokenRequest(account_id=account_id), metadata=ADMIN)
    await refused(get(stub, account_id, bearer(old)), Code.UNAUTHENTICATED, old)
    assert (await get(stub, account_id, bearer(reply.api_token))).account_id == account_id


async def test_rotate_token_of_a_missing_account_is_not_found_for_the_admin(
    stub: AccountServiceStub,
) -> None:
    missing = str(uuid.uuid4())
    message = await refused(
        stub.RotateToken(pb.RotateTokenRequest(account_id=missing), metadata=ADMIN),
        Code.NOT_FOUND,
        ADMIN_TOKEN,
    )
    assert message == f"account {missing} does not exist"


async def test_authenticate_token_names_the_account_holding_each_token(
    stub: AccountServiceStub,
) -> None:
    first_id, first = await new_account(stub)
    second_id, second = await new_account(stub)
    for token, account_id in ((first, first_id), (second, second_id)):
        reply = await stub.AuthenticateToken(
            pb.AuthenticateTokenRequest(token=token), metadata=SERVICE
        )
        assert reply.account_id == account_id


@pytest.mark.parametrize(
    "token",
    [
        UNKNOWN_TOKEN,
        "",
        ADMIN_TOKEN,
        SERVICE_CREDENTIAL,
        "x" * 100_000,
        "tok\x00en",
        "\u00e9\u00e8\U0001f600",
    ],
    ids=["unknown", "empty", "admin", "service", "huge", "nul", "unicode"],
)
async def test_authenticate_token_refuses_what_no_account_holds_without_echoing_it(
    stub: AccountServiceStub, token: str
) -> None:
    secrets = [t for t in (token, ADMIN_TOKEN, SERVICE_CREDENTIAL) if t]
    message = await refused(
        stub.AuthenticateToken(pb.AuthenticateTokenRequest(token=token), metadata=SERVICE),
        Code.UNAUTHENTICATED,
        *secrets,
    )
    assert message == "the token is not valid"


async def test_create_account_needs_no_token_and_its_token_works_at_once(
    stub: AccountServiceStub,
) -> None:
    account_id, token = await new_account(stub)
    account = await get(stub, account_id, bearer(token))
    assert (account.account_id, account.balance_cents) == (account_id, 0)
