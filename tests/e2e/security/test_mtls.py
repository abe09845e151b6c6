"""The whole system over mutual TLS: every server demands a client certificate from its CA.

The test makes its own CA and a certificate per service with `cryptography`,
starts the four services with the TLS_* settings, and books end to end
through TLS channels. A plaintext client and a TLS client without a
certificate are both turned away before any RPC runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from eventbooking.local import SERVICES, LocalSystem, local_system
from eventbooking.localpg import free_port
from eventbooking.tls import TlsFiles
from tests.client import Client, status_name
from tests.e2e.security.certs import Authority

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def mutual(authority: Authority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    env: dict[str, dict[str, str]] = {}
    for spec in SERVICES:
        issued = authority.issue(spec.module)
        env[spec.module] = {
            f"{spec.env_prefix}TLS_CERT_FILE": str(issued.cert),
            f"{spec.env_prefix}TLS_KEY_FILE": str(issued.key),
            f"{spec.env_prefix}TLS_CLIENT_CA_FILE": str(authority.cert),
            f"{spec.env_prefix}TLS_CA_FILE": str(authority.cert),
        }
    operator = authority.issue("operator")
    system = LocalSystem(
        tmp_path_factory.mktemp("home"),
        {spec.module: free_port() for spec in SERVICES},
        pg_port=free_port(),
        echo=lambda _m: None,
        env=env,
        tls=TlsFiles(ca=authority.cert, cert=operator.cert, key=operator.key),
    )
    with local_system(system):
        yield system


def _credentials(authority: Authority, *, with_certificate: bool) -> grpc.ChannelCredentials:
    client = authority.issue("test-client")
    return grpc.ssl_channel_credentials(
        root_certificates=authority.cert.read_bytes(),
        private_key=client.key.read_bytes() if with_certificate else None,
        certificate_chain=client.cert.read_bytes() if with_certificate else None,
    )


def test_a_booking_runs_end_to_end_over_mutual_tls(
    mutual: LocalSystem, authority: Authority
) -> None:
    client = Client(
        mutual.ports,
        admin_token=mutual.admin_token(),
        credentials=_credentials(authority, with_certificate=True),
    )
    try:
        account = client.account(balance_cents=10_000)
        event = client.event(capacity=4, price_cents=1_000)

        done = client.wait_done(client.book(account, event, quantity=2).booking_id)

        assert status_name(done.status) == "CONFIRMED"
        assert client.net_charged(account) == 2_000
        assert client.seats(event).sold_seats == 2
        assert client.notification_kinds(account) == ["BOOKING_CONFIRMED"]
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["plaintext", "tls without a client certificate"])
def test_a_client_without_a_certificate_from_the_ca_is_turned_away(
    mutual: LocalSystem, authority: Authority, kind: str
) -> None:
    address = f"localhost:{mutual.ports['account_svc']}"
    if kind == "plaintext":
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, _credentials(authority, with_certificate=False))
    with channel:
        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda _m: b"",
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as refused:
            health(object(), timeout=3)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
