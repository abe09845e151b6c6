"""The embedded system that `bookingctl up` runs: PostgreSQL and one process per service.

Everything lives under one home folder (EVENTBOOKING_HOME, by default
~/.local/share/eventbooking): `pg/` the database cluster, `logs/` a log per
service, `secrets/` the admin token and the service credential (made on the
first start, readable by their owner only), `up.json` what runs where. Data
and secrets survive a restart; deleting the folder starts afresh.

Each service may also serve Prometheus metrics on its own port, and may
export traces over OTLP when an endpoint is given (see docs/observability.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventbooking.localpg import LocalPostgres, PostgresError, port_is_free
from eventbooking.tls import TlsFiles
from eventbooking.tls import channel as tls_channel

DEFAULT_PG_PORT = 54329
# What settings.secret() accepts; a shorter file is refused before any service starts.
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: its module, settings prefix, ports and database."""

    module: str
    env_prefix: str
    port: int
    # The default Prometheus port of `bookingctl up`, passed as <PREFIX>METRICS_PORT.
    metrics_port: int
    database: str | None
    grpc_service: str
    # The services it calls; each is passed as <PREFIX><NAME>_ADDRESS, e.g. BOOKING_SVC_EVENT_ADDRESS.
    # Every service but account_svc asks account_svc whose token a call carries.
    peers: tuple[str, ...] = ()


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "account_svc",
        "ACCOUNT_SVC_",
        50051,
        9551,
        "account",
        "eventbooking.account.v1.AccountService",
    ),
    ServiceSpec(
        "event_svc",
        "EVENT_SVC_",
        50052,
        9552,
        "event",
        "eventbooking.event.v1.EventService",
        peers=("account_svc",),
    ),
    ServiceSpec(
        "booking_svc",
        "BOOKING_SVC_",
        50053,
        9553,
        "booking",
        "eventbooking.booking.v1.BookingService",
        peers=("account_svc", "event_svc", "notification_svc"),
    ),
    ServiceSpec(
        "notification_svc",
        "NOTIFICATION_SVC_",
        50054,
        9554,
        None,
        "eventbooking.notification.v1.NotificationService",
        peers=("account_svc",),
    ),
)


class UpError(RuntimeError):
    """Something stops the embedded system from starting; the message says what."""


def option_name(module: str, kind: str = "port") -> str:
    """The `bookingctl up` option that sets a port of `module`: --booking-port, --booking-metrics-port."""
    return f"--{module.removesuffix('_svc')}-{kind}"


def otel_env(module: str, otlp_endpoint: str | None) -> dict[str, str]:
    """The OTEL_* variables that point `module`'s traces at `otlp_endpoint`; none without one."""
    if not otlp_endpoint:
        return {}
    env = {"OTEL_SERVICE_NAME": module, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint}
    # The OTLP gRPC exporter wants TLS unless told otherwise; a local Jaeger speaks plaintext.
    if urlsplit(otlp_endpoint).scheme == "http":
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    return env


def default_home() -> Path:
    explicit = os.environ.get("EVENTBOOKING_HOME")
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "eventbooking"


def admin_token_file(home: Path) -> Path:
    """Where the system at `home` keeps the operators' bearer token (docs/security.md)."""
    return home / "secrets" / "admin_token"


def service_credential_file(home: Path) -> Path:
    """Where the system at `home` keeps the credential its services present to each other."""
    return home / "secrets" / "service_credential"


