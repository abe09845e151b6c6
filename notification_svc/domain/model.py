"""Notifications and the command that asks for one to be sent."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from eventbooking import validation
from eventbooking.errors import InvalidArgument


class NotificationKind(enum.Enum):
    """What a notification is about."""

    BOOKING_CONFIRMED = "booking_confirmed"
    BOOKING_FAILED = "booking_failed"
    BOOKING_CANCELLED = "booking_cancelled"
    GENERAL = "general"


@dataclass(frozen=True)
class Notification:
    """A notification as delivered: the first one sent under its idempotency key."""

    notification_id: uuid.UUID
    idempotency_key: str
    account_id: uuid.UUID
    booking_id: uuid.UUID | None
    kind: NotificationKind
    subject: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class SendNotification:
    """A validated request to deliver a notification, at most once per idempotency key."""

    idempotency_key: str
    account_id: uuid.UUID
    booking_id: uuid.UUID | None
    kind: NotificationKind
    subject: str
    body: str

    @classmethod
    def create(
        cls,
        idempotency_key: str,
        account_id: str,
        *,
        booking_id: str,
        kind: NotificationKind | None,
        subject: str,
        body: str,
    ) -> SendNotification:
        """Validate raw request fields; `kind=None` means the caller left it unspecified.

        Raises `InvalidArgument` naming the first bad field.
        """
        key = validation.require_text(
            "idempotency_key", idempotency_key, max_length=validation.MAX_KEY_LENGTH
        )
        account = validation.parse_uuid("account_id", account_id)
        booking = validation.parse_uuid("booking_id", booking_id) if booking_id else None
        if kind is None:
            choices = ", ".join(k.name for k in NotificationKind)
            raise InvalidArgument(f"kind is required: one of {choices}")
        return cls(
            idempotency_key=key,
            account_id=account,
            booking_id=booking,
            kind=kind,
            subject=validation.require_text("subject", subject),
            body=validation.optional_text("body", body, max_length=validation.MAX_TEXT_LENGTH),
        )

    def to_notification(self, notification_id: uuid.UUID, *, at: datetime) -> Notification:
        """The notification this command sends, with its id and creation time."""
        return Notification(
            notification_id=notification_id,
            idempotency_key=self.idempotency_key,
            account_id=self.account_id,
            booking_id=self.booking_id,
            kind=self.kind,
            subject=self.subject,
            body=self.body,
            created_at=at,
        )
