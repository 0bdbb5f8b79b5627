"""Loading plugins: a small typed facade over pluggy.

Plugins come from the entry-point group ``raccordo.plugins`` (built-in
connectors included, exactly like third-party ones) and are loaded lazily on
first use, each in its own ``try``: a plugin that fails to import, declares an
unsupported hook API, misspells a hook or registers a connector type another
plugin already provides is listed by ``raccordo connectors list`` with the
reason, and never crashes the host. ``RACCORDO_PLUGINS`` (comma-separated
entry-point names) restricts which plugins load.

Core code asks this module (``get_plugins().connector(type)``), never
``pm.hook.*`` directly, so pluggy stays an implementation detail.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pluggy

from hub import hookspecs
from hub.connector import Connector
from hub.errors import ConfigError

GROUP = "raccordo.plugins"
ENV_FILTER = "RACCORDO_PLUGINS"
#: Our own distribution: its plugins load first, so a third-party plugin
#: cannot take over the name of a built-in connector.
BUILTIN_DISTRIBUTION = "raccordo"
_MAX_ERROR = 300

Status = Literal["loaded", "failed", "incompatible", "disabled"]


@dataclass(frozen=True)
class PluginInfo:
    """One entry point of ``raccordo.plugins`` and what became of it."""

    name: str
    module: str
    distribution: str
    version: str
    status: Status
    #: One line (exception type and message, no traceback) when not loaded.
    error: str | None = None
    #: Connector types the plugin registered.
    connectors: tuple[str, ...] = ()


@dataclass
class _Registrations:
    connectors: list[type[Connector]] = field(default_factory=list)
    mapping_dirs: list[Path] = field(default_factory=list)


class _PluginRejected(Exception):
    """A plugin loaded but broke a rule of the hook API."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, _PluginRejected):
        line = text  # our own message: the exception type adds nothing
    else:
        line = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return line if len(line) <= _MAX_ERROR else line[: _MAX_ERROR - 1] + "…"


def _allowed_names() -> set[str] | None:
    wanted = os.environ.get(ENV_FILTER)
    if wanted is None or not wanted.strip():
        return None
    return {n.strip() for n in wanted.split(",") if n.strip()}


