"""`bookingctl bench`: the click command, its options and what it prints."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import grpc

from eventbooking import sagactl
from eventbooking.bench import run as bench_run
from eventbooking.bench.report import summary_lines
from eventbooking.bench.target import BenchError, Target, embedded, external
from eventbooking.local import SERVICES, default_home, service_credential_file

MAX_CONCURRENCY = 10_000
# booking_svc lets one account make 20 CreateBooking calls a second, in bursts of 40.
RATE_LIMIT_BURST = 40


class ConcurrencyList(click.ParamType[tuple[int, ...], tuple[int, ...] | str]):
    """A comma-separated list of concurrencies such as 1,8,32,64."""

    name = "list"

    def convert(
        self,
        value: tuple[int, ...] | str,
        param: click.Parameter | None,
        ctx: click.Context | None,
    ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        found: list[int] = []
        for part in value.split(","):
            text = part.strip()
            if not text:
                self.fail(f"{value!r} has an empty entry; write e.g. 1,8,32", param, ctx)
            try:
                number = int(text)
            except ValueError:
                self.fail(f"{text!r} is not a whole number (in {value!r})", param, ctx)
            if not 1 <= number <= MAX_CONCURRENCY:
                self.fail(f"{number} is not in 1..{MAX_CONCURRENCY}", param, ctx)
            if number not in found:
                found.append(number)
        return tuple(found)


def _pg_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise click.BadParameter(
            "must be a postgresql://user:password@host:port/database URL", ctx, param
        )
    return value.strip()


def _external_options(fn: click.decorators.FC) -> click.decorators.FC:
    """--host and --<svc>-address, the secrets, TLS and --pg-url: only with --external."""
    existing = click.Path(exists=True, dir_okay=False, path_type=Path)
    for option in reversed(
        [
            click.option(
                "--external",
                is_flag=True,
                help="bench the running system at --host / --<svc>-address instead of"
                " starting an embedded one",
            ),
            click.option(
                "--host",
                envvar="BOOKINGCTL_HOST",
                show_envvar=True,
                default="localhost",
                show_default=True,
                help="with --external: host of every service, each on its default port",
            ),
            *(
                click.option(
                    f"--{spec.module.removesuffix('_svc')}-address",
                    metavar="HOST:PORT",
                    default=None,
                    help=f"with --external: gRPC address of {spec.module}"
                    f" [default: --host:{spec.port}]",
                )
                for spec in SERVICES
            ),
            click.option(
                "--admin-token-file",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="with --external: file holding the admin token [default:"
                f" ${sagactl.ADMIN_TOKEN_FILE_ENV}, else ${sagactl.ADMIN_TOKEN_ENV}, else"
                " $EVENTBOOKING_HOME/secrets/admin_token]",
            ),
            click.option(
                "--service-credential-file",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="with --external: file holding the deployment's service credential, which"
                " direct mode sends on participant calls [default:"
                " $EVENTBOOKING_HOME/secrets/service_credential]",
            ),
            click.option(
                "--pg-url",
                metavar="URL",
                default=None,
                callback=_pg_url,
                help="with --external: a PostgreSQL URL of the server holding the services'"
                " databases, to read transaction and workflow-log counts; null without it",
            ),
            click.option(
                "--booking-database",
                default="booking",
                show_default=True,
                help="with --pg-url: booking_svc's database on that server",
            ),
            click.option(
                "--tls-ca-file",
                type=existing,
                envvar=sagactl.TLS_CA_FILE_ENV,
                show_envvar=True,
                help="with --external: PEM CA to verify the services against (TLS)",
            ),
            click.option(
                "--tls-cert-file",
                type=existing,
                envvar=sagactl.TLS_CERT_FILE_ENV,
                show_envvar=True,
                help="with --external: PEM client certificate, for mutual TLS",
            ),
            click.option(
                "--tls-key-file",
                type=existing,
                envvar=sagactl.TLS_KEY_FILE_ENV,
                show_envvar=True,
                help="PEM key of --tls-cert-file",
            ),
        ]
    ):
        fn = option(fn)
    return fn


# Options that make sense only against a running deployment, by parameter name.
_EXTERNAL_ONLY = (
    "host",
    *(f"{spec.module.removesuffix('_svc')}_address" for spec in SERVICES),
    "admin_token_file",
    "service_credential_file",
    "pg_url",
    "booking_database",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
)


def _given_on_command_line(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE


def _option_of(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name and isinstance(param, click.Option):
            return param.opts[0]
    return name


def _check_combinations(ctx: click.Context, options: dict[str, Any]) -> None:
    """Refuse combinations that cannot work, with the reason, before anything starts."""
    if not options["external"]:
        given = [_option_of(ctx, n) for n in _EXTERNAL_ONLY if _given_on_command_line(ctx, n)]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: only with --external; without it the bench starts"
                " its own embedded system"
            )
    else:
        if "recovery" in options["scenarios"]:
            raise click.UsageError(
                "--scenario recovery kills and restarts booking_svc, so it runs only on the"
                " embedded system (drop --external)"
            )
        if options["keep_home"]:
            raise click.UsageError("--keep-home applies to the embedded system only")
        if (options["tls_cert_file"] is None) != (options["tls_key_file"] is None):
            raise click.UsageError("--tls-cert-file and --tls-key-file go together")
    json_out = options["json_out"]
    if json_out is not None and not json_out.resolve().parent.is_dir():
        raise click.UsageError(
            f"--json-out {json_out}: the folder {json_out.parent} does not exist; the report"
            " would be lost after the runs"
        )
    if options["contention_seats"] > options["contention_bookings"]:
        raise click.UsageError(
            f"--contention-seats {options['contention_seats']} leaves no contention for"
            f" --contention-bookings {options['contention_bookings']}; use fewer seats"
        )


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as err:
        raise BenchError(f"cannot read the {what} file {path}: {err.strerror or err}") from None
    if not value:
        raise BenchError(f"the {what} file {path} is empty")
    return value


def _external_target(options: dict[str, Any], *, direct: bool) -> Target:
    token = sagactl.find_admin_token(
        options["admin_token_file"], environ=os.environ, home=default_home()
    )
    credential = None
    if direct:
        path = options["service_credential_file"] or service_credential_file(default_home())
        try:
            credential = _read_secret(path, "service credential")
        except BenchError as err:
            raise BenchError(
                f"direct mode sends the service credential on participant calls: {err};"
                " give --service-credential-file, or run --mode saga"
            ) from None
    host = options["host"]
    addresses = {
        spec.module: (
            options[f"{spec.module.removesuffix('_svc')}_address"] or f"{host}:{spec.port}"
        ).strip()
        for spec in SERVICES
    }
    tls = sagactl.tls_credentials(
        options["tls_ca_file"], cert_file=options["tls_cert_file"], key_file=options["tls_key_file"]
    )
    return external(
        addresses=addresses,
        admin_token=token.value,
        service_credential=credential,
        credentials=tls,
        pg_url=options["pg_url"],
        booking_database=options["booking_database"],
    )


@contextmanager
def _given(target: Target) -> Iterator[Target]:
    yield target


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the bench like Ctrl-C does, so the embedded system is stopped too."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _count(minimum: int, **kwargs: Any) -> click.IntRange:
    return click.IntRange(min=minimum, **kwargs)


@click.command()
@click.option(
    "-n",
    "--bookings",
    type=_count(1),
    default=bench_run.BenchConfig.bookings,
    show_default=True,
    help="bookings per timed run",
)
@click.option(
    "-c",
    "--concurrency",
    type=ConcurrencyList(),
    default="32",
    show_default=True,
    help="bookings in flight at once; a comma-separated list such as 1,8,32,64 runs each",
)
@click.option(
    "--mode",
    type=click.Choice(["saga", "direct", "both"]),
    default="both",
    show_default=True,
    help="saga: CreateBooking waiting for the outcome; direct: the bench makes the saga's"
    " participant calls itself, with no log and no recovery; both: one after the other",
)
@click.option(
    "--scenario",
    "scenarios",
    type=click.Choice(bench_run.SCENARIOS),
    multiple=True,
    help="throughput (the default): N bookings at each concurrency in each mode; contention:"
    " many bookings at once for one event with few seats; recovery: bookings in flight while"
    " booking_svc is killed and restarted (embedded only). Repeatable",
)
@click.option(
    "--events",
    type=_count(1),
    default=bench_run.BenchConfig.events,
    show_default=True,
    help="events a throughput run's bookings are spread over",
)
@click.option(
    "--bookings-per-account",
    type=click.IntRange(1, RATE_LIMIT_BURST),
    default=bench_run.BenchConfig.bookings_per_account,
    show_default=True,
    help="bookings each account makes, within booking_svc's per-account burst of"
    f" {RATE_LIMIT_BURST}; a run makes as many accounts as it needs",
)
@click.option(
    "--warmup",
    type=_count(0),
    default=bench_run.BenchConfig.warmup,
    show_default=True,
    help="untimed bookings in each mode before the first throughput run",
)
@click.option(
    "--contention-bookings",
    type=_count(1),
    default=bench_run.BenchConfig.contention_bookings,
    show_default=True,
    help="bookings the contention scenario submits all at once",
)
@click.option(
    "--contention-seats",
    type=_count(1),
    default=bench_run.BenchConfig.contention_seats,
    show_default=True,
    help="seats of the contention scenario's one event",
)
@click.option(
    "--recovery-bookings",
    type=_count(1),
    default=bench_run.BenchConfig.recovery_bookings,
    show_default=True,
    help="bookings in flight when the recovery scenario kills booking_svc",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    default=bench_run.BenchConfig.timeout,
    show_default=True,
    help="seconds a booking may take to become final before it counts as PENDING",
)
@click.option(
    "--no-tracing",
    is_flag=True,
    help="start the embedded system without its OTLP trace sink (spans are then not exported)",
)
@click.option(
    "--keep-home",
    is_flag=True,
    help="keep the embedded system's temporary home (logs, database) and print where it is",
)
@_external_options
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON document")
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="write the JSON report to FILE (the summary still prints, unless --json)",
)
@click.pass_context
def bench(ctx: click.Context, /, **options: Any) -> None:
    """Measure throughput, latency and cost per booking, with progress and a summary.

    By default the bench starts the embedded system in a fresh temporary home
    on free ports, with an OTLP trace sink as its own process, and stops it
    all at the end; with --external it measures a running deployment. Each
    throughput run makes fresh accounts and events, then drives N bookings
    at the given concurrency: in saga mode through CreateBooking
    (wait_for_outcome), in direct mode by making the saga's participant calls
    itself, so that saga/direct is the cost of durability.

    It reports bookings/s, p50/p95/p99 latency to the final status, outcomes,
    CPU seconds per booking of each service process and of PostgreSQL,
    workflow log rows and database transactions per booking, peak memory of
    each process, and the spans the sink received. Figures it cannot know for
    an external system are null. Progress goes to stderr.

    Exit status: 0 when every run went as expected, 1 when a problem was found
    (bookings that did not confirm, an invariant broken, sagas left running),
    2 when the bench could not run.
    """
    options["scenarios"] = options["scenarios"] or ("throughput",)
    _check_combinations(ctx, options)
    modes = bench_run.MODES if options["mode"] == "both" else (options["mode"],)
    config = bench_run.BenchConfig(
        bookings=options["bookings"],
        concurrency=options["concurrency"],
        modes=modes,
        scenarios=tuple(s for s in bench_run.SCENARIOS if s in options["scenarios"]),
        events=options["events"],
        bookings_per_account=options["bookings_per_account"],
        warmup=options["warmup"],
        contention_bookings=options["contention_bookings"],
        contention_seats=options["contention_seats"],
        recovery_bookings=options["recovery_bookings"],
        timeout=options["timeout"],
    )
    out = sys.stderr

    def echo(message: str) -> None:
        print(message, file=out, flush=True)

    direct = "direct" in modes and "throughput" in config.scenarios
    try:
        if options["external"]:
            given = _external_target(options, direct=direct)
            target: Callable[[], AbstractContextManager[Target]] = functools.partial(_given, given)
            tracing = False
        else:
            tracing = not options["no_tracing"]
            target = functools.partial(
                embedded, tracing=tracing, keep_home=options["keep_home"], echo=echo
            )
        with _sigterm_interrupts():
            report = bench_run.run_bench(
                config,
                target=target,
                tracing=tracing,
                out=out,
                tty=out.isatty(),
            )
    except (BenchError, sagactl.AdminTokenError) as err:
        click.echo(f"bookingctl bench: {err}", err=True)
        sys.exit(2)
    except grpc.aio.AioRpcError as err:
        click.echo(f"bookingctl bench: a call failed: {err.code().name}: {err.details()}", err=True)
        if err.code() is grpc.StatusCode.UNAVAILABLE and options["external"]:
            click.echo("hint: are the services running at the given addresses?", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("bookingctl bench: interrupted; everything it started is stopped", err=True)
        sys.exit(130)
    document = json.dumps(report, indent=2)
    if options["json_out"] is not None:
        try:
            options["json_out"].write_text(document + "\n")
            echo(f"wrote the JSON report to {options['json_out']}")
        except OSError as err:
            # The runs are done: say why the file is missing, and still show what they found.
            click.echo(f"bookingctl bench: could not write {options['json_out']}: {err}", err=True)
    if options["as_json"]:
        click.echo(document)
    else:
        for line in summary_lines(report):
            click.echo(line)
    sys.exit(0 if report["ok"] else 1)
