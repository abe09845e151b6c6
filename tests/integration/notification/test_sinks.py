"""The real sinks behind a real server: a JSON Lines file and a local SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import grpc
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from tests.integration.notification.conftest import admin, service

pytestmark = pytest.mark.timeout(30)

StartServer = Callable[..., Awaitable[pb_grpc.NotificationServiceStub]]
DEADLINE = 10


class Mailbox:
    """An aiosmtpd handler that keeps every received mail and its envelope recipients."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        self.received.append(mail)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


class SmtpServer:
    """A local aiosmtpd server on a chosen port, started and stopped on demand."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mailbox = Mailbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
async def smtp_server(free_port: int) -> AsyncIterator[SmtpServer]:
    server = SmtpServer(free_port)
    yield server
    server.stop()


def request(**fields: object) -> pb.SendNotificationRequest:
    values: dict[str, object] = {
        "idempotency_key": f"key-{uuid.uuid4()}",
        "account_id": str(uuid.uuid4()),
        "kind": pb.NOTIFICATION_KIND_BOOKING_CANCELLED,
        "subject": "Your booking was cancelled",
        "body": "The refund is on its way.",
    }
    values.update(fields)
    return pb.SendNotificationRequest(**values)


async def test_the_jsonl_sink_writes_one_line_per_notification(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "notifications.jsonl"
    stub = await start_server(sinks="jsonl", jsonl_path=path)
    req = request()

    first = await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)
    await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)
    second = await stub.SendNotification(request(), metadata=service(), timeout=DEADLINE)

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["notification_id"] for row in rows] == [
        first.notification.notification_id,
        second.notification.notification_id,
    ]
    assert rows[0]["account_id"] == req.account_id
    assert rows[0]["kind"] == "BOOKING_CANCELLED"
    assert rows[0]["body"] == req.body


async def test_the_smtp_sink_sends_a_mail_to_a_real_server(
    start_server: StartServer, smtp_server: SmtpServer
) -> None:
    smtp_server.start()
    stub = await start_server(
        sinks="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_sender="tickets@example.com",
        smtp_recipient_template="{account_id}@accounts.example.com",
    )
    req = request()

    reply = await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)
    await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)

    [mail] = smtp_server.mailbox.received
    assert mail["Subject"] == req.subject
    assert mail["From"] == "tickets@example.com"
    assert mail["To"] == f"{req.account_id}@accounts.example.com"
    assert smtp_server.mailbox.recipients == [[f"{req.account_id}@accounts.example.com"]]
    assert mail["X-Notification-Id"] == reply.notification.notification_id
    assert mail.get_content().strip() == req.body


async def test_a_mail_server_that_is_down_is_unavailable_and_a_retry_delivers(
    start_server: StartServer, smtp_server: SmtpServer
) -> None:
    stub = await start_server(
        sinks="smtp", smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_timeout_seconds=2
    )
    req = request()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "the mail server is unavailable; try again"
    listed = await stub.ListNotifications(
        pb.ListNotificationsRequest(account_id=req.account_id), metadata=admin(), timeout=DEADLINE
    )
    assert list(listed.notifications) == []

    smtp_server.start()
    reply = await stub.SendNotification(req, metadata=service(), timeout=DEADLINE)

    assert reply.duplicate is False
    assert len(smtp_server.mailbox.received) == 1
