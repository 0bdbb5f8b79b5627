"""The hooks a Raccordo plugin can implement (documented in docs/plugin_hooks.md).

A plugin is a module registered in the entry-point group ``raccordo.plugins``.
It may declare ``RACCORDO_HOOK_API = 1`` (the hook API version it was written
for); a plugin declaring a version this Raccordo does not support is listed as
*incompatible* and not loaded. Keep the hooks few: each one is a promise to
every plugin author (tests/unit/test_docs_hooks.py keeps the docs in step).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from hub.connector import Connector

PROJECT = "raccordo"
#: The hook API this Raccordo defines; bump only on an incompatible change.
HOOK_API_VERSION = 1
#: Hook API versions whose plugins this Raccordo can load.
SUPPORTED_HOOK_API = frozenset({1})

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    """Register connector classes.

    Call ``register(ConnectorClass)`` once per connector type the plugin
    provides; the class's ``name`` is the ``type`` used in ``raccordo.toml``.

    :param register: adds a :class:`hub.connector.Connector` subclass.

    versionadded: 1
    """


@hookspec
def raccordo_register_mapping_dirs(register: Callable[[Path], None]) -> None:
    """Register folders of mapping files shipped with the plugin.

    Call ``register(path)`` with a :class:`pathlib.Path`; mapping names in
    ``raccordo.toml`` are looked up there after the workspace's own folder
    and Raccordo's built-in mappings.

    :param register: adds a directory of ``*.toml`` mapping files.

    versionadded: 1
    """
