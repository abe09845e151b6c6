"""The bounded history of delivered notifications, kept in memory for listing."""

from __future__ import annotations

import uuid
from collections import deque
from itertools import islice

from notification_svc.domain.model import Notification


class History:
    """The last `size` notifications delivered by this process; older ones are forgotten."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._items: deque[Notification] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, notification: Notification) -> None:
        """Keep `notification`, dropping the oldest one when full."""
        self._items.append(notification)

    def newest(self, account_id: uuid.UUID | None, *, limit: int) -> list[Notification]:
        """Up to `limit` notifications, newest first, of one account or of all when None."""
        matching = (
            n for n in reversed(self._items) if account_id is None or n.account_id == account_id
        )
        return list(islice(matching, limit))
