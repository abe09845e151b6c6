"""`bookingctl saga` as an operator runs it against the running system.

bookingctl finds the admin token where `bookingctl up` wrote it: these tests
point EVENTBOOKING_HOME at the system's home unless they test another way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from eventbooking import sagactl
from eventbooking.booking.v1 import booking_pb2, booking_pb2_grpc
from eventbooking.local import SERVICES, LocalSystem, local_system
from eventbooking.localpg import free_port
from eventbooking.tls import TlsFiles
from tests.conftest import unique_email
from tests.e2e.conftest import Grpcurl, System, running
from tests.e2e.security.certs import Authority

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BOOKINGCTL = Path(sys.executable).parent / "bookingctl"
ACCOUNT = "eventbooking.account.v1.AccountService"
EVENT = "eventbooking.event.v1.EventService"
BOOKING = "eventbooking.booking.v1.BookingService"
BOOKING_STEPS = ("reserve_seats", "charge_account", "confirm_seats", "notify")
# Oldest first, so a shared system's earlier sagas come before ours; ask for all of them.
EVERY = ("--limit", "1000000")


@dataclass(frozen=True)
class Booked:
    booking_id: str
    saga_id: str


def bookingctl(
    *args: str, home: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run bookingctl with no BOOKINGCTL_* variable but `env`'s, and EVENTBOOKING_HOME=`home`."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BOOKINGCTL_") and k != "EVENTBOOKING_HOME"
    }
    if home is not None:
        clean["EVENTBOOKING_HOME"] = str(home)
    return subprocess.run(
        [str(BOOKINGCTL), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def saga_ok(system: System, *args: str) -> str:
    """Run `bookingctl saga ARGS` against the system; its stdout, once it exited 0."""
    result = bookingctl(
        "saga", *args, "--address", f"localhost:{system['booking_svc']}", home=system.home
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def saga_json(system: System, *args: str) -> Any:
    return json.loads(saga_ok(system, *args, "--json"))


@dataclass(frozen=True)
class Account:
    account_id: str
    token: str


def account_and_event(system: System, grpcurl: Grpcurl) -> tuple[Account, str]:
    """A fresh account with 50.00 and a fresh event at 15.00 a seat: the account, the event id."""
    acc, ev = system["account_svc"], system["event_svc"]
    created: Any = grpcurl.call(
        acc, f"{ACCOUNT}/CreateAccount", {"email": unique_email(), "display_name": "Ops"}
    )
    account = Account(created["account"]["account_id"], created["api_token"])
    grpcurl.call(
        acc,
        f"{ACCOUNT}/Deposit",
        {"account_id": account.account_id, "amount_cents": 5000},
        token=account.token,
    )
    event = grpcurl.call(
        ev,
        f"{EVENT}/CreateEvent",
        {
            "name": f"Saga night {uuid.uuid4().hex[:8]}",
            "venue": "Hall",
            "starts_at": "2027-03-01T20:00:00Z",
            "capacity": 10,
            "price_cents": 1500,
        },
        token=system.admin_token,
    )
    return account, str(event["event"]["event_id"])  # type: ignore[index]


def book(system: System, grpcurl: Grpcurl) -> Booked:
    """A confirmed booking of a fresh account for a fresh event, and its saga."""
    account, event_id = account_and_event(system, grpcurl)
    booking: Any = grpcurl.call(
        system["booking_svc"],
        f"{BOOKING}/CreateBooking",
        {
            "account_id": account.account_id,
            "event_id": event_id,
            "quantity": 2,
            "idempotency_key": str(uuid.uuid4()),
            "wait_for_outcome": True,
        },
        token=account.token,
    )
    assert booking["booking"]["status"] == "BOOKING_STATUS_CONFIRMED", booking
    booking_id = str(booking["booking"]["booking_id"])
    history = grpcurl.call(
        system["booking_svc"],
        f"{BOOKING}/GetBookingHistory",
        {"booking_id": booking_id},
        token=account.token,
    )
    return Booked(booking_id=booking_id, saga_id=str(history["saga_id"]))


def book_traced(system: System, grpcurl: Grpcurl, *, traceparent: str) -> Booked:
    """A confirmed booking whose CreateBooking call carried `traceparent`, as a traced client's does."""
    account, event_id = account_and_event(system, grpcurl)
    request = booking_pb2.CreateBookingRequest(
        account_id=account.account_id,
        event_id=event_id,
        quantity=1,
        idempotency_key=str(uuid.uuid4()),
        wait_for_outcome=True,
    )
    with grpc.insecure_channel(f"localhost:{system['booking_svc']}") as channel:
        stub = booking_pb2_grpc.BookingServiceStub(channel)
        authorization = ("authorization", f"Bearer {account.token}")
        booking = stub.CreateBooking(
            request, metadata=[("traceparent", traceparent), authorization], timeout=30
        ).booking
        history = stub.GetBookingHistory(
            booking_pb2.GetBookingHistoryRequest(booking_id=booking.booking_id),
            metadata=[authorization],
            timeout=30,
        )
    assert booking.status == booking_pb2.BOOKING_STATUS_CONFIRMED, booking
    return Booked(booking_id=booking.booking_id, saga_id=history.saga_id)


