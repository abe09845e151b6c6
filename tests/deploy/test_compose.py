"""Static checks of docker-compose.yml, the Dockerfile and .dockerignore; no Docker needed.

What each service must be given is computed from its settings class (see
`support.ServiceContract`), so a new required setting, secret or peer
fails here until the compose file provides it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import setuptools  # type: ignore[import-untyped]
import yaml

from eventbooking.settings import load
from tests.deploy.support import ROOT, contracts, interpolate, looks_secret

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INIT_SECRETS = ROOT / "deploy" / "compose" / "init_secrets.py"
CONTRACTS = contracts()
MODULES = sorted(CONTRACTS)
# Services the others may start without waiting for: traces are optional.
OPTIONAL = {"jaeger"}
SERVICE_UID = 10001

Service = dict[str, Any]


def load_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return dict(interpolate(loaded))


COMPOSE_FILE = load_compose()
SERVICES: dict[str, Service] = COMPOSE_FILE["services"]


def command(service: Service) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def environment(service: Service) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {key: str(item) for key, item in value.items()}


def ports(service: Service) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port."""
    found = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.append((entry.get("host_ip", ""), int(entry["published"]), int(entry["target"])))
            continue
        *host, published, target = str(entry).split(":")
        found.append((":".join(host), int(published), int(target.split("/")[0])))
    return found


