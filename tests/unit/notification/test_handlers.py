"""NotificationService over fake sinks: once per key, nothing recorded on failure, streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from eventbooking.errors import ResourceExhausted, Unavailable
from notification_svc.adapters.sinks import Sink
from notification_svc.bootstrap import bootstrap
from notification_svc.domain.model import Notification, SendNotification
from notification_svc.service_layer.handlers import NotificationService
from notification_svc.settings import Settings

pytestmark = pytest.mark.timeout(10)

# Settings refuse to start without the deployment's secrets; these tests never check tokens.
SECRETS = {
    "admin_token": "test-admin-token-0123456789",
    "service_credential": "test-service-credential-0123456789",
}

Command = Callable[..., SendNotification]


class RecordingSink:
    """Keeps every delivered notification; fails the next `failures` deliveries first."""

    def __init__(self, *, failures: int = 0, delay: float = 0.0) -> None:
        self.delivered: list[Notification] = []
        self.failures = failures
        self.delay = delay

    async def deliver(self, notification: Notification) -> None:
        await asyncio.sleep(self.delay)
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable("the fake sink is down")
        self.delivered.append(notification)


class GateSink:
    """Holds notifications with subject "slow" until `gate` is set; delivers others at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.delivered: list[Notification] = []

    async def deliver(self, notification: Notification) -> None:
        if notification.subject == "slow":
            self.entered.set()
            await self.gate.wait()
        self.delivered.append(notification)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_service(
    *sinks: Sink, clock: FakeClock | None = None, **overrides: object
) -> NotificationService:
    settings = Settings(port=0, **SECRETS, **overrides)
    return bootstrap(settings, sinks=list(sinks), clock=clock or FakeClock())


async def test_a_send_delivers_to_every_sink_and_is_listed(command: Command) -> None:
    first, second = RecordingSink(), RecordingSink()
    clock = FakeClock()
    service = make_service(first, second, clock=clock)
    cmd = command()

    sent, duplicate = await service.send(cmd)

    assert duplicate is False
    assert sent.created_at == clock.now
    assert (sent.idempotency_key, sent.account_id, sent.subject) == (
        cmd.idempotency_key,
        cmd.account_id,
        cmd.subject,
    )
    assert first.delivered == [sent]
    assert second.delivered == [sent]
    assert service.list_notifications(cmd.account_id, limit=10) == [sent]


async def test_a_repeated_key_delivers_once_and_returns_the_first_notification(
    command: Command,
) -> None:
    sink = RecordingSink()
    service = make_service(sink)
    cmd = command()

    first, first_duplicate = await service.send(cmd)
    again, again_duplicate = await service.send(command(idempotency_key=cmd.idempotency_key))

    assert (first_duplicate, again_duplicate) == (False, True)
    assert again == first
    assert sink.delivered == [first]
    assert service.list_notifications(None, limit=10) == [first]


async def test_a_failed_delivery_records_nothing_and_a_retry_delivers(command: Command) -> None:
    good, flaky = RecordingSink(), RecordingSink(failures=1)
    service = make_service(good, flaky)
    cmd = command()

    with pytest.raises(Unavailable):
        await service.send(cmd)
    assert service.list_notifications(cmd.account_id, limit=10) == []

    sent, duplicate = await service.send(cmd)

    assert duplicate is False
    assert flaky.delivered == [sent]
    # The first sink ran on both attempts: delivery is at least once per sink.
    assert len(good.delivered) == 2
    assert service.list_notifications(cmd.account_id, limit=10) == [sent]


async def test_concurrent_sends_with_one_key_deliver_once(command: Command) -> None:
    sink = RecordingSink(delay=0.02)
    service = make_service(sink)
    cmd = command()

    results = await asyncio.gather(*(service.send(cmd) for _ in range(10)))

    assert len(sink.delivered) == 1
    assert sorted(duplicate for _, duplicate in results) == [False] + [True] * 9
    assert {n.notification_id for n, _ in results} == {sink.delivered[0].notification_id}


