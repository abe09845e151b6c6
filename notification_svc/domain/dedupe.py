"""The deduplication window: which idempotency keys were delivered recently.

It lives in memory and per process. A restart forgets every key, and two
replicas do not share keys, so a retry that reaches another process (or
arrives after the window) is delivered again: delivery is at least once,
exactly once only within one process and one window.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

from notification_svc.domain.model import Notification


class DedupeWindow:
    """Remembers key -> notification for `window`, at most `max_keys` keys, evicting oldest first."""

    def __init__(self, window: timedelta, *, max_keys: int) -> None:
        if window <= timedelta(0):
            raise ValueError(f"window must be positive, got {window}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self._window = window
        self._max_keys = max_keys
        # Insertion order is time order, so the oldest entries are always at the front.
        self._entries: OrderedDict[str, tuple[datetime, Notification]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, *, now: datetime) -> Notification | None:
        """The notification delivered under `key` within the window, if any."""
        self._evict(now)
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def record(self, key: str, notification: Notification, *, now: datetime) -> None:
        """Remember that `notification` was delivered under `key` at `now`."""
        self._entries.pop(key, None)
        self._entries[key] = (now, notification)
        self._evict(now)

    def _evict(self, now: datetime) -> None:
        oldest_kept = now - self._window
        while self._entries:
            recorded_at, _ = next(iter(self._entries.values()))
            if recorded_at > oldest_kept and len(self._entries) <= self._max_keys:
                break
            self._entries.popitem(last=False)