def ensure_secret(path: Path) -> bool:
    """Create `path` with a fresh random secret unless it exists; True when it was created.

    The folder is made 0700 and the file 0600 from the start (never widened
    later), and an existing file is never overwritten, so a restart keeps
    the tokens that clients already hold.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return True


def read_secret(path: Path) -> str:
    """The secret in `path`; UpError naming the file (never its content) when it is unusable."""
    try:
        value = path.read_text().strip()
    except OSError as err:
        raise UpError(f"cannot read {path}: {err.strerror or err}") from None
    if len(value) < MIN_SECRET_LENGTH:
        raise UpError(
            f"{path} holds fewer than {MIN_SECRET_LENGTH} characters; delete it and a new"
            " secret is made on the next start"
        )
    return value


def wait_healthy(
    port: int,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    tls: TlsFiles | None = None,
) -> bool:
    """Poll the standard health service on `port` until SERVING; False on timeout or death."""
    deadline = time.monotonic() + timeout
    address = f"127.0.0.1:{port}"
    channel = tls_channel(address, tls.credentials() if tls else None)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and alive():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False


@dataclass
class Running:
    spec: ServiceSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    # 0 when the service serves no metrics.
    metrics_port: int = 0
    # Whether it serves TLS, so health checks must too.
    tls: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalSystem:
    """Start, watch and stop the embedded system; `echo` reports progress to the user.

    `metrics_ports` maps a module to its Prometheus port; a module left out
    gets 0 (no metrics), so systems started side by side do not collide.
    `otlp_endpoint`, when given, is where every service exports its traces.
    `tls` is how the health checks reach the services that `env` starts with
    a TLS certificate (<PREFIX>TLS_CERT_FILE); the others are checked in
    plaintext.
    """

    home: Path
    ports: dict[str, int]
    pg_port: int = DEFAULT_PG_PORT
    echo: Callable[[str], None] = print
    health_timeout: float = 60.0
    # Extra environment per service module, on top of what `start` sets.
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    otlp_endpoint: str | None = None
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        self.home = self.home.absolute()
        self.pg = LocalPostgres(self.home / "pg", port=self.pg_port)
        self.running: list[Running] = []
        self.urls: dict[str, str] = {}
        self._lock: IO[str] | None = None

    @property
    def state_file(self) -> Path:
        return self.home / "up.json"

    @property
    def admin_token_file(self) -> Path:
        """The operators' bearer token: `bookingctl saga` reads it from here by default."""
        return admin_token_file(self.home)

    @property
    def service_credential_file(self) -> Path:
        """The bearer credential the services present to each other on participant calls."""
        return service_credential_file(self.home)

    def admin_token(self) -> str:
        """The admin token of this system, for tests and tools that act as the operator."""
        return read_secret(self.admin_token_file)

    def _ensure_secrets(self) -> None:
        files = (self.admin_token_file, self.service_credential_file)
        made = [path.name for path in files if ensure_secret(path)]
        # A file left empty or cut short would stop every service; say so once, here.
        for path in files:
            read_secret(path)
        if made:
            self.echo(f"created {' and '.join(made)} in {self.admin_token_file.parent}")

    def _take_lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lock = (self.home / "up.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            pid = self._recorded().get("pid", "?")
            raise UpError(
                f"bookingctl up is already running (pid {pid}) with home {self.home}; "
                "stop it with Ctrl-C in its terminal first"
            ) from None
        self._lock = lock

    def _recorded(self) -> dict[str, Any]:
        try:
            recorded: dict[str, Any] = json.loads(self.state_file.read_text())
            return recorded
        except (OSError, ValueError):
            return {}

    def _reap_leftovers(self) -> None:
        """Stop services left behind by an earlier `up` that was killed outright."""
        for entry in self._recorded().get("services", []):
            pid = entry.get("pid")
            cmdline = Path(f"/proc/{pid}/cmdline")
            with contextlib.suppress(OSError):
                if entry["module"].encode() in cmdline.read_bytes():
                    os.kill(pid, signal.SIGTERM)
                    self.echo(
                        f"stopped {entry['module']} (pid {pid}) left over from an earlier run"
                    )
                    for _ in range(50):
                        if not cmdline.exists():
                            break
                        time.sleep(0.1)

    def metrics_port(self, module: str) -> int:
        """The Prometheus port `module` serves on; 0 for none."""
        return self.metrics_ports.get(module, 0)

    def _check_ports(self) -> None:
        wanted = [
            (self.ports[spec.module], spec.module, option_name(spec.module)) for spec in SERVICES
        ]
        wanted += [
            (port, f"{spec.module} metrics", option_name(spec.module, "metrics-port"))
            for spec in SERVICES
            if (port := self.metrics_port(spec.module))
        ]
        taken: dict[int, str] = {}
        for port, user, option in wanted:
            if port in taken:
                raise UpError(
                    f"port {port} is given to both {taken[port]} and {user}; pick another with {option}"
                )
            taken[port] = user
            if not port_is_free(port, "0.0.0.0"):
                raise UpError(
                    f"port {port} for {user} is in use; free it or pick another with {option}"
                )
        if not self.pg.running() and not port_is_free(self.pg_port):
            raise UpError(
                f"port {self.pg_port} for PostgreSQL is in use; pick another with --pg-port"
            )

    def start(self) -> None:
        """Bring everything up and wait until every service reports SERVING."""
        self._take_lock()
        self._reap_leftovers()
        self._check_ports()
        self._ensure_secrets()
        first_run = not self.pg.initialized()
        self.echo("initialising PostgreSQL" if first_run else "starting PostgreSQL")
        try:
            self.pg.start()
            self.urls = {
                spec.module: self.pg.create_database(spec.database)
                for spec in SERVICES
                if spec.database
            }
        except PostgresError as err:
            raise UpError(str(err)) from None
        (self.home / "logs").mkdir(exist_ok=True)
        if self.otlp_endpoint:
            self.echo(f"exporting traces to {self.otlp_endpoint}")
        for spec in SERVICES:
            self.running.append(self._spawn(spec))
            self.echo(f"starting {spec.module} on port {self.ports[spec.module]}")
        self._record()
        for run in self.running:
            self._wait_healthy(run)

    def service_env(self, spec: ServiceSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a service process of this system gets."""
        prefix = spec.env_prefix
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            f"{prefix}PORT": str(self.ports[spec.module]),
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}METRICS_PORT": str(self.metrics_port(spec.module)),
            # Paths only: the secrets stay out of every process's environment.
            f"{prefix}ADMIN_TOKEN_FILE": str(self.admin_token_file),
            f"{prefix}SERVICE_CREDENTIAL_FILE": str(self.service_credential_file),
            **otel_env(spec.module, self.otlp_endpoint),
        }
        if spec.module in self.urls:
            env[f"{prefix}DATABASE_URL"] = self.urls[spec.module]
        for peer in spec.peers:
            name = peer.removesuffix("_svc").upper()
            env[f"{prefix}{name}_ADDRESS"] = f"127.0.0.1:{self.ports[peer]}"
        env.update(self.env.get(spec.module, {}))
        env.update(extra or {})
        return env

    def _spawn(self, spec: ServiceSpec, extra: dict[str, str] | None = None) -> Running:
        log_path = self.home / "logs" / f"{spec.module}.log"
        env = self.service_env(spec, extra)
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", spec.module],
                env=env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                # Ctrl-C goes to this supervisor alone, which stops services before the database.
                start_new_session=True,
            )
        return Running(
            spec,
            self.ports[spec.module],
            process,
            log_path,
            self.metrics_port(spec.module),
            tls=bool(env.get(f"{spec.env_prefix}TLS_CERT_FILE")),
        )

    def _wait_healthy(self, run: Running) -> None:
        if run.tls and self.tls is None:
            raise UpError(
                f"{run.spec.module} serves TLS ({run.spec.env_prefix}TLS_CERT_FILE is set), and"
                " there is no CA to check its health with: give `bookingctl up` --tls-ca-file"
                " (or BOOKINGCTL_TLS_CA_FILE), or unset the service's TLS_* variables"
            )
        tls = self.tls if run.tls else None
        if not wait_healthy(run.port, timeout=self.health_timeout, alive=run.alive, tls=tls):
            raise UpError(f"{run.spec.module} did not become healthy:\n{self._tail(run.log_path)}")

    def service(self, module: str) -> Running:
        """The running process of `module`."""
        return next(run for run in self.running if run.spec.module == module)

    def kill(self, module: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send `sig` to a service and wait for it to end; returns its exit code."""
        run = self.service(module)
        if run.alive():
            run.process.send_signal(sig)
        return run.process.wait(timeout=30)

    def restart(
        self, module: str, *, env: dict[str, str] | None = None, wait: bool = True
    ) -> Running:
        """Start `module` again (after `kill`, or after it died), with extra `env` if given."""
        old = self.service(module)
        if old.alive():
            raise UpError(f"{module} is still running; kill it first")
        run = self._spawn(old.spec, env)
        self.running[self.running.index(old)] = run
        self._record()
        if wait:
            self._wait_healthy(run)
        return run

    def stop_postgres(self, *, mode: str = "immediate") -> None:
        """Stop the database under the running services; `immediate` is as abrupt as a crash
        (no checkpoint, every connection cut), so the next start runs crash recovery."""
        try:
            self.pg.stop(mode=mode)
        except PostgresError as err:
            raise UpError(str(err)) from None

    def start_postgres(self) -> None:
        """Start the database again after `stop_postgres`; the services reconnect on their own."""
        try:
            self.pg.start()
        except PostgresError as err:
            raise UpError(str(err)) from None

    def _record(self) -> None:
        state = {
            "pid": os.getpid(),
            "postgres": {"port": self.pg_port, "data": str(self.pg.data_dir)},
            "otlp_endpoint": self.otlp_endpoint,
            "admin_token_file": str(self.admin_token_file),
            "services": [
                {
                    "module": r.spec.module,
                    "port": r.port,
                    "metrics_port": r.metrics_port,
                    "pid": r.process.pid,
                    "log": str(r.log_path),
                }
                for r in self.running
            ],
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        text = path.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])

    def summary(self) -> list[tuple[str, str, str]]:
        """What runs where: name, address and a detail (data folder; metrics port and log)."""
        rows = [("PostgreSQL", f"127.0.0.1:{self.pg_port}", f"data {self.pg.data_dir}")]
        rows += [
            (
                r.spec.module,
                f"localhost:{r.port}",
                f"metrics {f':{r.metrics_port}' if r.metrics_port else 'off'}  log {r.log_path}",
            )
            for r in self.running
        ]
        return rows

    def wait(self) -> str:
        """Block until Ctrl-C, SIGTERM or a service exiting; return why."""
        reason: list[str] = []

        def on_signal(signum: int, _frame: object) -> None:
            reason.append(signal.Signals(signum).name)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        while not reason:
            for run in self.running:
                if not run.alive():
                    return f"{run.spec.module} exited with code {run.process.returncode}:\n{self._tail(run.log_path)}"
            time.sleep(0.2)
        return reason[0]

    def stop(self) -> None:
        """Stop the services (SIGTERM, then SIGKILL after a grace period), then PostgreSQL."""
        for run in self.running:
            if run.process.poll() is None:
                run.process.terminate()
        deadline = time.monotonic() + 15
        for run in self.running:
            try:
                run.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
        self.running.clear()
        with contextlib.suppress(PostgresError):
            self.pg.stop()
        self.state_file.unlink(missing_ok=True)
        if self._lock:
            self._lock.close()
            self._lock = None


@contextlib.contextmanager
def local_system(system: LocalSystem) -> Iterator[LocalSystem]:
    """Started on entry, stopped on exit whatever happened in between."""
    try:
        system.start()
        yield system
    finally:
        system.stop()
