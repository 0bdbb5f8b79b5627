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

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    from hub.registry import tables

    return registry_pseudonym_columns(tables.metadata, tables.PSEUDONYM)


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
) -> RotationReport:
    """Convert every pseudonym in ``columns`` to ``to_epoch``.

    Rows are read by ``id`` in batches; ``start`` gives, per ``"table.column"``, the last
    id already done (from :class:`RotationProgress`), and ``on_batch(column, last_id)`` is
    called after each commit so the caller can record it.
    """
    report = RotationReport()
    md = sa.MetaData()
    for table_name, column_name in columns:
        table = sa.Table(table_name, md, autoload_with=engine)
        ident, col = table.c.id, table.c[column_name]
        label = f"{table_name}.{column_name}"
        last = (start or {}).get(label, 0)
        while True:
            with engine.begin() as conn:
                rows = conn.execute(
                    sa.select(ident, col)
                    .where(ident > last, col.is_not(None))
                    .order_by(ident)
                    .limit(batch)
                ).all()
                if not rows:
                    break
                by_epoch: dict[int, list[tuple[int, bytes]]] = {}
                for rid, text in rows:
                    epoch, raw = _parse(text, label)
                    if epoch == to_epoch:
                        report.already += 1
                    else:
                        by_epoch.setdefault(epoch, []).append((rid, raw))
                updates = []
                for epoch, items in by_epoch.items():
                    new = convert(epoch, [raw for _, raw in items])
                    updates += [
                        {"_id": rid, "_v": pseudonym_text(to_epoch, n)}
                        for (rid, _), n in zip(items, new, strict=True)
                    ]
                if updates:
                    conn.execute(
                        table.update()
                        .where(ident == sa.bindparam("_id"))
                        .values({column_name: sa.bindparam("_v")}),
                        updates,
                    )
                report.converted += len(updates)
                last = rows[-1][0]
            report.batches += 1
            if on_batch is not None:
                on_batch(label, last)
    return report


def _parse(text: str, label: str) -> tuple[int, bytes]:
    try:
        return parse_pseudonym_text(text)
    except ValueError:
        raise MixedPseudonyms(label) from None


def epochs_in_use(engine: sa.Engine, columns: Sequence[Column]) -> set[int]:
    """The epochs that pseudonyms of ``columns`` carry (read from their text prefix)."""
    md = sa.MetaData()
    found: set[int] = set()
    with engine.connect() as conn:
        for table_name, column_name in columns:
            col = sa.Table(table_name, md, autoload_with=engine).c[column_name]
            prefix = sa.func.substr(col, 1, 12)
            for (p,) in conn.execute(sa.select(prefix).where(col.is_not(None)).distinct()):
                found.add(int(str(p)[len(TEXT_PREFIX) :].split(".", 1)[0]))
    return found


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
