"""bookingctl: the one command line of the event booking system."""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import grpc

from eventbooking import checker, sagactl
from eventbooking.bench.command import bench
from eventbooking.booking.v1 import booking_pb2 as pb
from eventbooking.clock import utcnow
from eventbooking.local import (
    DEFAULT_PG_PORT,
    SERVICES,
    LocalSystem,
    UpError,
    default_home,
    option_name,
)
from eventbooking.sagactl import SagaAdmin, SagaFilter
from eventbooking.tls import TlsFiles


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run, inspect and test the event booking system."""


# Defined with its options in eventbooking/bench/command.py.
main.add_command(bench)


def _port_options(fn: click.decorators.FC) -> click.decorators.FC:
    """--<svc>-port for each service, then --<svc>-metrics-port for each."""
    for spec in reversed(SERVICES):
        fn = click.option(
            option_name(spec.module, "metrics-port"),
            type=click.IntRange(0, 65535),
            default=spec.metrics_port,
            show_default=True,
            help=f"Prometheus port of {spec.module}; 0 serves no metrics",
        )(fn)
    for spec in reversed(SERVICES):
        fn = click.option(
            option_name(spec.module),
            type=click.IntRange(1, 65535),
            default=spec.port,
            show_default=True,
            help=f"port of {spec.module}",
        )(fn)
    return fn


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http(s) URL with a host, without a trailing slash; None stays None."""
    if value is None:
        return None
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL", ctx, param)
    return url


def _tls_options(fn: click.decorators.FC, *, ca: str, cert: str) -> click.decorators.FC:
    """--tls-ca-file, --tls-cert-file and --tls-key-file, from BOOKINGCTL_TLS_* by default."""
    existing = click.Path(exists=True, dir_okay=False, path_type=Path)
    fn = click.option(
        "--tls-key-file",
        type=existing,
        envvar=sagactl.TLS_KEY_FILE_ENV,
        show_envvar=True,
        help="PEM key of --tls-cert-file",
    )(fn)
    fn = click.option(
        "--tls-cert-file",
        type=existing,
        envvar=sagactl.TLS_CERT_FILE_ENV,
        show_envvar=True,
        help=cert,
    )(fn)
    return click.option(
        "--tls-ca-file", type=existing, envvar=sagactl.TLS_CA_FILE_ENV, show_envvar=True, help=ca
    )(fn)


