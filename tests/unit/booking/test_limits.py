"""The per-account limit on booking attempts: a token bucket per account, on a clock we move."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from booking_svc.service_layer.limits import BookingRateLimit
from booking_svc.settings import Settings
from eventbooking.errors import ResourceExhausted
from tests.unit.booking.fakes import FakeMonotonic, World, settings

PER_SECOND = 5
BURST = 2 * PER_SECOND


@pytest.fixture
def time() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def limit(time: FakeMonotonic) -> BookingRateLimit:
    return BookingRateLimit(PER_SECOND, now=time)


def attempts(limit: BookingRateLimit, account_id: uuid.UUID, count: int) -> int:
    """How many of `count` attempts made now the limit lets through."""
    allowed = 0
    for _ in range(count):
        try:
            limit.take(account_id)
        except ResourceExhausted:
            continue
        allowed += 1
    return allowed


def test_the_setting_defaults_to_twenty_a_second() -> None:
    assert settings().booking_attempts_per_second == 20
    assert BookingRateLimit(20).burst == 40


def test_the_setting_must_be_positive() -> None:
    with pytest.raises(ValueError, match="booking_attempts_per_second"):
        settings(booking_attempts_per_second=0)
    assert Settings.model_fields["booking_attempts_per_second"].description


def test_a_burst_of_twice_the_rate_passes_and_the_next_attempt_names_the_limit(
    limit: BookingRateLimit,
) -> None:
    account = uuid.uuid4()
    assert attempts(limit, account, BURST) == BURST

    with pytest.raises(ResourceExhausted) as refused:
        limit.take(account)

    assert f"limit of {PER_SECOND} booking attempts per second" in refused.value.message
    assert f"bursts of {BURST}" in refused.value.message
    assert str(account) in refused.value.message


def test_once_the_burst_is_spent_the_rate_plus_one_th_attempt_in_a_second_is_refused(
    limit: BookingRateLimit, time: FakeMonotonic
) -> None:
    account = uuid.uuid4()
    attempts(limit, account, BURST)

    for _ in range(3):
        time.advance(1.0)
        assert attempts(limit, account, PER_SECOND) == PER_SECOND
        with pytest.raises(ResourceExhausted):
            limit.take(account)


def test_another_account_is_unaffected(limit: BookingRateLimit) -> None:
    greedy, other = uuid.uuid4(), uuid.uuid4()
    assert attempts(limit, greedy, BURST + 10) == BURST

    assert attempts(limit, other, BURST) == BURST


def test_refused_attempts_do_not_push_the_window_further(
    limit: BookingRateLimit, time: FakeMonotonic
) -> None:
    account = uuid.uuid4()
    attempts(limit, account, BURST)
    for _ in range(100):
        time.advance(0.001)
        attempts(limit, account, 1)

    time.advance(1.0)

    assert attempts(limit, account, PER_SECOND) == PER_SECOND


def test_after_a_quiet_window_the_whole_burst_is_back_and_no_more(
    limit: BookingRateLimit, time: FakeMonotonic
) -> None:
    account = uuid.uuid4()
    attempts(limit, account, BURST)

    time.advance(60.0)

    assert attempts(limit, account, BURST + 1) == BURST


def test_a_clock_that_steps_back_takes_nothing_away(
    limit: BookingRateLimit, time: FakeMonotonic
) -> None:
    account = uuid.uuid4()
    attempts(limit, account, 1)
    time.advance(-30.0)

    assert attempts(limit, account, BURST) == BURST - 1


def test_idle_accounts_are_forgotten_once_many_are_tracked(time: FakeMonotonic) -> None:
    limit = BookingRateLimit(PER_SECOND, now=time, max_accounts=3)
    busy = uuid.uuid4()
    attempts(limit, busy, BURST)
    for _ in range(3):
        attempts(limit, uuid.uuid4(), 1)
    time.advance(0.5)

    attempts(limit, uuid.uuid4(), 1)

    assert limit.tracked == 2
    # The busy account's bucket is not full yet, so it is remembered; the idle ones are not.
    assert attempts(limit, busy, BURST) == PER_SECOND // 2


# Through the handlers: the limit comes before any database work.


@pytest.fixture
async def limited(time: FakeMonotonic) -> AsyncIterator[World]:
    world = World(rate_limit=BookingRateLimit(PER_SECOND, now=time))
    yield world
    await world.close()


async def test_a_refused_attempt_touches_no_database(limited: World) -> None:
    for _ in range(BURST):
        await limited.book()
    before = (limited.store.commits, limited.store.rollbacks, len(limited.store.bookings))

    with pytest.raises(ResourceExhausted, match=f"limit of {PER_SECOND} booking attempts"):
        await limited.book()

    assert (limited.store.commits, limited.store.rollbacks, len(limited.store.bookings)) == before


async def test_repeats_of_one_key_count_as_attempts(limited: World, time: FakeMonotonic) -> None:
    for _ in range(BURST):
        await limited.book(key="same")

    with pytest.raises(ResourceExhausted):
        await limited.book(key="same")
    time.advance(1.0)
    again = await limited.book(key="same")

    assert list(limited.store.bookings) == [again.booking_id]


async def test_the_default_limit_comes_from_the_settings() -> None:
    world = World(booking_attempts_per_second=1)
    try:
        await world.book()
        await world.book()
        with pytest.raises(ResourceExhausted, match="limit of 1 booking attempts per second"):
            await world.book()
    finally:
        await world.close()