class PluginManager:
    """The plugins of this process: loaded once, on first question."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._plugins: list[PluginInfo] = []
        self._connectors: dict[str, type[Connector]] = {}
        self._provider: dict[str, str] = {}  # connector type -> plugin name
        self._mapping_dirs: list[Path] = []
        self._loaded = False
        self._lock = threading.Lock()

    # -- queries ------------------------------------------------------------------
    def plugins(self) -> list[PluginInfo]:
        """Every entry point of the group, whatever its status."""
        self._load()
        return list(self._plugins)

    def connectors(self) -> dict[str, type[Connector]]:
        """Connector classes by type name (the ``type`` in ``raccordo.toml``)."""
        self._load()
        return dict(self._connectors)

    def mapping_dirs(self) -> list[Path]:
        """Folders of mapping files shipped by plugins, in load order."""
        self._load()
        return list(self._mapping_dirs)

    def connector(self, type_name: str, *, where: str | None = None) -> type[Connector]:
        """The connector class for ``type_name``; a :class:`ConfigError` naming the
        installed types if there is none."""
        self._load()
        try:
            return self._connectors[type_name]
        except KeyError:
            pass
        known = ", ".join(sorted(self._connectors)) or "none"
        not_loaded = [p.name for p in self._plugins if p.status in ("failed", "incompatible")]
        hint = "check the spelling, or run `raccordo connectors list` to see every plugin"
        if not_loaded:
            hint += f" ({len(not_loaded)} did not load: {', '.join(not_loaded)})"
        raise ConfigError(
            f"no connector type {type_name!r} is installed (available: {known})",
            where=where or "connector type",
            hint=hint,
        )

    # -- loading ------------------------------------------------------------------
    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            allowed = _allowed_names()
            found: set[str] = set()
            for ep in sorted(md.entry_points(group=GROUP), key=_load_order):
                found.add(ep.name)
                dist = ep.dist.name if ep.dist else "?"
                version = ep.dist.version if ep.dist else "?"
                if allowed is not None and ep.name not in allowed:
                    info = PluginInfo(
                        ep.name, ep.value, dist, version, "disabled", f"not in {ENV_FILTER}"
                    )
                else:
                    info = self._load_one(ep, dist, version)
                self._plugins.append(info)
            for missing in sorted((allowed or set()) - found):
                self._plugins.append(
                    PluginInfo(
                        missing,
                        "",
                        "",
                        "",
                        "failed",
                        f"named in {ENV_FILTER} but no installed plugin has this name",
                    )
                )
            self._loaded = True

    def _load_one(self, ep: md.EntryPoint, dist: str, version: str) -> PluginInfo:
        def not_loaded(status: Status, error: str) -> PluginInfo:
            return PluginInfo(ep.name, ep.value, dist, version, status, error)

        try:
            plugin = ep.load()
        except (Exception, SystemExit) as e:  # a broken plugin must not break the host
            return not_loaded("failed", f"import failed: {_one_line(e)}")
        api = getattr(plugin, "RACCORDO_HOOK_API", hookspecs.HOOK_API_VERSION)
        supported = ", ".join(map(str, sorted(hookspecs.SUPPORTED_HOOK_API)))
        if type(api) is not int or api not in hookspecs.SUPPORTED_HOOK_API:
            return not_loaded(
                "incompatible",
                f"written for hook API {api!r}; this Raccordo supports {supported}",
            )
        registered = False
        try:
            self._pm.register(plugin, name=ep.name)
            registered = True
            self._pm.check_pending()  # a misspelt hook name is an error, not a silent no-op
            regs = self._collect(plugin)
            self._validate(regs)
        except Exception as e:
            if registered:
                self._pm.unregister(plugin)
            return not_loaded("failed", _one_line(e))
        for cls in regs.connectors:
            self._connectors[cls.name] = cls
            self._provider[cls.name] = ep.name
        self._mapping_dirs.extend(regs.mapping_dirs)
        return PluginInfo(
            ep.name, ep.value, dist, version, "loaded", None, tuple(c.name for c in regs.connectors)
        )

    def _collect(self, plugin: object) -> _Registrations:
        """Call this plugin's hook implementations only, to know what *it* registers."""
        regs = _Registrations()
        others = [p for p in self._pm.get_plugins() if p is not plugin]
        own = self._pm.subset_hook_caller
        own("raccordo_register_connectors", remove_plugins=others)(register=regs.connectors.append)
        own("raccordo_register_mapping_dirs", remove_plugins=others)(
            register=lambda p: regs.mapping_dirs.append(Path(p))
        )
        return regs

    def _validate(self, regs: _Registrations) -> None:
        names: list[str] = []
        for cls in regs.connectors:
            if not (isinstance(cls, type) and issubclass(cls, Connector)):
                raise _PluginRejected(f"registered {cls!r}, which is not a Connector subclass")
            if not cls.name:
                raise _PluginRejected(f"connector class {cls.__name__} has no name")
            if cls.name in self._connectors:
                raise _PluginRejected(
                    f"connector type {cls.name!r} is already provided by plugin "
                    f"{self._provider[cls.name]!r}"
                )
            if cls.name in names:
                raise _PluginRejected(f"connector type {cls.name!r} registered twice")
            names.append(cls.name)
        for d in regs.mapping_dirs:
            if not d.is_dir():
                raise _PluginRejected(f"mapping folder {d} does not exist")


def _load_order(ep: md.EntryPoint) -> tuple[bool, str]:
    return (not (ep.dist and ep.dist.name == BUILTIN_DISTRIBUTION), ep.name)


_manager: PluginManager | None = None


def get_plugins() -> PluginManager:
    """The process-wide plugin manager (plugins load on its first question)."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugins() -> None:
    """Forget loaded plugins (tests change sys.path or RACCORDO_PLUGINS)."""
    global _manager
    _manager = None