def _tls_pair(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert-file and --tls-key-file go together")


@main.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="where data and logs live [default: $EVENTBOOKING_HOME or ~/.local/share/eventbooking]",
)
@click.option(
    "--pg-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PG_PORT,
    show_default=True,
    help="port of the embedded PostgreSQL",
)
@_port_options
@click.option(
    "--otlp-endpoint",
    metavar="URL",
    envvar="BOOKINGCTL_OTLP_ENDPOINT",
    show_envvar=True,
    default=None,
    callback=_http_url,
    help="export every service's traces over OTLP/gRPC to URL, e.g. http://localhost:4317",
)
@click.option("--json", "as_json", is_flag=True, help="print what runs where as one JSON line")
@functools.partial(
    _tls_options,
    ca=(
        "PEM CA of services started with <PREFIX>TLS_CERT_FILE set: `up` checks their"
        " health over TLS verified against it"
    ),
    cert="PEM client certificate for those health checks, when the services want mutual TLS",
)
def up(
    home: Path | None,
    pg_port: int,
    otlp_endpoint: str | None,
    as_json: bool,
    tls_ca_file: Path | None,
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    **ports: int,
) -> None:
    """Start PostgreSQL and every service in the foreground; Ctrl-C stops them all.

    Each service also serves Prometheus metrics on its metrics port. With
    --otlp-endpoint every service exports its traces there, named after its
    module (OTEL_SERVICE_NAME); see docs/observability.md.

    The first start writes the admin token and the service credential to
    HOME/secrets/, readable by you only; `bookingctl saga` reads the admin
    token from there. Services given <PREFIX>TLS_* variables serve TLS; then
    --tls-ca-file says how to check them. See docs/security.md.
    """
    _tls_pair(tls_cert_file, tls_key_file)
    names = {spec.module: spec.module.removesuffix("_svc") for spec in SERVICES}
    by_module = {module: ports[f"{name}_port"] for module, name in names.items()}
    metrics = {module: ports[f"{name}_metrics_port"] for module, name in names.items()}
    echo = (lambda _msg: None) if as_json else click.echo
    system = LocalSystem(
        home or default_home(),
        by_module,
        pg_port=pg_port,
        echo=echo,
        metrics_ports=metrics,
        otlp_endpoint=otlp_endpoint,
        tls=TlsFiles(tls_ca_file, tls_cert_file, tls_key_file) if tls_ca_file else None,
    )
    try:
        system.start()
    except UpError as err:
        system.stop()
        click.echo(f"bookingctl up: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        system.stop()
        sys.exit(130)
    try:
        _echo_where(system, as_json=as_json)
        reason = system.wait()
    except KeyboardInterrupt:
        # A Ctrl-C that lands before wait() takes over SIGINT must still stop the services.
        reason = "SIGINT"
    click.echo(f"stopping ({reason})")
    system.stop()
    click.echo("stopped")
    if reason not in ("SIGINT", "SIGTERM"):
        sys.exit(1)


def _echo_where(system: LocalSystem, *, as_json: bool) -> None:
    """What runs where: a table with hints for people, or one JSON line for scripts."""
    rows = system.summary()
    if as_json:
        where: dict[str, dict[str, object]] = {
            name: {"address": addr, "detail": detail} for name, addr, detail in rows
        }
        for module in system.ports:
            where[module]["metrics_port"] = system.metrics_port(module)
        click.echo(json.dumps({**where, "admin_token_file": str(system.admin_token_file)}))
        return
    click.echo("")
    for name, addr, detail in rows:
        click.echo(f"  {name:<18} {addr:<18} {detail}")
    click.echo("")
    if system.otlp_endpoint:
        click.echo(f"  traces: OTLP to {system.otlp_endpoint}")
    # Where the token is, never the token: this output ends up in terminals and logs.
    click.echo(f"  admin token: {system.admin_token_file} (`bookingctl saga` reads it)")
    transport = "-plaintext"
    if system.tls:
        transport = f"-cacert {system.tls.ca}"
        if system.tls.cert and system.tls.key:
            transport += f" -cert {system.tls.cert} -key {system.tls.key}"
    click.echo(f"  try:  grpcurl {transport} localhost:{system.ports['account_svc']} list")
    click.echo("  stop: Ctrl-C")


class Duration(click.ParamType[int, int | str]):
    """A duration such as 30s, 5m, 2h or 1h30m, as whole seconds."""

    name = "duration"

    def convert(
        self, value: int | str, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return sagactl.parse_duration(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


def _address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx, param)
    return value.strip()


def _admin_options(fn: click.decorators.FC) -> click.decorators.FC:
    """--address, the admin token, TLS, --timeout and --json, which every `saga` command takes.

    All but --json reach the command as keyword arguments it hands to `_admin` unread.
    """
    fn = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")(fn)
    fn = _tls_options(
        fn,
        ca="PEM CA to verify booking_svc against; talks TLS when given, plaintext otherwise",
        cert="PEM client certificate, for a booking_svc that requires mutual TLS",
    )
    fn = click.option(
        "--admin-token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=(
            f"file holding the admin token [default: ${sagactl.ADMIN_TOKEN_FILE_ENV}, else"
            f" ${sagactl.ADMIN_TOKEN_ENV}, else $EVENTBOOKING_HOME/secrets/admin_token,"
            " which `bookingctl up` writes]"
        ),
    )(fn)
    fn = click.option(
        "--timeout",
        type=click.FloatRange(0, 3600, min_open=True),
        default=10.0,
        show_default=True,
        help="deadline of each call, in seconds",
    )(fn)
    return click.option(
        "--address",
        envvar=sagactl.ADDRESS_ENV,
        show_envvar=True,
        default=sagactl.DEFAULT_ADDRESS,
        show_default=True,
        callback=_address,
        help="gRPC address of booking_svc",
    )(fn)


@contextmanager
def _admin(connection: dict[str, Any]) -> Iterator[SagaAdmin]:
    """A SagaAdmin as the `_admin_options` ask; a failed call or a missing admin token ends
    the command with the reason on stderr, exit 1."""
    ctx = click.get_current_context()
    command = ctx.info_name or "saga"
    address: str = connection["address"]
    timeout: float = connection["timeout"]
    cert: Path | None = connection["tls_cert_file"]
    key: Path | None = connection["tls_key_file"]
    _tls_pair(cert, key)
    try:
        token = sagactl.find_admin_token(
            connection["admin_token_file"], environ=os.environ, home=default_home()
        )
    except sagactl.AdminTokenError as err:
        click.echo(f"bookingctl saga {command}: {err}", err=True)
        ctx.exit(1)
    tls = sagactl.tls_credentials(connection["tls_ca_file"], cert_file=cert, key_file=key)
    try:
        with SagaAdmin(address, timeout=timeout, token=token.value, credentials=tls) as admin:
            yield admin
    except grpc.RpcError as err:
        lines = sagactl.error_lines(
            err, command=command, address=address, timeout=timeout, token_source=token.source
        )
        for line in lines:
            click.echo(line, err=True)
        ctx.exit(1)


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value))


