"""Fixtures shared by the notification_svc unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from notification_svc.domain.model import NotificationKind, SendNotification


@pytest.fixture
def command() -> Callable[..., SendNotification]:
    """Build a valid command, with a fresh key and account unless a field is given."""

    def build(**fields: object) -> SendNotification:
        values: dict[str, object] = {
            "idempotency_key": f"key-{uuid.uuid4()}",
            "account_id": str(uuid.uuid4()),
            "booking_id": str(uuid.uuid4()),
            "kind": NotificationKind.BOOKING_CONFIRMED,
            "subject": "Your booking is confirmed",
            "body": "See you there.",
        }
        values.update(fields)
        return SendNotification.create(**values)

    return build
