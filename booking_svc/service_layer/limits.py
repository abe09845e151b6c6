"""The per-account limit on booking attempts: a token bucket per account, in memory.

Each process counts only the calls it serves, so with several replicas an
account may make that many attempts per second at each of them; the limit
is there to keep one caller from flooding the saga log, not to bill.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from eventbooking.errors import ResourceExhausted

# Buckets kept before the full ones, which remember nothing a new bucket would not, are dropped.
MAX_TRACKED_ACCOUNTS = 100_000


class BookingRateLimit:
    """At most `per_second` attempts per account per second, in bursts of up to twice that."""

    def __init__(
        self,
        per_second: int,
        *,
        now: Callable[[], float] = time.monotonic,
        max_accounts: int = MAX_TRACKED_ACCOUNTS,
    ) -> None:
        self.per_second = per_second
        self.burst = 2 * per_second
        self._now = now
        self._max_accounts = max_accounts
        # account -> (tokens left, when they were counted)
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}

    @property
    def tracked(self) -> int:
        """How many accounts have a bucket in memory now."""
        return len(self._buckets)

    def take(self, account_id: uuid.UUID) -> None:
        """Count one attempt of `account_id`, or raise ResourceExhausted past the limit."""
        now = self._now()
        tokens = self._tokens(account_id, now)
        if tokens < 1:
            self._buckets[account_id] = (tokens, now)
            raise ResourceExhausted(
                f"account {account_id} went past the limit of {self.per_second} booking "
                f"attempts per second (bursts of {self.burst}); try again in a moment"
            )
        self._buckets[account_id] = (tokens - 1, now)
        if len(self._buckets) > self._max_accounts:
            self._forget_full(now)

    def _tokens(self, account_id: uuid.UUID, now: float) -> float:
        tokens, at = self._buckets.get(account_id, (self.burst, now))
        # max(): a clock that steps back refills nothing rather than taking tokens away.
        return min(self.burst, tokens + max(0.0, now - at) * self.per_second)

    def _forget_full(self, now: float) -> None:
        full = [a for a in self._buckets if self._tokens(a, now) >= self.burst]
        for account_id in full:
            del self._buckets[account_id]
