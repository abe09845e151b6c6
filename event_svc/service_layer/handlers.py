"""What the event service does, one handler per use case.

Each handler opens a unit of work, loads, changes and commits; anything
raised before the commit rolls the whole change back. Reservation changes
lock the reservation row first, so Reserve, Confirm and Release with one id
take turns, and move the event's seat counters in the same transaction.

Reserve, Confirm and Release first try their common case as a shortcut: one
statement that commits on its own, so the event row, which every reservation
of a popular event updates, is locked only for as long as PostgreSQL runs
it. A reserve's shortcut may also find the event sold out with no lapsed
hold to expire, and is then refused as the unit of work would refuse it.
When a shortcut does not apply it changes nothing, and the unit of work
handles the request, with every rule and refusal of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from event_svc.adapters.repository import NoShortcuts, SeatShortcuts, SoldOut
from event_svc.domain import commands
from event_svc.domain.model import (
    Event,
    EventPage,
    Reservation,
    ReservationStatus,
    SeatChange,
)
from event_svc.service_layer.unit_of_work import UnitOfWork
from eventbooking.clock import Clock
from eventbooking.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from eventbooking.paging import split_page

# How many lapsed holds of one event a short ReserveSeats expires before trying again.
EXPIRE_ON_DEMAND_LIMIT = 1000


class EventHandlers:
    """The event service's use cases over a unit-of-work factory, a clock and the default hold.

    `shortcuts` does the common seat moves in one statement each; without
    them every move goes through the unit of work.
    """

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        clock: Clock,
        default_hold: timedelta,
        shortcuts: SeatShortcuts | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._default_hold = default_hold
        self._shortcuts = shortcuts or NoShortcuts()

    async def create_event(self, cmd: commands.CreateEvent) -> Event:
        event = Event(
            event_id=uuid.uuid4(),
            name=cmd.name,
            venue=cmd.venue,
            starts_at=cmd.starts_at,
            capacity=cmd.capacity,
            price_cents=cmd.price_cents,
            held_seats=0,
            sold_seats=0,
            created_at=self._clock(),
        )
        async with self._uow() as uow:
            await uow.events.add(event)
            await uow.commit()
        return event

    async def get_event(self, event_id: uuid.UUID) -> Event:
        async with self._uow() as uow:
            return await _require_event_txn(uow, event_id)

    async def list_events(self, cmd: commands.ListEvents) -> EventPage:
        async with self._uow() as uow:
            rows = await uow.events.page(after=cmd.after, limit=cmd.page_size + 1)
        page, next_after = split_page(
            rows, cmd.page_size, position=lambda e: (e.starts_at, e.event_id)
        )
        return EventPage(events=page, next_after=next_after)

    async def reserve_seats(self, cmd: commands.ReserveSeats) -> Reservation:
        """Hold seats until the hold time is up; a repeated id gets its reservation back."""
        now = self._clock()
        hold = timedelta(seconds=cmd.hold_seconds) if cmd.hold_seconds else self._default_hold
        shortcut = await self._shortcuts.hold_new(
            cmd.reservation_id,
            event_id=cmd.event_id,
            quantity=cmd.quantity,
            expires_at=now + hold,
            now=now,
        )
        if isinstance(shortcut, Reservation):
            return shortcut
        if isinstance(shortcut, SoldOut):
            raise _sold_out(shortcut.available, cmd.quantity)
        async with self._uow() as uow:
            event = await _require_event_txn(uow, cmd.event_id)
            if cmd.quantity > event.capacity:
                raise InvalidArgument(
                    f"quantity {cmd.quantity} is more than the {event.capacity} seats "
                    f"of event {event.event_id}"
                )
            reservation = Reservation(
                reservation_id=cmd.reservation_id,
                event_id=cmd.event_id,
                quantity=cmd.quantity,
                amount_cents=cmd.quantity * event.price_cents,
                status=ReservationStatus.HELD,
                expires_at=now + hold,
            )
            if not await uow.reservations.claim(reservation, now=now):
                return await _replay_reserve_txn(uow, cmd)
            if await uow.events.take_seats(cmd.event_id, cmd.quantity) is None:
                await _expire_lapsed_txn(
                    uow, now=now, limit=EXPIRE_ON_DEMAND_LIMIT, event_id=cmd.event_id
                )
                if await uow.events.take_seats(cmd.event_id, cmd.quantity) is None:
                    short = await _require_event_txn(uow, cmd.event_id)
                    # Raising rolls back the claim too, so a later Release records a tombstone.
                    raise _sold_out(short.available_seats, cmd.quantity)
            await uow.commit()
        return reservation

    async def confirm_reservation(self, cmd: commands.ConfirmReservation) -> Reservation:
        """Turn a live hold into sold seats; a confirmed one is returned as it is."""
        now = self._clock()
        confirmed = await self._shortcuts.move_live_hold(
            cmd.reservation_id, ReservationStatus.CONFIRMED, now=now
        )
        if confirmed is not None:
            return confirmed
        async with self._uow() as uow:
            reservation = await uow.reservations.lock(cmd.reservation_id)
            if reservation is None:
                raise NotFound(f"reservation {cmd.reservation_id} does not exist")
            if reservation.status is ReservationStatus.RELEASED:
                raise Aborted(_released(reservation))
            if reservation.status is ReservationStatus.CONFIRMED:
                return reservation
            if reservation.status is ReservationStatus.HELD and not reservation.lapsed(now):
                confirmed = await _move_txn(uow, reservation, ReservationStatus.CONFIRMED, now=now)
                await uow.commit()
                return confirmed
            if reservation.status is ReservationStatus.HELD:
                await _move_txn(uow, reservation, ReservationStatus.EXPIRED, now=now)
                await uow.commit()
        # Only tombstones lack a hold time, and they are RELEASED.
        assert reservation.expires_at is not None
        raise FailedPrecondition(
            f"hold expired at {reservation.expires_at.isoformat()}: "
            f"reservation {cmd.reservation_id} cannot be confirmed"
        )

    async def release_reservation(self, cmd: commands.ReleaseReservation) -> Reservation:
        """Give the seats back; an unknown id is recorded as released (a tombstone)."""
        now = self._clock()
        released = await self._shortcuts.move_live_hold(
            cmd.reservation_id, ReservationStatus.RELEASED, now=now
        )
        if released is not None:
            return released
        tombstone = Reservation.tombstone(cmd.reservation_id)
        async with self._uow() as uow:
            if await uow.reservations.claim(tombstone, now=now):
                await uow.commit()
                return tombstone
            reservation = await uow.reservations.lock(cmd.reservation_id)
            # The claim saw a committed row, and reservation rows are never deleted.
            assert reservation is not None
            if reservation.status in (ReservationStatus.RELEASED, ReservationStatus.EXPIRED):
                return reservation
            released = await _move_txn(uow, reservation, ReservationStatus.RELEASED, now=now)
            await uow.commit()
        return released

    async def expire_lapsed(self, *, limit: int) -> int:
        """Expire up to `limit` holds past their time, seats back; returns how many."""
        now = self._clock()
        async with self._uow() as uow:
            expired = await _expire_lapsed_txn(uow, now=now, limit=limit)
            await uow.commit()
        return expired


async def _require_event_txn(uow: UnitOfWork, event_id: uuid.UUID) -> Event:
    event = await uow.events.get(event_id)
    if event is None:
        raise NotFound(f"event {event_id} does not exist")
    return event


def _sold_out(available: int, quantity: int) -> FailedPrecondition:
    return FailedPrecondition(f"sold out: {available} seats available, {quantity} requested")


def _released(reservation: Reservation) -> str:
    if reservation.is_tombstone:
        return f"reservation {reservation.reservation_id} was released before it arrived"
    return f"reservation {reservation.reservation_id} was released already"


async def _replay_reserve_txn(uow: UnitOfWork, cmd: commands.ReserveSeats) -> Reservation:
    """A ReserveSeats whose id exists: the same request again, or a refused one."""
    earlier = await uow.reservations.lock(cmd.reservation_id)
    # The claim saw a committed row, and reservation rows are never deleted.
    assert earlier is not None
    if earlier.status is ReservationStatus.RELEASED:
        raise Aborted(_released(earlier))
    if not earlier.same_request(cmd.event_id, cmd.quantity):
        raise Aborted(
            f"reservation {cmd.reservation_id} was made for {earlier.quantity} seats of event "
            f"{earlier.event_id}, not {cmd.quantity} of event {cmd.event_id}"
        )
    return earlier


async def _move_txn(
    uow: UnitOfWork, reservation: Reservation, status: ReservationStatus, *, now: datetime
) -> Reservation:
    """Move a locked reservation to `status` and its event's seats with it."""
    moved, change = reservation.move_to(status)
    # Tombstones are RELEASED, a state with no way out, so a moving reservation has an event.
    assert reservation.event_id is not None
    await uow.reservations.set_status([reservation.reservation_id], status, now=now)
    await uow.events.move_seats(reservation.event_id, change)
    return moved


async def _expire_lapsed_txn(
    uow: UnitOfWork, *, now: datetime, limit: int, event_id: uuid.UUID | None = None
) -> int:
    """Expire up to `limit` lapsed holds (of one event, or of all) and give their seats back."""
    lapsed = await uow.reservations.lock_lapsed(now, limit=limit, event_id=event_id)
    if not lapsed:
        return 0
    back: dict[uuid.UUID, int] = {}
    for reservation in lapsed:
        _, change = reservation.move_to(ReservationStatus.EXPIRED)
        assert reservation.event_id is not None
        back[reservation.event_id] = back.get(reservation.event_id, 0) + change.held
    await uow.reservations.set_status(
        [r.reservation_id for r in lapsed], ReservationStatus.EXPIRED, now=now
    )
    # Event rows in one order, so two sweepers never wait on each other's rows crosswise.
    for lapsed_event in sorted(back):
        await uow.events.move_seats(lapsed_event, SeatChange(held=back[lapsed_event], sold=0))
    return len(lapsed)