def _echo_lines(lines: Sequence[str]) -> None:
    for line in lines:
        click.echo(line)


@main.group()
def saga() -> None:
    """Inspect the saga log and repair STUCK sagas, through booking_svc's SagaAdminService.

    Every call carries the admin token: from --admin-token-file, else
    $BOOKINGCTL_ADMIN_TOKEN_FILE, else $BOOKINGCTL_ADMIN_TOKEN, else the file
    `bookingctl up` wrote under its home ($EVENTBOOKING_HOME/secrets/admin_token).
    """


@saga.command("list")
@click.option(
    "--status",
    type=click.Choice(sagactl.STATUSES, case_sensitive=False),
    help="only sagas in this status",
)
@click.option("--kind", type=click.Choice(sagactl.KINDS), help="only sagas of this kind")
@click.option("--step", metavar="NAME", help="only sagas whose current step is NAME")
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    help="only sagas at least this old, e.g. 30s, 5m, 2h",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="list at most N sagas",
)
@_admin_options
def list_sagas(
    status: str | None,
    kind: str | None,
    step: str | None,
    older_than: int | None,
    limit: int,
    as_json: bool,
    **connection: Any,
) -> None:
    """List sagas, oldest first.

    A table of saga id, kind, status, current step, age, owner and note;
    `--status stuck` lists the sagas that wait for an operator.
    """
    wanted = SagaFilter(status=status, kind=kind, step=step, min_age_seconds=older_than or 0)
    with _admin(connection) as admin:
        found, more = admin.list_sagas(wanted, limit=limit)
    now = utcnow()
    sagas = [sagactl.saga_json(s, now=now) for s in found]
    if as_json:
        _echo_json({"sagas": sagas, "more": more})
        return
    _echo_lines(sagactl.saga_table(sagas) if sagas else ["no saga matches"])
    if more:
        click.echo(f"more sagas match than the {limit} shown; raise --limit", err=True)


@saga.command()
@click.argument("saga_id", type=click.UUID)
@click.option(
    "--jaeger-url",
    metavar="URL",
    envvar=sagactl.JAEGER_URL_ENV,
    show_envvar=True,
    default=sagactl.DEFAULT_JAEGER_URL,
    show_default=True,
    callback=_http_url,
    help="base URL of the Jaeger UI that the trace link points into",
)
@_admin_options
def show(saga_id: uuid.UUID, jaeger_url: str, as_json: bool, **connection: Any) -> None:
    """Show one saga and its log as a timeline.

    The head says where the saga stands, who holds it until when, its trace
    id with a Jaeger link, and note; then one line per log row, timed from
    the first, with the short id of the span that wrote it.
    """
    with _admin(connection) as admin:
        reply = admin.get_saga(str(saga_id))
    now = utcnow()
    head = sagactl.saga_json(reply.saga, now=now)
    entries = sagactl.log_json(reply.entries)
    link = sagactl.jaeger_link(jaeger_url, head["trace_id"])
    if as_json:
        _echo_json({"saga": head, "entries": entries, "jaeger_url": link})
    else:
        _echo_lines(
            [
                *sagactl.saga_header(head, now=now, jaeger_url=link),
                "",
                *sagactl.timeline(entries, trace_id=head["trace_id"]),
            ]
        )


def _echo_repaired(saga: pb.Saga, *, as_json: bool) -> None:
    row = sagactl.saga_json(saga, now=utcnow())
    if as_json:
        _echo_json({"saga": row})
    else:
        click.echo(f"saga {row['saga_id']} is now {row['status']} at step {row['current_step']}")


