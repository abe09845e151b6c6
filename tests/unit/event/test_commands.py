"""Commands refuse bad input with a message naming the field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from event_svc.domain import commands
from eventbooking.errors import InvalidArgument

STARTS = datetime(2030, 6, 1, 20, 0, tzinfo=UTC)


def create(**overrides: Any) -> commands.CreateEvent:
    fields: dict[str, Any] = {
        "name": "Concert",
        "venue": "Hall",
        "starts_at": STARTS,
        "capacity": 100,
        "price_cents": 2500,
    }
    fields.update(overrides)
    return commands.CreateEvent.parse(**fields)


def reserve(**overrides: Any) -> commands.ReserveSeats:
    fields: dict[str, Any] = {
        "reservation_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "quantity": 2,
        "hold_seconds": 0,
    }
    fields.update(overrides)
    return commands.ReserveSeats.parse(**fields)


def test_create_event_keeps_good_fields_and_strips_text() -> None:
    cmd = create(name="  Concert  ", venue=" Hall ")
    assert cmd == commands.CreateEvent(
        name="Concert", venue="Hall", starts_at=STARTS, capacity=100, price_cents=2500
    )


def test_create_event_accepts_the_edges_of_every_range() -> None:
    assert create(capacity=1, price_cents=0).capacity == 1
    top = create(capacity=100_000, price_cents=10_000_000_000, name="x" * 200)
    assert (top.capacity, top.price_cents, len(top.name)) == (100_000, 10_000_000_000, 200)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "name is required"),
        ({"name": "   "}, "name is required"),
        ({"name": "x" * 201}, "name is 201 characters long; the limit is 200"),
        ({"name": "x" * 1_000_000}, "name is 1000000 characters long"),
        ({"name": "a\x00b"}, "name must not contain NUL"),
        ({"venue": ""}, "venue is required"),
        ({"venue": "v" * 201}, "venue is 201 characters long"),
        ({"starts_at": None}, "starts_at is required"),
        ({"capacity": 0}, "capacity must be between 1 and 100000, got 0"),
        ({"capacity": -5}, "capacity must be between 1 and 100000, got -5"),
        ({"capacity": 100_001}, "capacity must be between 1 and 100000, got 100001"),
        ({"price_cents": -1}, "price_cents must be between 0 and 10000000000, got -1"),
        ({"price_cents": 10_000_000_001}, "price_cents must be between 0 and 10000000000"),
    ],
)
def test_create_event_refuses_bad_fields(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        create(**overrides)


def test_reserve_seats_parses_ids_and_maps_zero_hold_to_the_default() -> None:
    reservation_id, event_id = uuid.uuid4(), uuid.uuid4()
    cmd = reserve(reservation_id=str(reservation_id), event_id=str(event_id))
    assert cmd == commands.ReserveSeats(
        reservation_id=reservation_id, event_id=event_id, quantity=2, hold_seconds=None
    )
    assert reserve(hold_seconds=1).hold_seconds == 1
    assert reserve(hold_seconds=3600).hold_seconds == 3600
    assert reserve(quantity=1000).quantity == 1000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reservation_id": ""}, "reservation_id is required"),
        ({"reservation_id": "not-a-uuid"}, "reservation_id must be a UUID, got 'not-a-uuid'"),
        ({"event_id": ""}, "event_id is required"),
        ({"event_id": "e" * 1000}, "event_id must be a UUID, got 'eeee"),
        ({"quantity": 0}, "quantity must be between 1 and 1000, got 0"),
        ({"quantity": -1}, "quantity must be between 1 and 1000, got -1"),
        ({"quantity": 1001}, "quantity must be between 1 and 1000, got 1001"),
        ({"quantity": 10**9}, "quantity must be between 1 and 1000, got 1000000000"),
        ({"hold_seconds": -1}, "hold_seconds must be between 1 and 3600, or 0 for the service"),
        ({"hold_seconds": 3601}, "hold_seconds must be between 1 and 3600"),
    ],
)
def test_reserve_seats_refuses_bad_fields(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        reserve(**overrides)


@pytest.mark.parametrize(
    "parse", [commands.ConfirmReservation.parse, commands.ReleaseReservation.parse]
)
def test_confirm_and_release_need_a_reservation_uuid(parse: Any) -> None:
    reservation_id = uuid.uuid4()
    assert parse(reservation_id=str(reservation_id)).reservation_id == reservation_id
    with pytest.raises(InvalidArgument, match="reservation_id is required"):
        parse(reservation_id="")
    with pytest.raises(InvalidArgument, match="reservation_id must be a UUID"):
        parse(reservation_id="12345")


def test_list_events_page_size_defaults_and_bounds() -> None:
    assert commands.ListEvents.parse(size=0, after=None).page_size == 50
    assert commands.ListEvents.parse(size=500, after=None).page_size == 500
    with pytest.raises(InvalidArgument, match="page_size must be between 1 and 500, got 501"):
        commands.ListEvents.parse(size=501, after=None)
    with pytest.raises(InvalidArgument, match="page_size must be between 1 and 500, got -1"):
        commands.ListEvents.parse(size=-1, after=None)
