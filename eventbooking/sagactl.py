"""The client side of `bookingctl saga`: SagaAdminService calls, and how their answers print.

It talks to booking_svc only through the generated stubs, so it works
against any deployment that serves the contract. Every call carries the
admin token (`find_admin_token` says where it comes from) and, when a CA is
given, goes over TLS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from eventbooking.booking.v1 import booking_pb2 as pb
from eventbooking.booking.v1 import booking_pb2_grpc
from eventbooking.local import admin_token_file
from eventbooking.tls import TlsFiles
from eventbooking.tls import channel as tls_channel

DEFAULT_ADDRESS = "localhost:50053"
ADDRESS_ENV = "BOOKINGCTL_BOOKING_ADDRESS"
ADMIN_TOKEN_FILE_ENV = "BOOKINGCTL_ADMIN_TOKEN_FILE"  # noqa: S105 - a variable's name
ADMIN_TOKEN_ENV = "BOOKINGCTL_ADMIN_TOKEN"  # noqa: S105 - a variable's name
TLS_CA_FILE_ENV = "BOOKINGCTL_TLS_CA_FILE"
TLS_CERT_FILE_ENV = "BOOKINGCTL_TLS_CERT_FILE"
TLS_KEY_FILE_ENV = "BOOKINGCTL_TLS_KEY_FILE"
OTHER_WAYS = (
    f"pass --admin-token-file PATH, or set {ADMIN_TOKEN_FILE_ENV} to a file holding the"
    f" token or {ADMIN_TOKEN_ENV} to the token itself"
)
DEFAULT_JAEGER_URL = "http://localhost:16686"
JAEGER_URL_ENV = "BOOKINGCTL_JAEGER_URL"
NO_TRACE = "none: no trace context was recorded when the saga started, so there is no Jaeger link"
# Span ids are 16 hex digits; the first 8 tell a saga's spans apart, as a short git hash does.
SHORT_ID = 8
STATUSES = ("running", "compensating", "completed", "compensated", "stuck")
KINDS = ("booking", "cancel")
# The largest page booking_svc serves; a longer --limit takes several pages.
MAX_PAGE_SIZE = 500

_DURATION = re.compile(r"(?:\d+[smhd])+")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Far beyond any saga's age, and small enough for the request's int64.
MAX_DURATION_SECONDS = 100 * 365 * 86400


class SagaJson(TypedDict):
    saga_id: str
    kind: str
    booking_id: str
    status: str
    current_step: str
    owner: str
    lease_expires_at: str | None
    version: int
    cancel_requested: bool
    note: str
    trace_id: str
    created_at: str | None
    updated_at: str | None
    age_seconds: float


class LogEntryJson(TypedDict):
    seq: int
    step: str
    phase: str
    event: str
    attempt: int
    code: str
    message: str
    at: str | None
    offset_seconds: float
    trace_id: str
    span_id: str
    owner: str
    request: Any
    response: Any


@dataclass(frozen=True)
class SagaFilter:
    """What `saga list` asks for; None and 0 mean no filter."""

    status: str | None = None
    kind: str | None = None
    step: str | None = None
    min_age_seconds: int = 0


class AdminTokenError(Exception):
    """No usable admin token; the message says where bookingctl looked and how to give one."""


@dataclass(frozen=True)
class AdminToken:
    """The operators' bearer token and where it was found; the token never prints."""

    value: str = field(repr=False)
    # For messages: an option, a variable's name or a path, never the token itself.
    source: str


def find_admin_token(
    option_file: Path | None, *, environ: Mapping[str, str], home: Path
) -> AdminToken:
    """The admin token: --admin-token-file, else BOOKINGCTL_ADMIN_TOKEN_FILE, else
    BOOKINGCTL_ADMIN_TOKEN, else the file `bookingctl up` keeps under `home`.

    AdminTokenError says where it looked and how else to give one.
    """
    if option_file is not None:
        return _token_file(option_file, source="--admin-token-file")
    if environ.get(ADMIN_TOKEN_FILE_ENV, "").strip():
        return _token_file(Path(environ[ADMIN_TOKEN_FILE_ENV].strip()), source=ADMIN_TOKEN_FILE_ENV)
    if environ.get(ADMIN_TOKEN_ENV, "").strip():
        return AdminToken(environ[ADMIN_TOKEN_ENV].strip(), source=ADMIN_TOKEN_ENV)
    return _token_file(admin_token_file(home), source="")


