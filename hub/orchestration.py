"""What a scheduler runs for one connector: check → sync → refresh.

Each step opens a :class:`hub.service.Hub` (the one application service) and calls it.
The functions here are what ``raccordo connectors check`` and the Airflow tasks
of ``dags/raccordo.py`` call. They take the path of ``raccordo.toml`` (not a
loaded configuration), so that a worker process opens the file, the keyring and
the registry itself, and they return only small JSON-serialisable summaries —
run ids, counts, the shape of the cursor — fit for Airflow's XCom. A summary
never holds a record, an identifier, a pseudonym or a secret.

``overrides`` are values merged into ``[connectors.NAME.config]`` at run time:
the Airflow tasks take them from an Airflow Connection (see
:func:`connection_overrides`), so a token never has to be written in
``raccordo.toml`` or in a DAG file. This module never imports Airflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from hub.config import Config, load_config
from hub.errors import ConfigError
from hub.registry import RunSummary

#: Connector types whose settings have a base URL and a bearer token, filled from an
#: Airflow Connection's ``host`` (plus port and schema) and ``password``.
URL_AND_TOKEN = {"siuss_waas": ("base_url", "token")}

#: Steps run after a successful sync of a connector. Each takes the configuration and the
#: connector name and returns a short label of what it refreshed. The observatory's
#: pre-computed tables are the first (as ``raccordo sync`` refreshes them too).
Refresher = Callable[[Config, str], str]


def refresh_observatory(config: Config, name: str) -> str:
    """Recompute the observatory's pre-computed tables the syncs since the last refresh
    touched (``raccordo observatory refresh`` recomputes all of them)."""
    from hub.service import Hub

    with Hub.open(config) as hub:
        n = hub.refresh_after_sync().tables
    return f"observatory: {n} tables"


REFRESHERS: list[Refresher] = [refresh_observatory]


def register_refresher(fn: Refresher) -> Refresher:
    """Add a step to run after every successful sync (usable as a decorator)."""
    if fn not in REFRESHERS:
        REFRESHERS.append(fn)
    return fn


def load_with_overrides(
    config_path: str | os.PathLike[str] | None,
    name: str,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load ``raccordo.toml`` and merge ``overrides`` into connector ``name``'s settings."""
    config = load_config(config_path)
    settings = config.connector(name)  # a ConfigError naming the known ones
    if not overrides:
        return config
    merged = {**settings.config, **dict(overrides)}
    connectors = {
        **config.settings.connectors,
        name: settings.model_copy(update={"config": merged}),
    }
    return Config(config.settings.model_copy(update={"connectors": connectors}), config.path)


def connection_overrides(
    connector_type: str,
    *,
    conn_type: str | None = None,
    host: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    login: str | None = None,
    password: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Connector settings from the fields of a scheduler's connection record.

    ``extra`` (a JSON object) is merged as it is: any setting of any connector can be
    given there. For connectors with a base URL and a token (``siuss_waas``), ``host``
    becomes the base URL (a full ``https://…`` URL, or a host name completed with
    ``conn_type``, ``port`` and ``schema`` as the path) and ``password`` the token.
    ``login`` is not used by any connector today.
    """
    out: dict[str, Any] = dict(extra or {})
    fields = URL_AND_TOKEN.get(connector_type)
    if fields is None:
        return out
    url_key, token_key = fields
    if host:
        if host.startswith(("http://", "https://")):
            url = host
        else:
            scheme = conn_type if conn_type in ("http", "https") else "https"
            url = f"{scheme}://{host}" + (f":{port}" if port else "")
            if schema:
                url += "/" + schema.lstrip("/")
        out[url_key] = url.rstrip("/")
    if password:
        out[token_key] = password
    return out


def check(
    config_path: str | os.PathLike[str] | None,
    name: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Ask connector ``name`` whether it can reach its source: ``{connector, ok, message}``."""
    from hub.pipeline import build_connector

    # No registry nor keyring is needed to ask a source whether it answers.
    config = load_with_overrides(config_path, name, overrides)
    result = build_connector(config, name).check()
    return {"connector": name, "ok": bool(result.ok), "message": result.message}


def run_summary(summary: RunSummary, stream: str | None = None) -> dict[str, Any]:
    """The accounting of one run as plain JSON values."""
    return {
        "run_id": summary.id,
        "stream": summary.stream if summary.stream is not None else stream,
        "status": summary.status,
        "read": summary.read,
        "loaded": summary.loaded,
        "unchanged": summary.unchanged,
        "quarantined": summary.quarantined,
        "duplicates": summary.duplicates,
        "deleted": summary.deleted,
        "source_errors": summary.source_errors,
        "balanced": summary.balanced,
    }


def cursor_shape(state: Mapping[str, Any]) -> dict[str, int | float]:
    """What a connector's saved state looks like, without its content.

    Numbers (a timestamp, an offset) are kept; a list or table (file names and their
    digests, flow ids already seen) is replaced by its length; text is left out, since
    it could be anything a source put there.
    """
    out: dict[str, int | float] = {}
    for key, value in sorted(state.items()):
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, int | float):
            out[key] = value
        elif isinstance(value, list | dict | tuple | set):
            out[key] = len(value)
    return out


