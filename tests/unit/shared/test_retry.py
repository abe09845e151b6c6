"""The saga step's backoff: exponential from 50 ms, jittered, capped."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from eventbooking.retry import participant_calls


async def _never(_state: RetryCallState) -> None:
    raise AssertionError("not called: only the wait is under test")


def participant_backoff(attempt: int, max_backoff: float) -> float:
    """The sleep a saga step's retry loop takes after failed attempt `attempt` (from 1)."""
    retrying = participant_calls(
        stop=lambda _s: False, max_backoff=max_backoff, before_sleep=_never
    )
    state = RetryCallState(retrying, None, (), {})
    state.attempt_number = attempt
    assert retrying.wait is not None
    return float(retrying.wait(state))


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
