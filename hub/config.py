"""``raccordo.toml``: where the registry, the keyring and the connectors are.

The file is validated with pydantic (closed models: a misspelt key is an
error). Every problem becomes a :class:`hub.errors.ConfigError` naming the
file, the key and the fix. Relative paths are resolved against the directory
of the configuration file, so a workspace can be moved as a whole.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from hub.errors import ConfigError
from hub.schema import OrganisationKind

CONFIG_ENV = "RACCORDO_CONFIG"
REGISTRY_URL_ENV = "RACCORDO_REGISTRY_URL"
DEFAULT_CONFIG_NAME = "raccordo.toml"
#: Mapping files shipped with Raccordo (the repository's ``mappings/`` folder).
BUILTIN_MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"

Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]

CLOSED = ConfigDict(extra="forbid", frozen=True)


class HubSettings(BaseModel):
    model_config = CLOSED

    district: Code
    district_name: str = ""
    registry_url: str = "sqlite:///registry.sqlite"
    keyring: str = "keys/keyring.json"
    keyring_key_file: str | None = "keys/keyring.key"
    #: Pseudonymisation domain; defaults to the district code.
    pseudonym_domain: Code | None = None
    #: The district's pseudonymisation service (``raccordo pseudonymiser serve``); when set,
    #: identifiers are pseudonymised through it (blinded) and no keyring is opened.
    pseudonymiser_url: str | None = None
    #: Environment variable holding this client's token for that service.
    pseudonymiser_token_env: str = "RACCORDO_PSEUDONYMISER_TOKEN"  # noqa: S105 - a name
    #: Push mode (a consortium's worker): the district hub's ``raccordo push serve`` URL;
    #: when set, ``raccordo sync`` pushes signed packages there and opens no registry.
    push_url: str | None = None
    #: The worker's push folder (its signing key, the hub's public keys): see docs/exchange.md.
    push_home: str = "push"
    #: This hub's exchange home (``raccordo exchange init``), shown in the web's exchange pages.
    exchange_home: str | None = None
    mappings_dir: str = "mappings"
    #: Records mapped and written together (held in memory at once).
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    #: Records per transaction: a sync commits once this many were written (whole
    #: batches), or after ``commit_seconds``, whichever comes first.
    commit_every: Annotated[int, Field(ge=1, le=10_000_000)] = 200_000
    commit_seconds: Annotated[float, Field(gt=0, le=3600)] = 20.0
    #: Upper bound of the SQLite page cache of a sync's load connection (MiB). A
    #: 1,000,000-record registry (~510 MB) fills it; 192 took the same load CPU as 256
    #: there, and 80 MiB less memory (docs/performance.md, "Peak memory").
    sqlite_cache_mib: Annotated[int, Field(ge=2, le=65_536)] = 192
    quarantine_retention_days: Annotated[int, Field(ge=1, le=3650)] = 365


class OrganisationSettings(BaseModel):
    model_config = CLOSED

    name: str
    kind: OrganisationKind = OrganisationKind.ENTE_GESTORE
    tax_code: str | None = None


class ConnectorSettings(BaseModel):
    model_config = CLOSED

    type: str
    org: Code
    #: One mapping file for every stream, or a table {stream = "file.toml"}.
    mapping: str | dict[str, str] | None = None
    enabled: bool = True
    schedule: str | None = "@daily"
    queue: str | None = None
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)


class WebSettings(BaseModel):
    """``[web]``: the Third Sector web app (``raccordo serve``)."""

    model_config = CLOSED

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    #: File holding the key that signs session cookies (created if missing).
    secret_key_file: str = "keys/web-secret.key"  # noqa: S105 - a path, not a secret
    #: Send cookies only over HTTPS. Keep true in production (behind TLS).
    cookie_secure: bool = True
    session_hours: Annotated[int, Field(ge=1, le=24)] = 8
    #: Failed logins allowed per user name and address in ``login_window_minutes``.
    login_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    login_window_minutes: Annotated[int, Field(ge=1, le=1440)] = 15
    #: CSV of the district's comuni (columns istat, municipality[, pop]); the built-in
    #: list is the province of Novara used by the demo.
    comuni_file: str | None = None
    #: Largest CSV upload accepted, in bytes.
    max_upload_bytes: Annotated[int, Field(ge=1024, le=50_000_000)] = 2_000_000
    #: Largest request body on every other route (forms and the JSON API), in bytes.
    max_body_bytes: Annotated[int, Field(ge=1024, le=10_000_000)] = 65_536
    #: Addresses (or networks, ``10.0.0.0/8``) of reverse proxies whose
    #: ``X-Forwarded-For`` is believed; from anyone else the header is ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Worker processes of ``raccordo serve`` (``--workers`` overrides it).
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: File shared by the workers: sessions, failed logins, upload jobs.
    state_file: str = "web/state.sqlite"


class ObservatorySettings(BaseModel):
    model_config = CLOSED

    #: Disclosure control threshold: counts 1..k-1 are suppressed (never below 3).
    k: Annotated[int, Field(ge=3, le=100)] = 5
    #: Record of released tables (confidential: holds the suppressed values).
    ledger: str = "observatory/releases.json"


class Settings(BaseModel):
    model_config = CLOSED

    hub: HubSettings
    web: WebSettings = Field(default_factory=WebSettings)
    observatory: ObservatorySettings = Field(default_factory=ObservatorySettings)
    organisations: dict[Code, OrganisationSettings] = Field(default_factory=dict)
    connectors: dict[Code, ConnectorSettings] = Field(default_factory=dict)


class Config:
    """A loaded configuration: settings plus the directory paths resolve against."""

    def __init__(self, settings: Settings, path: Path) -> None:
        self.settings = settings
        self.path = path
        self.base_dir = path.parent

    # -- paths -----------------------------------------------------------------
    def resolve(self, value: str | os.PathLike[str]) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def hub(self) -> HubSettings:
        return self.settings.hub

    @property
    def registry_url(self) -> str:
        if self.hub.push_url:
            # A worker in push mode has no registry: opening one would quietly create an
            # empty local database instead of showing the district's (docs/exchange.md).
            raise ConfigError(
                "this configuration is a consortium worker in push mode: it has no registry",
                where=f"{self.path} [hub] push_url",
                hint="runs, quarantine, warnings and indicators are on the district hub: "
                "run `raccordo runs` / `raccordo quarantine list` there (or open its web "
                "dashboard); here only `raccordo sync` (which pushes) applies",
            )
        url = os.environ.get(REGISTRY_URL_ENV) or self.hub.registry_url
        return resolve_sqlite_url(url, self.base_dir)

    @property
    def keyring_path(self) -> Path:
        return self.resolve(self.hub.keyring)

    @property
    def keyring_key_file(self) -> Path | None:
        return self.resolve(self.hub.keyring_key_file) if self.hub.keyring_key_file else None

    @property
    def observatory(self) -> ObservatorySettings:
        return self.settings.observatory

    @property
    def ledger_path(self) -> Path:
        return self.resolve(self.settings.observatory.ledger)

    @property
    def pseudonym_domain(self) -> str:
        return self.hub.pseudonym_domain or self.hub.district

    def mapping_path(self, name: str) -> Path:
        """Find a mapping file: absolute, under the workspace's mappings dir, or built in."""
        p = Path(name)
        if p.is_absolute():
            return p
        from hub.plugins import get_plugins  # plugins may ship mapping folders

        candidates = [
            self.resolve(self.hub.mappings_dir) / p,
            self.resolve(p),
            BUILTIN_MAPPINGS / p,
            *(d / p for d in get_plugins().mapping_dirs()),
        ]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise ConfigError(
            f"mapping file {name!r} not found",
            where=str(self.path),
            hint=f"put it in {self.resolve(self.hub.mappings_dir)} or give an absolute path",
        )

    def connector(self, name: str) -> ConnectorSettings:
        try:
            return self.settings.connectors[name]
        except KeyError:
            known = ", ".join(self.settings.connectors) or "none"
            raise ConfigError(
                f"no connector named {name!r} (configured: {known})",
                where=str(self.path),
                hint=f"add a [connectors.{name}] table or check the spelling",
            ) from None


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make ``sqlite:///relative.db`` relative to the config file, not the CWD."""
    m = re.match(r"^sqlite(\+\w+)?:///(?!/)(.+)$", url)
    if m and not m.group(2).startswith(":memory:"):
        return f"sqlite{m.group(1) or ''}:///{(base_dir / m.group(2)).resolve()}"
    return url


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config path from ``--config``, ``RACCORDO_CONFIG`` or ``./raccordo.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path.cwd() / DEFAULT_CONFIG_NAME


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    p = find_config(path)
    if not p.is_file():
        raise ConfigError(
            "configuration file not found",
            where=str(p),
            hint="create one with `raccordo init DIR`, or pass --config / set RACCORDO_CONFIG",
        )
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", where=str(p), hint="fix the syntax") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the file: {e}", where=str(p)) from None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            problems.append(f"key {loc}: {err['msg']}")
        raise ConfigError(
            "invalid configuration: " + "; ".join(problems),
            where=str(p),
            hint="see docs/configuration.md for every key and its allowed values",
        ) from None
    cfg = Config(settings, p.resolve())
    for name, c in settings.connectors.items():
        if c.org not in settings.organisations:
            raise ConfigError(
                f"connector {name!r} names organisation {c.org!r}, which is not declared",
                where=f"{p} [connectors.{name}].org",
                hint=f"add an [organisations.{c.org}] table with its name and kind",
            )
    return cfg