def wait_completed(system: System, saga_id: str) -> Any:
    """`saga show --json` once the saga is COMPLETED: a booking confirms before it notifies."""
    deadline = time.monotonic() + 30
    while True:
        shown = saga_json(system, "show", saga_id)
        if shown["saga"]["status"] == "COMPLETED" or time.monotonic() > deadline:
            return shown
        time.sleep(0.2)


@pytest.fixture(scope="module")
def booked(system: System, grpcurl: Grpcurl) -> Booked:
    made = book(system, grpcurl)
    assert wait_completed(system, made.saga_id)["saga"]["status"] == "COMPLETED"
    return made


def test_list_json_has_the_booking_saga_completed(system: System, booked: Booked) -> None:
    listed = saga_json(system, "list", "--kind", "booking", "--status", "completed", *EVERY)
    mine = {s["saga_id"]: s for s in listed["sagas"]}[booked.saga_id]
    assert (mine["booking_id"], mine["kind"], mine["status"], mine["current_step"]) == (
        booked.booking_id,
        "booking",
        "COMPLETED",
        "notify",
    )
    assert listed["more"] is False
    assert all(s["status"] == "COMPLETED" and s["kind"] == "booking" for s in listed["sagas"])


def test_list_table_shows_the_saga_with_its_age(system: System, booked: Booked) -> None:
    lines = saga_ok(system, "list", "--kind", "booking", *EVERY).splitlines()
    assert lines[0].split() == ["SAGA", "ID", "KIND", "STATUS", "STEP", "AGE", "OWNER", "NOTE"]
    row = next(line for line in lines if line.startswith(booked.saga_id)).split()
    assert row[1:4] == ["booking", "COMPLETED", "notify"]
    assert row[4].endswith("s")


def test_list_older_than_leaves_out_a_young_saga(system: System, booked: Booked) -> None:
    old = saga_json(system, "list", "--older-than", "1h", *EVERY)
    assert booked.saga_id not in {s["saga_id"] for s in old["sagas"]}
    recent = saga_json(system, "list", "--older-than", "0s", *EVERY)
    assert booked.saga_id in {s["saga_id"] for s in recent["sagas"]}


