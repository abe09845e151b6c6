"""The sinks on their own: what the log line leaves out, the JSONL file, the mail built."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventbooking.errors import Unavailable
from notification_svc.adapters.sinks import JsonlSink, LogSink, SmtpSink
from notification_svc.domain.model import Notification, NotificationKind

pytestmark = pytest.mark.timeout(10)


def notification(*, subject: str = "Booking confirmed", body: str = "secret body") -> Notification:
    return Notification(
        notification_id=uuid.uuid4(),
        idempotency_key="saga-1:notify",
        account_id=uuid.uuid4(),
        booking_id=uuid.uuid4(),
        kind=NotificationKind.BOOKING_CONFIRMED,
        subject=subject,
        body=body,
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


async def test_the_log_sink_logs_ids_and_subject_but_not_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = notification()
    with caplog.at_level(logging.INFO, logger="notification_svc.adapters.sinks"):
        await LogSink().deliver(sent)
    [record] = caplog.records
    assert record.getMessage() == "notification delivered"
    assert record.__dict__["notification_id"] == str(sent.notification_id)
    assert record.__dict__["kind"] == "BOOKING_CONFIRMED"
    assert "secret body" not in str(record.__dict__)


async def test_the_jsonl_sink_creates_its_directory_and_appends_lines(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "notifications.jsonl"
    sink = JsonlSink(path)
    first, second = notification(body="line\nbreak"), notification(subject="Другой")

    await sink.deliver(first)
    await sink.deliver(second)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert rows[0]["notification_id"] == str(first.notification_id)
    assert rows[0]["body"] == "line\nbreak"
    assert rows[0]["created_at"] == "2030-01-01T00:00:00+00:00"
    assert rows[1]["subject"] == "Другой"


async def test_an_unwritable_jsonl_file_is_unavailable(tmp_path: Path) -> None:
    # A directory where the file should be: opening it for append fails.
    (tmp_path / "taken").mkdir()
    with pytest.raises(Unavailable, match="cannot be written"):
        await JsonlSink(tmp_path / "taken").deliver(notification())


def test_the_mail_has_a_one_line_subject_and_the_account_address() -> None:
    sink = SmtpSink(
        "localhost",
        25,
        sender="tickets@example.com",
        recipient_template="{account_id}@accounts.example.com",
        timeout_seconds=1,
    )
    sent = notification(subject="Booking\r\nBcc: victim@example.com")
    message = sink.message_for(sent)
    assert message["Subject"] == "Booking Bcc: victim@example.com"
    assert message["Bcc"] is None
    assert message["To"] == f"{sent.account_id}@accounts.example.com"
    assert message["X-Notification-Id"] == str(sent.notification_id)
    assert message.get_content().strip() == "secret body"