@saga.command()
@click.argument("saga_id", type=click.UUID)
@_admin_options
def retry(saga_id: uuid.UUID, as_json: bool, **connection: Any) -> None:
    """Resume a STUCK saga where its log stopped.

    It goes on in the direction it was going, forward or compensating, and
    prints the saga's new status.
    """
    with _admin(connection) as admin:
        repaired = admin.retry_saga(str(saga_id))
    _echo_repaired(repaired, as_json=as_json)


@saga.command()
@click.argument("saga_id", type=click.UUID)
@_admin_options
def compensate(saga_id: uuid.UUID, as_json: bool, **connection: Any) -> None:
    """Undo a STUCK saga that has not passed its pivot.

    Its finished steps are compensated in reverse; prints the saga's new status.
    """
    with _admin(connection) as admin:
        repaired = admin.compensate_saga(str(saga_id))
    _echo_repaired(repaired, as_json=as_json)


def _address_options(fn: click.decorators.FC) -> click.decorators.FC:
    """--host, and --<svc>-address for each service, which wins over --host."""
    for spec in reversed(SERVICES):
        name = spec.module.removesuffix("_svc")
        fn = click.option(
            f"--{name}-address",
            metavar="HOST:PORT",
            default=None,
            help=f"gRPC address of {spec.module} [default: --host:{spec.port}]",
        )(fn)
    return click.option(
        "--host",
        envvar="BOOKINGCTL_HOST",
        show_envvar=True,
        default="localhost",
        show_default=True,
        callback=_address,
        help="host of every service, each on its default port",
    )(fn)