def _token_file(path: Path, *, source: str) -> AdminToken:
    """The token in `path`, named by `source` (an option or variable; "" for the default)."""
    named = f" (from {source})" if source else ""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        how = (
            OTHER_WAYS
            if source
            else "`bookingctl up` writes it there on its first start (in $EVENTBOOKING_HOME,"
            f" default ~/.local/share/eventbooking); or {OTHER_WAYS}"
        )
        raise AdminTokenError(f"no admin token: {path}{named} does not exist; {how}") from None
    except OSError as err:
        raise AdminTokenError(
            f"cannot read the admin token file {path}{named}: {err.strerror or err}"
        ) from None
    if not value:
        raise AdminTokenError(f"the admin token file {path}{named} is empty; {OTHER_WAYS}")
    return AdminToken(value, source=f"{source} ({path})" if source else str(path))


def tls_credentials(
    ca_file: Path | None, *, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS that verifies booking_svc against `ca_file`, presenting a client certificate if
    given (for mutual TLS); None for plaintext."""
    if ca_file is None:
        return None
    return TlsFiles(ca_file, cert_file, key_file).credentials()


def parse_duration(text: str) -> int:
    """Seconds in a duration such as 30s, 5m, 2h, 1d or 1h30m; ValueError for anything else."""
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 2h or 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(cleaned))
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than 100 years")
    return seconds


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


def _when(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at else None


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    """RUNNING for SAGA_STATUS_RUNNING; the number itself for a value this client does not know."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def _decoded(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def jaeger_link(base_url: str, trace_id: str) -> str | None:
    """The Jaeger UI page of `trace_id`, or None for a saga without a trace."""
    return f"{base_url.rstrip('/')}/trace/{trace_id}" if trace_id else None


def saga_json(saga: pb.Saga, *, now: datetime) -> SagaJson:
    created = _when(saga.created_at)
    return SagaJson(
        saga_id=saga.saga_id,
        kind=saga.kind,
        booking_id=saga.booking_id,
        status=_enum_name(pb.SagaStatus, saga.status, "SAGA_STATUS_"),
        current_step=saga.current_step,
        owner=saga.owner,
        lease_expires_at=_iso(_when(saga.lease_expires_at)),
        version=saga.version,
        cancel_requested=saga.cancel_requested,
        note=saga.note,
        trace_id=saga.trace_id,
        created_at=_iso(created),
        updated_at=_iso(_when(saga.updated_at)),
        age_seconds=round((now - created).total_seconds(), 3) if created else 0.0,
    )


def log_entry_json(entry: pb.SagaLogEntry, *, start: datetime | None) -> LogEntryJson:
    at = _when(entry.at)
    offset = (at - start).total_seconds() if at and start else 0.0
    return LogEntryJson(
        seq=entry.seq,
        step=entry.step,
        phase=_enum_name(pb.StepPhase, entry.phase, "STEP_PHASE_"),
        event=_enum_name(pb.StepEvent, entry.event, "STEP_EVENT_"),
        attempt=entry.attempt,
        code=entry.code,
        message=entry.message,
        at=_iso(at),
        offset_seconds=round(offset, 6),
        trace_id=entry.trace_id,
        span_id=entry.span_id,
        owner=entry.owner,
        request=_decoded(entry.request_json),
        response=_decoded(entry.response_json),
    )


def log_json(entries: Sequence[pb.SagaLogEntry]) -> list[LogEntryJson]:
    """The log rows, each with its offset from the first row."""
    start = _when(entries[0].at) if entries else None
    return [log_entry_json(e, start=start) for e in entries]


class SagaAdmin:
    """SagaAdminService at one address; every call carries the admin token and one deadline."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float,
        token: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = tls_channel(address, credentials)
        self._stub = booking_pb2_grpc.SagaAdminServiceStub(self._channel)
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)

    def __enter__(self) -> SagaAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._channel.close()

    def list_sagas(self, wanted: SagaFilter, *, limit: int) -> tuple[list[pb.Saga], bool]:
        """Up to `limit` sagas, oldest first, and whether more match."""
        sagas: list[pb.Saga] = []
        token = ""
        while True:
            reply = self._stub.ListSagas(
                _list_request(wanted, size=min(MAX_PAGE_SIZE, limit - len(sagas)), token=token),
                timeout=self._timeout,
                metadata=self._metadata,
            )
            sagas.extend(reply.sagas)
            token = reply.next_page_token
            if not token or len(sagas) >= limit:
                return sagas[:limit], bool(token) or len(sagas) > limit

    def get_saga(self, saga_id: str) -> pb.GetSagaResponse:
        return self._stub.GetSaga(
            pb.GetSagaRequest(saga_id=saga_id), timeout=self._timeout, metadata=self._metadata
        )

    def retry_saga(self, saga_id: str) -> pb.Saga:
        request = pb.RetrySagaRequest(saga_id=saga_id)
        return self._stub.RetrySaga(request, timeout=self._timeout, metadata=self._metadata).saga

    def compensate_saga(self, saga_id: str) -> pb.Saga:
        request = pb.CompensateSagaRequest(saga_id=saga_id)
        reply = self._stub.CompensateSaga(request, timeout=self._timeout, metadata=self._metadata)
        return reply.saga


def _list_request(wanted: SagaFilter, *, size: int, token: str) -> pb.ListSagasRequest:
    status = pb.SAGA_STATUS_UNSPECIFIED
    if wanted.status:
        status = pb.SagaStatus.Value(f"SAGA_STATUS_{wanted.status.upper()}")
    return pb.ListSagasRequest(
        status=status,
        kind=wanted.kind or "",
        step=wanted.step or "",
        min_age_seconds=wanted.min_age_seconds,
        page_size=size,
        page_token=token,
    )


def error_lines(
    err: grpc.RpcError,
    *,
    command: str,
    address: str,
    timeout: float,
    token_source: str = "",
) -> list[str]:
    """What a failed call prints: `bookingctl saga <cmd>: <CODE>: <details>`, and a hint."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    lines = [f"bookingctl saga {command}: {code.name}: {details}"]
    if code is grpc.StatusCode.UNAVAILABLE:
        lines.append(
            f"hint: is booking_svc running at {address}? Start the system with `bookingctl up`,"
            f" or point --address (or {ADDRESS_ENV}) at it."
        )
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        lines.append(f"hint: no answer within {timeout:g}s; raise --timeout.")
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        lines.append(
            f"hint: booking_svc at {address} did not take the token from {token_source or '?'}"
            " as its admin token; give the admin token of that deployment with"
            f" --admin-token-file, {ADMIN_TOKEN_FILE_ENV} or {ADMIN_TOKEN_ENV}."
        )
    return lines


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned text, two spaces between columns; the last column is not padded."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def saga_table(sagas: Sequence[SagaJson]) -> list[str]:
    """The `saga list` table: id, kind, status, current step, age, owner, note."""
    header = ("SAGA ID", "KIND", "STATUS", "STEP", "AGE", "OWNER", "NOTE")
    rows = [
        (
            s["saga_id"],
            s["kind"],
            s["status"],
            s["current_step"] or "-",
            format_age(s["age_seconds"]),
            s["owner"] or "-",
            _one_line(s["note"]),
        )
        for s in sagas
    ]
    return columns([header, *rows])


def _holder(saga: SagaJson, *, now: datetime) -> str:
    lease = saga["lease_expires_at"]
    if not saga["owner"] or not lease:
        return saga["owner"] or "-"
    if datetime.fromisoformat(lease) <= now:
        return f"{saga['owner']} (lease expired at {lease})"
    return f"{saga['owner']} (lease until {lease})"


def saga_header(saga: SagaJson, *, now: datetime, jaeger_url: str | None = None) -> list[str]:
    """The head of `saga show`: who the saga is, where it stands, who holds it, its trace."""
    status = saga["status"] + (", cancel requested" if saga["cancel_requested"] else "")
    fields = [
        ("saga", f"{saga['saga_id']} ({saga['kind']})"),
        ("booking", saga["booking_id"]),
        ("status", status),
        ("step", saga["current_step"] or "-"),
        ("owner", _holder(saga, now=now)),
        ("trace", saga["trace_id"] or NO_TRACE),
    ]
    if jaeger_url:
        fields.append(("jaeger", jaeger_url))
    fields += [
        ("note", _one_line(saga["note"]) or "-"),
        ("created", f"{saga['created_at']} (updated {saga['updated_at']})"),
    ]
    return columns([(name, value) for name, value in fields])


def _span(entry: LogEntryJson, *, trace_id: str) -> str:
    """The row's short span id, prefixed by its short trace id when that is not the saga's."""
    span = entry["span_id"][:SHORT_ID] or "-"
    if entry["trace_id"] and entry["trace_id"] != trace_id:
        return f"{entry['trace_id'][:SHORT_ID]}/{span}"
    return span


def timeline(entries: Sequence[LogEntryJson], *, trace_id: str = "") -> list[str]:
    """One line per log row: offset from the first row, step, phase, event, attempt, code,
    span and message.

    SPAN is the first 8 hex digits of the span that wrote the row; a row
    written in another trace than the saga's (`trace_id`) shows that trace's
    first 8 digits too, as trace/span.
    """
    header = ("OFFSET", "STEP", "PHASE", "EVENT", "ATTEMPT", "CODE", "SPAN", "MESSAGE")
    rows = [
        (
            f"+{e['offset_seconds']:.3f}s",
            e["step"],
            e["phase"],
            e["event"],
            str(e["attempt"]),
            e["code"],
            _span(e, trace_id=trace_id),
            _one_line(e["message"]),
        )
        for e in entries
    ]
    return columns([header, *rows])
