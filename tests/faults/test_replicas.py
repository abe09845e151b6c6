"""Two booking_svc replicas on one database, one killed with SIGKILL while 200 bookings run.

The survivor claims the dead replica's sagas once their leases expire and
finishes them. Afterwards every booking is final, seats and money add up
per event and per account, and no saga's log shows the two replicas taking
turns: once the survivor wrote a saga's row, the dead one never did.
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import LocalSystem, wait_healthy
from eventbooking.localpg import free_port
from tests.client import Client, status_name

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

BOOKINGS = 200
EVENTS = 4
CAPACITY = 60
PRICE = 1000
ACCOUNTS = 20
LEASE_SECONDS = 2


@pytest.fixture
def replicas(live: LocalSystem) -> Iterator[tuple[Client, Client, subprocess.Popen[bytes]]]:
    """Replica A (the system's own booking_svc) and a second replica B, both with short leases."""
    lease = {"BOOKING_SVC_LEASE_SECONDS": str(LEASE_SECONDS)}
    live.kill("booking_svc")
    live.restart("booking_svc", env=lease)
    spec = live.service("booking_svc").spec
    port_b = free_port()
    env = live.service_env(spec, {**lease, "BOOKING_SVC_PORT": str(port_b)})
    with (live.home / "logs" / "booking_svc_b.log").open("ab") as log:
        b = subprocess.Popen([sys.executable, "-m", "booking_svc"], env=env, stdout=log, stderr=log)
    try:
        assert wait_healthy(port_b, timeout=60, alive=lambda: b.poll() is None)
        a_client = Client(live.ports, live.admin_token())
        # B knows the accounts A made and the other way round, as one user's app would.
        b_client = a_client.elsewhere({**live.ports, "booking_svc": port_b})
        yield a_client, b_client, b
        a_client.close()
        b_client.close()
    finally:
        b.send_signal(signal.SIGKILL)
        b.wait()
        if not live.service("booking_svc").alive():
            live.restart("booking_svc")


def test_a_replica_killed_mid_run_leaves_every_saga_final_and_the_books_balanced(
    live: LocalSystem, replicas: tuple[Client, Client, subprocess.Popen[bytes]]
) -> None:
    a, b, _ = replicas
    rng = random.Random(7)
    events = [b.event(capacity=CAPACITY, price_cents=PRICE) for _ in range(EVENTS)]
    accounts = [b.account(balance_cents=8 * PRICE) for _ in range(ACCOUNTS)]
    orders = [
        (f"key-{uuid.uuid4()}", rng.choice(accounts), rng.choice(events), rng.randint(1, 3))
        for _ in range(BOOKINGS)
    ]
    killed = False
    submitted = itertools.count()

    def place(order: tuple[str, str, str, int]) -> booking_pb2.Booking:
        nonlocal killed
        key, account, event, quantity = order
        n = next(submitted)
        if n == BOOKINGS // 2 and not killed:
            killed = True
            live.kill("booking_svc", signal.SIGKILL)
        first = a if n % 2 == 0 and not killed else b
        try:
            return first.book(account, event, quantity=quantity, key=key)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            # A died under this call: the same key on B returns the booking if A made it.
            return b.book(account, event, quantity=quantity, key=key)

    with ThreadPoolExecutor(max_workers=16) as pool:
        placed = list(pool.map(place, orders))
    assert killed
    assert not live.service("booking_svc").alive()

    done = {p.booking_id: b.wait_done(p.booking_id, timeout=90) for p in placed}

    assert len(done) == BOOKINGS, "a repeated key made a second booking"
    outcomes = Counter(status_name(d.status) for d in done.values())
    assert set(outcomes) <= {"CONFIRMED", "FAILED"}, outcomes
    assert outcomes["CONFIRMED"] > 0
    sold: dict[str, int] = defaultdict(int)
    paid: dict[str, int] = defaultdict(int)
    confirmed: dict[str, int] = defaultdict(int)
    for d in done.values():
        if d.status == booking_pb2.BOOKING_STATUS_CONFIRMED:
            sold[d.event_id] += d.quantity
            paid[d.account_id] += d.amount_cents
            confirmed[d.account_id] += 1
    for event in events:
        seats = b.seats(event)
        assert seats.sold_seats == sold[event] <= CAPACITY
        assert seats.held_seats == 0
        assert seats.available_seats == CAPACITY - sold[event]
    for account in accounts:
        assert b.net_charged(account) == paid[account]
        kinds = b.notification_kinds(account)
        assert kinds.count("BOOKING_CONFIRMED") == confirmed[account]

    taken_over = 0
    for booking_id in done:
        history = b.history(booking_id)
        owners = [row.owner for row in b.saga(history.saga_id).entries]
        runs = [owner for owner, _ in itertools.groupby(owners)]
        assert len(runs) == len(set(runs)), f"saga {history.saga_id} went back and forth: {runs}"
        taken_over += len(runs) > 1
    assert taken_over > 0, "the killed replica had no saga in flight; the test proved nothing"