def test_list_limit_stops_early_and_says_more_match(
    system: System, grpcurl: Grpcurl, booked: Booked
) -> None:
    book(system, grpcurl)
    assert len(saga_json(system, "list", "--limit", "1")["sagas"]) == 1
    result = bookingctl(
        "saga",
        "list",
        "--limit",
        "1",
        "--address",
        f"localhost:{system['booking_svc']}",
        home=system.home,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "raise --limit" in result.stderr


def test_address_comes_from_the_environment(system: System, booked: Booked) -> None:
    result = bookingctl(
        "saga",
        "show",
        booked.saga_id,
        "--json",
        home=system.home,
        env={"BOOKINGCTL_BOOKING_ADDRESS": f"localhost:{system['booking_svc']}"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["saga"]["saga_id"] == booked.saga_id


def test_show_json_is_the_whole_log_in_order(system: System, booked: Booked) -> None:
    shown = saga_json(system, "show", booked.saga_id)
    saga = shown["saga"]
    assert (saga["saga_id"], saga["booking_id"], saga["kind"], saga["status"]) == (
        booked.saga_id,
        booked.booking_id,
        "booking",
        "COMPLETED",
    )
    rows = [(e["step"], e["phase"], e["event"], e["attempt"]) for e in shown["entries"]]
    assert rows == [
        (step, "ACTION", event, 1) for step in BOOKING_STEPS for event in ("STARTED", "SUCCEEDED")
    ]
    offsets = [e["offset_seconds"] for e in shown["entries"]]
    assert offsets[0] == 0.0
    assert offsets == sorted(offsets)
    assert [e["seq"] for e in shown["entries"]] == sorted(e["seq"] for e in shown["entries"])


def test_show_prints_a_header_and_a_timeline(system: System, booked: Booked) -> None:
    out = saga_ok(system, "show", booked.saga_id)
    head, _, body = out.partition("\n\n")
    fields = dict(line.split(None, 1) for line in head.splitlines())
    assert fields["saga"] == f"{booked.saga_id} (booking)"
    assert fields["booking"] == booked.booking_id
    assert fields["status"] == "COMPLETED"
    assert fields["step"] == "notify"
    assert {"owner", "trace", "note", "created"} <= set(fields)
    lines = body.splitlines()
    assert lines[0].split() == [
        "OFFSET",
        "STEP",
        "PHASE",
        "EVENT",
        "ATTEMPT",
        "CODE",
        "SPAN",
        "MESSAGE",
    ]
    timeline = [line.split()[:5] for line in lines[1:]]
    assert timeline[0][0] == "+0.000s"
    assert [cells[1:] for cells in timeline] == [
        [step, "ACTION", event, "1"] for step in BOOKING_STEPS for event in ("STARTED", "SUCCEEDED")
    ]


@pytest.fixture(scope="module")
def traced(system: System, grpcurl: Grpcurl) -> tuple[Booked, str]:
    """A completed booking whose request carried a W3C traceparent; and its trace id."""
    trace_id, parent_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    booked = book_traced(system, grpcurl, traceparent=f"00-{trace_id}-{parent_span}-01")
    assert wait_completed(system, booked.saga_id)["saga"]["status"] == "COMPLETED"
    return booked, trace_id


def head_fields(out: str) -> dict[str, str]:
    head, _, _ = out.partition("\n\n")
    return dict(line.split(None, 1) for line in head.splitlines())


def test_show_prints_the_trace_id_and_a_jaeger_link(
    system: System, traced: tuple[Booked, str]
) -> None:
    booked, trace_id = traced
    fields = head_fields(saga_ok(system, "show", booked.saga_id))
    assert fields["trace"] == trace_id
    assert fields["jaeger"] == f"{sagactl.DEFAULT_JAEGER_URL}/trace/{trace_id}"
    shown = saga_json(system, "show", booked.saga_id)
    assert shown["saga"]["trace_id"] == trace_id
    assert shown["jaeger_url"] == f"http://localhost:16686/trace/{trace_id}"


def test_the_jaeger_url_comes_from_the_option_or_the_environment(
    system: System, traced: tuple[Booked, str]
) -> None:
    booked, trace_id = traced
    out = saga_ok(system, "show", booked.saga_id, "--jaeger-url", "https://jaeger.example.org/")
    assert head_fields(out)["jaeger"] == f"https://jaeger.example.org/trace/{trace_id}"
    result = bookingctl(
        "saga",
        "show",
        booked.saga_id,
        "--json",
        "--address",
        f"localhost:{system['booking_svc']}",
        home=system.home,
        env={"BOOKINGCTL_JAEGER_URL": "http://tracing.internal:8080/jaeger"},
    )
    assert result.returncode == 0, result.stderr
    assert (
        json.loads(result.stdout)["jaeger_url"]
        == f"http://tracing.internal:8080/jaeger/trace/{trace_id}"
    )


def test_the_timeline_shows_the_short_span_id_of_each_row(
    system: System, traced: tuple[Booked, str]
) -> None:
    booked, trace_id = traced
    entries = saga_json(system, "show", booked.saga_id)["entries"]
    _, _, body = saga_ok(system, "show", booked.saga_id).partition("\n\n")
    header, *lines = body.splitlines()
    at = header.index("SPAN")
    spans = [line[at:].split()[0] for line in lines]
    # Every row is written in the saga's own trace, or in none when no tracer is set up;
    # a row without a span id shows "-".
    assert {e["trace_id"] for e in entries} <= {"", trace_id}
    assert spans == [e["span_id"][:8] or "-" for e in entries]
    assert len(spans) == 2 * len(BOOKING_STEPS)


@pytest.fixture(scope="module")
def untraced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own with tracing off (OTEL_SDK_DISABLED): its sagas record no trace."""
    ports = {spec.module: free_port() for spec in SERVICES}
    off = {spec.module: {"OTEL_SDK_DISABLED": "true"} for spec in SERVICES}
    home = tmp_path_factory.mktemp("untraced")
    with local_system(
        LocalSystem(home, ports, pg_port=free_port(), echo=lambda _m: None, env=off)
    ) as up:
        yield running(up)


def test_show_says_when_a_saga_has_no_trace(untraced: System, grpcurl: Grpcurl) -> None:
    made = book(untraced, grpcurl)
    shown = wait_completed(untraced, made.saga_id)
    assert shown["saga"]["trace_id"] == ""
    assert shown["jaeger_url"] is None
    out = saga_ok(untraced, "show", made.saga_id)
    fields = head_fields(out)
    assert fields["trace"].startswith("none: no trace context was recorded")
    assert "no Jaeger link" in fields["trace"]
    assert "jaeger" not in fields
    assert "/trace/" not in out


@pytest.mark.parametrize("command", ["retry", "compensate"])
def test_repairing_a_completed_saga_is_refused(
    system: System, booked: Booked, command: str
) -> None:
    result = bookingctl(
        "saga",
        command,
        booked.saga_id,
        "--address",
        f"localhost:{system['booking_svc']}",
        home=system.home,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"bookingctl saga {command}: FAILED_PRECONDITION: ")
    assert "only a STUCK saga can be repaired" in result.stderr
    assert wait_completed(system, booked.saga_id)["saga"]["status"] == "COMPLETED"


@pytest.mark.parametrize("command", ["show", "retry", "compensate"])
def test_an_unknown_saga_is_not_found(system: System, command: str) -> None:
    saga_id = str(uuid.uuid4())
    result = bookingctl(
        "saga",
        command,
        saga_id,
        "--address",
        f"localhost:{system['booking_svc']}",
        home=system.home,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"bookingctl saga {command}: NOT_FOUND: saga {saga_id} does not exist\n"
    )


def test_nothing_listening_is_unavailable_with_a_hint() -> None:
    result = bookingctl(
        "saga",
        "list",
        "--address",
        f"localhost:{free_port()}",
        "--timeout",
        "5",
        env={"BOOKINGCTL_ADMIN_TOKEN": "any-token-will-do-for-no-one"},
    )
    assert result.returncode == 1
    first, hint = result.stderr.splitlines()
    assert first.startswith("bookingctl saga list: UNAVAILABLE: ")
    assert "bookingctl up" in hint
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["list", "--older-than", "bogus"], "Invalid value for '--older-than'"),
        (["list", "--older-than", "5"], "Invalid value for '--older-than'"),
        (["list", "--status", "lost"], "Invalid value for '--status'"),
        (["list", "--limit", "0"], "Invalid value for '--limit'"),
        (["show", "not-a-uuid"], "Invalid value for 'SAGA_ID'"),
        (["retry"], "Missing argument 'SAGA_ID'"),
        (["list", "--address", " "], "Invalid value for '--address'"),
        (["list", "--timeout", "0"], "Invalid value for '--timeout'"),
        (
            ["show", "6f1c2d7e-0000-4000-8000-000000000000", "--jaeger-url", "jaeger:16686"],
            "Invalid value for '--jaeger-url'",
        ),
        (["list", "--tls-ca-file", "/no/such/ca.pem"], "Invalid value for '--tls-ca-file'"),
        (["list", "--tls-cert-file", __file__], "--tls-cert-file and --tls-key-file go together"),
    ],
)
def test_bad_input_is_a_usage_error(args: list[str], complaint: str) -> None:
    result = bookingctl("saga", *args)
    assert result.returncode == 2
    assert complaint in result.stderr


@pytest.mark.parametrize("command", [[], ["list"], ["show"], ["retry"], ["compensate"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = bookingctl("saga", *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: bookingctl saga {' '.join(command)}".rstrip())


def test_show_logs_the_amount_that_was_charged(system: System, booked: Booked) -> None:
    entries = saga_json(system, "show", booked.saga_id)["entries"]
    by_row = {(e["step"], e["event"]): e for e in entries}
    priced = by_row["reserve_seats", "SUCCEEDED"]["response"]["amount_cents"]
    assert priced == 3000
    assert by_row["charge_account", "STARTED"]["request"]["amount_cents"] == priced


def test_a_row_written_in_another_trace_shows_that_trace_too() -> None:
    saga_trace, other_trace = uuid.uuid4().hex, uuid.uuid4().hex
    row = {
        "offset_seconds": 0.0,
        "step": "charge_account",
        "phase": "ACTION",
        "event": "STARTED",
        "attempt": 1,
        "code": "",
        "message": "",
    }
    entries: list[Any] = [
        {**row, "trace_id": saga_trace, "span_id": "00f067aa0ba902b7"},
        {**row, "trace_id": other_trace, "span_id": "b7ad6b7169203331"},
        {**row, "trace_id": "", "span_id": ""},
    ]
    lines = sagactl.timeline(entries, trace_id=saga_trace)
    at = lines[0].index("SPAN")
    assert [line[at:].split()[0] for line in lines[1:]] == [
        "00f067aa",
        f"{other_trace[:8]}/b7ad6b71",
        "-",
    ]


def assert_no_secret(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout + result.stderr, "bookingctl printed a token"


@pytest.mark.parametrize("way", ["option", "file variable", "token variable"])
def test_the_admin_token_comes_from_an_option_or_the_environment(
    system: System, booked: Booked, tmp_path: Path, way: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(system.admin_token + "\n")
    ways: dict[str, tuple[list[str], dict[str, str]]] = {
        "option": (["--admin-token-file", str(token_file)], {}),
        "file variable": ([], {"BOOKINGCTL_ADMIN_TOKEN_FILE": str(token_file)}),
        "token variable": ([], {"BOOKINGCTL_ADMIN_TOKEN": system.admin_token}),
    }
    args, env = ways[way]
    # A home without secrets: the token must come from where the test put it.
    result = bookingctl(
        "saga",
        "show",
        booked.saga_id,
        "--json",
        *args,
        "--address",
        f"localhost:{system['booking_svc']}",
        home=tmp_path / "empty-home",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["saga"]["saga_id"] == booked.saga_id
    assert_no_secret(result, system.admin_token)


def test_the_option_wins_over_the_environment(
    system: System, booked: Booked, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(system.admin_token)
    result = bookingctl(
        "saga",
        "show",
        booked.saga_id,
        "--admin-token-file",
        str(token_file),
        "--address",
        f"localhost:{system['booking_svc']}",
        env={"BOOKINGCTL_ADMIN_TOKEN": "a-wrong-token-that-must-not-be-used"},
    )
    assert result.returncode == 0, result.stderr


def test_without_an_admin_token_bookingctl_says_how_to_give_one(
    system: System, tmp_path: Path
) -> None:
    home = tmp_path / "fresh-home"
    result = bookingctl(
        "saga", "list", "--address", f"localhost:{system['booking_svc']}", home=home
    )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"bookingctl saga list: no admin token: {home}/secrets/admin_token does not exist;"
    )
    for way in ("bookingctl up", "--admin-token-file", "BOOKINGCTL_ADMIN_TOKEN_FILE"):
        assert way in line

    missing = tmp_path / "missing"
    result = bookingctl(
        "saga", "retry", str(uuid.uuid4()), "--admin-token-file", str(missing), home=home
    )
    assert result.returncode == 1
    assert f"no admin token: {missing} (from --admin-token-file) does not exist" in result.stderr

    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = bookingctl("saga", "list", env={"BOOKINGCTL_ADMIN_TOKEN_FILE": str(empty)})
    assert result.returncode == 1
    assert f"the admin token file {empty} (from BOOKINGCTL_ADMIN_TOKEN_FILE) is empty" in (
        result.stderr
    )


def test_a_wrong_token_is_unauthenticated_and_an_account_token_is_not_an_admin(
    system: System, grpcurl: Grpcurl
) -> None:
    account, _ = account_and_event(system, grpcurl)
    wrong = "not-the-admin-token-" + uuid.uuid4().hex
    for token, code in ((wrong, "UNAUTHENTICATED"), (account.token, "PERMISSION_DENIED")):
        result = bookingctl(
            "saga",
            "list",
            "--address",
            f"localhost:{system['booking_svc']}",
            env={"BOOKINGCTL_ADMIN_TOKEN": token},
        )
        assert result.returncode == 1
        first, hint = result.stderr.splitlines()
        assert first.startswith(f"bookingctl saga list: {code}: ")
        assert hint.startswith("hint: booking_svc at ")
        assert "BOOKINGCTL_ADMIN_TOKEN" in hint
        assert_no_secret(result, token, system.admin_token)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def mutual(authority: Authority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system whose booking_svc serves mutual TLS: it wants a client certificate of the CA."""
    served = authority.issue("booking_svc")
    tls = {
        "booking_svc": {
            "BOOKING_SVC_TLS_CERT_FILE": str(served.cert),
            "BOOKING_SVC_TLS_KEY_FILE": str(served.key),
            "BOOKING_SVC_TLS_CLIENT_CA_FILE": str(authority.cert),
        }
    }
    checker = authority.issue("health-checker")
    system = LocalSystem(
        tmp_path_factory.mktemp("mutual"),
        {spec.module: free_port() for spec in SERVICES},
        pg_port=free_port(),
        echo=lambda _m: None,
        env=tls,
        tls=TlsFiles(ca=authority.cert, cert=checker.cert, key=checker.key),
    )
    with local_system(system) as up:
        yield running(up)


def test_bookingctl_verifies_tls_and_presents_its_client_certificate(
    mutual: System, authority: Authority
) -> None:
    operator = authority.issue("operator")
    address = f"localhost:{mutual['booking_svc']}"
    result = bookingctl(
        "saga",
        "list",
        "--json",
        "--address",
        address,
        "--tls-ca-file",
        str(authority.cert),
        "--tls-cert-file",
        str(operator.cert),
        "--tls-key-file",
        str(operator.key),
        home=mutual.home,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sagas": [], "more": False}

    # The same from the environment, without the client certificate: the server refuses.
    refused = bookingctl(
        "saga",
        "list",
        "--address",
        address,
        "--timeout",
        "5",
        home=mutual.home,
        env={"BOOKINGCTL_TLS_CA_FILE": str(authority.cert)},
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("bookingctl saga list: UNAVAILABLE: ")
