"""What the deployment files must agree with, read from the code: settings, ports, secrets.

Shared by the static checks of docker-compose.yml and of deploy/k8s/, so
that both derive what a service needs from its settings class, never from
a list copied by hand: a new required setting fails them both.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from eventbooking.local import SERVICES
from eventbooking.settings import DatabaseSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
# Words that mark a variable as holding a secret; such a variable must name a file instead.
SECRET_WORDS = ("PASSWORD", "TOKEN", "CREDENTIAL", "SECRET", "KEY")


@dataclass(frozen=True)
class ServiceContract:
    """What one service's settings class asks of a deployment."""

    module: str
    settings: type[ServiceSettings]

    @property
    def prefix(self) -> str:
        return str(self.settings.model_config.get("env_prefix", ""))

    @property
    def fields(self) -> dict[str, FieldInfo]:
        return self.settings.model_fields

    @property
    def port(self) -> int:
        return int(self.fields["port"].default)

    @property
    def metrics_port(self) -> int:
        return int(self.fields["metrics_port"].default)

    @property
    def owns_database(self) -> bool:
        return issubclass(self.settings, DatabaseSettings)

    def variable(self, field: str) -> str:
        return f"{self.prefix}{field.upper()}"

    def secret_pairs(self) -> list[str]:
        """Secrets given either as a value or as a file (`admin_token` and `admin_token_file`).

        Only secrets: other settings may also come from a file (`faults_file`) without
        being required.
        """
        return [
            name
            for name, info in self.fields.items()
            if f"{name}_file" in self.fields and "SecretStr" in str(info.annotation)
        ]

    def peers(self) -> dict[str, str]:
        """The services it calls: `<NAME>_ADDRESS` field -> module, e.g. event_address -> event_svc."""
        return {
            name: f"{name.removesuffix('_address')}_svc"
            for name in self.fields
            if name.endswith("_address")
        }

    def required_variables(self) -> set[str]:
        """Every variable a deployment must set for this service.

        Fields with no default; the file of each secret pair (the settings
        accept a value too, but a deployment passes files); every peer's
        address, whose localhost default is wrong in any deployment; and
        for a database owner, the password file that keeps the password
        out of the URL.
        """
        names = {name for name, field in self.fields.items() if field.is_required()}
        names |= {f"{name}_file" for name in self.secret_pairs()}
        names |= set(self.peers())
        if self.owns_database:
            names.add("database_password_file")
        return {self.variable(name) for name in names}

    def known_variables(self) -> set[str]:
        return {self.variable(name) for name in self.fields}


def contracts() -> dict[str, ServiceContract]:
    """Every service by module name, with its settings class."""
    found = {}
    for spec in SERVICES:
        settings = importlib.import_module(f"{spec.module}.settings").Settings
        found[spec.module] = ServiceContract(spec.module, settings)
    return found


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> Any:
    """`value` as Compose reads it with no variable set: `${NAME:-default}` is the default."""
    if isinstance(value, str):
        return _VARIABLE.sub(
            lambda m: "$" if m.group() == "$$" else m.group("default") or "", value
        )
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    return value


def looks_secret(variable: str) -> bool:
    """True for a variable whose name says it holds a secret itself, not a file's path."""
    if variable.endswith(("_FILE", "_PATH", "_DIR")):
        return False
    return any(word in variable.upper().split("_") for word in SECRET_WORDS)
