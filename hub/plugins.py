"""Loading plugins: a small typed facade over pluggy.

Plugins come from the entry-point group ``raccordo.plugins`` (built-in
connectors included, exactly like third-party ones), are loaded lazily on
first use, each in its own ``try``: a plugin that fails to import, declares an
unsupported hook API or misspells a hook is listed as failed/incompatible
by ``raccordo connectors list`` and never crashes the host.
``RACCORDO_PLUGINS`` (comma-separated entry-point names) restricts which load.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from hub import hookspecs
from hub.connector import Connector
from hub.errors import ConfigError

GROUP = "raccordo.plugins"
ENV_FILTER = "RACCORDO_PLUGINS"

Status = Literal["loaded", "failed", "incompatible", "disabled"]


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    status: Status
    error: str | None = None
    connectors: tuple[str, ...] = ()


@dataclass
class _Registrations:
    connectors: list[type[Connector]] = field(default_factory=list)
    mapping_dirs: list[Path] = field(default_factory=list)


class PluginManager:
    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._plugins: list[PluginInfo] = []
        self._connectors: dict[str, type[Connector]] = {}
        self._mapping_dirs: list[Path] = []
        self._loaded = False

    # -- loading ------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        wanted = os.environ.get(ENV_FILTER)
        allowed = {n.strip() for n in wanted.split(",") if n.strip()} if wanted else None
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if allowed is not None and ep.name not in allowed:
                self._plugins.append(
                    PluginInfo(ep.name, ep.value, dist, version, "disabled", f"not in {ENV_FILTER}")
                )
                continue
            self._plugins.append(self._load_one(ep, dist, version))

    def _load_one(self, ep: md.EntryPoint, dist: str, version: str) -> PluginInfo:
        def failed(status: Status, error: str) -> PluginInfo:
            return PluginInfo(ep.name, ep.value, dist, version, status, error)

        try:
            module = ep.load()
        except Exception as e:  # a broken plugin must not break the host
            return failed("failed", f"import failed: {type(e).__name__}: {e}")
        api = getattr(module, "RACCORDO_HOOK_API", hookspecs.HOOK_API_VERSION)
        if api not in hookspecs.SUPPORTED_HOOK_API:
            return failed(
                "incompatible",
                f"needs hook API {api}; this Raccordo supports "
                f"{', '.join(map(str, sorted(hookspecs.SUPPORTED_HOOK_API)))}",
            )
        try:
            self._pm.register(module, name=ep.name)
            self._pm.check_pending()
        except Exception as e:
            if self._pm.is_registered(module):
                self._pm.unregister(module)
            return failed("failed", f"invalid hooks: {type(e).__name__}: {e}")
        regs = _Registrations()
        try:
            self._call(module, "raccordo_register_connectors", regs.connectors.append)
            self._call(
                module,
                "raccordo_register_mapping_dirs",
                lambda p: regs.mapping_dirs.append(Path(p)),
            )
            for cls in regs.connectors:
                if not (isinstance(cls, type) and issubclass(cls, Connector) and cls.name):
                    raise TypeError(f"{cls!r} is not a named Connector subclass")
                if cls.name in self._connectors:
                    raise ValueError(
                        f"connector type {cls.name!r} is already provided by another plugin"
                    )
        except Exception as e:
            self._pm.unregister(module)
            return failed("failed", f"registration failed: {type(e).__name__}: {e}")
        for cls in regs.connectors:
            self._connectors[cls.name] = cls
        self._mapping_dirs.extend(regs.mapping_dirs)
        return PluginInfo(
            ep.name, ep.value, dist, version, "loaded", None, tuple(c.name for c in regs.connectors)
        )

    def _call(self, module: ModuleType, hook: str, register: Any) -> None:
        impl = getattr(module, hook, None)
        if impl is not None:
            impl(register=register)

    # -- queries ------------------------------------------------------------------
    def plugins(self) -> list[PluginInfo]:
        self._load()
        return list(self._plugins)

    def connectors(self) -> dict[str, type[Connector]]:
        self._load()
        return dict(self._connectors)

    def mapping_dirs(self) -> list[Path]:
        self._load()
        return list(self._mapping_dirs)

    def connector(self, type_name: str) -> type[Connector]:
        self._load()
        try:
            return self._connectors[type_name]
        except KeyError:
            known = ", ".join(sorted(self._connectors)) or "none"
            raise ConfigError(
                f"no connector type {type_name!r} is installed (available: {known})",
                where="type",
                hint="check the spelling, or run `raccordo connectors list` to see plugins "
                "that failed to load",
            ) from None


_manager: PluginManager | None = None


def get_plugins() -> PluginManager:
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugins() -> None:
    """Forget loaded plugins (tests change sys.path or RACCORDO_PLUGINS)."""
    global _manager
    _manager = None
