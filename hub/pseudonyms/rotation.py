"""Key rotation of a registry, and the refusal to mix v1 and v2 pseudonyms.

Rotation moves every pseudonym of a registry from its epoch to the current one by
multiplying it with ``k_new · k_old⁻¹``, done by whoever holds the keys (the local keyring,
or the service's ``/v1/reepoch``). The registry-side part is one function,
:func:`rotate_columns`, over a list of ``(table, column)`` pairs holding text pseudonyms.
It works in batches, each batch in its own transaction with the progress marker written
after it; because a converted value carries the new epoch, a batch re-done after a crash
changes nothing, so a rotation killed at any point is resumed by running it again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub.errors import RaccordoError
from hub.pseudonyms.keyring import Keyring
from hub.pseudonyms.pseudonymiser import TEXT_PREFIX, parse_pseudonym_text, pseudonym_text

#: ``(from_epoch, elements) -> elements`` in the target epoch, same order.
EpochConverter = Callable[[int, list[bytes]], list[bytes]]
Column = tuple[str, str]
BATCH = 10_000


def registry_pseudonym_columns(metadata: sa.MetaData, pseudonym_type: object) -> list[Column]:
    """The ``(table, column)`` pairs of ``metadata`` typed ``pseudonym_type``."""
    return [
        (t.name, c.name)
        for t in metadata.sorted_tables
        for c in t.columns
        if c.type is pseudonym_type
    ]


def today_registry_columns() -> list[Column]:
    """The registry's own list (:data:`hub.registry.tables.PSEUDONYM_COLUMNS`): one truth."""
    from hub.registry import tables

    return list(tables.PSEUDONYM_COLUMNS)


#: Columns of today's registry holding JSON documents with pseudonyms among their values.
TODAY_JSON_COLUMNS: list[Column] = [("quarantine", "payload")]
#: Tables of today's registry holding binary pseudonyms as ``(id, epoch, value)`` rows
#: (storage v2: every person of the record tables is a row of ``pseudonyms``).
TODAY_BINARY_TABLES: list[str] = ["pseudonyms"]


def keyring_converter(keyring: Keyring, domain: str, to_epoch: int) -> EpochConverter:
    from hub.pseudonyms import group

    factors: dict[int, bytes] = {}

    def convert(from_epoch: int, elements: list[bytes]) -> list[bytes]:
        if from_epoch not in factors:
            factors[from_epoch] = keyring.conversion_factor(domain, from_epoch, domain, to_epoch)
        f = factors[from_epoch]
        return [group.multiply(f, e) for e in elements]

    return convert


@dataclass
class RotationReport:
    converted: int = 0
    already: int = 0
    batches: int = 0


