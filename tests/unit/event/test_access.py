"""The event service's access table names every RPC, as the contract agreed."""

from __future__ import annotations

from event_svc.bootstrap import ACCESS
from eventbooking.auth import Access
from eventbooking.event.v1 import event_pb2

SERVICE = event_pb2.DESCRIPTOR.services_by_name["EventService"]


def test_every_rpc_has_an_entry_and_no_entry_names_a_missing_one() -> None:
    assert set(ACCESS) == {f"/{SERVICE.full_name}/{m.name}" for m in SERVICE.methods}


def test_the_table_is_the_agreed_one() -> None:
    by_name = {path.rsplit("/", 1)[1]: access for path, access in ACCESS.items()}
    assert by_name == {
        "CreateEvent": Access.ADMIN,
        "GetEvent": Access.USER,
        "ListEvents": Access.USER,
        "ReserveSeats": Access.SERVICE,
        "ConfirmReservation": Access.SERVICE,
        "ReleaseReservation": Access.SERVICE,
    }
