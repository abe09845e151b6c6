"""A PostgreSQL server that the project starts and manages itself.

The binaries come from EVENTBOOKING_PG_BIN, else from the `pgserver` wheel
(a PostgreSQL build on PyPI, so a machine with only Python gets one), else
from a system install under /usr/lib/postgresql. PostgreSQL refuses to run
as root, so under root the data directory belongs to a dedicated system
user and every server command runs as that user.

The server listens on 127.0.0.1 only, with password authentication; the
password is generated at initdb and kept beside the data directory, readable
by its owner alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SYSTEM_USER = "eventbooking"
SUPERUSER = "eventbooking"


class PostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


def find_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    explicit = os.environ.get("EVENTBOOKING_PG_BIN")
    candidates = [Path(explicit)] if explicit else []
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise PostgresError(
        "no PostgreSQL binaries found: install the project (it brings the pgserver wheel), "
        "or set EVENTBOOKING_PG_BIN to a folder with initdb and pg_ctl"
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on `port`; connections lingering in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR too, so only a real listener blocks them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Where free_port looks: below the kernel's ephemeral range, whose ports any outgoing
# connection may take between the moment a port is chosen and the moment its server binds
# it (services open their database pools at start, dozens of connections at once).
_LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _first_ephemeral_port() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A TCP port nobody listens on right now, and that no outgoing connection will take."""
    below = _first_ephemeral_port()
    if below - _LOWEST_PORT < 1000:
        # An ephemeral range that starts too low to leave room: let the kernel choose.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            chosen: int = sock.getsockname()[1]
            return chosen
    for _ in range(200):
        port = _LOWEST_PORT + secrets.randbelow(below - _LOWEST_PORT)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free TCP port between {_LOWEST_PORT} and {below}")


def _ensure_system_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


def _allow_traversal(path: Path) -> None:
    """Let other users pass through (not list) every folder above `path`."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster under `root`: `root/data`, `root/postgres.log`, `root/password`."""

    root: Path
    port: int
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.root = self.root.absolute()
        self.bin_dir = find_bin_dir()
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.password_file = self.root / "password"
        self._run_as = _ensure_system_user() if os.geteuid() == 0 else None

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = self._run_as.pw_uid if self._run_as else None
        group = self._run_as.pw_gid if self._run_as else None
        result = subprocess.run(
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
            # Away from the terminal's process group, so Ctrl-C reaches the supervisor only.
            start_new_session=True,
            cwd=self.root,
        )
        return result

    def _owned(self, path: Path) -> None:
        if self._run_as:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        """A postgresql:// URL for `database` on this server."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{database}"
        )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster unless it exists."""
        if self.initialized():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            _allow_traversal(self.root)
            _allow_traversal(self.bin_dir)
        self._owned(self.root)
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(password + "\n")
        self._owned(pwfile)
        try:
            result = self._pg(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink()
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise PostgresError(f"initdb failed:\n{result.stderr.strip()}")

    def running(self) -> bool:
        return (
            self.initialized()
            and self._pg("pg_ctl", "status", "-D", str(self.data_dir)).returncode == 0
        )

    def start(self, *, timeout: int = 60) -> None:
        """Start the server (initialising it first if needed); a running one is left as is."""
        self.init()
        if self.running():
            return
        if not port_is_free(self.port, self.host):
            raise PostgresError(f"cannot start PostgreSQL: port {self.port} is in use")
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories='' "
            "-c max_connections=300 -c log_min_messages=warning"
        )
        if not self.log_file.exists():
            self.log_file.touch()
            self._owned(self.log_file)
        result = self._pg(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(timeout),
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-10:])
            raise PostgresError(f"PostgreSQL did not start:\n{result.stderr.strip()}\n{tail}")

    def stop(self, *, mode: str = "fast", timeout: int = 60) -> None:
        """Stop the server if it runs; `mode` is pg_ctl's (smart, fast, immediate)."""
        if not self.running():
            return
        result = self._pg(
            "pg_ctl",
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(timeout),
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise PostgresError(f"PostgreSQL did not stop:\n{result.stderr.strip()}")

    def create_database(self, name: str) -> str:
        """Create `name` unless it exists; return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
