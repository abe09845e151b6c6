"""Live subscriptions to sent notifications, each with a bounded queue.

Publishing never waits: a subscriber whose queue is full is dropped with
`ResourceExhausted`, so one slow reader can neither block senders nor make
the process hold an unbounded backlog for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from types import TracebackType

from eventbooking.errors import DomainError, ResourceExhausted
from notification_svc.domain.model import Notification


class Subscription:
    """An async iterator over notifications sent after it was created.

    Use it as a context manager so that it unsubscribes on exit. Iteration
    raises the error that ended it: falling behind or the service closing.
    """

    def __init__(
        self,
        account_id: uuid.UUID | None,
        *,
        queue_size: int,
        on_close: Callable[[Subscription], None],
    ) -> None:
        self.account_id = account_id
        # None is the wake-up sentinel put after the subscription ends.
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue(maxsize=queue_size)
        self._ended: DomainError | None = None
        self._on_close = on_close

    def wants(self, notification: Notification) -> bool:
        """Whether this subscriber asked for `notification`'s account."""
        return self.account_id is None or self.account_id == notification.account_id

    def offer(self, notification: Notification) -> bool:
        """Queue `notification` without waiting; False when this subscriber had to be dropped."""
        try:
            self._queue.put_nowait(notification)
        except asyncio.QueueFull:
            behind = self._queue.qsize() + 1
            self.end(
                ResourceExhausted(
                    f"this stream fell behind by {behind} notifications (the limit is "
                    f"{self._queue.maxsize}); reconnect and use ListNotifications to catch up"
                )
            )
            return False
        return True

    def end(self, error: DomainError) -> None:
        """Stop the subscription; the reader gets `error` at its next read."""
        if self._ended is not None:
            return
        self._ended = error
        # Free the backlog now rather than when the stalled reader wakes up.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self._on_close(self)

    def close(self) -> None:
        """Unsubscribe; safe to call more than once."""
        self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Notification:
        if self._ended is not None:
            raise self._ended
        item = await self._queue.get()
        if item is None:
            assert self._ended is not None
            raise self._ended
        return item

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
