"""Static checks of deploy/k8s/: no cluster and no kustomize binary, just the files.

`render` builds a Kustomize directory in Python the way `kustomize build` does
for the features these kustomizations use (resources, generators, images,
namespace), without the generators' name hashes, and refuses any other
feature so that it cannot silently diverge. The rendered base and dev
overlay are validated against the Kubernetes schemas (kubernetes-validate,
offline) and held against the services' own settings classes: ports,
probes, required variables and secrets come from the code, not from a list
copied here.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from booking_svc.settings import Settings as BookingSettings
from eventbooking.settings import DatabaseSettings, load
from tests.deploy.support import ROOT, ServiceContract, contracts, looks_secret

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
# The oldest Kubernetes the manifests promise to work on (preStop `sleep` is beta in 1.30).
KUBERNETES_VERSION = "1.30"
APP_IMAGE = "eventbooking"
APP_USER = 10001
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# How long a service may take to report SERVING on its first start: migrations, and the lock.
MIN_STARTUP_SECONDS = 180

Manifest = dict[str, Any]

KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "configMapGenerator",
    "secretGenerator",
}
GENERATOR_KEYS = {"name", "behavior", "literals", "files"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"Deployment", "StatefulSet"}
SERVICES = contracts()


def load_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_kustomization(directory: Path) -> Manifest:
    (kustomization,) = load_documents(directory / "kustomization.yaml")
    assert isinstance(kustomization, dict)
    return kustomization


def render(directory: Path) -> list[Manifest]:
    """What `kustomize build directory` gives, minus the hash suffixes of generated names."""
    kustomization = load_kustomization(directory)
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: teach render() {sorted(unknown)} before using it"
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        manifests += render(path) if path.is_dir() else load_documents(path)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(key, []):
            generate(manifests, kind, generator, directory)
    for image in kustomization.get("images", []):
        for workload in workloads(manifests):
            for container in containers(workload):
                if image_name(container["image"]) == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}"
    if "namespace" in kustomization:
        for manifest in manifests:
            if manifest["kind"] not in CLUSTER_SCOPED:
                manifest["metadata"]["namespace"] = kustomization["namespace"]
    return manifests


def generate(manifests: list[Manifest], kind: str, generator: Manifest, directory: Path) -> None:
    """Apply one configMapGenerator or secretGenerator entry, with its behavior."""
    unknown = set(generator) - GENERATOR_KEYS
    assert not unknown, f"{directory}: teach render() the generator keys {sorted(unknown)}"
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=")
        data[key or PurePosixPath(path).name] = (directory / path).read_text()
    if kind == "Secret":
        data = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    behavior = generator.get("behavior", "create")
    existing = [m for m in manifests if m["kind"] == kind and name_of(m) == generator["name"]]
    if behavior == "create":
        assert not existing, f"{directory}: {kind} {generator['name']} already exists; merge it"
        manifest: Manifest = {"apiVersion": "v1", "kind": kind, "metadata": {}, "data": data}
        manifest["metadata"]["name"] = generator["name"]
        if kind == "Secret":
            manifest["type"] = "Opaque"
        manifests.append(manifest)
    else:
        assert behavior in {"merge", "replace"}, f"{directory}: unknown behavior {behavior}"
        assert existing, f"{directory}: {behavior} of {kind} {generator['name']}, which no base has"
        target = existing[0].setdefault("data", {})
        if behavior == "replace":
            target.clear()
        target.update(data)


def name_of(manifest: Manifest) -> str:
    return str(manifest["metadata"]["name"])


def image_name(image: str) -> str:
    """The image without its tag or digest: `eventbooking:latest` -> `eventbooking`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and name_of(m) == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in WORKLOADS)


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest) -> list[Manifest]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def app(manifests: list[Manifest], contract: ServiceContract) -> tuple[Manifest, Manifest]:
    """The Deployment of a service (account_svc -> account-svc) and its one container."""
    deployment = find(manifests, "Deployment", service_name(contract))
    (container,) = pod_spec(deployment)["containers"]
    return deployment, container


