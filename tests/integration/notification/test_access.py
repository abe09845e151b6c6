"""Who may call what on notification_svc: every RPC, every kind of caller, over a real server.

Only services send; a user reads and streams only its own account's
notifications; reading every account's is for the admin. A refused send
delivers nothing and leaves its key unused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from eventbooking.auth import Access
from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from notification_svc.domain.model import Notification
from notification_svc.entrypoints.grpc_server import ACCESS, SERVICE_NAME
from tests.integration.notification.conftest import (
    ADMIN_TOKEN,
    SERVICE_CREDENTIAL,
    FakeAccountTokens,
    Metadata,
    admin,
    bearer,
    service,
)

pytestmark = pytest.mark.timeout(30)

StartServer = Callable[..., Awaitable[pb_grpc.NotificationServiceStub]]
DEADLINE = 5
WRONG_TOKEN = "not-a-token-anyone-was-given"


class RecordingSink:
    def __init__(self) -> None:
        self.delivered: list[Notification] = []

    async def deliver(self, notification: Notification) -> None:
        self.delivered.append(notification)


class Callers:
    """The metadata of each kind of caller; alice owns the account the calls name."""

    def __init__(self, accounts: FakeAccountTokens) -> None:
        self.alice_id = str(uuid.uuid4())
        self.alice = accounts.issue(self.alice_id)
        self.bob = accounts.issue(str(uuid.uuid4()))

    def as_(self, who: str) -> Metadata:
        return {
            "nobody": (),
            "alice": bearer(self.alice),
            "bob": bearer(self.bob),
            "admin": admin(),
            "service": service(),
            "wrong": bearer(WRONG_TOKEN),
            "malformed": (("authorization", f"Token {self.alice}"),),
        }[who]

    def tokens(self) -> list[str]:
        return [self.alice, self.bob, ADMIN_TOKEN, SERVICE_CREDENTIAL, WRONG_TOKEN]


@pytest.fixture
def callers(accounts: FakeAccountTokens) -> Callers:
    return Callers(accounts)


def send_request(account_id: str, key: str = "") -> pb.SendNotificationRequest:
    return pb.SendNotificationRequest(
        idempotency_key=key or f"key-{uuid.uuid4()}",
        account_id=account_id,
        booking_id=str(uuid.uuid4()),
        kind=pb.NOTIFICATION_KIND_BOOKING_CONFIRMED,
        subject="Your booking is confirmed",
        body="Two seats, row F.",
    )


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def first_of_stream(
    stub: pb_grpc.NotificationServiceStub, account_id: str, metadata: Metadata
) -> Any:
    call = stub.StreamNotifications(
        pb.StreamNotificationsRequest(account_id=account_id), metadata=metadata
    )
    try:
        return await asyncio.wait_for(call.read(), timeout=DEADLINE)
    finally:
        call.cancel()


def assert_no_secret_in(error: grpc.aio.AioRpcError, callers: Callers) -> None:
    details = error.details() or ""
    assert not [token for token in callers.tokens() if token in details]


def test_the_access_table_names_every_method() -> None:
    methods = pb.DESCRIPTOR.services_by_name["NotificationService"].methods
    assert set(ACCESS) == {f"/{SERVICE_NAME}/{m.name}" for m in methods}
    assert ACCESS[f"/{SERVICE_NAME}/SendNotification"] is Access.SERVICE
    assert ACCESS[f"/{SERVICE_NAME}/ListNotifications"] is Access.USER
    assert ACCESS[f"/{SERVICE_NAME}/StreamNotifications"] is Access.USER


# SendNotification: the service credential only.


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("nobody", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        ("malformed", grpc.StatusCode.UNAUTHENTICATED),
        ("alice", grpc.StatusCode.PERMISSION_DENIED),
        ("bob", grpc.StatusCode.PERMISSION_DENIED),
        ("admin", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_a_send_by_anyone_but_a_service_is_refused_and_delivers_nothing(
    start_server: StartServer, callers: Callers, who: str, code: grpc.StatusCode
) -> None:
    sink = RecordingSink()
    stub = await start_server(fake_sinks=[sink])
    request = send_request(callers.alice_id)

    error = await refusal(
        stub.SendNotification(request, metadata=callers.as_(who), timeout=DEADLINE)
    )
    listed = await stub.ListNotifications(
        pb.ListNotificationsRequest(), metadata=admin(), timeout=DEADLINE
    )
    # The key was not used: the service's own send of it is the first.
    sent = await stub.SendNotification(request, metadata=service(), timeout=DEADLINE)

    assert error.code() == code, error.details()
    assert_no_secret_in(error, callers)
    assert list(listed.notifications) == []
    assert sent.duplicate is False
    assert [n.idempotency_key for n in sink.delivered] == [request.idempotency_key]


# ListNotifications and StreamNotifications: the account's own token, or the admin's.

READ_REFUSALS = [
    ("nobody", grpc.StatusCode.UNAUTHENTICATED),
    ("wrong", grpc.StatusCode.UNAUTHENTICATED),
    ("malformed", grpc.StatusCode.UNAUTHENTICATED),
    ("bob", grpc.StatusCode.PERMISSION_DENIED),
    ("service", grpc.StatusCode.PERMISSION_DENIED),
]


@pytest.mark.parametrize(("who", "code"), READ_REFUSALS)
async def test_listing_an_account_as_anyone_but_it_or_the_admin_is_refused(
    start_server: StartServer, callers: Callers, who: str, code: grpc.StatusCode
) -> None:
    stub = await start_server()
    await stub.SendNotification(
        send_request(callers.alice_id), metadata=service(), timeout=DEADLINE
    )

    error = await refusal(
        stub.ListNotifications(
            pb.ListNotificationsRequest(account_id=callers.alice_id),
            metadata=callers.as_(who),
            timeout=DEADLINE,
        )
    )

    assert error.code() == code, error.details()
    assert_no_secret_in(error, callers)


@pytest.mark.parametrize("who", ["alice", "admin"])
async def test_the_account_and_the_admin_may_list_it(
    start_server: StartServer, callers: Callers, who: str
) -> None:
    stub = await start_server()
    sent = await stub.SendNotification(
        send_request(callers.alice_id), metadata=service(), timeout=DEADLINE
    )

    listed = await stub.ListNotifications(
        pb.ListNotificationsRequest(account_id=callers.alice_id),
        metadata=callers.as_(who),
        timeout=DEADLINE,
    )

    assert list(listed.notifications) == [sent.notification]


@pytest.mark.parametrize("who", ["alice", "bob"])
async def test_listing_every_account_is_for_the_admin_only(
    start_server: StartServer, callers: Callers, who: str
) -> None:
    stub = await start_server()
    await stub.SendNotification(
        send_request(callers.alice_id), metadata=service(), timeout=DEADLINE
    )

    error = await refusal(
        stub.ListNotifications(
            pb.ListNotificationsRequest(), metadata=callers.as_(who), timeout=DEADLINE
        )
    )

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "account_id is required" in (error.details() or "")


@pytest.mark.parametrize(("who", "code"), READ_REFUSALS)
async def test_streaming_an_account_as_anyone_but_it_or_the_admin_is_refused(
    start_server: StartServer, callers: Callers, who: str, code: grpc.StatusCode
) -> None:
    stub = await start_server()

    error = await refusal(first_of_stream(stub, callers.alice_id, callers.as_(who)))

    assert error.code() == code, error.details()
    assert_no_secret_in(error, callers)


@pytest.mark.parametrize("who", ["alice", "bob", "service"])
async def test_streaming_every_account_is_for_the_admin_only(
    start_server: StartServer, callers: Callers, who: str
) -> None:
    stub = await start_server()

    error = await refusal(first_of_stream(stub, "", callers.as_(who)))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("account", "who"), [("alice", "alice"), ("alice", "admin"), ("", "admin")]
)
async def test_the_account_and_the_admin_may_stream(
    start_server: StartServer, callers: Callers, account: str, who: str
) -> None:
    stub = await start_server()
    account_id = callers.alice_id if account else ""
    call = stub.StreamNotifications(
        pb.StreamNotificationsRequest(account_id=account_id), metadata=callers.as_(who)
    )
    try:
        await asyncio.wait_for(call.initial_metadata(), timeout=DEADLINE)
        sent = await stub.SendNotification(
            send_request(callers.alice_id), metadata=service(), timeout=DEADLINE
        )
        got = await asyncio.wait_for(call.read(), timeout=DEADLINE)
    finally:
        call.cancel()

    assert got.notification == sent.notification
