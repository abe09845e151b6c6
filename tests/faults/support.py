"""What the fault scenarios share: waiting on a condition, services restarted with other
settings, fault rules changed at runtime, and the invariant checker over one test's accounts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc

from eventbooking import checker
from eventbooking.booking.v1 import booking_pb2
from eventbooking.clock import utcnow
from eventbooking.faults.v1 import faults_pb2, faults_pb2_grpc
from eventbooking.local import LocalSystem
from tests.client import Client, bearer

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """What `probe` returns once it is truthy; a probe answered UNAVAILABLE counts as not yet.

    AssertionError naming `what` (and the last UNAVAILABLE, if any) when `timeout` passes.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            found = probe()
            if found:
                return found
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            last = f"; last answer UNAVAILABLE: {err.details()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s{last}")
        time.sleep(0.05)


def action_rows(
    client: Client, booking_id: str, step: str, event: booking_pb2.StepEvent.ValueType
) -> int:
    """How many `event` rows (STARTED, RETRYING, ...) the action track of `step` has so far."""
    return sum(
        1
        for e in client.history(booking_id).entries
        if e.step == step and e.phase == booking_pb2.STEP_PHASE_ACTION and e.event == event
    )


@contextmanager
def restarted_with(live: LocalSystem, env: dict[str, dict[str, str]]) -> Iterator[None]:
    """Services killed and restarted with extra settings, and again without them afterwards."""
    try:
        for module, extra in env.items():
            live.kill(module)
            live.restart(module, env=extra)
        yield
    finally:
        for module in env:
            live.kill(module)
            live.restart(module)


def _fault_control(
    live: LocalSystem, module: str
) -> tuple[grpc.Channel, faults_pb2_grpc.FaultServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{live.ports[module]}")
    return channel, faults_pb2_grpc.FaultServiceStub(channel)


def delay(method: str, seconds: float, *, count: int | None = None) -> faults_pb2.FaultRule:
    """A rule that holds every (or the next `count`) call of `method` for `seconds`."""
    rule = faults_pb2.FaultRule(service="*", method=method, kind=faults_pb2.FAULT_KIND_DELAY)
    rule.delay.FromNanoseconds(round(seconds * 1e9))
    if count is not None:
        rule.count = count
    return rule


def error(method: str, code: str, *, count: int) -> faults_pb2.FaultRule:
    """A rule that answers the next `count` calls of `method` with `code`, running nothing."""
    return faults_pb2.FaultRule(
        service="*", method=method, kind=faults_pb2.FAULT_KIND_ERROR, code=code, count=count
    )


def set_faults(live: LocalSystem, module: str, *rules: faults_pb2.FaultRule) -> None:
    """Replace `module`'s fault rules at runtime; it must run with <PREFIX>FAULT_CONTROL=true."""
    channel, faults = _fault_control(live, module)
    with channel:
        faults.SetFaults(
            faults_pb2.SetFaultsRequest(rules=rules, seed=1),
            metadata=bearer(live.admin_token()),
            timeout=10,
        )


def fired(live: LocalSystem, module: str) -> list[int]:
    """How many calls each of `module`'s fault rules fired on, in rule order."""
    channel, faults = _fault_control(live, module)
    with channel:
        reply = faults.ListFaults(
            faults_pb2.ListFaultsRequest(), metadata=bearer(live.admin_token()), timeout=10
        )
    return [status.fired for status in reply.rules]


def clear_faults(live: LocalSystem, module: str) -> None:
    channel, faults = _fault_control(live, module)
    with channel:
        faults.ClearFaults(
            faults_pb2.ClearFaultsRequest(), metadata=bearer(live.admin_token()), timeout=10
        )


def check(live: LocalSystem, *accounts: str) -> checker.Report:
    """The invariant checker on the live system, scoped to `accounts` and their events."""
    reader = checker.Reader(
        checker.Addresses.on_localhost(live.ports),
        token=live.admin_token(),
        timeout=10,
    )
    try:
        snapshot = checker.read_snapshot(reader, now=utcnow)
    finally:
        reader.close()
    return checker.check(checker.restrict(snapshot, accounts=accounts))


def assert_invariants_hold(live: LocalSystem, *accounts: str) -> checker.Report:
    """Run the checker over `accounts`; on a violation print the report and fail with it."""
    report = check(live, *accounts)
    if not report.holds:
        text = "\n".join(checker.report_lines(report))
        print(text)
        raise AssertionError(f"the invariants do not hold:\n{text}")
    # The scope really contains the test's accounts, so a pass is not a pass over nothing.
    examined = {r.number: r.examined for r in report.results}
    assert examined[4]["accounts"] == len(set(accounts)), examined[4]
    return report