def service_name(contract: ServiceContract) -> str:
    return contract.module.replace("_", "-")


def environment(
    manifests: list[Manifest], container: Manifest, *, pod_name: str = "pod-0"
) -> dict[str, str]:
    """The container's variables as the kubelet sets them: envFrom first, then env in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "secrets reach containers as files, not variables"
        env.update(find(manifests, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    fields = {"metadata.name": pod_name}
    for entry in container.get("env", []):
        if "value" in entry:
            # $(NAME) expands to a variable defined before it, as Kubernetes does.
            env[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), entry["value"]
            )
        else:
            assert set(entry["valueFrom"]) == {"fieldRef"}, (
                f"{entry['name']}: secrets reach containers as files, not variables"
            )
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def secret_files(workload: Manifest, container: Manifest) -> dict[str, tuple[str, str]]:
    """Each file the container sees from a Secret: path -> (Secret name, key)."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    files: dict[str, tuple[str, str]] = {}
    for mount in container.get("volumeMounts", []):
        # A mount with no volume of the pod is a StatefulSet's claim.
        volume = volumes.get(mount["name"], {})
        sources = [
            s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s
        ]
        if "secret" in volume:
            sources.append({"name": volume["secret"]["secretName"], **volume["secret"]})
        for source in sources:
            assert source.get("items"), f"{mount['name']}: mount only the keys this pod needs"
            for item in source["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (source["name"], item["key"])
    return files


def secret_value(manifests: list[Manifest], name: str, key: str) -> str:
    return base64.b64decode(find(manifests, "Secret", name)["data"][key]).decode()


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render(BASE)


@pytest.fixture(scope="module")
def dev() -> list[Manifest]:
    return render(DEV)


@pytest.fixture(params=["base", "dev"])
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    manifests: list[Manifest] = request.getfixturevalue(request.param)
    return manifests


def by_module() -> pytest.MarkDecorator:
    return pytest.mark.parametrize("contract", SERVICES.values(), ids=list(SERVICES))


def by_database_owner() -> pytest.MarkDecorator:
    owners = [contract for contract in SERVICES.values() if contract.owns_database]
    return pytest.mark.parametrize("contract", owners, ids=[c.module for c in owners])


def kustomizations() -> list[Path]:
    return sorted(path.parent for path in K8S.rglob("kustomization.yaml"))


def test_every_yaml_file_parses() -> None:
    files = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])
    assert files
    for path in files:
        assert load_documents(path), f"{path} holds no document"


def test_every_kustomization_path_exists_and_every_file_is_used() -> None:
    used: set[Path] = set()
    for directory in kustomizations():
        kustomization = load_kustomization(directory)
        used.add(directory / "kustomization.yaml")
        for entry in kustomization.get("resources", []):
            path = (directory / entry).resolve()
            assert path.is_file() or (path / "kustomization.yaml").is_file(), (
                f"{directory}: resource {entry} is neither a file nor a kustomization"
            )
            used.add(path)
        for key in ("configMapGenerator", "secretGenerator"):
            for generator in kustomization.get(key, []):
                for entry in generator.get("files", []):
                    path = (directory / entry.rpartition("=")[2]).resolve()
                    assert path.is_file(), f"{directory}: {key} {generator['name']}: no {path}"
                    used.add(path)
    unused = {path.resolve() for path in K8S.rglob("*.yaml")} - used
    assert not unused, f"files no kustomization uses: {sorted(map(str, unused))}"


def test_the_dev_overlay_builds_on_the_base() -> None:
    resources = load_kustomization(DEV)["resources"]
    assert "../../base" in resources
    assert (DEV / "../../base").resolve() == BASE


