"""Hand-made registry rows for tests (storage v2: persons and source records are integers).

``record(conn, org)`` gives the registry columns of one row (a fresh 16-byte key, a fresh
source record, a run); ``person(conn, "p1")`` the id of a pseudonym standing for the test's
person ``"p1"`` (the same id for the same name in one database).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools

import sqlalchemy as sa

from hub.pseudonyms import group
from hub.pseudonyms.pseudonymiser import pseudonym_text
from hub.registry import tables as t

_ids = itertools.count(1)
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def run(conn: sa.Connection, connector: str = "test", org: str = "T") -> int:
    """The id of a (succeeded) run of ``connector``: received rows are written by runs of
    ``x.<sender>`` connectors."""
    found = conn.execute(
        sa.select(t.runs.c.id).where(t.runs.c.connector == connector).limit(1)
    ).scalar_one_or_none()
    if found is not None:
        return int(found)
    res = conn.execute(
        t.runs.insert().values(
            connector=connector,
            connector_type="test",
            org=org,
            mapping="m",
            mapping_version="1",
            started_at=NOW,
            status="succeeded",
            read=0,
            loaded=0,
            unchanged=0,
            quarantined=0,
            duplicates=0,
            deleted=0,
            removed=0,
            source_errors=0,
            batches=0,
            unmapped_codes="{}",
        )
    )
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def record(
    conn: sa.Connection, org: str, *, connector: str = "test", run_id: int | None = None
) -> dict[str, object]:
    """The registry's own columns of one new row of ``org``, written by ``run_id`` (or by a
    run of ``connector``)."""
    n = next(_ids)
    return {
        "org": org,
        "key_hash": hashlib.blake2b(f"row {n}".encode(), digest_size=16).digest(),
        "source_record": n,
        "run_id": run_id if run_id is not None else run(conn, connector, org),
    }


def element(name: str) -> bytes:
    """A real group element (32 bytes) standing for the test's person ``name``."""
    return group.hash_to_group(group.H2G_PREFIX + f"test person|{name}".encode())


def pseudonym(name: str, epoch: int = 1) -> str:
    """The text pseudonym (``v2.<epoch>.<b64>``) standing for the test's person ``name``."""
    return pseudonym_text(epoch, element(name))


def person(conn: sa.Connection, name: str | None) -> int | None:
    """The ``pseudonyms`` id standing for the test's person ``name`` (None stays None)."""
    if name is None:
        return None
    value = element(name)
    ps = t.pseudonyms
    found = conn.execute(sa.select(ps.c.id).where(ps.c.value == value)).scalar_one_or_none()
    if found is not None:
        return int(found)
    res = conn.execute(ps.insert().values(epoch=1, value=value))
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def pseudonyms_of(conn: sa.Connection, table: sa.Table, column: str = "subject") -> list[str]:
    """The text pseudonyms of the persons a record table's ``column`` names, one per row."""
    ps = t.pseudonyms
    rows = conn.execute(
        sa.select(ps.c.epoch, ps.c.value).select_from(table.join(ps, ps.c.id == table.c[column]))
    )
    return [pseudonym_text(int(e), bytes(v)) for e, v in rows]
