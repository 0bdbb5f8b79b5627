"""The application service: the one way to check, sync and refresh.

The CLI (``raccordo sync``, ``raccordo connectors check``), the Airflow tasks
(through :mod:`hub.orchestration`) and the demo all go through :class:`Hub`;
nothing else wires a pipeline to a registry and a keyring::

    with Hub.open(config) as hub:
        hub.check("cartella")
        runs = hub.sync("cartella")          # one RunSummary per stream
        hub.refresh()                        # the observatory's pre-computed tables
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType

from hub.config import Config, load_config
from hub.connector import CheckResult
from hub.errors import ConfigError
from hub.pipeline import Pipeline, ProgressCallback, build_connector, open_keyring
from hub.pseudonyms import Pseudonymiser
from hub.registry import Registry, RunSummary

__all__ = ["Hub", "RefreshResult", "push_sync", "serve_push"]


@dataclass(frozen=True)
class RefreshResult:
    #: Pre-computed indicator tables written.
    tables: int


class Hub:
    """One district hub: its configuration, registry and pseudonymiser."""

    def __init__(self, config: Config, registry: Registry, pipeline: Pipeline) -> None:
        self.config = config
        self.registry = registry
        self.pipeline = pipeline

    @classmethod
    def open(
        cls,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        pseudonymiser_token: str | None = None,
    ) -> Hub:
        """Open the registry (migrating it) and the keyring of a configuration.

        ``config``: a loaded :class:`~hub.config.Config`, or the path of
        ``raccordo.toml`` (None: the default search, as the CLI does).
        ``pseudonymiser_token``: with ``[hub] pseudonymiser_url``, this client's token for
        the pseudonymisation service (e.g. from an Airflow Connection); None: the one in
        the environment variable ``[hub] pseudonymiser_token_env``.
        """
        cfg = config if isinstance(config, Config) else load_config(config)
        if cfg.hub.push_url:
            # A worker in push mode has no registry: opening one would quietly create an
            # empty local database instead of reaching the district's.
            raise ConfigError(
                "this configuration is a consortium worker in push mode: it has no registry",
                where=f"{cfg.path} [hub] push_url",
                hint="runs, quarantine and indicators are on the district hub; "
                "here only `raccordo sync` (which pushes) applies",
            )
        keyring = open_keyring(cfg)
        registry = Registry.open(cfg.registry_url)
        try:
            pipeline = Pipeline(cfg, registry, keyring, pseudonymiser_token=pseudonymiser_token)
        except BaseException:
            registry.close()
            raise
        return cls(cfg, registry, pipeline)

    @property
    def pseudonymiser(self) -> Pseudonymiser:
        return self.pipeline.pseudonymiser

    def check(self, name: str) -> CheckResult:
        """Ask connector ``name`` whether it can reach its source (reads no record)."""
        return build_connector(self.config, name).check()

    def sync(
        self,
        name: str,
        *,
        progress: ProgressCallback | None = None,
        full_refresh: bool = False,
    ) -> list[RunSummary]:
        """Sync every stream of connector ``name`` (one run per stream).

        ``full_refresh``: read and map every record again (the cursor is reset); a
        changed mapping ``version`` does the same by itself. Raises
        :class:`hub.errors.RunFailed` if a run stops, :class:`hub.registry.SyncRefused`
        if another process is syncing ``name``.
        """
        return self.pipeline.sync(name, progress=progress, full_refresh=full_refresh)

    def refresh(self, touched: Collection[tuple[str, int]] | None = None) -> RefreshResult:
        """Recompute the observatory's pre-computed indicator tables: all of them, or only
        the ``(organisation, year)`` slices in ``touched`` (after a sync:
        :func:`hub.observatory.aggregates.touched_slices`)."""
        from hub.observatory.aggregates import refresh as refresh_tables

        return RefreshResult(tables=refresh_tables(self.registry.engine, touched=touched))

    def refresh_after_sync(self) -> RefreshResult:
        """Recompute only the slices the runs since the last refresh touched (everything when
        nothing is stored yet): what ``raccordo sync`` and the Airflow ``refresh`` task do.
        Changes made outside syncs (organisations renamed) need a full :meth:`refresh`."""
        from hub.observatory.aggregates import refresh_after_sync

        return RefreshResult(tables=refresh_after_sync(self.registry.engine))

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def push_sync(
    config: Config | str | os.PathLike[str] | None,
    name: str,
    *,
    progress: ProgressCallback | None = None,
    full_refresh: bool = False,
    refresh: bool = True,
    pseudonymiser_token: str | None = None,
) -> list[RunSummary]:
    """A consortium worker's sync in push mode (``[hub] push_url``, ``raccordo sync --push``).

    Extracts and pseudonymises here (through the district's pseudonymisation service),
    pushes each batch to the district hub, which loads it and answers with a signed
    receipt; opens no registry and needs no database credentials
    (:mod:`hub.exchange.push`).
    """
    from hub.exchange.push import push_sync as run_push

    cfg = config if isinstance(config, Config) else load_config(config)
    return run_push(
        cfg,
        name,
        progress=progress,
        full_refresh=full_refresh,
        refresh=refresh,
        pseudonymiser_token=pseudonymiser_token,
    )


def serve_push(
    config: Config | str | os.PathLike[str] | None,
    home: os.PathLike[str] | str,
    *,
    host: str = "127.0.0.1",
    port: int = 18700,
) -> None:
    """The district hub's push endpoint (``raccordo push serve``): loads what its workers
    push through this configuration's pipeline and registry."""
    from pathlib import Path

    from hub.exchange.home import open_home
    from hub.exchange.push import serve_push as run_server

    exchange_home = open_home(Path(home))
    with Hub.open(config) as hub:
        run_server(exchange_home, hub.pipeline, host=host, port=port)