@pytest.mark.parametrize("layer", [BASE, DEV], ids=["base", "dev"])
def test_manifests_validate_against_the_kubernetes_schemas(layer: Path) -> None:
    problems = []
    manifests = render(layer)
    for manifest in manifests:
        where = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(part) for part in err.absolute_path)
            problems.append(f"{where} at {path or '.'}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{where}: {err.message}")
    assert not problems, "\n".join(problems)
    names = [(m["kind"], name_of(m)) for m in manifests]
    assert len(names) == len(set(names)), "two manifests of one kind share a name"


@by_module()
def test_ports_and_probes_are_those_the_settings_default_to(
    base: list[Manifest], contract: ServiceContract
) -> None:
    deployment, container = app(base, contract)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": contract.port, "metrics": contract.metrics_port}
    for probe in PROBES:
        # Kubernetes' own gRPC probe asks the standard health service for the whole server.
        assert container[probe]["grpc"] == {"port": contract.port}, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(contract.metrics_port)
    service = find(base, "Service", service_name(contract))
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("grpc", contract.port, contract.port),
        ("metrics", contract.metrics_port, contract.metrics_port),
    }
    env = environment(base, container)
    # The ports come from the settings' defaults; a variable may only repeat them.
    assert env.get(contract.variable("port"), str(contract.port)) == str(contract.port)
    metrics = env.get(contract.variable("metrics_port"), str(contract.metrics_port))
    assert metrics == str(contract.metrics_port)


