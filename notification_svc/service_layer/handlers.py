"""Sending, listing and streaming notifications.

A send checks the dedupe window, delivers through every sink, then records
the notification and publishes it to live streams. A delivery that fails
records nothing, so a retry with the same key delivers again; sends that
share a key run one at a time, so concurrent duplicates deliver once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from eventbooking.clock import Clock, utcnow
from eventbooking.errors import Unavailable
from notification_svc.adapters.sinks import Sink
from notification_svc.domain.dedupe import DedupeWindow
from notification_svc.domain.history import History
from notification_svc.domain.model import Notification, SendNotification
from notification_svc.service_layer.subscriptions import Subscription

log = logging.getLogger(__name__)


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


class NotificationService:
    """The use cases of notification_svc over its sinks, dedupe window and history."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        dedupe: DedupeWindow,
        history: History,
        stream_queue_size: int,
        clock: Clock = utcnow,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._sinks = tuple(sinks)
        self._dedupe = dedupe
        self._history = history
        self._stream_queue_size = stream_queue_size
        self._clock = clock
        self._new_id = new_id
        self._key_locks: dict[str, _KeyLock] = {}
        self._subscriptions: set[Subscription] = set()

    @property
    def subscriber_count(self) -> int:
        """How many streams are subscribed right now."""
        return len(self._subscriptions)

    async def send(self, command: SendNotification) -> tuple[Notification, bool]:
        """Deliver `command` unless its key was delivered in the window.

        Returns the notification and whether it was a duplicate (then it is
        the first one sent under the key, and nothing was delivered now).
        """
        async with self._lock_for(command.idempotency_key):
            earlier = self._dedupe.get(command.idempotency_key, now=self._clock())
            if earlier is not None:
                return earlier, True
            notification = command.to_notification(self._new_id(), at=self._clock())
            for sink in self._sinks:
                await sink.deliver(notification)
            self._dedupe.record(command.idempotency_key, notification, now=self._clock())
            self._history.add(notification)
            self._publish(notification)
            return notification, False

    def list_notifications(self, account_id: uuid.UUID | None, *, limit: int) -> list[Notification]:
        """Up to `limit` recent notifications, newest first, of one account or all (None)."""
        return self._history.newest(account_id, limit=limit)

    def subscribe(self, account_id: uuid.UUID | None) -> Subscription:
        """Start receiving notifications sent from now on, of one account or all (None)."""
        subscription = Subscription(
            account_id, queue_size=self._stream_queue_size, on_close=self._unsubscribe
        )
        self._subscriptions.add(subscription)
        return subscription

    def close_streams(self) -> None:
        """End every subscription, telling readers to reconnect; used when shutting down."""
        for subscription in list(self._subscriptions):
            subscription.end(Unavailable("the notification service is shutting down; reconnect"))

    def _publish(self, notification: Notification) -> None:
        for subscription in list(self._subscriptions):
            if subscription.wants(notification) and not subscription.offer(notification):
                log.warning(
                    "dropped a stream that fell behind",
                    extra={"account_id": str(subscription.account_id or "*")},
                )

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @contextlib.asynccontextmanager
    async def _lock_for(self, key: str) -> AsyncIterator[None]:
        entry = self._key_locks.setdefault(key, _KeyLock())
        entry.holders += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.holders -= 1
            # The table holds only keys in flight, so it cannot grow with traffic.
            if entry.holders == 0:
                del self._key_locks[key]
