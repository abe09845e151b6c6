"""The event handlers' state rules over in-memory fakes: reserve, confirm, release, expire."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from event_svc.domain import commands
from event_svc.domain.model import Event, Reservation, ReservationStatus
from event_svc.service_layer.handlers import EventHandlers
from eventbooking.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from tests.unit.event.conftest import DEFAULT_HOLD
from tests.unit.event.fakes import FakeClock, Store

S = ReservationStatus


async def new_event(
    handlers: EventHandlers,
    *,
    capacity: int = 10,
    price_cents: int = 1500,
    starts_at: datetime | None = None,
) -> Event:
    return await handlers.create_event(
        commands.CreateEvent(
            name="Concert",
            venue="Hall",
            starts_at=starts_at or datetime(2030, 6, 1, tzinfo=UTC),
            capacity=capacity,
            price_cents=price_cents,
        )
    )


def reserve_cmd(
    event: Event,
    quantity: int = 1,
    *,
    reservation_id: uuid.UUID | None = None,
    hold_seconds: int | None = None,
) -> commands.ReserveSeats:
    return commands.ReserveSeats(
        reservation_id=reservation_id or uuid.uuid4(),
        event_id=event.event_id,
        quantity=quantity,
        hold_seconds=hold_seconds,
    )


def confirm(reservation_id: uuid.UUID) -> commands.ConfirmReservation:
    return commands.ConfirmReservation(reservation_id=reservation_id)


def release(reservation_id: uuid.UUID) -> commands.ReleaseReservation:
    return commands.ReleaseReservation(reservation_id=reservation_id)


def assert_seats(store: Store, event_id: uuid.UUID, *, held: int, sold: int) -> None:
    """The counters are as expected and agree with the reservations behind them."""
    event = store.events[event_id]
    mine = [r for r in store.reservations.values() if r.event_id == event_id]
    assert (event.held_seats, event.sold_seats) == (held, sold)
    assert held == sum(r.quantity for r in mine if r.status is S.HELD)
    assert sold == sum(r.quantity for r in mine if r.status is S.CONFIRMED)
    assert event.available_seats + event.held_seats + event.sold_seats == event.capacity
    assert event.available_seats >= 0


async def test_create_and_get_event_start_with_every_seat_available(
    handlers: EventHandlers, clock: FakeClock
) -> None:
    event = await new_event(handlers, capacity=7)
    got = await handlers.get_event(event.event_id)
    assert got == event
    assert (got.available_seats, got.held_seats, got.sold_seats) == (7, 0, 0)
    assert got.created_at == clock.now


async def test_get_unknown_event_is_not_found(handlers: EventHandlers) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"event {missing} does not exist"):
        await handlers.get_event(missing)


async def test_list_events_pages_soonest_first(handlers: EventHandlers) -> None:
    base = datetime(2031, 1, 1, tzinfo=UTC)
    created = [
        await new_event(handlers, starts_at=base + timedelta(days=d)) for d in (3, 1, 2, 1, 0)
    ]
    expected = sorted(created, key=lambda e: (e.starts_at, e.event_id))
    seen: list[Event] = []
    after = None
    while True:
        page = await handlers.list_events(commands.ListEvents(page_size=2, after=after))
        seen += page.events
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == expected


async def test_reserve_holds_seats_for_the_default_time_at_the_current_price(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers, price_cents=1500)
    reservation = await handlers.reserve_seats(reserve_cmd(event, 3))
    assert reservation.status is S.HELD
    assert reservation.amount_cents == 4500
    assert reservation.expires_at == clock.now + DEFAULT_HOLD
    assert store.reservations[reservation.reservation_id] == reservation
    assert_seats(store, event.event_id, held=3, sold=0)


async def test_reserve_uses_the_requested_hold_time(
    handlers: EventHandlers, clock: FakeClock
) -> None:
    event = await new_event(handlers)
    reservation = await handlers.reserve_seats(reserve_cmd(event, hold_seconds=42))
    assert reservation.expires_at == clock.now + timedelta(seconds=42)


async def test_reserve_on_unknown_event_is_not_found_and_leaves_nothing(
    handlers: EventHandlers, store: Store
) -> None:
    cmd = commands.ReserveSeats(
        reservation_id=uuid.uuid4(), event_id=uuid.uuid4(), quantity=1, hold_seconds=None
    )
    with pytest.raises(NotFound, match=f"event {cmd.event_id} does not exist"):
        await handlers.reserve_seats(cmd)
    assert cmd.reservation_id not in store.reservations


async def test_reserve_more_than_capacity_is_invalid(handlers: EventHandlers, store: Store) -> None:
    event = await new_event(handlers, capacity=5)
    cmd = reserve_cmd(event, 6)
    with pytest.raises(InvalidArgument, match="quantity 6 is more than the 5 seats"):
        await handlers.reserve_seats(cmd)
    assert cmd.reservation_id not in store.reservations


async def test_sold_out_is_refused_and_leaves_no_reservation(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers, capacity=3)
    await handlers.reserve_seats(reserve_cmd(event, 2))
    cmd = reserve_cmd(event, 2)
    with pytest.raises(FailedPrecondition, match="sold out: 1 seats available, 2 requested"):
        await handlers.reserve_seats(cmd)
    assert cmd.reservation_id not in store.reservations
    assert_seats(store, event.event_id, held=2, sold=0)


async def test_short_reserve_expires_this_events_lapsed_holds_and_succeeds(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers, capacity=2)
    other = await new_event(handlers, capacity=2)
    old = await handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=10))
    other_old = await handlers.reserve_seats(reserve_cmd(other, 1, hold_seconds=10))
    clock.advance(10)
    fresh = await handlers.reserve_seats(reserve_cmd(event, 2))
    assert fresh.status is S.HELD
    assert store.reservations[old.reservation_id].status is S.EXPIRED
    # Only the event being reserved is swept on demand; the sweeper handles the rest.
    assert store.reservations[other_old.reservation_id].status is S.HELD
    assert_seats(store, event.event_id, held=2, sold=0)
    assert_seats(store, other.event_id, held=1, sold=0)


async def test_repeated_reserve_returns_the_same_reservation_without_taking_more(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers)
    cmd = reserve_cmd(event, 2)
    first = await handlers.reserve_seats(cmd)
    clock.advance(5)
    again = await handlers.reserve_seats(cmd)
    assert again == first
    assert_seats(store, event.event_id, held=2, sold=0)


@pytest.mark.parametrize("final", [S.CONFIRMED, S.EXPIRED])
async def test_repeated_reserve_returns_the_reservation_whatever_its_status(
    handlers: EventHandlers, store: Store, clock: FakeClock, final: ReservationStatus
) -> None:
    event = await new_event(handlers)
    cmd = reserve_cmd(event, 2, hold_seconds=5)
    first = await handlers.reserve_seats(cmd)
    if final is S.CONFIRMED:
        await handlers.confirm_reservation(confirm(first.reservation_id))
    else:
        clock.advance(5)
        assert await handlers.expire_lapsed(limit=10) >= 1
    again = await handlers.reserve_seats(cmd)
    assert again.status is final
    assert (again.quantity, again.amount_cents) == (first.quantity, first.amount_cents)
    assert_seats(store, event.event_id, held=0, sold=2 if final is S.CONFIRMED else 0)


async def test_same_id_for_a_different_request_is_aborted(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers)
    other = await new_event(handlers)
    first = await handlers.reserve_seats(reserve_cmd(event, 2))
    rid = first.reservation_id
    with pytest.raises(Aborted, match=f"reservation {rid} was made for 2 seats"):
        await handlers.reserve_seats(reserve_cmd(event, 3, reservation_id=rid))
    with pytest.raises(Aborted, match="not 2 of event"):
        await handlers.reserve_seats(reserve_cmd(other, 2, reservation_id=rid))
    assert store.reservations[rid] == first
    assert_seats(store, event.event_id, held=2, sold=0)
    assert_seats(store, other.event_id, held=0, sold=0)


async def test_release_of_unknown_id_records_a_tombstone_that_refuses_a_late_reserve(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers)
    rid = uuid.uuid4()
    tomb = await handlers.release_reservation(release(rid))
    assert tomb == Reservation.tombstone(rid)
    assert store.reservations[rid] == tomb
    assert await handlers.release_reservation(release(rid)) == tomb
    with pytest.raises(Aborted, match=f"reservation {rid} was released before it arrived"):
        await handlers.reserve_seats(reserve_cmd(event, 1, reservation_id=rid))
    assert store.reservations[rid] == tomb
    assert_seats(store, event.event_id, held=0, sold=0)


async def test_reserve_after_a_release_is_aborted(handlers: EventHandlers, store: Store) -> None:
    event = await new_event(handlers)
    cmd = reserve_cmd(event, 2)
    await handlers.reserve_seats(cmd)
    await handlers.release_reservation(release(cmd.reservation_id))
    with pytest.raises(Aborted, match=f"reservation {cmd.reservation_id} was released already"):
        await handlers.reserve_seats(cmd)
    assert_seats(store, event.event_id, held=0, sold=0)


async def test_confirm_turns_held_seats_into_sold_ones_once(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers)
    held = await handlers.reserve_seats(reserve_cmd(event, 3))
    confirmed = await handlers.confirm_reservation(confirm(held.reservation_id))
    assert confirmed.status is S.CONFIRMED
    assert (confirmed.quantity, confirmed.amount_cents) == (held.quantity, held.amount_cents)
    assert_seats(store, event.event_id, held=0, sold=3)
    assert await handlers.confirm_reservation(confirm(held.reservation_id)) == confirmed
    assert_seats(store, event.event_id, held=0, sold=3)


async def test_confirm_unknown_is_not_found(handlers: EventHandlers, store: Store) -> None:
    rid = uuid.uuid4()
    with pytest.raises(NotFound, match=f"reservation {rid} does not exist"):
        await handlers.confirm_reservation(confirm(rid))
    assert rid not in store.reservations


async def test_confirm_of_a_released_or_tombstoned_id_is_aborted(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers)
    held = await handlers.reserve_seats(reserve_cmd(event, 1))
    await handlers.release_reservation(release(held.reservation_id))
    with pytest.raises(Aborted, match="was released already"):
        await handlers.confirm_reservation(confirm(held.reservation_id))
    tomb = uuid.uuid4()
    await handlers.release_reservation(release(tomb))
    with pytest.raises(Aborted, match="was released before it arrived"):
        await handlers.confirm_reservation(confirm(tomb))
    assert_seats(store, event.event_id, held=0, sold=0)


async def test_confirm_after_the_hold_lapsed_expires_it_and_gives_seats_back(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers)
    held = await handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=30))
    clock.advance(30)
    assert held.expires_at is not None
    with pytest.raises(
        FailedPrecondition, match=re.escape(f"hold expired at {held.expires_at.isoformat()}")
    ):
        await handlers.confirm_reservation(confirm(held.reservation_id))
    # The expiry is kept although the call failed.
    assert store.reservations[held.reservation_id].status is S.EXPIRED
    assert_seats(store, event.event_id, held=0, sold=0)
    with pytest.raises(FailedPrecondition, match="hold expired at"):
        await handlers.confirm_reservation(confirm(held.reservation_id))
    assert_seats(store, event.event_id, held=0, sold=0)


async def test_confirm_just_before_expiry_succeeds(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers)
    held = await handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=30))
    clock.advance(29.999)
    assert (await handlers.confirm_reservation(confirm(held.reservation_id))).status is S.CONFIRMED
    assert_seats(store, event.event_id, held=0, sold=2)


async def test_release_of_a_hold_gives_held_seats_back_once(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers)
    held = await handlers.reserve_seats(reserve_cmd(event, 4))
    released = await handlers.release_reservation(release(held.reservation_id))
    assert released.status is S.RELEASED
    assert released.event_id == event.event_id
    assert_seats(store, event.event_id, held=0, sold=0)
    assert await handlers.release_reservation(release(held.reservation_id)) == released
    assert_seats(store, event.event_id, held=0, sold=0)


async def test_release_of_a_confirmed_reservation_gives_sold_seats_back(
    handlers: EventHandlers, store: Store
) -> None:
    event = await new_event(handlers)
    keep = await handlers.reserve_seats(reserve_cmd(event, 1))
    await handlers.confirm_reservation(confirm(keep.reservation_id))
    held = await handlers.reserve_seats(reserve_cmd(event, 3))
    await handlers.confirm_reservation(confirm(held.reservation_id))
    assert_seats(store, event.event_id, held=0, sold=4)
    released = await handlers.release_reservation(release(held.reservation_id))
    assert released.status is S.RELEASED
    assert_seats(store, event.event_id, held=0, sold=1)


async def test_release_of_an_expired_reservation_changes_nothing(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers)
    held = await handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=1))
    clock.advance(1)
    assert await handlers.expire_lapsed(limit=10) == 1
    after = await handlers.release_reservation(release(held.reservation_id))
    assert after.status is S.EXPIRED
    assert_seats(store, event.event_id, held=0, sold=0)


async def test_expire_lapsed_takes_only_lapsed_holds_in_batches(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event = await new_event(handlers, capacity=20)
    short = [await handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=5)) for _ in range(3)]
    long = await handlers.reserve_seats(reserve_cmd(event, 1, hold_seconds=60))
    done = await handlers.reserve_seats(reserve_cmd(event, 1, hold_seconds=5))
    await handlers.confirm_reservation(confirm(done.reservation_id))
    assert await handlers.expire_lapsed(limit=10) == 0
    clock.advance(5)
    assert await handlers.expire_lapsed(limit=2) == 2
    assert await handlers.expire_lapsed(limit=2) == 1
    assert await handlers.expire_lapsed(limit=2) == 0
    assert all(store.reservations[r.reservation_id].status is S.EXPIRED for r in short)
    assert store.reservations[long.reservation_id].status is S.HELD
    assert store.reservations[done.reservation_id].status is S.CONFIRMED
    assert_seats(store, event.event_id, held=1, sold=1)
