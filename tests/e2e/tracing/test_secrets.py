"""No token or secret used in a run shows up in a service's log or in an exported span.

The run uses every kind of credential the way users and services do (an
account's token, the admin token, the service credential between services)
and makes refused calls with wrong and misplaced tokens;
then every log line and every span attribute, event name and status
message is searched for each secret.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from eventbooking.account.v1 import account_pb2
from eventbooking.local import LocalSystem
from eventbooking.otlp_sink import Receiver
from tests.client import Client, status_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_no_secret_reaches_a_log_line_or_a_span(
    live: LocalSystem, receiver: Receiver, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    other = client.account(balance_cents=0)
    event = client.event(capacity=5, price_cents=900)
    done = client.wait_done(client.book(account, event).booking_id)
    assert status_name(done.status) == "CONFIRMED"
    service_credential = (live.home / "secrets" / "service_credential").read_text().strip()
    secrets = {
        "account token": client.token(account),
        "other account token": client.token(other),
        "admin token": live.admin_token(),
        "service credential": service_credential,
    }
    wrong = secrets["account token"][::-1]
    refused = [
        (secrets["other account token"], account_pb2.GetAccountRequest(account_id=account)),
        (wrong, account_pb2.GetAccountRequest(account_id=account)),
        (secrets["account token"], account_pb2.AuthenticateTokenRequest(token=wrong)),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{live.ports['account_svc']}") as channel:
        for token, request in refused:
            method = (
                "GetAccount"
                if isinstance(request, account_pb2.GetAccountRequest)
                else ("AuthenticateToken")
            )
            call = channel.unary_unary(
                f"/eventbooking.account.v1.AccountService/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.RpcError) as failed:
                call(request, metadata=[("authorization", f"Bearer {token}")], timeout=5)
            assert failed.value.code() in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            assert token not in (failed.value.details() or "")
    secrets["wrong token"] = wrong
    receiver.wait_for(
        lambda spans: (
            [s for s in spans if s.attributes.get("booking.id") == done.booking_id] or None
        ),
        what="the booking's spans",
    )

    logs = {path.name: path.read_text() for path in (live.home / "logs").glob("*.log")}
    assert logs, "the services wrote no logs to search"
    spans = receiver.spans()
    assert spans, "no spans arrived to search"
    for name, secret in secrets.items():
        for log_name, text in logs.items():
            assert secret not in text, f"the {name} is in {log_name}"
        for span in spans:
            assert secret not in repr(dataclasses.asdict(span)), (
                f"the {name} is in {span.describe()}"
            )