class RotationProgress:
    """A small JSON file beside the keyring: the rotation under way and how far each column
    got. Written after each committed batch (so it may lag behind the database by one
    batch, never run ahead of it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, object] | None:
        if not self.path.is_file():
            return None
        doc: dict[str, object] = json.loads(self.path.read_text(encoding="utf-8"))
        return doc

    def save(self, doc: dict[str, object]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def rotate_columns(
    engine: sa.Engine,
    columns: Sequence[Column],
    convert: EpochConverter,
    to_epoch: int,
    *,
    batch: int = BATCH,
    start: dict[str, int] | None = None,
    on_batch: Callable[[str, int], None] | None = None,
    json_columns: Sequence[Column] = (),
    binary_tables: Sequence[str] = (),
) -> RotationReport:
    """Convert every pseudonym in ``columns`` to ``to_epoch``.

    Rows are read by ``id`` in batches; ``start`` gives, per ``"table.column"``, the last
    id already done (from :class:`RotationProgress`), and ``on_batch(column, last_id)`` is
    called after each commit so the caller can record it. ``json_columns`` hold JSON
    documents: every string value in them that is a v2 pseudonym is converted.
    ``binary_tables`` hold ``(id, epoch, value)`` rows: each ``value`` is converted and its
    ``epoch`` set.
    """
    report = RotationReport()
    md = sa.MetaData()
    insp = sa.inspect(engine)
    for table_name in binary_tables:
        if insp.has_table(table_name):
            _rotate_binary(
                engine, md, table_name, convert, to_epoch, batch, start or {}, on_batch, report
            )
    for table_name, column_name in json_columns:
        if insp.has_table(table_name):
            _rotate_json(
                engine,
                md,
                (table_name, column_name),
                convert,
                to_epoch,
                batch,
                start or {},
                on_batch,
                report,
            )
    for table_name, column_name in columns:
        table = sa.Table(table_name, md, autoload_with=engine)
        label = f"{table_name}.{column_name}"
        col = table.c[column_name]

        def read_text(row: Sequence[Any], label: str = label) -> tuple[int, bytes]:
            return _parse(str(row[1]), label)

        _rotate_rows(
            engine,
            table,
            label,
            (col,),
            col.is_not(None),
            read_text,
            {column_name: "_v"},
            lambda new: {"_v": pseudonym_text(to_epoch, new)},
            convert,
            to_epoch,
            batch,
            (start or {}).get(label, 0),
            on_batch,
            report,
        )
    return report


def _rotate_binary(
    engine: sa.Engine,
    md: sa.MetaData,
    table_name: str,
    convert: EpochConverter,
    to_epoch: int,
    batch: int,
    start: dict[str, int],
    on_batch: Callable[[str, int], None] | None,
    report: RotationReport,
) -> None:
    table = sa.Table(table_name, md, autoload_with=engine)
    label = f"{table_name}.value"
    _rotate_rows(
        engine,
        table,
        label,
        (table.c.epoch, table.c.value),
        sa.true(),
        lambda row: (int(row[1]), bytes(row[2])),
        {"value": "_v", "epoch": "_e"},
        lambda new: {"_v": new, "_e": to_epoch},
        convert,
        to_epoch,
        batch,
        start.get(label, 0),
        on_batch,
        report,
    )


def _rotate_rows(
    engine: sa.Engine,
    table: sa.Table,
    label: str,
    columns: Sequence[sa.ColumnElement[object]],
    where: sa.ColumnElement[bool],
    read: Callable[[Sequence[Any]], tuple[int, bytes]],
    assign: dict[str, str],
    write: Callable[[bytes], dict[str, object]],
    convert: EpochConverter,
    to_epoch: int,
    batch: int,
    last: int,
    on_batch: Callable[[str, int], None] | None,
    report: RotationReport,
) -> None:
    """The rows of ``table`` after id ``last``, ``batch`` at a time, each batch in its own
    transaction: ``read`` gives a row's (epoch, element), the elements not of ``to_epoch`` are
    converted, and ``write`` gives the bind values of ``assign`` (column -> bind name)."""
    ident = table.c.id
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(ident, *columns).where(ident > last, where).order_by(ident).limit(batch)
            ).all()
            if not rows:
                return
            by_epoch: dict[int, list[tuple[int, bytes]]] = {}
            for row in rows:
                epoch, raw = read(row)
                if epoch == to_epoch:
                    report.already += 1
                else:
                    by_epoch.setdefault(epoch, []).append((int(row[0]), raw))
            updates = []
            for epoch, items in by_epoch.items():
                new = convert(epoch, [raw for _, raw in items])
                updates += [
                    {"_id": rid, **write(n)} for (rid, _), n in zip(items, new, strict=True)
                ]
            if updates:
                conn.execute(
                    table.update()
                    .where(ident == sa.bindparam("_id"))
                    .values({c: sa.bindparam(b) for c, b in assign.items()}),
                    updates,
                )
            report.converted += len(updates)
            last = int(rows[-1][0])
        report.batches += 1
        if on_batch is not None:
            on_batch(label, last)


def _rotate_json(
    engine: sa.Engine,
    md: sa.MetaData,
    where: Column,
    convert: EpochConverter,
    to_epoch: int,
    batch: int,
    start: dict[str, int],
    on_batch: Callable[[str, int], None] | None,
    report: RotationReport,
) -> None:
    table = sa.Table(where[0], md, autoload_with=engine)
    ident, col = table.c.id, table.c[where[1]]
    label = f"{where[0]}.{where[1]}"
    last = start.get(label, 0)
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(ident, col).where(ident > last).order_by(ident).limit(batch)
            ).all()
            if not rows:
                return
            docs = {rid: json.loads(text) for rid, text in rows if text}
            found: dict[str, tuple[int, bytes]] = {}
            for doc in docs.values():
                _collect(doc, found)
            old = {t: v for t, v in found.items() if v[0] != to_epoch}
            by_epoch: dict[int, list[str]] = {}
            for t, (epoch, _) in old.items():
                by_epoch.setdefault(epoch, []).append(t)
            mapping: dict[str, str] = {}
            for epoch, texts in by_epoch.items():
                new = convert(epoch, [old[t][1] for t in texts])
                mapping.update(
                    {t: pseudonym_text(to_epoch, n) for t, n in zip(texts, new, strict=True)}
                )
            updates = [
                {"_id": rid, "_v": json.dumps(_replace(doc, mapping))}
                for rid, doc in docs.items()
                if mapping and _mentions(doc, mapping)
            ]
            if updates:
                conn.execute(
                    table.update()
                    .where(ident == sa.bindparam("_id"))
                    .values({where[1]: sa.bindparam("_v")}),
                    updates,
                )
            report.converted += len(mapping)
            last = rows[-1][0]
        report.batches += 1
        if on_batch is not None:
            on_batch(label, last)


def _collect(doc: object, found: dict[str, tuple[int, bytes]]) -> None:
    if isinstance(doc, str) and doc.startswith(TEXT_PREFIX):
        with contextlib.suppress(ValueError):
            found[doc] = parse_pseudonym_text(doc)
    elif isinstance(doc, dict):
        for v in doc.values():
            _collect(v, found)
    elif isinstance(doc, list):
        for v in doc:
            _collect(v, found)


def _replace(doc: object, mapping: dict[str, str]) -> object:
    if isinstance(doc, str):
        return mapping.get(doc, doc)
    if isinstance(doc, dict):
        return {k: _replace(v, mapping) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_replace(v, mapping) for v in doc]
    return doc


def _mentions(doc: object, mapping: dict[str, str]) -> bool:
    found: dict[str, tuple[int, bytes]] = {}
    _collect(doc, found)
    return any(t in mapping for t in found)


def _parse(text: str, label: str) -> tuple[int, bytes]:
    try:
        return parse_pseudonym_text(text)
    except ValueError:
        raise MixedPseudonyms(label) from None


def epochs_in_use(
    engine: sa.Engine, columns: Sequence[Column], binary_tables: Sequence[str] = ()
) -> set[int]:
    """The epochs that pseudonyms of ``columns`` carry (read from their text prefix), and
    those of the rows of ``binary_tables``."""
    md = sa.MetaData()
    found: set[int] = set()
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for table_name in binary_tables:
            if insp.has_table(table_name):
                epoch = sa.Table(table_name, md, autoload_with=engine).c.epoch
                found.update(int(e) for e in conn.execute(sa.select(epoch).distinct()).scalars())
        for table_name, column_name in columns:
            col = sa.Table(table_name, md, autoload_with=engine).c[column_name]
            prefix = sa.func.substr(col, 1, 12)
            for (p,) in conn.execute(sa.select(prefix).where(col.is_not(None)).distinct()):
                head = str(p)
                try:
                    if not head.startswith(TEXT_PREFIX):
                        raise ValueError
                    found.add(int(head[len(TEXT_PREFIX) :].split(".", 1)[0]))
                except ValueError:
                    raise MixedPseudonyms(f"table {table_name}, column {column_name}") from None
    return found


def json_mentions_epoch(engine: sa.Engine, columns: Sequence[Column], epoch: int) -> bool:
    """Whether any JSON document of ``columns`` still holds a pseudonym of ``epoch``."""
    md = sa.MetaData()
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for table_name, column_name in columns:
            if not insp.has_table(table_name):
                continue
            col = sa.Table(table_name, md, autoload_with=engine).c[column_name]
            pattern = f'%"{TEXT_PREFIX}{epoch}.%'
            if conn.execute(sa.select(sa.literal(1)).where(col.like(pattern)).limit(1)).first():
                return True
    return False


# --- v1 / v2 -----------------------------------------------------------------------------
class MixedPseudonyms(RaccordoError):
    """The registry holds v1 (HMAC) pseudonyms, which v2 cannot extend or convert."""

    exit_code = 5

    def __init__(self, where: str) -> None:
        super().__init__(
            "this registry holds v1 pseudonyms (keyed HMACs, written by Raccordo before "
            "pseudonyms v2); they cannot be converted to v2 without the identifiers, and "
            "v1 and v2 pseudonyms must never be mixed in one registry",
            where=where,
            hint="rebuild the registry from the sources: point [hub] registry_url to a new, "
            "empty database (or move the SQLite file aside) and run `raccordo sync`; every "
            "source is read again and only v2 pseudonyms are written",
        )


def refuse_mixed_schemes(
    engine: sa.Engine, *, where: str, columns: Sequence[Column] | None = None
) -> None:
    """Raise :class:`MixedPseudonyms` if any pseudonym column holds a non-v2 value.

    The test is a range condition (``< 'v2.'`` or ``>= 'v2/'``), so an index on the column
    answers it without a scan.
    """
    md = sa.MetaData()
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for table_name, column_name in columns or today_registry_columns():
            if not insp.has_table(table_name):
                continue
            col = sa.Table(table_name, md, autoload_with=engine).c[column_name]
            bad = conn.execute(
                sa.select(sa.literal(1))
                .where(col.is_not(None), sa.or_(col < TEXT_PREFIX, col >= "v2/"))
                .limit(1)
            ).first()
            if bad is not None:
                raise MixedPseudonyms(f"{where} (table {table_name}, column {column_name})")
