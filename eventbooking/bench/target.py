"""What the bench measures: the embedded system it starts itself, or a running deployment.

For the embedded system the bench knows everything: the pids of the service
processes and of the PostgreSQL postmaster (for CPU and memory), the
database URL (for transaction and log-row counts), and it can kill and
restart booking_svc. Traces go to an OTLP sink the bench runs as a process
of its own. For an external deployment only what the options give is known;
the rest is reported as null.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import grpc
import psycopg

from eventbooking.bench import procfs
from eventbooking.bench.stats import PgStats
from eventbooking.local import SERVICES, LocalSystem, UpError
from eventbooking.localpg import free_port
from eventbooking.otlp_sink import SinkStats

log = logging.getLogger(__name__)

SINK_START_SECONDS = 15.0
# The database that the embedded system gives booking_svc (eventbooking/local.py).
BOOKING_DATABASE = "booking"


class BenchError(RuntimeError):
    """The bench cannot run against this system; the message says why."""


def database_url(server_url: str, database: str) -> str:
    """`server_url` with its database replaced by `database`."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def read_pg_stats(server_url: str, *, booking_database: str) -> PgStats:
    """pg_stat_database of every database, and the log's inserted rows in `booking_database`."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname IS NOT NULL AND datname NOT IN ('template0', 'template1')"
        ).fetchall()
    xacts = {str(name): int(count) for name, count in rows}
    log_rows: int | None = None
    if booking_database in xacts:
        url = database_url(server_url, booking_database)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            found = conn.execute(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'saga_step_log'"
            ).fetchone()
        log_rows = int(found[0]) if found else None
    return PgStats(xacts, log_rows, at=time.monotonic())


class SinkProcess:
    """`python -m eventbooking.otlp_sink` on a free port, counting what the services export."""

    def __init__(self, process: subprocess.Popen[bytes], stats_file: Path, endpoint: str) -> None:
        self.process = process
        self.stats_file = stats_file
        self.endpoint = endpoint

    @classmethod
    def start(cls, folder: Path) -> SinkProcess:
        stats_file = folder / "otlp_sink.json"
        log_file = folder / "otlp_sink.log"
        port = free_port()
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "eventbooking.otlp_sink",
                    "--port",
                    str(port),
                    "--stats-file",
                    str(stats_file),
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + SINK_START_SECONDS
        while not stats_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                tail = log_file.read_text(errors="replace").strip()[-2000:]
                raise BenchError(f"the OTLP sink did not start:\n{tail}")
            time.sleep(0.05)
        return cls(process, stats_file, f"http://127.0.0.1:{port}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> SinkStats | None:
        try:
            return cast("SinkStats", json.loads(self.stats_file.read_text()))
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Target:
    """A system to bench: where its services are, its secrets, and what else is known."""

    kind: str
    addresses: dict[str, str]
    admin_token: str = field(repr=False)
    service_credential: str | None = field(repr=False)
    credentials: grpc.ChannelCredentials | None = None
    pg_url: str | None = field(default=None, repr=False)
    booking_database: str = BOOKING_DATABASE
    system: LocalSystem | None = None
    sink: SinkProcess | None = None
    # The embedded system's home, and whether it is kept after the bench.
    home: Path | None = None
    keep_home: bool = False
    # What the sink had received when it stopped, after the services exported their last spans.
    final_spans: SinkStats | None = None
    _pg_warned: bool = False

    @property
    def embedded(self) -> bool:
        return self.system is not None

    @property
    def otlp_endpoint(self) -> str | None:
        return self.sink.endpoint if self.sink else None

    def cpu_roots(self) -> dict[str, procfs.CpuRoot] | None:
        """The local processes whose CPU the bench accounts for; None for an external system."""
        if self.system is None:
            return None
        roots = {run.spec.module: procfs.CpuRoot(run.process.pid) for run in self.system.running}
        postmaster = procfs.postmaster_pid(self.system.pg.data_dir)
        if postmaster is not None:
            roots["postgres"] = procfs.CpuRoot(postmaster)
        if self.sink is not None:
            roots["otlp_sink"] = procfs.CpuRoot(self.sink.pid)
        # Its own time only: the services are its children.
        roots["bench"] = procfs.CpuRoot(os.getpid(), tree=False)
        return roots

    def cpu(self) -> dict[str, float | None] | None:
        roots = self.cpu_roots()
        return None if roots is None else procfs.cpu_seconds(roots)

    def peak_rss(self) -> dict[str, Any] | None:
        """VmHWM in KiB of each local process; PostgreSQL as a tree (see procfs)."""
        roots = self.cpu_roots()
        if roots is None:
            return None
        peaks: dict[str, Any] = {}
        for name, root in roots.items():
            if name == "postgres":
                peaks[name] = procfs.tree_peak_rss_kib(root.pid)
            else:
                peaks[name] = procfs.peak_rss_kib(root.pid)
        return peaks

    def pg_stats(self) -> PgStats | None:
        """The server's counters, or None when no URL is known or the server cannot be read."""
        if self.pg_url is None:
            return None
        try:
            return read_pg_stats(self.pg_url, booking_database=self.booking_database)
        except psycopg.Error as err:
            if not self._pg_warned:
                self._pg_warned = True
                log.warning("cannot read PostgreSQL statistics: %s", str(err).splitlines()[0])
            return None

    def kill_booking(self) -> None:
        """SIGKILL booking_svc and wait for it to be gone."""
        if self.system is None:
            raise BenchError("only the embedded system's booking_svc can be killed")
        self.system.kill("booking_svc", signal.SIGKILL)

    def restart_booking(self) -> None:
        """Start booking_svc again and wait until it is healthy."""
        if self.system is None:
            raise BenchError("only the embedded system's booking_svc can be restarted")
        try:
            self.system.restart("booking_svc")
        except UpError as err:
            raise BenchError(str(err)) from None

    def span_stats(self) -> SinkStats | None:
        """What the OTLP sink received: in the end once it stopped, so far before that."""
        if self.final_spans is not None:
            return self.final_spans
        return self.sink.stats() if self.sink else None


