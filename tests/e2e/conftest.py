"""Workspaces for end-to-end tests: a real config, keyring and registry."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.registry import tables as t
from tests.support.workspace import make_workspace as build_workspace

SYNTHETIC = """
[organisations.SYN]
name = "Consorzio sintetico"
kind = "ente_gestore"

[connectors.syn]
type = "synthetic"
org = "SYN"
mapping = "synthetic.toml"
[connectors.syn.config]
count = {count}
bad_ratio = 0.03
seed = 11
checkpoint_every = 250
"""

WorkspaceFactory = Callable[..., Path]


@pytest.fixture
def make_workspace(
    tmp_path: Path, registry_url: str, request: pytest.FixtureRequest
) -> WorkspaceFactory:
    """Build a workspace whose registry is ``registry_url`` (SQLite or PostgreSQL).

    ``keys_from`` copies the keyring of another workspace, so that two
    workspaces produce the same pseudonyms and can be compared.
    """
    counter = iter(range(1000))

    def make(
        count: int = 10_000,
        *,
        keys_from: Path | None = None,
        own_db: bool = False,
        batch_size: int = 1000,
        commit_every: int | None = None,
    ) -> Path:
        n = next(counter)
        ws = tmp_path / f"ws{n}"
        url = registry_url
        if own_db:  # a second registry on the same kind of database
            if registry_url.startswith("sqlite"):
                url = f"sqlite:///{tmp_path / f'registry{n}.sqlite'}"
            else:
                server = request.getfixturevalue("postgres_server")
                url = server.url(server.create_database(f"own{n}_{uuid.uuid4().hex[:8]}"))
        ws.mkdir()
        return build_workspace(
            ws,
            SYNTHETIC.format(count=count),
            registry_url=url,
            keys_from=keys_from,
            batch_size=batch_size,
            commit_every=commit_every,
        )

    return make


def registry_dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every record table's rows, without surrogate ids, run ids and timestamps.

    Storage v2 keys rows by integers (persons, source records, streams) assigned in the
    order rows arrive; the dump shows what they stand for instead: a person as its
    pseudonym's bytes, a source record and a unit as their keys, a stream as
    (connector, stream).
    """
    skip = {"id", "run_id", "updated_at"}
    engine = sa.create_engine(url)
    out: dict[str, list[tuple[object, ...]]] = {}
    with engine.connect() as conn:
        person = dict(conn.execute(sa.select(t.pseudonyms.c.id, t.pseudonyms.c.value)).all())
        source = dict(conn.execute(sa.select(t.source_records.c.id, t.source_records.c.key)).all())
        stream = {
            i: (c, s)
            for i, c, s in conn.execute(
                sa.select(t.streams.c.id, t.streams.c.connector, t.streams.c.stream)
            )
        }
        unit = dict(conn.execute(sa.select(t.units.c.id, t.units.c.key)).all())
        natural = {"subject": person, "household": person, "source_record": source}
        natural |= {"stream_id": stream, "unit": unit}
        for name, table in [*t.RECORD_TABLES.items(), ("source_records", t.source_records)]:
            cols = [c for c in table.c if c.name not in skip]
            rows = conn.execute(sa.select(*cols)).all()
            out[name] = sorted(
                (
                    tuple(
                        natural[c.name].get(v) if c.name in natural and v is not None else v
                        for c, v in zip(cols, r, strict=True)
                    )
                    for r in rows
                ),
                key=repr,
            )
    engine.dispose()
    return out