def mounts(service: Service) -> list[tuple[str, PurePosixPath, bool]]:
    """(source, target in the container, read-only) of each volume and bind mount."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            source, target = entry.get("source", ""), entry["target"]
            read_only = bool(entry.get("read_only", False))
        else:
            source, target, *mode = str(entry).split(":")
            read_only = "ro" in (mode[0].split(",") if mode else [])
        found.append((source, PurePosixPath(target), read_only))
    for target in service.get("tmpfs", []):
        found.append(("tmpfs", PurePosixPath(str(target).split(":")[0]), False))
    return found


def depends_on(service: Service) -> dict[str, str]:
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def runs(module: str) -> tuple[str, Service]:
    """The one compose service whose command is `python -m <module>`."""
    found = [
        (name, service)
        for name, service in SERVICES.items()
        if command(service)[-3:] == ["python", "-m", module]
    ]
    assert len(found) == 1, f"{module} should run in exactly one compose service, not {found}"
    return found[0]


def one_shot(name: str) -> bool:
    """A job that runs to completion (the secrets), so it has no healthcheck to wait for."""
    dependants = [depends_on(s).get(name) for s in SERVICES.values() if name in depends_on(s)]
    return str(SERVICES[name].get("restart", "no")) == "no" and all(
        condition == "service_completed_successfully" for condition in dependants
    )


def named_volume(source: str) -> bool:
    return source in (COMPOSE_FILE.get("volumes") or {})


def test_the_file_is_a_compose_spec_file() -> None:
    known = {"services", "volumes", "networks", "secrets", "configs", "name"}
    unknown = {key for key in COMPOSE_FILE if key not in known and not key.startswith("x-")}
    assert not unknown, f"not compose keys: {unknown}"
    # `version` is obsolete in the compose spec; Docker Compose v2 warns about it.
    assert "version" not in COMPOSE_FILE
    for name, service in SERVICES.items():
        assert isinstance(service, dict), name
        assert not any(key.startswith("<<") for key in service), f"{name}: unresolved merge key"


def test_every_service_has_an_image_or_build_and_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), f"{name} has no image or build"
        if one_shot(name):
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert not service["healthcheck"].get("disable"), f"{name} disables its healthcheck"


def test_the_services_share_one_image_built_from_the_dockerfile() -> None:
    images = {runs(module)[1]["image"] for module in MODULES}
    assert len(images) == 1, images
    for module in MODULES:
        build = runs(module)[1].get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        dockerfile = ROOT / build["context"] / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == DOCKERFILE, module


@pytest.mark.parametrize("module", MODULES)
def test_app_service_publishes_its_ports_and_checks_its_health_there(module: str) -> None:
    contract = CONTRACTS[module]
    name, service = runs(module)
    env = environment(service)
    port = int(env.get(contract.variable("port"), contract.port))
    metrics_port = int(env.get(contract.variable("metrics_port"), contract.metrics_port))
    published = {target: published for _, published, target in ports(service)}
    assert published.get(port) == contract.port, f"{name} should publish {contract.port}"
    assert published.get(metrics_port) == contract.metrics_port
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: the image's PATH finds python, no shell needed"
    assert test[1:4] == ["python", "-m", "eventbooking.healthcheck"]
    assert urlsplit(f"//{test[4]}").port == port, f"{name}'s healthcheck checks {test[4]}"


@pytest.mark.parametrize("module", MODULES)
def test_app_service_environment_provides_what_its_settings_require(module: str) -> None:
    contract = CONTRACTS[module]
    name, service = runs(module)
    env = environment(service)
    missing = contract.required_variables() - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"
    prefixed = {key for key in env if key.startswith(contract.prefix)}
    unknown = prefixed - contract.known_variables()
    assert not unknown, f"{name} sets variables its settings do not read: {sorted(unknown)}"
    foreign = {key for key in set(env) - prefixed if not key.startswith("OTEL_")}
    assert not foreign, f"{name} sets variables no one reads: {sorted(foreign)}"
    assert env.get(contract.variable("log_format")) == "json"
    assert env.get("OTEL_SERVICE_NAME") == module


@pytest.mark.parametrize("module", MODULES)
def test_app_service_environment_is_accepted_by_its_settings(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = CONTRACTS[module]
    env = environment(runs(module)[1])
    for key in list(os.environ):
        if key.startswith(contract.prefix):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.endswith("_FILE"):
            # The secrets volume exists only in Docker; stand in files of the same names.
            local = tmp_path / PurePosixPath(value).name
            local.write_text(secrets.token_urlsafe(32) + "\n")
            value = str(local)
        monkeypatch.setenv(key, value)
    settings = load(contract.settings)
    assert settings.service_name == module
    assert settings.port == contract.port


@pytest.mark.parametrize("module", MODULES)
def test_peer_addresses_name_the_peers_compose_service_and_port(module: str) -> None:
    contract = CONTRACTS[module]
    name, service = runs(module)
    env = environment(service)
    for field, peer in contract.peers().items():
        address = urlsplit(f"//{env[contract.variable(field)]}")
        peer_name, _ = runs(peer)
        assert address.hostname == peer_name, f"{name} reaches {peer} at {address.netloc}"
        assert address.port == CONTRACTS[peer].port
        assert depends_on(service).get(peer_name) == "service_healthy"


@pytest.mark.parametrize("module", [m for m in MODULES if CONTRACTS[m].owns_database])
def test_database_url_names_its_own_database_container_without_a_password(module: str) -> None:
    contract = CONTRACTS[module]
    name, service = runs(module)
    env = environment(service)
    url = urlsplit(env[contract.variable("database_url")])
    assert url.scheme.startswith("postgresql")
    assert url.password is None, f"{name}'s DATABASE_URL holds a password"
    assert url.hostname in SERVICES, f"{url.hostname} is not a compose service"
    database = SERVICES[url.hostname]
    db_env = environment(database)
    assert str(database["image"]).startswith("postgres:15")
    assert url.username == db_env["POSTGRES_USER"]
    assert url.path.lstrip("/") == db_env["POSTGRES_DB"]
    assert (url.port or 5432) == 5432
    password_file = env[contract.variable("database_password_file")]
    assert password_file == db_env["POSTGRES_PASSWORD_FILE"]
    assert depends_on(service).get(url.hostname) == "service_healthy"
    others = [m for m in MODULES if m != module and CONTRACTS[m].owns_database]
    for other in others:
        other_env = environment(runs(other)[1])
        assert urlsplit(other_env[CONTRACTS[other].variable("database_url")]).hostname != (
            url.hostname
        ), f"{module} and {other} share a database container"


def test_every_file_setting_points_into_a_mounted_volume() -> None:
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if not key.endswith("_FILE"):
                continue
            path = PurePosixPath(value)
            holders = [
                (len(target.parts), source, read_only)
                for source, target, read_only in mounts(service)
                if path.is_relative_to(target)
            ]
            assert holders, f"{name}: {key}={value} is in no mounted volume"
            _, source, read_only = max(holders)
            assert named_volume(source), f"{name}: {key} lies in {source}, not a named volume"
            assert read_only, f"{name} should mount {source} read-only"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_waits_for_health_or_completion(name: str) -> None:
    for dependency, condition in depends_on(SERVICES[name]).items():
        assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        if one_shot(dependency):
            assert condition == "service_completed_successfully"
        elif dependency in OPTIONAL:
            assert condition in {"service_started", "service_healthy"}
        else:
            assert condition == "service_healthy", f"{name} -> {dependency}: {condition}"
            assert SERVICES[dependency].get("healthcheck"), f"{dependency} has no healthcheck"
    reads_secrets = any(
        key.endswith("_FILE") and PurePosixPath(value).is_relative_to(secrets_dir())
        for key, value in environment(SERVICES[name]).items()
    )
    if reads_secrets:
        assert depends_on(SERVICES[name]).get("secrets-init") == (
            "service_completed_successfully"
        ), f"{name} reads secrets before they exist"


def test_databases_have_their_own_volume_and_a_readiness_healthcheck() -> None:
    databases = {
        n: s for n, s in SERVICES.items() if str(s.get("image", "")).startswith("postgres")
    }
    owners = [m for m in MODULES if CONTRACTS[m].owns_database]
    assert len(databases) == len(owners)
    data_volumes = []
    for name, service in databases.items():
        data = [s for s, t, _ in mounts(service) if t == PurePosixPath("/var/lib/postgresql/data")]
        assert data, f"{name} keeps its data in no volume"
        assert named_volume(data[0]), f"{name} keeps its data in {data[0]}, not a named volume"
        data_volumes.append(data[0])
        test = service["healthcheck"]["test"]
        assert "pg_isready" in " ".join(test)
        env = environment(service)
        assert "POSTGRES_PASSWORD" not in env
        assert env["POSTGRES_PASSWORD_FILE"]
        assert depends_on(service).get("secrets-init") == "service_completed_successfully"
        assert service.get("restart") == "unless-stopped"
    assert len(set(data_volumes)) == len(data_volumes), "databases share a volume"


def test_no_secret_is_written_inline() -> None:
    for name, service in SERVICES.items():
        for key in environment(service):
            assert not looks_secret(key), f"{name} sets {key} inline; pass a *_FILE instead"
    # Nor a password in any URL, anywhere in the file.
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", COMPOSE.read_text())


def secrets_dir() -> PurePosixPath:
    """Where secrets-init writes the secrets: the one volume it mounts writable."""
    targets = [t for s, t, ro in mounts(SERVICES["secrets-init"]) if named_volume(s) and not ro]
    assert len(targets) == 1, targets
    return targets[0]


def init_secrets_names() -> tuple[str, ...]:
    """The files deploy/compose/init_secrets.py makes."""
    spec = importlib.util.spec_from_file_location("init_secrets", INIT_SECRETS)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    names: tuple[str, ...] = script.SECRETS
    return names


def test_secrets_init_makes_every_secret_the_services_read() -> None:
    init = SERVICES["secrets-init"]
    assert one_shot("secrets-init")
    script_mounts = [(s, t) for s, t, _ in mounts(init) if s.startswith("./")]
    assert [(ROOT / s).resolve() for s, _ in script_mounts] == [INIT_SECRETS]
    assert command(init)[:2] == ["python", str(script_mounts[0][1])]
    assert str(secrets_dir()) in command(init)
    made = set(init_secrets_names())
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            path = PurePosixPath(value)
            if key.endswith("_FILE") and path.is_relative_to(secrets_dir()):
                assert path.parent == secrets_dir(), f"{name}: {key}"
                assert path.name in made, f"{name}: {key} names a file secrets-init never makes"


def test_init_secrets_creates_once_and_keeps_what_exists(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    uid, gid = os.getuid(), os.getgid()
    run = [sys.executable, str(INIT_SECRETS), str(directory), f"--uid={uid}", f"--gid={gid}"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True)
    values = {}
    for name in init_secrets_names():
        path = directory / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o400
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)
        values[name] = path.read_text()
        assert len(values[name].strip()) >= 16
        assert values[name] not in first.stdout
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert len(set(values.values())) == len(values)

    second = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True)
    assert "created" not in second.stdout
    assert {name: (directory / name).read_text() for name in values} == values

    short = directory / "admin_token"
    short.chmod(0o600)
    short.write_text("too-short\n")
    third = subprocess.run(run, capture_output=True, text=True, timeout=30)
    assert third.returncode == 1
    assert "admin_token" in third.stderr
    assert "too-short" not in third.stderr


def test_app_services_run_hardened_and_restart() -> None:
    for module in MODULES:
        name, service = runs(module)
        assert service.get("restart") == "unless-stopped", name
        assert service.get("read_only") is True, name
        assert PurePosixPath("/tmp") in [t for s, t, _ in mounts(service) if s == "tmpfs"]
        # The image's own non-root user, never overridden here.
        assert "user" not in service, name
        assert "ALL" in service.get("cap_drop", []), name


def test_booking_runs_one_replica_while_its_ports_are_fixed() -> None:
    _, service = runs("booking_svc")
    replicas = (service.get("deploy") or {}).get("replicas", 1)
    assert replicas == 1 or not service.get("ports")


def test_jaeger_takes_otlp_and_publishes_its_ui() -> None:
    jaeger = SERVICES["jaeger"]
    assert str(jaeger["image"]).startswith("jaegertracing/all-in-one:")
    assert environment(jaeger).get("COLLECTOR_OTLP_ENABLED") == "true"
    targets = {target for _, _, target in ports(jaeger)}
    assert 16686 in targets
    for module in MODULES:
        endpoint = urlsplit(environment(runs(module)[1])["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.hostname, endpoint.port) == ("jaeger", 4317), module


def test_published_ports_are_distinct_and_local_by_default() -> None:
    published = [(n, p) for n, s in SERVICES.items() for _, p, _ in ports(s)]
    assert len({p for _, p in published}) == len(published), published
    for name, service in SERVICES.items():
        for host, port, _ in ports(service):
            assert host == "127.0.0.1", f"{name} publishes {port} on {host or 'every interface'}"


# The Dockerfile and .dockerignore.


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Each stage as a list of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


STAGES = dockerfile_stages()
FINAL = STAGES[-1]


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def test_dockerfile_is_multi_stage_with_a_slim_final_stage() -> None:
    assert len(STAGES) >= 2
    assert instructions(STAGES[0], "FROM")[0].split()[0] == "python:3.11-slim"
    assert instructions(FINAL, "FROM")[0].split()[0] == "python:3.11-slim"


def test_final_stage_gets_only_the_venv_and_no_build_tools() -> None:
    copies = instructions(FINAL, "COPY") + instructions(FINAL, "ADD")
    assert copies
    for copy in copies:
        parts = copy.split()
        assert parts[0].startswith("--from="), f"the final stage copies {copy} from the context"
        assert parts[1:] == ["/opt/venv", "/opt/venv"], copy
    text = " ".join(arguments for _, arguments in FINAL).lower()
    for tool in ("gcc", "g++", "build-essential", "apt-get install", "pip install", "make "):
        assert tool not in text, f"the final stage installs {tool.strip()}"


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = instructions(FINAL, "USER")
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid == str(SERVICE_UID), f"USER {users[-1]}: the image's user is uid {SERVICE_UID}"
    run = " ".join(instructions(FINAL, "RUN"))
    assert f"--uid {SERVICE_UID}" in run


def test_image_runs_python_m_a_service_unbuffered_and_exposes_every_port() -> None:
    cmd = yaml.safe_load(instructions(FINAL, "CMD")[-1])
    assert cmd[:2] == ["python", "-m"], cmd
    assert cmd[2] in MODULES, cmd
    assert not instructions(FINAL, "ENTRYPOINT")
    env = " ".join(instructions(FINAL, "ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    assert "/opt/venv/bin" in env
    exposed = {int(p.split("/")[0]) for e in instructions(FINAL, "EXPOSE") for p in e.split()}
    wanted = {c.port for c in CONTRACTS.values()} | {c.metrics_port for c in CONTRACTS.values()}
    assert wanted <= exposed


def _packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


def test_builder_copies_every_package_and_builds_a_wheel() -> None:
    copied = {copy.split()[0] for copy in instructions(STAGES[0], "COPY")}
    for package in _packages():
        assert package in copied, f"the builder does not copy {package}"
    run = " ".join(instructions(STAGES[0], "RUN"))
    assert "pip wheel" in run
    assert "/opt/venv" in run


def test_the_wheel_ships_every_migration() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(setuptools.find_namespace_packages(where=str(ROOT), include=include))
    package_data = pyproject["tool"]["setuptools"]["package-data"]["*"]
    for versions in ROOT.glob("*/migrations/versions"):
        migrations = versions.parent
        prefix = f"{migrations.parent.name}.migrations"
        assert {prefix, f"{prefix}.versions"} <= packages
        for extra in migrations.iterdir():
            if extra.is_file() and extra.suffix != ".py":
                assert extra.name in package_data, f"{extra} is not package data"


def test_dockerignore_keeps_the_local_state_out_and_the_sources_in() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".venv", ".git", "tests", ".tools", "docs", "**/__pycache__"):
        assert excluded in patterns, f".dockerignore lets {excluded} in"
    for needed in ["pyproject.toml", "README.md", *_packages()]:
        assert needed not in patterns, f".dockerignore leaves out {needed}, which the build needs"
    assert not any(p.startswith("!") for p in patterns)