@contextlib.contextmanager
def embedded(*, tracing: bool, keep_home: bool, echo: Callable[[str], None]) -> Iterator[Target]:
    """The embedded system in a fresh temporary home on free ports, with an OTLP sink when
    `tracing`; everything is stopped on exit, whatever happened, and the home removed
    unless `keep_home`."""
    home = Path(tempfile.mkdtemp(prefix="bookingctl-bench-"))
    sink: SinkProcess | None = None
    system: LocalSystem | None = None
    target: Target | None = None
    try:
        (home / "logs").mkdir()
        echo(f"embedded system in {home}" + (" (kept afterwards)" if keep_home else ""))
        if tracing:
            sink = SinkProcess.start(home / "logs")
            echo(f"OTLP sink (pid {sink.pid}) listening on {sink.endpoint}")
        system = LocalSystem(
            home,
            {spec.module: free_port() for spec in SERVICES},
            pg_port=free_port(),
            echo=echo,
            otlp_endpoint=sink.endpoint if sink else None,
        )
        try:
            system.start()
        except UpError as err:
            raise BenchError(f"the embedded system did not start: {err}") from None
        target = Target(
            kind="embedded",
            addresses={module: f"127.0.0.1:{port}" for module, port in system.ports.items()},
            admin_token=system.admin_token(),
            service_credential=system.service_credential_file.read_text().strip(),
            pg_url=system.pg.url("postgres"),
            system=system,
            sink=sink,
            home=home,
            keep_home=keep_home,
        )
        yield target
    finally:
        if system is not None:
            echo("stopping the embedded system")
            system.stop()
        # After the services, which export their last spans as they stop.
        if sink is not None:
            sink.stop()
            if target is not None:
                target.final_spans = sink.stats()
        if keep_home:
            echo(f"kept the bench's home with logs and data: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def external(
    *,
    addresses: dict[str, str],
    admin_token: str,
    service_credential: str | None,
    credentials: grpc.ChannelCredentials | None = None,
    pg_url: str | None = None,
    booking_database: str = BOOKING_DATABASE,
) -> Target:
    """A running deployment, known only by what the options say."""
    return Target(
        kind="external",
        addresses=addresses,
        admin_token=admin_token,
        service_credential=service_credential,
        credentials=credentials,
        pg_url=pg_url,
        booking_database=booking_database,
    )
