"""Raccordo's Airflow DAGs: one per connector configured in ``raccordo.toml``.

Each DAG runs ``check`` → ``sync`` → ``refresh`` for its connector, calling the
same functions as the ``raccordo`` command (:mod:`hub.orchestration`):

* ``check`` asks the source whether it answers;
* ``sync`` reads, pseudonymises, maps, validates and loads, in one pipeline: it
  runs on the connector's ``queue`` (a worker inside the consortium's network),
  opens the keyring there, and only pseudonymised rows travel to the registry;
* ``refresh`` runs what depends on the new data (the observatory's pre-computed tables).

Secrets never appear here: the task reads the Airflow Connection
``raccordo_<connector>`` (``AIRFLOW_CONN_RACCORDO_<CONNECTOR>`` or the secrets
backend) and maps it onto the connector's settings (host → base URL, password →
token, extra → any setting); a worker's token for the district's pseudonymisation
service comes from the Connection ``raccordo_pseudonymiser`` (its password). The
``sync`` task's last log line says how many whole units (files, flows, pages) were
refused and where to look. XCom carries small summaries only: run ids, counts and
the shape of the cursor.

Parsing is cheap: the top level reads the TOML file and imports nothing of
``hub``; when Airflow runs one task, only that task's DAG is built
(``get_parsing_context``). The configuration file is ``$RACCORDO_CONFIG``.
See docs/deploy.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from airflow.sdk import dag, get_parsing_context, task

CONFIG_ENV = "RACCORDO_CONFIG"
#: Seconds between two tries of a failed task (default five minutes).
RETRY_DELAY_ENV = "RACCORDO_AIRFLOW_RETRY_DELAY"
DEFAULT_SCHEDULE = "@daily"  # the default of `schedule` in hub/config.py
RETRIES = 2
DAG_PREFIX = "raccordo_"
PSEUDONYMISER_CONNECTION = "raccordo_pseudonymiser"
log = logging.getLogger("raccordo.dags")


class RaccordoTaskError(RuntimeError):
    """A task's failure, told in one readable message (no record, no secret)."""


def _config_path() -> Path:
    value = os.environ.get(CONFIG_ENV)
    if not value:
        raise RuntimeError(
            f"{CONFIG_ENV} is not set: point it to the district's raccordo.toml "
            "in the environment of the Airflow scheduler, DAG processor and workers"
        )
    return Path(value).expanduser().resolve()


def _connectors(path: Path) -> dict[str, dict[str, Any]]:
    """The enabled connectors of ``raccordo.toml`` (full validation happens in the tasks)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RuntimeError(f"{path}: cannot read the Raccordo configuration: {e}") from None
    connectors = data.get("connectors", {})
    if not isinstance(connectors, dict):
        raise RuntimeError(f"{path}: [connectors] must be a table")
    return {
        name: c
        for name, c in sorted(connectors.items())
        if isinstance(c, dict) and c.get("enabled", True)
    }


def _retry_delay() -> dt.timedelta:
    raw = os.environ.get(RETRY_DELAY_ENV, "300")
    try:
        return dt.timedelta(seconds=max(0.0, float(raw)))
    except ValueError:
        raise RuntimeError(f"{RETRY_DELAY_ENV} must be a number of seconds, not {raw!r}") from None


def _overrides(name: str, connector_type: str) -> dict[str, Any]:
    """Connector settings from the Airflow Connection ``raccordo_<name>``, if there is one."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from hub.orchestration import connection_overrides

    try:
        conn = BaseHook.get_connection(f"{DAG_PREFIX}{name}")
    except AirflowNotFoundException:
        return {}
    return connection_overrides(
        connector_type,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        login=conn.login,
        password=conn.password,
        extra=conn.extra_dejson,
    )


def _pseudonymiser_token() -> str | None:
    """This worker's token for the district's pseudonymisation service: the password of the
    Airflow Connection ``raccordo_pseudonymiser`` if there is one (else the task uses the
    environment variable named by ``[hub] pseudonymiser_token_env``)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(PSEUDONYMISER_CONNECTION).password or None
    except AirflowNotFoundException:
        return None


def build_dag(config_path: Path, name: str, settings: dict[str, Any]) -> Any:
    """The DAG of connector ``name``."""
    connector_type = str(settings.get("type", ""))
    org = str(settings.get("org", ""))
    queue = settings.get("queue")
    pinned: dict[str, Any] = {"queue": str(queue)} if queue else {}
    tags = ["raccordo", f"org:{org}", f"type:{connector_type}"]
    if queue:
        tags.append(f"queue:{queue}")

    @dag(
        dag_id=f"{DAG_PREFIX}{name}",
        description=str(settings.get("description", "")) or f"Raccordo connector {name}",
        schedule=settings.get("schedule", DEFAULT_SCHEDULE),
        start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,  # two syncs of one connector never overlap
        tags=tags,
        default_args={"owner": "raccordo", "retries": RETRIES, "retry_delay": _retry_delay()},
        doc_md=f"Connector `{name}` ({connector_type}) of organisation `{org}`: "
        "check the source, sync it into the registry, refresh what depends on it.",
    )
    def connector_dag() -> None:
        @task(task_id="check", multiple_outputs=False, **pinned)
        def check() -> dict[str, Any]:
            from hub import orchestration
            from hub.errors import RaccordoError

            try:
                result = orchestration.check(config_path, name, _overrides(name, connector_type))
            except RaccordoError as e:
                raise RaccordoTaskError(f"connector {name!r}: {e}") from None
            if not result["ok"]:
                raise RaccordoTaskError(
                    f"connector {name!r}: the source does not answer: {result['message']}"
                )
            return result

        @task(task_id="sync", multiple_outputs=False, **pinned)
        def sync() -> dict[str, Any]:
            from hub import orchestration
            from hub.errors import RaccordoError

            try:
                result = orchestration.sync(
                    config_path,
                    name,
                    _overrides(name, connector_type),
                    pseudonymiser_token=_pseudonymiser_token(),
                )
            except RaccordoError as e:
                raise RaccordoTaskError(f"connector {name!r}: {e}") from None
            # The task's last log line: how many whole units were refused, where to look.
            log.info("%s", orchestration.refusal_line(result))
            return result

        @task(task_id="refresh", multiple_outputs=False)
        def refresh() -> dict[str, Any]:
            from hub import orchestration

            return orchestration.refresh(config_path, name)

        check() >> sync() >> refresh()

    return connector_dag()


def _build_all() -> None:
    path = _config_path()
    wanted = get_parsing_context().dag_id
    for name, settings in _connectors(path).items():
        dag_id = f"{DAG_PREFIX}{name}"
        if wanted and wanted != dag_id:
            continue  # a task of another DAG is running: build only that one
        globals()[dag_id] = build_dag(path, name, settings)


_build_all()