def sync(
    config_path: str | os.PathLike[str] | None,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    pseudonymiser_token: str | None = None,
) -> dict[str, Any]:
    """Sync every stream of connector ``name`` (the same pipeline as ``raccordo sync``).

    Opens the keyring and the registry inside the call and closes the registry after.
    Returns ``{connector, org, runs: [...], cursor: {stream: shape}}``; a failed run
    raises the pipeline's :class:`hub.errors.RunFailed` (its message names the run and the
    reason, never a record).
    """
    from hub.pipeline import build_connector
    from hub.service import Hub

    config = load_with_overrides(config_path, name, overrides)
    settings = config.connector(name)
    if not settings.enabled:
        raise ConfigError(
            f"connector {name!r} is disabled",
            where=f"{config.path} [connectors.{name}].enabled",
            hint="set enabled = true to sync it",
        )
    streams = [s.name for s in build_connector(config, name).streams()]
    if config.hub.push_url:
        # A consortium's worker in push mode: no registry here; the district hub loads,
        # keeps the cursor and refreshes (docs/exchange.md, "Push mode").
        from hub.service import push_sync

        pushed = push_sync(config, name, pseudonymiser_token=pseudonymiser_token)
        return {
            "connector": name,
            "org": settings.org,
            "runs": [
                run_summary(s, streams[i] if i < len(streams) else None)
                for i, s in enumerate(pushed)
            ],
            "cursor": {},
            "pushed_to": config.hub.push_url,
            "refused_units": 0,
        }
    with Hub.open(config, pseudonymiser_token=pseudonymiser_token) as hub:
        summaries = hub.sync(name)
        cursor = {s: cursor_shape(hub.registry.get_state(name, s)) for s in streams}
        ids = [s.id for s in summaries]
        refused = hub.registry.refused_unit_counts(ids)
        warned = hub.registry.warning_counts(ids)
    runs = [
        {
            **run_summary(s, streams[i] if i < len(streams) else None),
            "refused_units": refused.get(s.id, 0),
            "warnings": warned.get(s.id, 0),
        }
        for i, s in enumerate(summaries)
    ]
    return {
        "connector": name,
        "org": settings.org,
        "runs": runs,
        "cursor": cursor,
        "refused_units": sum(refused.values()),
    }


def refusal_line(result: Mapping[str, Any]) -> str:
    """The last log line of a sync task: how many units were refused whole and where to
    look (``raccordo sync`` exits with code 8 in the same case). ``result`` is what
    :func:`sync` returned."""
    total = int(result.get("refused_units", 0))
    name = result.get("connector", "?")
    if not total:
        return f"{name}: no unit refused"
    runs = [str(r["run_id"]) for r in result.get("runs", []) if r.get("refused_units")]
    where = " ".join(f"--run {r}" for r in runs)
    return (
        f"{name}: {total} unit(s) (files, flows, pages) refused whole, nothing loaded from "
        f"them: see raccordo quarantine list {where}".rstrip()
    )


def refresh(config_path: str | os.PathLike[str] | None, name: str) -> dict[str, Any]:
    """Run what depends on connector ``name``'s data (the :data:`REFRESHERS`), in order."""
    config = load_config(config_path)
    config.connector(name)
    done = [fn(config, name) for fn in REFRESHERS]
    return {"connector": name, "refreshed": done}
