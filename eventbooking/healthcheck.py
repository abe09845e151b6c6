"""python -m eventbooking.healthcheck <host:port>: is a service SERVING? For container probes.

Calls the standard `grpc.health.v1.Health/Check` once and exits 0 when the
answer is SERVING, 1 otherwise, printing one line either way. A service
reports SERVING only once its migrations ran, so a healthy container is a
migrated one. Docker Compose healthchecks run it inside each container;
it needs no token (health is PUBLIC) and speaks TLS when given a CA.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventbooking.tls import TlsFiles
from eventbooking.tls import channel as tls_channel


@dataclass(frozen=True)
class Result:
    """What one check found: whether it is healthy, and the line that says so."""

    healthy: bool
    message: str


def check(
    address: str, *, service: str = "", tls: TlsFiles | None = None, timeout: float = 3.0
) -> Result:
    """Ask `address` for the health of `service` ("" is the server as a whole)."""
    target = f"{address} ({service})" if service else address
    try:
        channel = tls_channel(address, tls.credentials() if tls else None)
    except OSError as err:
        return Result(False, f"UNHEALTHY {target}: cannot read TLS files: {err.strerror or err}")
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            if not isinstance(err, grpc.Call):
                return Result(False, f"UNHEALTHY {target}: {err}")
            details = (err.details() or "").splitlines()
            reason = f"{err.code().name}: {details[0]}" if details else err.code().name
            return Result(False, f"UNHEALTHY {target}: {reason}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
    return Result(healthy, f"{'HEALTHY' if healthy else 'UNHEALTHY'} {target}: {status}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m eventbooking.healthcheck",
        description="Exit 0 when the gRPC server at ADDRESS reports SERVING, 1 otherwise.",
    )
    parser.add_argument("address", help="host:port of the server, e.g. localhost:50051")
    parser.add_argument(
        "--service", default="", help="the service to ask about; empty means the whole server"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    parser.add_argument("--tls-ca-file", type=Path, help="PEM CA: speak TLS and verify the server")
    parser.add_argument("--tls-cert-file", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key-file", type=Path, help="PEM key of that certificate")
    args = parser.parse_args(argv)
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        parser.error("--tls-cert-file and --tls-key-file go together")
    if args.tls_cert_file is not None and args.tls_ca_file is None:
        parser.error("--tls-cert-file needs --tls-ca-file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one check as the command line says; the exit code is 0 only when SERVING."""
    args = parse_args(argv)
    tls = (
        TlsFiles(args.tls_ca_file, args.tls_cert_file, args.tls_key_file)
        if args.tls_ca_file is not None
        else None
    )
    result = check(args.address, service=args.service, tls=tls, timeout=args.timeout)
    print(result.message, file=sys.stdout if result.healthy else sys.stderr)
    return 0 if result.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
