"""The invariant checker behind `bookingctl check`: the seven invariants of DESIGN.md
("Fault injection") verified from the outside.

It reads only the services' public gRPC APIs with the admin token (`read_snapshot`,
a thin layer) into plain data (`Snapshot`), and judges that data with pure functions
(`check`), so the rules are tested on hand-made broken data without any server.

The reads are not one atomic snapshot: run it on a quiet system (after faults
stop and sagas finish) for exact answers. On a live system the in-flight rules
below keep it from crying wolf, and `saga_grace_seconds` says how long a saga
or a booking may stay in flight before that counts as a violation.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.booking.v1 import booking_pb2, booking_pb2_grpc
from eventbooking.event.v1 import event_pb2, event_pb2_grpc
from eventbooking.notification.v1 import notification_pb2, notification_pb2_grpc
from eventbooking.tls import channel as tls_channel

# The largest page every listing serves.
MAX_PAGE_SIZE = 500
DEFAULT_SAGA_GRACE_SECONDS = 30.0

CONFIRMED = "CONFIRMED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
PENDING = "PENDING"
CANCELLING = "CANCELLING"
# Bookings a saga may still move: their seats and money may be half-way.
IN_FLIGHT = frozenset({PENDING, CANCELLING})
LIVE_SAGA = frozenset({"RUNNING", "COMPENSATING"})
BOOKING_CONFIRMED = "BOOKING_CONFIRMED"
NOTIFICATION_MEMORY_NOTE = (
    "notification_svc keeps its history in memory only (bounded, lost when it restarts):"
    " a notification sent before its last restart cannot be seen and shows as missing"
)


class Kind(enum.Enum):
    DEPOSIT = "DEPOSIT"
    CHARGE = "CHARGE"
    REFUND = "REFUND"


@dataclass(frozen=True)
class Account:
    account_id: str
    balance_cents: int


@dataclass(frozen=True)
class Txn:
    transaction_id: str
    account_id: str
    kind: Kind
    amount_cents: int
    idempotency_key: str
    # For a charge the booking id; for a refund the reason.
    reference: str


@dataclass(frozen=True)
class Event:
    event_id: str
    capacity: int
    available: int
    held: int
    sold: int


@dataclass(frozen=True)
class Booking:
    booking_id: str
    account_id: str
    event_id: str
    quantity: int
    amount_cents: int
    # PENDING, CONFIRMED, FAILED, CANCELLING or CANCELLED.
    status: str
    idempotency_key: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Saga:
    saga_id: str
    kind: str
    booking_id: str
    # RUNNING, COMPENSATING, COMPLETED, COMPENSATED or STUCK.
    status: str
    current_step: str
    note: str
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Notification:
    notification_id: str
    account_id: str
    booking_id: str
    kind: str
    created_at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    """What the services answered. `notifications_truncated` names the accounts (or "" for
    the all-accounts listing) whose listing came back full, so older ones may be unseen."""

    taken_at: datetime
    accounts: Sequence[Account]
    transactions: Sequence[Txn]
    events: Sequence[Event]
    bookings: Sequence[Booking]
    sagas: Sequence[Saga]
    notifications: Sequence[Notification]
    notifications_truncated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Violation:
    message: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    number: int
    title: str
    examined: Mapping[str, int]
    violations: Sequence[Violation]
    notes: Sequence[str] = ()

    @property
    def holds(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class Report:
    results: Sequence[Result]
    taken_at: datetime

    @property
    def holds(self) -> bool:
        return all(r.holds for r in self.results)

    @property
    def violation_count(self) -> int:
        return sum(len(r.violations) for r in self.results)


K = TypeVar("K")
T = TypeVar("T")


def _group(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    grouped: dict[K, list[T]] = defaultdict(list)
    for item in items:
        grouped[key(item)].append(item)
    return grouped


@dataclass(frozen=True)
class Money:
    """The ledger rows that concern one booking: charges referencing it, and their refunds."""

    charges: list[Txn] = field(default_factory=list)
    refunds: list[Txn] = field(default_factory=list)

    @property
    def net_cents(self) -> int:
        return sum(t.amount_cents for t in self.charges) - sum(t.amount_cents for t in self.refunds)


def money_by_booking(transactions: Iterable[Txn]) -> dict[str, Money]:
    """Charges by the booking they reference; a refund belongs to the charge with its key
    (a refund's reference is its reason, not the booking)."""
    txns = list(transactions)
    by_booking: dict[str, Money] = defaultdict(Money)
    booking_of_key: dict[str, str] = {}
    for t in txns:
        if t.kind is Kind.CHARGE:
            by_booking[t.reference].charges.append(t)
            booking_of_key[t.idempotency_key] = t.reference
    for t in txns:
        if t.kind is Kind.REFUND and t.idempotency_key in booking_of_key:
            by_booking[booking_of_key[t.idempotency_key]].refunds.append(t)
    return by_booking


def _txn_ids(money: Money) -> tuple[str, ...]:
    return tuple(t.transaction_id for t in (*money.charges, *money.refunds))


def check_seats(snapshot: Snapshot) -> Result:
    """1. Per event: available + held + sold = capacity, none negative, sold <= capacity.

    Seats are matched to bookings: CONFIRMED bookings own sold seats; a PENDING booking
    may own held seats or, once past its confirm step, sold ones; a CANCELLING one may
    still own either until the release. So sold lies between the CONFIRMED quantity and
    that plus the in-flight quantity, and held is at most the in-flight quantity. With
    nothing in flight on an event that makes sold exactly the CONFIRMED quantity and held 0.
    """
    by_event = _group(snapshot.bookings, lambda b: b.event_id)
    violations: list[Violation] = []
    for e in snapshot.events:
        ids = (e.event_id,)
        counts = f"available {e.available} + held {e.held} + sold {e.sold}"
        if e.available + e.held + e.sold != e.capacity:
            violations.append(
                Violation(f"event {e.event_id}: {counts} != capacity {e.capacity}", ids)
            )
        if min(e.available, e.held, e.sold) < 0:
            violations.append(Violation(f"event {e.event_id}: a negative count ({counts})", ids))
        if e.sold > e.capacity:
            violations.append(
                Violation(f"event {e.event_id}: oversold, {e.sold} sold of {e.capacity}", ids)
            )
        bookings = by_event.get(e.event_id, [])
        confirmed = [b for b in bookings if b.status == CONFIRMED]
        flying = [b for b in bookings if b.status in IN_FLIGHT]
        sold_low = sum(b.quantity for b in confirmed)
        in_flight = sum(b.quantity for b in flying)
        if e.sold < sold_low:
            violations.append(
                Violation(
                    f"event {e.event_id}: {e.sold} seats sold but CONFIRMED bookings own"
                    f" {sold_low}",
                    (e.event_id, *(b.booking_id for b in confirmed)),
                )
            )
        if e.sold > sold_low + in_flight:
            violations.append(
                Violation(
                    f"event {e.event_id}: {e.sold} seats sold but CONFIRMED bookings own"
                    f" {sold_low} and in-flight ones at most {in_flight} more",
                    (e.event_id, *(b.booking_id for b in (*confirmed, *flying))),
                )
            )
        if e.held > in_flight:
            violations.append(
                Violation(
                    f"event {e.event_id}: {e.held} seats held but in-flight bookings account"
                    f" for at most {in_flight}",
                    (e.event_id, *(b.booking_id for b in flying)),
                )
            )
    known = {e.event_id for e in snapshot.events}
    for b in snapshot.bookings:
        if b.event_id not in known and b.status in (CONFIRMED, *IN_FLIGHT):
            violations.append(
                Violation(
                    f"booking {b.booking_id} ({b.status}) names event {b.event_id}, which"
                    " ListEvents does not list",
                    (b.booking_id, b.event_id),
                )
            )
    return Result(
        1,
        "no event sells more than its capacity; held + sold + available = capacity",
        {"events": len(snapshot.events), "bookings": len(snapshot.bookings)},
        violations,
    )


def _ledger_accounts(snapshot: Snapshot) -> set[str]:
    return {a.account_id for a in snapshot.accounts}


def check_confirmed_charged_once(snapshot: Snapshot, money: Mapping[str, Money]) -> Result:
    """2. Each CONFIRMED booking has exactly one CHARGE referencing it, for its amount, and
    no refund of it (its sold seats are checked by invariant 1). Any booking charged more
    than once is reported here too, whatever its status."""
    ledgers = _ledger_accounts(snapshot)
    examined = [b for b in snapshot.bookings if b.account_id in ledgers]
    violations: list[Violation] = []
    confirmed = 0
    for b in examined:
        m = money.get(b.booking_id, Money())
        if b.status == CONFIRMED:
            confirmed += 1
            if not m.charges:
                violations.append(
                    Violation(
                        f"CONFIRMED booking {b.booking_id} was never charged", (b.booking_id,)
                    )
                )
            elif len(m.charges) == 1 and m.charges[0].amount_cents != b.amount_cents:
                violations.append(
                    Violation(
                        f"CONFIRMED booking {b.booking_id} costs {b.amount_cents} cents but was"
                        f" charged {m.charges[0].amount_cents}",
                        (b.booking_id, *_txn_ids(m)),
                    )
                )
            if m.refunds:
                violations.append(
                    Violation(
                        f"CONFIRMED booking {b.booking_id} was refunded"
                        f" {sum(t.amount_cents for t in m.refunds)} cents",
                        (b.booking_id, *_txn_ids(m)),
                    )
                )
        if len(m.charges) > 1:
            violations.append(
                Violation(
                    f"{b.status} booking {b.booking_id} was charged {len(m.charges)} times"
                    f" ({', '.join(str(t.amount_cents) for t in m.charges)} cents)",
                    (b.booking_id, *_txn_ids(m)),
                )
            )
    return Result(
        2,
        "a CONFIRMED booking was charged exactly once and owns confirmed seats",
        {"confirmed bookings": confirmed, "bookings": len(examined)},
        violations,
    )


def check_failed_not_charged(snapshot: Snapshot, money: Mapping[str, Money]) -> Result:
    """3. Each FAILED or CANCELLED booking has zero net charge: the charges referencing it
    minus their refunds (its seats are checked by invariant 1)."""
    ledgers = _ledger_accounts(snapshot)
    ended = [
        b for b in snapshot.bookings if b.status in (FAILED, CANCELLED) and b.account_id in ledgers
    ]
    violations: list[Violation] = []
    for b in ended:
        m = money.get(b.booking_id, Money())
        if m.net_cents != 0:
            violations.append(
                Violation(
                    f"{b.status} booking {b.booking_id} has a net charge of {m.net_cents} cents"
                    f" ({len(m.charges)} charge(s), {len(m.refunds)} refund(s))",
                    (b.booking_id, *_txn_ids(m)),
                )
            )
    known = {b.booking_id for b in snapshot.bookings}
    orphans = [
        t for t in snapshot.transactions if t.kind is Kind.CHARGE and t.reference not in known
    ]
    notes = (
        [f"{len(orphans)} charge(s) reference no booking booking_svc lists (made outside sagas)"]
        if orphans
        else []
    )
    return Result(
        3,
        "a FAILED or CANCELLED booking has zero net charge and holds no seats",
        {"failed or cancelled bookings": len(ended)},
        violations,
        notes,
    )


def check_money(snapshot: Snapshot) -> Result:
    """4. Per account: balance = deposits - charges + refunds, and balance >= 0."""
    ledgers = _group(snapshot.transactions, lambda t: t.account_id)
    violations: list[Violation] = []
    for a in snapshot.accounts:
        rows = ledgers.get(a.account_id, [])
        sums = {k: sum(t.amount_cents for t in rows if t.kind is k) for k in Kind}
        expected = sums[Kind.DEPOSIT] - sums[Kind.CHARGE] + sums[Kind.REFUND]
        if a.balance_cents != expected:
            violations.append(
                Violation(
                    f"account {a.account_id}: balance {a.balance_cents} cents, but deposits"
                    f" {sums[Kind.DEPOSIT]} - charges {sums[Kind.CHARGE]} + refunds"
                    f" {sums[Kind.REFUND]} = {expected}",
                    (a.account_id,),
                )
            )
        if a.balance_cents < 0:
            violations.append(
                Violation(
                    f"account {a.account_id}: negative balance {a.balance_cents}", (a.account_id,)
                )
            )
    return Result(
        4,
        "money is conserved: balances plus net charges equal deposits",
        {"accounts": len(snapshot.accounts), "transactions": len(snapshot.transactions)},
        violations,
    )


def _age(at: datetime | None, now: datetime) -> float:
    return (now - at).total_seconds() if at else 0.0


def format_age(seconds: float) -> str:
    """A short human age: 12s, 3m12s, 2h05m, 4d03h."""
    days, rest = divmod(max(0, int(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def check_sagas(snapshot: Snapshot, *, grace_seconds: float) -> Result:
    """5. Every saga reaches a final state: none STUCK, none RUNNING or COMPENSATING for
    longer than the grace, and no booking PENDING or CANCELLING for longer than it."""
    now = snapshot.taken_at
    violations: list[Violation] = []
    young = 0
    for s in snapshot.sagas:
        age = _age(s.created_at, now)
        where = f"at step {s.current_step or '-'}, age {format_age(age)}"
        if s.status == "STUCK":
            note = f": {s.note}" if s.note else ""
            violations.append(
                Violation(
                    f"{s.kind} saga {s.saga_id} of booking {s.booking_id} is STUCK {where}{note}",
                    (s.saga_id, s.booking_id),
                )
            )
        elif s.status in LIVE_SAGA:
            if age > grace_seconds:
                violations.append(
                    Violation(
                        f"{s.kind} saga {s.saga_id} of booking {s.booking_id} is still"
                        f" {s.status} {where}",
                        (s.saga_id, s.booking_id),
                    )
                )
            else:
                young += 1
    for b in snapshot.bookings:
        age = _age(b.updated_at or b.created_at, now)
        if b.status in IN_FLIGHT and age > grace_seconds:
            violations.append(
                Violation(
                    f"booking {b.booking_id} is still {b.status}, unchanged for {format_age(age)}",
                    (b.booking_id,),
                )
            )
    notes = (
        [f"{young} saga(s) in flight for less than the {grace_seconds:g}s grace"] if young else []
    )
    return Result(
        5,
        "after faults stop, every saga reaches a final state within a bounded time",
        {"sagas": len(snapshot.sagas), "bookings": len(snapshot.bookings)},
        violations,
        notes,
    )


def check_notified(snapshot: Snapshot) -> Result:
    """6. Each CONFIRMED booking has at least one BOOKING_CONFIRMED notification for it.

    Where a listing came back full the history may reach further back than it showed:
    a booking confirmed before the oldest notification seen there cannot be judged.
    """
    confirmed_by = {n.booking_id for n in snapshot.notifications if n.kind == BOOKING_CONFIRMED}
    # Per account, the oldest notification any listing showed.
    oldest: dict[str, datetime] = {}
    for n in snapshot.notifications:
        if n.created_at and (n.account_id not in oldest or n.created_at < oldest[n.account_id]):
            oldest[n.account_id] = n.created_at
    violations: list[Violation] = []
    unseen: list[str] = []
    confirmed = [b for b in snapshot.bookings if b.status == CONFIRMED]
    for b in confirmed:
        if b.booking_id in confirmed_by:
            continue
        horizon = oldest.get(b.account_id)
        at = b.updated_at or b.created_at
        truncated = b.account_id in snapshot.notifications_truncated
        if truncated and (horizon is None or (at is not None and at < horizon)):
            unseen.append(b.booking_id)
            continue
        violations.append(
            Violation(
                f"CONFIRMED booking {b.booking_id} of account {b.account_id} has no"
                " BOOKING_CONFIRMED notification",
                (b.booking_id, b.account_id),
            )
        )
    notes = [NOTIFICATION_MEMORY_NOTE]
    if unseen:
        notes.append(
            f"{len(unseen)} CONFIRMED booking(s) are older than the notification history"
            f" notification_svc still lists, so they were not judged: {', '.join(unseen)}"
        )
    return Result(
        6,
        "every CONFIRMED booking produced at least one notification",
        {"confirmed bookings": len(confirmed), "notifications": len(snapshot.notifications)},
        violations,
        notes,
    )


def check_idempotent(snapshot: Snapshot) -> Result:
    """7. No two bookings share (account_id, idempotency_key)."""
    keyed = [b for b in snapshot.bookings if b.idempotency_key]
    violations = [
        Violation(
            f"account {account} has {len(same)} bookings with idempotency key {key!r}",
            (account, *(b.booking_id for b in same)),
        )
        for (account, key), same in _group(
            keyed, lambda b: (b.account_id, b.idempotency_key)
        ).items()
        if len(same) > 1
    ]
    missing = len(snapshot.bookings) - len(keyed)
    if missing:
        violations.append(
            Violation(
                f"{missing} booking(s) came without their idempotency key, so repeats cannot"
                " be told apart; is booking_svc older than this checker?",
                tuple(b.booking_id for b in snapshot.bookings if not b.idempotency_key),
            )
        )
    return Result(
        7,
        "repeating CreateBooking with the same idempotency key makes one booking",
        {"bookings": len(snapshot.bookings), "accounts": len({b.account_id for b in keyed})},
        violations,
    )


def check(snapshot: Snapshot, *, saga_grace_seconds: float = DEFAULT_SAGA_GRACE_SECONDS) -> Report:
    """Judge the seven invariants on `snapshot`."""
    money = money_by_booking(snapshot.transactions)
    return Report(
        [
            check_seats(snapshot),
            check_confirmed_charged_once(snapshot, money),
            check_failed_not_charged(snapshot, money),
            check_money(snapshot),
            check_sagas(snapshot, grace_seconds=saga_grace_seconds),
            check_notified(snapshot),
            check_idempotent(snapshot),
        ],
        snapshot.taken_at,
    )


def restrict(snapshot: Snapshot, *, accounts: Iterable[str]) -> Snapshot:
    """Only what concerns `accounts`: their ledgers, bookings, sagas and notifications, and
    the events they booked with every booking of those events (seats are counted per event)."""
    wanted = set(accounts)
    events = {b.event_id for b in snapshot.bookings if b.account_id in wanted}
    bookings = [b for b in snapshot.bookings if b.account_id in wanted or b.event_id in events]
    booking_ids = {b.booking_id for b in bookings}
    return replace(
        snapshot,
        accounts=[a for a in snapshot.accounts if a.account_id in wanted],
        transactions=[t for t in snapshot.transactions if t.account_id in wanted],
        events=[e for e in snapshot.events if e.event_id in events],
        bookings=bookings,
        sagas=[s for s in snapshot.sagas if s.booking_id in booking_ids],
        notifications=[n for n in snapshot.notifications if n.account_id in wanted],
        notifications_truncated=frozenset(
            a for a in snapshot.notifications_truncated if a in wanted
        ),
    )


class ViolationJson(TypedDict):
    message: str
    ids: list[str]


class ResultJson(TypedDict):
    invariant: int
    title: str
    holds: bool
    examined: dict[str, int]
    violations: list[ViolationJson]
    notes: list[str]


def report_json(report: Report) -> dict[str, Any]:
    """The report for scripts: `holds`, `violations` and one entry per invariant."""
    return {
        "holds": report.holds,
        "violations": report.violation_count,
        "checked_at": report.taken_at.isoformat().replace("+00:00", "Z"),
        "invariants": [
            ResultJson(
                invariant=r.number,
                title=r.title,
                holds=r.holds,
                examined=dict(r.examined),
                violations=[
                    ViolationJson(message=v.message, ids=list(v.ids)) for v in r.violations
                ],
                notes=list(r.notes),
            )
            for r in report.results
        ],
    }


def report_lines(report: Report) -> list[str]:
    """The report for people: per invariant what it examined, each violation with its ids,
    its notes, then one summary line."""
    lines: list[str] = []
    for r in report.results:
        examined = ", ".join(f"{n} {what}" for what, n in r.examined.items())
        verdict = "ok" if r.holds else f"VIOLATED ({len(r.violations)})"
        lines.append(f"[{verdict}] {r.number}. {r.title}: examined {examined}")
        for v in r.violations:
            lines.append(f"    - {v.message} [ids: {' '.join(v.ids)}]")
        for note in r.notes:
            lines.append(f"    note: {note}")
    failed = [str(r.number) for r in report.results if not r.holds]
    if failed:
        lines.append(
            f"{report.violation_count} violation(s) of invariant(s) {', '.join(failed)};"
            f" {len(report.results) - len(failed)} of {len(report.results)} hold"
        )
    else:
        lines.append(f"all {len(report.results)} invariants hold")
    return lines


@dataclass(frozen=True)
class Addresses:
    account: str
    event: str
    booking: str
    notification: str

    @classmethod
    def on_localhost(cls, ports: Mapping[str, int]) -> Addresses:
        """The services of one machine, by module name to port (LocalSystem.ports)."""
        return cls(
            account=f"127.0.0.1:{ports['account_svc']}",
            event=f"127.0.0.1:{ports['event_svc']}",
            booking=f"127.0.0.1:{ports['booking_svc']}",
            notification=f"127.0.0.1:{ports['notification_svc']}",
        )


def _when(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _name(enum_type: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def _pages(fetch: Callable[[str], tuple[Sequence[T], str]]) -> Iterator[T]:
    token = ""
    while True:
        items, token = fetch(token)
        yield from items
        if not token:
            return


class Reader:
    """The four services' listings as the admin sees them; every call has one deadline."""

    def __init__(
        self,
        addresses: Addresses,
        *,
        token: str,
        timeout: float,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channels = [
            tls_channel(a, credentials)
            for a in (
                addresses.account,
                addresses.event,
                addresses.booking,
                addresses.notification,
            )
        ]
        account, event, booking, notification = self._channels
        self._accounts = account_pb2_grpc.AccountServiceStub(account)
        self._events = event_pb2_grpc.EventServiceStub(event)
        self._bookings = booking_pb2_grpc.BookingServiceStub(booking)
        self._sagas = booking_pb2_grpc.SagaAdminServiceStub(booking)
        self._notifications = notification_pb2_grpc.NotificationServiceStub(notification)
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)

    def close(self) -> None:
        for made in self._channels:
            made.close()

    def accounts(self) -> list[Account]:
        def fetch(token: str) -> tuple[Sequence[Account], str]:
            request = account_pb2.ListAccountsRequest(page_size=MAX_PAGE_SIZE, page_token=token)
            reply = self._accounts.ListAccounts(
                request, timeout=self._timeout, metadata=self._metadata
            )
            return [Account(a.account_id, a.balance_cents) for a in reply.accounts], (
                reply.next_page_token
            )

        return list(_pages(fetch))

    def transactions(self, account_id: str) -> list[Txn]:
        def fetch(token: str) -> tuple[Sequence[Txn], str]:
            request = account_pb2.ListTransactionsRequest(
                account_id=account_id, page_size=MAX_PAGE_SIZE, page_token=token
            )
            reply = self._accounts.ListTransactions(
                request, timeout=self._timeout, metadata=self._metadata
            )
            rows = [
                Txn(
                    t.transaction_id,
                    t.account_id,
                    Kind(_name(account_pb2.TransactionKind, t.kind, "TRANSACTION_KIND_")),
                    t.amount_cents,
                    t.idempotency_key,
                    t.reference,
                )
                for t in reply.transactions
            ]
            return rows, reply.next_page_token

        return list(_pages(fetch))

    def events(self) -> list[Event]:
        def fetch(token: str) -> tuple[Sequence[Event], str]:
            request = event_pb2.ListEventsRequest(page_size=MAX_PAGE_SIZE, page_token=token)
            reply = self._events.ListEvents(request, timeout=self._timeout, metadata=self._metadata)
            rows = [
                Event(e.event_id, e.capacity, e.available_seats, e.held_seats, e.sold_seats)
                for e in reply.events
            ]
            return rows, reply.next_page_token

        return list(_pages(fetch))

    def bookings(self) -> list[Booking]:
        def fetch(token: str) -> tuple[Sequence[Booking], str]:
            # No account_id: every account's bookings, which only the admin may list.
            request = booking_pb2.ListBookingsRequest(page_size=MAX_PAGE_SIZE, page_token=token)
            reply = self._bookings.ListBookings(
                request, timeout=self._timeout, metadata=self._metadata
            )
            rows = [
                Booking(
                    b.booking_id,
                    b.account_id,
                    b.event_id,
                    b.quantity,
                    b.amount_cents,
                    _name(booking_pb2.BookingStatus, b.status, "BOOKING_STATUS_"),
                    b.idempotency_key,
                    _when(b.created_at),
                    _when(b.updated_at),
                )
                for b in reply.bookings
            ]
            return rows, reply.next_page_token

        return list(_pages(fetch))

    def sagas(self) -> list[Saga]:
        def fetch(token: str) -> tuple[Sequence[Saga], str]:
            request = booking_pb2.ListSagasRequest(page_size=MAX_PAGE_SIZE, page_token=token)
            reply = self._sagas.ListSagas(request, timeout=self._timeout, metadata=self._metadata)
            rows = [
                Saga(
                    s.saga_id,
                    s.kind,
                    s.booking_id,
                    _name(booking_pb2.SagaStatus, s.status, "SAGA_STATUS_"),
                    s.current_step,
                    s.note,
                    _when(s.created_at),
                    _when(s.updated_at),
                )
                for s in reply.sagas
            ]
            return rows, reply.next_page_token

        return list(_pages(fetch))

    def notifications(self, account_id: str = "") -> tuple[list[Notification], bool]:
        """The newest notifications (of one account, or all for ""), and whether the
        listing came back full: ListNotifications has no paging, MAX_PAGE_SIZE at most."""
        request = notification_pb2.ListNotificationsRequest(
            account_id=account_id, page_size=MAX_PAGE_SIZE
        )
        reply = self._notifications.ListNotifications(
            request, timeout=self._timeout, metadata=self._metadata
        )
        rows = [
            Notification(
                n.notification_id,
                n.account_id,
                n.booking_id,
                _name(notification_pb2.NotificationKind, n.kind, "NOTIFICATION_KIND_"),
                _when(n.created_at),
            )
            for n in reply.notifications
        ]
        return rows, len(rows) >= MAX_PAGE_SIZE


def read_snapshot(reader: Reader, *, now: Callable[[], datetime]) -> Snapshot:
    """Everything the checker judges, read in an order that keeps a live system from
    looking broken: bookings before the ledgers and seats they explain, sagas last."""
    taken_at = now()
    bookings = reader.bookings()
    accounts = reader.accounts()
    transactions = [t for a in accounts for t in reader.transactions(a.account_id)]
    events = reader.events()
    notifications, full = reader.notifications()
    truncated: set[str] = set()
    if full:
        # The all-accounts listing shows only the newest: ask per account where it matters.
        seen = {n.notification_id for n in notifications}
        for account_id in sorted({b.account_id for b in bookings if b.status == CONFIRMED}):
            more, account_full = reader.notifications(account_id)
            notifications += [n for n in more if n.notification_id not in seen]
            seen.update(n.notification_id for n in more)
            if account_full:
                truncated.add(account_id)
    sagas = reader.sagas()
    return Snapshot(
        taken_at=taken_at,
        accounts=accounts,
        transactions=transactions,
        events=events,
        bookings=bookings,
        sagas=sagas,
        notifications=notifications,
        notifications_truncated=frozenset(truncated),
    )