async def test_concurrent_sends_with_one_key_retry_after_a_failure(command: Command) -> None:
    sink = RecordingSink(failures=1, delay=0.01)
    service = make_service(sink)
    cmd = command()

    results = await asyncio.gather(service.send(cmd), service.send(cmd), return_exceptions=True)

    assert isinstance(results[0], Unavailable)
    assert not isinstance(results[1], BaseException)
    assert results[1][1] is False
    assert len(sink.delivered) == 1


async def test_a_slow_send_does_not_hold_up_other_keys(command: Command) -> None:
    gate = GateSink()
    service = make_service(gate)
    slow = asyncio.create_task(service.send(command(subject="slow")))
    await gate.entered.wait()

    _, duplicate = await asyncio.wait_for(service.send(command(subject="fast")), timeout=1)

    assert duplicate is False
    assert [n.subject for n in gate.delivered] == ["fast"]
    gate.gate.set()
    await asyncio.wait_for(slow, timeout=1)
    assert [n.subject for n in gate.delivered] == ["fast", "slow"]


async def test_the_key_is_forgotten_after_the_dedupe_window(command: Command) -> None:
    sink = RecordingSink()
    clock = FakeClock()
    service = make_service(sink, clock=clock, dedupe_window_seconds=60)
    cmd = command()

    await service.send(cmd)
    clock.now += timedelta(seconds=59)
    _, duplicate_inside = await service.send(cmd)
    clock.now += timedelta(seconds=2)
    _, duplicate_after = await service.send(cmd)

    assert (duplicate_inside, duplicate_after) == (True, False)
    assert len(sink.delivered) == 2


async def test_listing_is_newest_first_limited_and_per_account(command: Command) -> None:
    service = make_service(RecordingSink(), history_size=3)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    for subject, account in [("a1", alice), ("b1", bob), ("a2", alice), ("a3", alice)]:
        await service.send(command(account_id=account, subject=subject))

    assert [n.subject for n in service.list_notifications(uuid.UUID(alice), limit=10)] == [
        "a3",
        "a2",
    ]
    assert [n.subject for n in service.list_notifications(None, limit=2)] == ["a3", "a2"]
    assert [n.subject for n in service.list_notifications(uuid.UUID(bob), limit=10)] == ["b1"]


async def test_a_subscriber_gets_its_accounts_notifications_sent_after_subscribing(
    command: Command,
) -> None:
    service = make_service(RecordingSink())
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await service.send(command(account_id=str(alice), subject="before"))

    with service.subscribe(alice) as mine, service.subscribe(None) as everyone:
        await service.send(command(account_id=str(bob), subject="for bob"))
        await service.send(command(account_id=str(alice), subject="for alice"))

        got_mine = await asyncio.wait_for(anext(mine), timeout=1)
        got_all = [await asyncio.wait_for(anext(everyone), timeout=1) for _ in range(2)]

    assert got_mine.subject == "for alice"
    assert [n.subject for n in got_all] == ["for bob", "for alice"]
    assert service.subscriber_count == 0


async def test_a_slow_subscriber_is_dropped_without_blocking_senders(command: Command) -> None:
    service = make_service(RecordingSink(), stream_queue_size=2)
    account = str(uuid.uuid4())
    with service.subscribe(None) as slow, service.subscribe(None) as fast:
        received = []
        for _ in range(5):
            await asyncio.wait_for(service.send(command(account_id=account)), timeout=1)
            received.append(await asyncio.wait_for(anext(fast), timeout=1))

        assert len(received) == 5
        assert service.subscriber_count == 1
        with pytest.raises(ResourceExhausted, match="fell behind by 3 notifications"):
            await anext(slow)
        # Once dropped it stays dropped: the reader cannot silently miss notifications.
        with pytest.raises(ResourceExhausted):
            await anext(slow)


async def test_closing_streams_ends_waiting_readers_with_unavailable(command: Command) -> None:
    service = make_service(RecordingSink())
    with service.subscribe(None) as subscription:
        reader = asyncio.create_task(anext(subscription))
        await asyncio.sleep(0)
        service.close_streams()
        with pytest.raises(Unavailable, match="shutting down"):
            await asyncio.wait_for(reader, timeout=1)
    assert service.subscriber_count == 0
