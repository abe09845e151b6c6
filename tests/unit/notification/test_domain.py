"""The send command's validation, the dedupe window and the bounded history."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from eventbooking.errors import InvalidArgument
from notification_svc.domain.dedupe import DedupeWindow
from notification_svc.domain.history import History
from notification_svc.domain.model import Notification, NotificationKind, SendNotification

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def notification(account_id: uuid.UUID | None = None, *, subject: str = "hi") -> Notification:
    return Notification(
        notification_id=uuid.uuid4(),
        idempotency_key=f"key-{uuid.uuid4()}",
        account_id=account_id or uuid.uuid4(),
        booking_id=None,
        kind=NotificationKind.GENERAL,
        subject=subject,
        body="",
        created_at=T0,
    )


def test_a_valid_command_is_parsed_and_stripped(
    command: Callable[..., SendNotification],
) -> None:
    account = uuid.uuid4()
    cmd = command(
        idempotency_key="  saga-1:notify ",
        account_id=str(account),
        booking_id="",
        subject=" Confirmed ",
        body="",
    )
    assert cmd.idempotency_key == "saga-1:notify"
    assert cmd.account_id == account
    assert cmd.booking_id is None
    assert cmd.subject == "Confirmed"
    assert cmd.body == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"idempotency_key": ""}, "idempotency_key is required"),
        ({"idempotency_key": "   "}, "idempotency_key is required"),
        (
            {"idempotency_key": "k" * 201},
            "idempotency_key is 201 characters long; the limit is 200",
        ),
        ({"account_id": ""}, "account_id is required"),
        ({"account_id": "nope"}, "account_id must be a UUID, got 'nope'"),
        ({"booking_id": "12345"}, "booking_id must be a UUID, got '12345'"),
        ({"kind": None}, "kind is required: one of BOOKING_CONFIRMED, BOOKING_FAILED"),
        ({"subject": ""}, "subject is required"),
        ({"subject": "s" * 201}, "subject is 201 characters long; the limit is 200"),
        ({"subject": "a\x00b"}, "subject must not contain NUL characters"),
        ({"body": "b" * 10_001}, "body is 10001 characters long; the limit is 10000"),
    ],
)
def test_a_bad_field_is_named_in_a_readable_message(
    command: Callable[..., SendNotification], fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(**fields)
    assert message in caught.value.message


def test_the_limits_themselves_are_accepted(command: Callable[..., SendNotification]) -> None:
    cmd = command(idempotency_key="k" * 200, subject="s" * 200, body="b" * 10_000)
    assert (len(cmd.idempotency_key), len(cmd.subject), len(cmd.body)) == (200, 200, 10_000)


def test_the_notification_carries_the_command_fields(
    command: Callable[..., SendNotification],
) -> None:
    cmd = command()
    nid = uuid.uuid4()
    sent = cmd.to_notification(nid, at=T0)
    assert sent.notification_id == nid
    assert sent.created_at == T0
    assert (sent.idempotency_key, sent.account_id, sent.booking_id, sent.kind) == (
        cmd.idempotency_key,
        cmd.account_id,
        cmd.booking_id,
        cmd.kind,
    )


def test_the_dedupe_window_remembers_a_key_until_the_window_passes() -> None:
    window = DedupeWindow(timedelta(seconds=60), max_keys=10)
    first = notification()
    window.record("k", first, now=T0)
    assert window.get("k", now=T0 + timedelta(seconds=59)) is first
    assert window.get("other", now=T0) is None
    assert window.get("k", now=T0 + timedelta(seconds=60)) is None
    assert len(window) == 0


def test_the_dedupe_window_evicts_by_time_oldest_first() -> None:
    window = DedupeWindow(timedelta(seconds=60), max_keys=10)
    window.record("old", notification(), now=T0)
    window.record("new", notification(), now=T0 + timedelta(seconds=30))
    assert window.get("old", now=T0 + timedelta(seconds=61)) is None
    assert window.get("new", now=T0 + timedelta(seconds=61)) is not None
    assert len(window) == 1


def test_the_dedupe_window_evicts_the_oldest_keys_beyond_its_size() -> None:
    window = DedupeWindow(timedelta(hours=1), max_keys=3)
    for i in range(5):
        window.record(f"k{i}", notification(), now=T0 + timedelta(seconds=i))
    now = T0 + timedelta(seconds=5)
    assert len(window) == 3
    assert [window.get(f"k{i}", now=now) is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("window", "max_keys"), [(timedelta(0), 1), (timedelta(seconds=-1), 1), (timedelta(1), 0)]
)
def test_the_dedupe_window_refuses_nonsense_limits(window: timedelta, max_keys: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        DedupeWindow(window, max_keys=max_keys)


def test_history_keeps_only_the_newest_and_lists_them_newest_first() -> None:
    history = History(3)
    account = uuid.uuid4()
    sent = [notification(account, subject=f"n{i}") for i in range(5)]
    for n in sent:
        history.add(n)
    assert len(history) == 3
    assert [n.subject for n in history.newest(account, limit=10)] == ["n4", "n3", "n2"]
    assert [n.subject for n in history.newest(None, limit=2)] == ["n4", "n3"]


def test_history_lists_one_account_or_all() -> None:
    history = History(10)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for account, subject in [(alice, "a1"), (bob, "b1"), (alice, "a2")]:
        history.add(notification(account, subject=subject))
    assert [n.subject for n in history.newest(alice, limit=10)] == ["a2", "a1"]
    assert [n.subject for n in history.newest(bob, limit=10)] == ["b1"]
    assert [n.subject for n in history.newest(None, limit=10)] == ["a2", "b1", "a1"]
    assert history.newest(uuid.uuid4(), limit=10) == []


def test_history_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        History(0)
