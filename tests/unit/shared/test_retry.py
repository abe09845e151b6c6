"""The saga step's backoff: exponential from 50 ms, jittered, capped."""

from __future__ import annotations

import pytest

from eventbooking.retry import participant_backoff


@pytest.mark.parametrize(("attempt", "grown"), [(1, 0.05), (2, 0.1), (3, 0.2), (5, 0.8)])
def test_the_backoff_doubles_per_attempt_with_at_most_a_tenth_of_a_second_of_jitter(
    attempt: int, grown: float
) -> None:
    waits = [participant_backoff(attempt, max_backoff=60) for _ in range(200)]

    assert all(grown <= wait <= grown + 0.1 for wait in waits)
    assert len(set(waits)) > 1, "the jitter spreads retries of many sagas apart"


@pytest.mark.parametrize("attempt", [8, 100, 10_000])
def test_the_backoff_never_exceeds_its_cap(attempt: int) -> None:
    assert participant_backoff(attempt, max_backoff=2.0) == 2.0
