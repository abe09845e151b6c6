"""bookingctl: the one command line of the event booking system."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from eventbooking.local import DEFAULT_PG_PORT, SERVICES, LocalSystem, UpError, default_home


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run, inspect and test the event booking system."""


def _port_options(fn: click.decorators.FC) -> click.decorators.FC:
    for spec in reversed(SERVICES):
        name = spec.module.removesuffix("_svc")
        fn = click.option(
            f"--{name}-port",
            type=click.IntRange(1, 65535),
            default=spec.port,
            show_default=True,
            help=f"port of {spec.module}",
        )(fn)
    return fn


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
@click.option("--json", "as_json", is_flag=True, help="print what runs where as one JSON line")
def up(home: Path | None, pg_port: int, as_json: bool, **ports: int) -> None:
    """Start PostgreSQL and every service in the foreground; Ctrl-C stops them all."""
    by_module = {
        spec.module: ports[spec.module.removesuffix("_svc") + "_port"] for spec in SERVICES
    }
    echo = (lambda _msg: None) if as_json else click.echo
    system = LocalSystem(home or default_home(), by_module, pg_port=pg_port, echo=echo)
    try:
        system.start()
    except UpError as err:
        system.stop()
        click.echo(f"bookingctl up: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        system.stop()
        sys.exit(130)
    rows = system.summary()
    if as_json:
        click.echo(
            json.dumps({name: {"address": addr, "detail": detail} for name, addr, detail in rows})
        )
    else:
        click.echo("")
        for name, addr, detail in rows:
            click.echo(f"  {name:<18} {addr:<18} {detail}")
        click.echo("")
        click.echo(f"  try:  grpcurl -plaintext localhost:{by_module['account_svc']} list")
        click.echo("  stop: Ctrl-C")
    reason = system.wait()
    click.echo(f"stopping ({reason})")
    system.stop()
    click.echo("stopped")
    if reason not in ("SIGINT", "SIGTERM"):
        sys.exit(1)
