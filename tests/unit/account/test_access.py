"""The account service's access table names every RPC, as the contract agreed."""

from __future__ import annotations

from account_svc.bootstrap import ACCESS
from eventbooking.account.v1 import account_pb2
from eventbooking.auth import Access

SERVICE = account_pb2.DESCRIPTOR.services_by_name["AccountService"]


def test_every_rpc_has_an_entry_and_no_entry_names_a_missing_one() -> None:
    assert set(ACCESS) == {f"/{SERVICE.full_name}/{m.name}" for m in SERVICE.methods}


def test_the_table_is_the_agreed_one() -> None:
    by_name = {path.rsplit("/", 1)[1]: access for path, access in ACCESS.items()}
    assert by_name == {
        "CreateAccount": Access.PUBLIC,
        "GetAccount": Access.USER,
        "Deposit": Access.USER,
        "ListTransactions": Access.USER,
        "RotateToken": Access.USER,
        "Charge": Access.SERVICE,
        "Refund": Access.SERVICE,
        "AuthenticateToken": Access.SERVICE,
        "ListAccounts": Access.ADMIN,
    }
