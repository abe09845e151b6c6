"""Where notifications go: the service log, a JSON Lines file, or a mail server.

A sink raises `eventbooking.errors.Unavailable` when it cannot deliver for
now, so the caller (the booking saga) retries with the same key. Bodies
never reach the service log; they may hold personal details.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from eventbooking.errors import Unavailable
from notification_svc.domain.model import Notification

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Delivers one notification or raises; delivering twice must be harmless."""

    async def deliver(self, notification: Notification) -> None: ...


class LogSink:
    """Writes one structured log line per notification, without its body."""

    async def deliver(self, notification: Notification) -> None:
        log.info(
            "notification delivered",
            extra={
                "notification_id": str(notification.notification_id),
                "account_id": str(notification.account_id),
                "booking_id": str(notification.booking_id or ""),
                "kind": notification.kind.name,
                "subject": notification.subject,
                "body_chars": len(notification.body),
            },
        )


def to_json(notification: Notification) -> dict[str, str]:
    """The notification as a flat JSON object of strings."""
    return {
        "notification_id": str(notification.notification_id),
        "idempotency_key": notification.idempotency_key,
        "account_id": str(notification.account_id),
        "booking_id": str(notification.booking_id or ""),
        "kind": notification.kind.name,
        "subject": notification.subject,
        "body": notification.body,
        "created_at": notification.created_at.isoformat(),
    }


class JsonlSink:
    """Appends one JSON object per line to `path`, creating its directory when needed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        # One writer at a time: a long line may take several writes and must not interleave.
        self._lock = asyncio.Lock()

    async def deliver(self, notification: Notification) -> None:
        line = json.dumps(to_json(notification), ensure_ascii=False) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as err:
                log.warning(
                    "jsonl sink failed",
                    extra={"path": str(self._path), "error": f"{type(err).__name__}: {err}"},
                )
                raise Unavailable("the notification file cannot be written; try again") from err

    def _append(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as file:
            file.write(line)


class SmtpSink:
    """Sends each notification as a plain-text mail through one SMTP server."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        recipient_template: str,
        timeout_seconds: float,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._recipient_template = recipient_template
        self._timeout = timeout_seconds

    async def deliver(self, notification: Notification) -> None:
        message = self.message_for(notification)
        try:
            await asyncio.to_thread(self._send, message)
        except (smtplib.SMTPException, OSError) as err:
            log.warning(
                "smtp sink failed",
                extra={
                    "smtp_server": f"{self._host}:{self._port}",
                    "notification_id": str(notification.notification_id),
                    "error": type(err).__name__,
                },
            )
            raise Unavailable("the mail server is unavailable; try again") from err

    def message_for(self, notification: Notification) -> EmailMessage:
        """The mail for `notification`: subject, sender, recipient, body and id headers."""
        message = EmailMessage()
        # A header must be one line; a subject with line breaks would otherwise be refused.
        message["Subject"] = " ".join(notification.subject.split())
        message["From"] = self._sender
        message["To"] = self._recipient_template.format(account_id=notification.account_id)
        message["X-Notification-Id"] = str(notification.notification_id)
        message["X-Notification-Kind"] = notification.kind.name
        message.set_content(notification.body or notification.subject)
        return message

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            smtp.send_message(message)
