"""Booking status changes inside one process, for callers that wait on a booking.

The engine publishes every booking it changes; `CreateBooking` with
`wait_for_outcome`, `CancelBooking` and `WatchBooking` subscribe. A saga that
runs in another replica publishes nowhere here, so waiters also re-read the
database every so often; a subscription only makes local changes instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

from booking_svc.domain.model import Booking


class Subscription:
    """The latest booking published for one id since the last `next`."""

    def __init__(self) -> None:
        self._latest: Booking | None = None
        self._event = asyncio.Event()

    def _push(self, booking: Booking) -> None:
        self._latest = booking
        self._event.set()

    async def next(self, within: float) -> Booking | None:
        """The next published booking, or None when `within` seconds pass first."""
        try:
            # Not wait_for, which wraps the wait in a task of its own each time.
            async with asyncio.timeout(within):
                await self._event.wait()
        except TimeoutError:
            return None
        self._event.clear()
        latest, self._latest = self._latest, None
        return latest


class BookingChanges:
    def __init__(self) -> None:
        self._subscribers: dict[uuid.UUID, set[Subscription]] = {}

    def publish(self, booking: Booking) -> None:
        for subscription in self._subscribers.get(booking.booking_id, ()):
            subscription._push(booking)

    @contextlib.contextmanager
    def subscribe(self, booking_id: uuid.UUID) -> Iterator[Subscription]:
        """Subscribe before reading the booking, so no change falls between read and wait."""
        subscription = Subscription()
        self._subscribers.setdefault(booking_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers[booking_id]
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[booking_id]
