"""The oracle of the parts tests: a sequence of source versions synced into two registries
with the same keys, one skipping the parts it holds as they are, one reading every part.

After every sync both hold the same rows and quarantine and the runs the same counters;
``check(what, skipped_read, all_read)`` then says how many parts the skipping sync read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from hub.config import load_config
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry, RunSummary
from tests.e2e.conftest import registry_dump

V = TypeVar("V")


def second_registry_url(registry_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Another registry on the same kind of database as ``registry_url``."""
    if registry_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'second.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.url(server.create_database(f"parts_{uuid.uuid4().hex[:8]}")))


def counters(run: RunSummary) -> tuple[int, ...]:
    return (
        run.read,
        run.loaded,
        run.unchanged,
        run.duplicates,
        run.quarantined,
        run.removed,
        run.source_errors,
    )


def _sync(ws: Path, connector: str) -> tuple[RunSummary, Any, set[Any]]:
    cfg = load_config(ws / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    try:
        (run,) = Pipeline(cfg, reg, open_keyring(cfg)).sync(connector)
        quarantine = {
            (q["location"], q["rule"], q["reason"], q["field"]) for q in reg.quarantine_entries()
        }
    finally:
        reg.close()
    return run, registry_dump(cfg.registry_url), quarantine


def assert_skipping_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    *,
    reader: ModuleType,
    connector: str,
    skipping: Path,
    reading: Path,
    versions: Iterable[tuple[str, V]],
    write: Callable[[Path, V], None],
    check: Callable[[str, int, int], None],
) -> None:
    """Write each version into both workspaces (``write(workspace, version)``) and sync
    ``connector`` in both; ``reader``: the module whose ``in_parts`` the connector calls
    (wrapped to count the parts read)."""
    read_parts: list[int] = []
    offered = reader.in_parts

    def counting(rows: Iterable[Any], **kw: Any) -> Any:
        build: Callable[[Any], Any] = kw.pop("build")

        def counted(part_rows: Any) -> Any:
            read_parts[-1] += 1
            return build(part_rows)

        return offered(rows, build=counted, **kw)

    monkeypatch.setattr(reader, "in_parts", counting)
    for what, version in versions:
        write(skipping, version)
        write(reading, version)
        read_parts.append(0)
        run, rows, quarantine = _sync(skipping, connector)
        skipped_read = read_parts[-1]
        with monkeypatch.context() as m:
            m.setattr(Pipeline, "_known_part", lambda *_: None)
            read_parts.append(0)
            expected_run, expected_rows, expected_quarantine = _sync(reading, connector)
        assert run.balanced, what
        assert counters(run) == counters(expected_run), what
        assert rows == expected_rows, what
        assert quarantine == expected_quarantine, what
        check(what, skipped_read, read_parts[-1])