@main.command()
@_address_options
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=(
        f"file holding the admin token [default: ${sagactl.ADMIN_TOKEN_FILE_ENV}, else"
        f" ${sagactl.ADMIN_TOKEN_ENV}, else $EVENTBOOKING_HOME/secrets/admin_token]"
    ),
)
@functools.partial(
    _tls_options,
    ca="PEM CA to verify the services against; talks TLS when given, plaintext otherwise",
    cert="PEM client certificate, for services that require mutual TLS",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    default=30.0,
    show_default=True,
    help="deadline of each call, in seconds",
)
@click.option(
    "--saga-grace",
    type=Duration(),
    default=int(checker.DEFAULT_SAGA_GRACE_SECONDS),
    show_default=True,
    help="how long a saga may run, or a booking stay PENDING or CANCELLING, before it counts"
    " as a violation; 0s right after faults stopped and sagas finished",
)
@click.option(
    "--account",
    "accounts",
    metavar="ACCOUNT_ID",
    multiple=True,
    help="check only these accounts and the events they booked (repeatable)",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON for scripts")
def check(
    host: str,
    admin_token_file: Path | None,
    tls_ca_file: Path | None,
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    timeout: float,
    saga_grace: int,
    accounts: tuple[str, ...],
    as_json: bool,
    **addresses: str | None,
) -> None:
    """Check the seven invariants of the running system from the outside.

    Reads only the services' gRPC APIs with the admin token: accounts and
    their ledgers, events, every booking, the sagas and the notifications.
    Prints, per invariant, what it examined and every violation with the
    ids involved, then a summary line. Run it on a quiet system (faults
    stopped, sagas finished) for an exact answer.

    Exit status: 0 when every invariant holds, 1 on any violation, 2 when
    the services could not be read.
    """
    _tls_pair(tls_cert_file, tls_key_file)
    try:
        token = sagactl.find_admin_token(admin_token_file, environ=os.environ, home=default_home())
    except sagactl.AdminTokenError as err:
        click.echo(f"bookingctl check: {err}", err=True)
        sys.exit(2)
    ports = {spec.module.removesuffix("_svc"): spec.port for spec in SERVICES}
    where = {
        name: addresses.get(f"{name}_address") or f"{host}:{port}" for name, port in ports.items()
    }
    tls = sagactl.tls_credentials(tls_ca_file, cert_file=tls_cert_file, key_file=tls_key_file)
    reader = checker.Reader(
        checker.Addresses(**where), token=token.value, timeout=timeout, credentials=tls
    )
    try:
        snapshot = checker.read_snapshot(reader, now=utcnow)
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
        click.echo(f"bookingctl check: cannot read the services: {code.name}: {details}", err=True)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            click.echo(
                f"hint: the token from {token.source} is not this deployment's admin token",
                err=True,
            )
        elif code is grpc.StatusCode.UNAVAILABLE:
            click.echo(f"hint: are the services running at {', '.join(where.values())}?", err=True)
        sys.exit(2)
    finally:
        reader.close()
    if accounts:
        snapshot = checker.restrict(snapshot, accounts=accounts)
    report = checker.check(snapshot, saga_grace_seconds=saga_grace)
    if as_json:
        _echo_json(checker.report_json(report))
    else:
        _echo_lines(checker.report_lines(report))
    sys.exit(0 if report.holds else 1)


def _fault_kinds(ctx: click.Context, param: click.Parameter, value: str) -> frozenset[str]:
    from eventbooking import chaos

    try:
        return chaos.parse_kinds(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


@main.command("chaos")
@click.option(
    "--duration",
    type=Duration(),
    default="1m",
    show_default=True,
    help="how long the clients book and the faults go on, e.g. 60s, 5m, 1h",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="clients booking and cancelling at once",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=None,
    help="repeat a run: the same faults at the same times, the same random draws by the"
    " clients [default: a random seed, printed]",
)
@click.option(
    "--faults",
    "fault_kinds",
    metavar="KINDS",
    default="all",
    show_default=True,
    callback=_fault_kinds,
    help="comma-separated fault kinds to inject: error, delay, lost_reply, crash, kill,"
    " postgres; or all, or none",
)
@click.option(
    "--settle-timeout",
    type=Duration(),
    default="2m",
    show_default=True,
    help="how long every saga may take to finish once the faults stop",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the run's own system keeps its data and logs [default: a new temporary"
    " folder, removed after a run that passed]",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON document")
def chaos_command(
    duration: int,
    concurrency: int,
    seed: int | None,
    fault_kinds: frozenset[str],
    settle_timeout: int,
    home: Path | None,
    as_json: bool,
) -> None:
    """Bookings under injected faults, process kills and a PostgreSQL restart, then the checker.

    Starts its own embedded system on free ports (never the one `bookingctl up`
    runs), makes accounts and a few events, and for --duration keeps
    --concurrency clients booking and cancelling while it injects fault rules
    (error, delay, lost_reply, crash), kills services with SIGKILL and restarts
    them, and stops PostgreSQL once. Then it clears the faults, waits until every
    saga has finished, runs the seven invariants and prints a summary: bookings
    by outcome, faults by kind, crashes, the time from the last fault to
    quiescence, and the invariants. Progress goes to stderr. See docs/faults.md.

    Exit status: 0 when every invariant holds and nothing is left running, 1
    otherwise, 2 when the run could not be made.
    """
    # Only this command needs the runner; other commands start without loading it.
    import secrets
    import shutil

    from eventbooking import chaos

    if duration < chaos.MIN_DURATION_SECONDS:
        raise click.BadParameter(
            f"a chaos run needs at least {chaos.MIN_DURATION_SECONDS}s, for its faults to have"
            " room",
            param_hint="--duration",
        )
    if settle_timeout < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--settle-timeout")
    chosen = secrets.randbelow(2**31) if seed is None else seed
    tty = sys.stderr.isatty()

    def echo(message: str) -> None:
        click.echo(f"\r\x1b[K{message}" if tty else message, err=True)

    def progress(line: str) -> None:
        if tty:
            # A line that wraps could not be rewritten in place.
            width = shutil.get_terminal_size().columns - 1
            click.echo(f"\r\x1b[K{line[:width]}", err=True, nl=False)
        else:
            click.echo(line, err=True)

    echo(f"chaos: seed {chosen} (repeat with --seed {chosen})")
    options = chaos.ChaosOptions(
        duration=duration,
        concurrency=concurrency,
        seed=chosen,
        kinds=fault_kinds,
        settle_timeout=settle_timeout,
    )
    try:
        summary = chaos.run(
            options, home=home, echo=echo, progress=progress, progress_every=0.5 if tty else 10.0
        )
    except chaos.ChaosError as err:
        echo(f"bookingctl chaos: {err}")
        sys.exit(2)
    except KeyboardInterrupt:
        echo("bookingctl chaos: interrupted")
        sys.exit(130)
    if as_json:
        _echo_json(summary)
    else:
        _echo_lines(chaos.summary_lines(summary))
    sys.exit(0 if summary["ok"] else 1)
