"""NotificationService over a real gRPC server and channel: send, list, stream, errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from tests.integration.notification.conftest import FakeAccountTokens, admin, service

pytestmark = pytest.mark.timeout(30)

StartServer = Callable[..., Awaitable[pb_grpc.NotificationServiceStub]]
DEADLINE = 5


def request(**fields: object) -> pb.SendNotificationRequest:
    values: dict[str, object] = {
        "idempotency_key": f"key-{uuid.uuid4()}",
        "account_id": str(uuid.uuid4()),
        "booking_id": str(uuid.uuid4()),
        "kind": pb.NOTIFICATION_KIND_BOOKING_CONFIRMED,
        "subject": "Your booking is confirmed",
        "body": "Two seats, row F.",
    }
    values.update(fields)
    return pb.SendNotificationRequest(**values)


async def test_send_then_repeat_returns_the_first_notification_as_duplicate(
    start_server: StartServer,
) -> None:
    stub = await start_server()
    req = request()

    first = await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)
    again = await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)

    assert first.duplicate is False
    n = first.notification
    uuid.UUID(n.notification_id)
    assert (n.idempotency_key, n.account_id, n.booking_id) == (
        req.idempotency_key,
        req.account_id,
        req.booking_id,
    )
    assert (n.kind, n.subject, n.body) == (req.kind, req.subject, req.body)
    assert n.created_at.seconds > 0
    assert again.duplicate is True
    assert again.notification == first.notification


async def test_a_notification_without_booking_has_an_empty_booking_id(
    start_server: StartServer,
) -> None:
    stub = await start_server()
    reply = await stub.SendNotification(
        request(booking_id="", kind=pb.NOTIFICATION_KIND_GENERAL),
        metadata=service(),
        timeout=DEADLINE,
    )
    assert reply.notification.booking_id == ""
    assert reply.notification.kind == pb.NOTIFICATION_KIND_GENERAL


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"idempotency_key": ""}, "idempotency_key is required"),
        ({"account_id": "not-a-uuid"}, "account_id must be a UUID, got 'not-a-uuid'"),
        ({"booking_id": "42"}, "booking_id must be a UUID"),
        ({"subject": "x" * 1_000_000}, "subject is 1000000 characters long; the limit is 200"),
        ({"kind": pb.NOTIFICATION_KIND_UNSPECIFIED}, "kind is required"),
        ({"kind": 99}, "kind 99 is not a known notification kind"),
    ],
)
async def test_bad_input_is_invalid_argument_with_a_readable_message(
    start_server: StartServer, fields: dict[str, object], message: str
) -> None:
    stub = await start_server()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendNotification(request(**fields), metadata=service(), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_a_request_over_the_size_limit_is_refused_and_the_server_carries_on(
    start_server: StartServer,
) -> None:
    stub = await start_server()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendNotification(
            request(body="x" * 2_000_000), metadata=service(), timeout=DEADLINE
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = await stub.SendNotification(request(), metadata=service(), timeout=DEADLINE)
    assert reply.duplicate is False


async def test_list_notifications_is_per_account_newest_first(
    start_server: StartServer, accounts: FakeAccountTokens
) -> None:
    stub = await start_server()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    for account, subject in [(alice, "a1"), (bob, "b1"), (alice, "a2"), (alice, "a3")]:
        await stub.SendNotification(
            request(account_id=account, subject=subject), metadata=service(), timeout=DEADLINE
        )

    as_alice = accounts.bearer(alice)
    everything = await stub.ListNotifications(
        pb.ListNotificationsRequest(account_id=alice), metadata=as_alice, timeout=DEADLINE
    )
    page = await stub.ListNotifications(
        pb.ListNotificationsRequest(account_id=alice, page_size=2),
        metadata=as_alice,
        timeout=DEADLINE,
    )
    every_account = await stub.ListNotifications(
        pb.ListNotificationsRequest(), metadata=admin(), timeout=DEADLINE
    )

    assert [n.subject for n in everything.notifications] == ["a3", "a2", "a1"]
    assert [n.subject for n in page.notifications] == ["a3", "a2"]
    assert {n.account_id for n in everything.notifications} == {alice}
    assert [n.subject for n in every_account.notifications] == ["a3", "a2", "b1", "a1"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"account_id": "nope"}, "account_id must be a UUID"),
        (
            {"account_id": str(uuid.uuid4()), "page_size": 501},
            "page_size must be between 1 and 500",
        ),
        ({"account_id": str(uuid.uuid4()), "page_size": -1}, "page_size must be between 1 and 500"),
    ],
)
async def test_list_notifications_rejects_bad_input(
    start_server: StartServer, fields: dict[str, object], message: str
) -> None:
    stub = await start_server()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListNotifications(
            pb.ListNotificationsRequest(**fields), metadata=admin(), timeout=DEADLINE
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_a_stream_receives_notifications_sent_after_subscribing(
    start_server: StartServer, accounts: FakeAccountTokens
) -> None:
    stub = await start_server()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await stub.SendNotification(
        request(account_id=alice, subject="before"), metadata=service(), timeout=DEADLINE
    )

    mine = stub.StreamNotifications(
        pb.StreamNotificationsRequest(account_id=alice), metadata=accounts.bearer(alice)
    )
    everyone = stub.StreamNotifications(pb.StreamNotificationsRequest(), metadata=admin())
    # The server sends headers once subscribed: after them nothing sent can be missed.
    await asyncio.wait_for(mine.initial_metadata(), timeout=DEADLINE)
    await asyncio.wait_for(everyone.initial_metadata(), timeout=DEADLINE)
    try:
        await stub.SendNotification(
            request(account_id=bob, subject="for bob"), metadata=service(), timeout=DEADLINE
        )
        await stub.SendNotification(
            request(account_id=alice, subject="for alice"), metadata=service(), timeout=DEADLINE
        )

        got_mine = await asyncio.wait_for(mine.read(), timeout=DEADLINE)
        got_all = [await asyncio.wait_for(everyone.read(), timeout=DEADLINE) for _ in range(2)]
    finally:
        mine.cancel()
        everyone.cancel()

    assert isinstance(got_mine, pb.StreamNotificationsResponse)
    assert got_mine.notification.subject == "for alice"
    assert got_mine.notification.account_id == alice
    assert [r.notification.subject for r in got_all] == ["for bob", "for alice"]


async def test_a_stream_with_a_bad_account_id_is_invalid_argument(
    start_server: StartServer,
) -> None:
    stub = await start_server()
    call = stub.StreamNotifications(
        pb.StreamNotificationsRequest(account_id="bogus"), metadata=admin()
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "account_id must be a UUID" in (caught.value.details() or "")


SENDS = 200


async def read_until_error(
    call: grpc.aio.UnaryStreamCall[Any, Any],
) -> tuple[int, grpc.aio.AioRpcError | None]:
    """Read a stream to its end; return how many messages came and the error it ended with."""
    received = 0
    try:
        while await asyncio.wait_for(call.read(), timeout=DEADLINE) is not grpc.aio.EOF:
            received += 1
    except grpc.aio.AioRpcError as err:
        return received, err
    return received, None


async def test_a_stream_that_is_not_read_is_dropped_while_sends_carry_on(
    start_server: StartServer,
) -> None:
    # Without BDP probing the client's receive window stays small, so the server blocks soon.
    stub = await start_server(stream_queue_size=2, channel_options=[("grpc.http2.bdp_probe", 0)])
    stalled = stub.StreamNotifications(pb.StreamNotificationsRequest(), metadata=admin())
    await asyncio.wait_for(stalled.initial_metadata(), timeout=DEADLINE)
    body = "x" * 10_000
    try:
        # Enough to fill the transport's flow-control window and then the queue behind it.
        for _ in range(SENDS):
            reply = await stub.SendNotification(
                request(body=body), metadata=service(), timeout=DEADLINE
            )
            assert reply.duplicate is False

        received, error = await read_until_error(stalled)
    finally:
        stalled.cancel()

    assert error is not None, "the stream ended without an error"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fell behind by 3 notifications" in (error.details() or "")
    assert 0 < received < SENDS