def test_every_service_reaches_pods_on_their_ports(rendered: list[Manifest]) -> None:
    for service in (m for m in rendered if m["kind"] == "Service"):
        selector = service["spec"]["selector"]
        targets = [
            w
            for w in workloads(rendered)
            if labels_match(selector, w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"Service {name_of(service)} selects {len(targets)} workloads"
        (workload,) = targets
        assert labels_match(workload["spec"]["selector"]["matchLabels"], selector)
        container_ports = {
            port["containerPort"] for c in containers(workload) for port in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"{name_of(service)}: {port}"


@by_module()
def test_dev_sets_every_variable_the_settings_require(
    dev: list[Manifest], contract: ServiceContract
) -> None:
    _, container = app(dev, contract)
    env = environment(dev, container)
    missing = contract.required_variables() - set(env)
    assert not missing, f"{contract.module} needs {sorted(missing)}"
    prefixed = {name for name in env if name.startswith(contract.prefix)}
    unknown = prefixed - contract.known_variables()
    assert not unknown, f"{contract.module} is given variables it does not read: {sorted(unknown)}"
    foreign = set(env) - prefixed - {"POD_NAME"}
    assert all(name.startswith("OTEL_") for name in foreign), sorted(foreign)
    assert env["OTEL_SERVICE_NAME"] == contract.module
    assert env[contract.variable("log_format")] == "json"


@by_module()
def test_the_base_leaves_only_the_database_url_to_overlays(
    base: list[Manifest], contract: ServiceContract
) -> None:
    _, container = app(base, contract)
    env = environment(base, container)
    missing = contract.required_variables() - set(env)
    expected = {contract.variable("database_url")} if contract.owns_database else set()
    assert missing == expected


@by_module()
def test_peer_addresses_name_the_peers_services(
    base: list[Manifest], contract: ServiceContract
) -> None:
    _, container = app(base, contract)
    env = environment(base, container)
    for field, module in contract.peers().items():
        peer = SERVICES[module]
        host, _, port = env[contract.variable(field)].rpartition(":")
        service = find(base, "Service", host)
        assert host == service_name(peer)
        assert int(port) == peer.port
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}


@by_module()
def test_dev_settings_load_from_the_rendered_environment_and_secrets(
    dev: list[Manifest],
    contract: ServiceContract,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each service's settings class accepts what the dev overlay gives it, secrets included."""
    deployment, container = app(dev, contract)
    pod_name = f"{name_of(deployment)}-5d8f7c9b4-x2x7q"
    env = environment(dev, container, pod_name=pod_name)
    files = secret_files(deployment, container)
    for path, (secret, key) in files.items():
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(secret_value(dev, secret, key))
    for name in os.environ:
        if name.startswith((contract.prefix, "OTEL_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value.lstrip("/")) if value in files else value)

    settings = load(contract.settings)

    assert settings.port == contract.port
    assert settings.metrics_port == contract.metrics_port
    admin_file = files[env[contract.variable("admin_token_file")]]
    assert settings.secret("admin_token") == secret_value(dev, *admin_file)
    if isinstance(settings, BookingSettings):
        assert settings.instance_id == pod_name
    if isinstance(settings, DatabaseSettings):
        password_file = files[env[contract.variable("database_password_file")]]
        assert settings.database_password() == secret_value(dev, *password_file)


@by_database_owner()
def test_databases_get_their_password_from_a_file_not_the_url(
    dev: list[Manifest], contract: ServiceContract
) -> None:
    deployment, container = app(dev, contract)
    env = environment(dev, container)
    url = urlsplit(env[contract.variable("database_url")])
    assert url.scheme == "postgresql"
    assert url.username
    assert url.password is None
    files = secret_files(deployment, container)
    assert env[contract.variable("database_password_file")] in files


@by_database_owner()
def test_dev_runs_each_database_as_a_postgres_statefulset(
    dev: list[Manifest], contract: ServiceContract
) -> None:
    deployment, container = app(dev, contract)
    env = environment(dev, container)
    url = urlsplit(env[contract.variable("database_url")])
    assert url.hostname
    statefulset = find(dev, "StatefulSet", url.hostname)
    service = find(dev, "Service", url.hostname)
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == name_of(service)
    assert [p["port"] for p in service["spec"]["ports"]] == [url.port]

    (postgres,) = pod_spec(statefulset)["containers"]
    assert postgres["image"].startswith("postgres:15")
    db_env = environment(dev, postgres)
    assert db_env["POSTGRES_USER"] == url.username
    assert db_env["POSTGRES_DB"] == url.path.lstrip("/")
    assert "POSTGRES_PASSWORD" not in db_env
    # The database is initialised with the very password the service reads.
    db_files = secret_files(statefulset, postgres)
    service_files = secret_files(deployment, container)
    password_file = service_files[env[contract.variable("database_password_file")]]
    assert db_files[db_env["POSTGRES_PASSWORD_FILE"]] == password_file

    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in postgres["volumeMounts"]}
    assert db_env["PGDATA"].startswith(mounts[claim["metadata"]["name"]] + "/")
    for probe in PROBES:
        assert postgres[probe]["exec"]["command"][0] == "pg_isready", probe


def test_booking_svc_runs_replicas_that_a_disruption_budget_keeps(base: list[Manifest]) -> None:
    deployment, container = app(base, SERVICES["booking_svc"])
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budgets = [m for m in base if m["kind"] == "PodDisruptionBudget"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (budget,) = [b for b in budgets if labels_match(b["spec"]["selector"]["matchLabels"], labels)]
    assert 1 <= budget["spec"]["minAvailable"] < replicas
    (instance_id,) = [e for e in container["env"] if e["name"] == "BOOKING_SVC_INSTANCE_ID"]
    assert instance_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@by_module()
def test_pods_get_longer_to_stop_than_the_service_takes(
    base: list[Manifest], contract: ServiceContract
) -> None:
    deployment, container = app(base, contract)
    env = environment(base, container)
    grace = float(
        env.get(contract.variable("grace_seconds"), contract.fields["grace_seconds"].default)
    )
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > sleep + grace


@by_module()
def test_startup_probes_leave_time_for_migrations(
    base: list[Manifest], contract: ServiceContract
) -> None:
    _, container = app(base, contract)
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= MIN_STARTUP_SECONDS


def test_every_container_runs_non_root_on_a_read_only_filesystem(
    rendered: list[Manifest],
) -> None:
    for workload in workloads(rendered):
        pod = pod_spec(workload)
        pod_context = pod.get("securityContext", {})
        # Service links would shadow settings (ACCOUNT_SVC_PORT=tcp://...); no pod needs the API.
        assert pod.get("enableServiceLinks") is False, name_of(workload)
        assert pod.get("automountServiceAccountToken") is False, name_of(workload)
        for container in containers(workload):
            where = f"{name_of(workload)}/{container['name']}"
            context = container.get("securityContext", {})
            # A container's own setting wins over the pod's.
            effective = {**pod_context, **context}.get
            assert effective("runAsNonRoot") is True, where
            assert effective("runAsUser") not in {None, 0}, where
            assert effective("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            if image_name(container["image"]) == APP_IMAGE:
                assert effective("runAsUser") == APP_USER, where
                volumes = {v["name"]: v for v in pod.get("volumes", [])}
                (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert "emptyDir" in volumes[tmp["name"]], where


def test_secrets_reach_containers_only_as_files(rendered: list[Manifest]) -> None:
    for workload in workloads(rendered):
        for container in containers(workload):
            where = f"{name_of(workload)}/{container['name']}"
            env = environment(rendered, container)
            named_secret = sorted(name for name in env if looks_secret(name))
            assert not named_secret, f"{where} holds secrets in variables: {named_secret}"
            files = secret_files(workload, container)
            for name, value in env.items():
                if name.endswith("_FILE") and looks_secret(name.removesuffix("_FILE")):
                    assert value in files, f"{where}: {name}={value} is no mounted Secret key"
    for config_map in (m for m in rendered if m["kind"] == "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert not looks_secret(key), f"ConfigMap {name_of(config_map)} holds {key}"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"a password in {key}"


def test_the_base_holds_no_secret_values(base: list[Manifest]) -> None:
    assert "secretGenerator" not in load_kustomization(BASE)
    assert not [name_of(m) for m in base if m["kind"] == "Secret"]


def test_dev_secrets_are_obviously_for_dev_only(dev: list[Manifest]) -> None:
    secrets = [m for m in dev if m["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        for key in secret["data"]:
            value = secret_value(dev, name_of(secret), key)
            assert value.startswith("dev-"), f"{name_of(secret)}/{key}"
            assert len(value) >= 16, f"{name_of(secret)}/{key}"


def test_images_are_pinned_and_dev_uses_its_own_build(
    base: list[Manifest], dev: list[Manifest]
) -> None:
    for manifests, app_tag in ((base, "latest"), (dev, "dev")):
        for workload in workloads(manifests):
            for container in containers(workload):
                image = container["image"]
                assert container["imagePullPolicy"] == "IfNotPresent", image
                if image_name(image) == APP_IMAGE:
                    assert image == f"{APP_IMAGE}:{app_tag}"
                else:
                    assert re.search(r":\d[\w.-]*$", image), f"{image}: pin a version"


def test_traces_go_to_the_collector_and_on_to_its_exporters(rendered: list[Manifest]) -> None:
    common = find(rendered, "ConfigMap", "eventbooking-common")["data"]
    endpoint = urlsplit(common["OTEL_EXPORTER_OTLP_ENDPOINT"])
    collector = find(rendered, "Service", str(endpoint.hostname))
    ports = {p["name"]: p["port"] for p in collector["spec"]["ports"]}
    assert ports["otlp-grpc"] == endpoint.port == 4317

    deployment = find(rendered, "Deployment", name_of(collector))
    (container,) = pod_spec(deployment)["containers"]
    (config_arg,) = [a for a in container["args"] if a.startswith("--config=")]
    config_path = PurePosixPath(config_arg.removeprefix("--config="))
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    config_map = find(rendered, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    config = yaml.safe_load(config_map["data"][config_path.name])

    grpc_endpoint = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc_endpoint == f"0.0.0.0:{ports['otlp-grpc']}"
    for name in config["service"].get("extensions", []):
        assert name in config["extensions"]
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{kind} {name} is used but not defined"
    for name, exporter in config["exporters"].items():
        if name.split("/")[0] == "otlp":
            host, _, port = exporter["endpoint"].rpartition(":")
            target = find(rendered, "Service", host)
            assert int(port) in {p["port"] for p in target["spec"]["ports"]}
