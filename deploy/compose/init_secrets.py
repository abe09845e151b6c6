"""Make the Compose deployment's secrets once: python init_secrets.py DIRECTORY [--uid N --gid N].

docker-compose.yml runs this in its one-shot `secrets-init` service, as
root, on the `secrets` volume. Each secret (the admin token, the service
credential and a password per database) is created with a fresh random
value only if its file is missing, and never overwritten: clients hold
the tokens, and each PostgreSQL volume was initialised with its password.
Every run then gives the files to the services' user, mode 0400. It prints
file names, never values, and fails naming a file that is too short to use.

The standard library only, so that it runs in any Python 3.11 image.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

SECRETS = (
    "admin_token",
    "service_credential",
    "account_db_password",
    "event_db_password",
    "booking_db_password",
)
# What the services accept for the admin token and the service credential.
MIN_LENGTH = 16
SERVICE_UID = 10001


def ensure(path: Path) -> bool:
    """Write a random secret to `path` unless it exists; True when it was created.

    The value goes to a temporary file first and is renamed into place, so
    a run cut short never leaves a half-written secret behind.
    """
    if path.exists():
        return False
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as out:
        # URL-safe, so that a password is also safe inside a database URL.
        out.write(secrets.token_urlsafe(32) + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.rename(path)
    return True


def init(directory: Path, *, uid: int, gid: int) -> list[str]:
    """Create what is missing in `directory` and fix ownership; the lines to print."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in SECRETS:
        path = directory / name
        created = ensure(path)
        if len(path.read_text().strip()) < MIN_LENGTH:
            raise ValueError(
                f"{path} holds fewer than {MIN_LENGTH} characters; delete it to get a new one"
            )
        os.chown(path, uid, gid)
        path.chmod(0o400)
        lines.append(f"{'created' if created else 'kept'} {path}")
    os.chown(directory, uid, gid)
    directory.chmod(0o700)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Create the deployment's secrets in DIRECTORY unless they exist."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--uid", type=int, default=SERVICE_UID, help="owner of the files")
    parser.add_argument("--gid", type=int, default=SERVICE_UID, help="group of the files")
    args = parser.parse_args(argv)
    try:
        lines = init(args.directory, uid=args.uid, gid=args.gid)
    except (OSError, ValueError) as err:
        print(f"secrets-init: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
