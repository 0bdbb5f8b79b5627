"""The one seam between a received package and the registry.

:func:`load_records` writes the rows of an accepted package through today's
:class:`hub.registry.Registry` API, as one run and one transaction: every
row is loaded, unchanged (already there, same content: a replay), deleted (a
tombstone) or quarantined (a value that does not fit its column), and the
counts always add up. The integrator ports this function to the engine's
``load`` stage; nothing else in :mod:`hub.exchange` touches the registry.

Rows are keyed by the package's row key under the sender and the
convenzione, so a row sent again replaces itself instead of adding a copy,
and rows of two senders never collide. ``org`` is the sender's code.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from hub.exchange import crypto
from hub.exchange.convenzioni import PSEUDONYM_COLUMNS
from hub.exchange.package import Row
from hub.gcpause import no_gc_pauses
from hub.pseudonyms.pseudonymiser import is_v2_text
from hub.registry import (
    BatchCounts,
    EntityRow,
    QuarantineEntry,
    Registry,
    SourceRecordChange,
    h16,
)
from hub.registry import tables as t

#: table name in a package → registry model kind (they are the same names).
KINDS = tuple(t.RECORD_TABLES)


@dataclass
class LoadCounts:
    received: int = 0
    loaded: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    run_id: int = 0

    @property
    def balanced(self) -> bool:
        return self.received == self.loaded + self.unchanged + self.quarantined

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _connector(sender: str) -> str:
    return f"x.{sender}"[:40]


def row_key_hash(table: str, key: str) -> str:
    return "x" + crypto.sha256_hex(f"{table}|{key}".encode())[:60]


Converter = Callable[[str, Any], Any]

#: Columns the registry fills itself (provenance, keys): never taken from a package.
_REGISTRY_SET = frozenset({"org", "key_hash", "source_record", "position", "run_id"})


def _as_date(name: str, v: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError:
        raise ValueError(f"{name} is not a date (YYYY-MM-DD)") from None


def _as_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false")
    return v


def _as_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer")
    return v


def _as_number(name: str, v: Any) -> decimal.Decimal:
    try:
        return decimal.Decimal(str(v))
    except decimal.InvalidOperation:
        raise ValueError(f"{name} is not a number") from None


def _as_pseudonym(name: str, v: Any) -> str:
    # A person travels as a text pseudonym of the recipient's domain (the registry keeps
    # it once, in ``pseudonyms``, and the row its id).
    if not isinstance(v, str) or not is_v2_text(v):
        raise ValueError(f"{name} is not a pseudonym")
    return v


def _as_text(length: int | None) -> Converter:
    def convert(name: str, v: Any) -> str:
        s = str(v)
        if length is not None and len(s) > length:
            raise ValueError(f"{name} is longer than {length} characters")
        return s

    return convert


@functools.cache
def _plan(kind: str) -> tuple[dict[str, tuple[Converter, bool]], frozenset[str]]:
    """Per column of a record table: its converter and whether it may be empty; and the
    columns a row must carry (computed once per table, not once per row)."""
    table = t.RECORD_TABLES[kind]
    plan: dict[str, tuple[Converter, bool]] = {}
    required = set()
    for col in table.columns:
        if col.name == "id" or col.name in _REGISTRY_SET:
            continue
        typ = col.type
        conv: Converter
        if col.name in PSEUDONYM_COLUMNS:
            conv = _as_pseudonym
        elif isinstance(typ, sa.Date):
            conv = _as_date
        elif isinstance(typ, sa.Boolean):
            conv = _as_bool
        elif isinstance(typ, sa.Integer):
            conv = _as_int
        elif isinstance(typ, sa.Numeric):
            conv = _as_number
        else:
            conv = _as_text(getattr(typ, "length", None))
        plan[col.name] = (conv, bool(col.nullable))
        if not col.nullable:
            required.add(col.name)
    return plan, frozenset(required)


def _decode(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    plan, required = _plan(kind)
    missing = required - values.keys()
    if missing:
        raise ValueError(f"{min(missing)} is missing")
    out: dict[str, Any] = {}
    for name, v in values.items():
        conv, nullable = plan[name]  # KeyError: not an exchangeable column of the table
        if v is None:
            if not nullable:
                raise ValueError(f"{name} may not be empty")
            out[name] = None
        else:
            out[name] = conv(name, v)
    return out


def load_records(
    registry: Registry,
    *,
    sender: str,
    convenzione: str,
    convenzione_digest: str,
    package_id: str,
    rows: Sequence[Row],
    quarantine_retention: dt.timedelta = dt.timedelta(days=90),
) -> LoadCounts:
    """Write an accepted package's rows; one transaction, counts that add up."""
    with no_gc_pauses():
        return _load_records(
            registry,
            sender=sender,
            convenzione=convenzione,
            convenzione_digest=convenzione_digest,
            package_id=package_id,
            rows=rows,
            quarantine_retention=quarantine_retention,
        )


def _load_records(
    registry: Registry,
    *,
    sender: str,
    convenzione: str,
    convenzione_digest: str,
    package_id: str,
    rows: Sequence[Row],
    quarantine_retention: dt.timedelta,
) -> LoadCounts:
    connector = _connector(sender)
    stream = convenzione
    run_id = registry.start_run(
        connector=connector,
        connector_type="exchange",
        org=sender,
        mapping=convenzione,
        mapping_version=convenzione_digest[:12],
    )
    counts = LoadCounts(run_id=run_id)
    try:
        keys = [row_key_hash(r.table, r.key) for r in rows]
        existing = registry.existing_record_hashes(connector, stream, keys)
        changes: dict[str, SourceRecordChange] = {}
        quarantine: list[QuarantineEntry] = []
        for r, skh in zip(rows, keys, strict=True):
            counts.received += 1
            where = f"package {package_id}, table {r.table}"
            if r.op == "delete":
                counts.loaded += 1
                counts.deleted += 1
                changes[skh] = SourceRecordChange(skh, "deleted", "delete", ())
                continue
            try:
                if r.table not in t.RECORD_TABLES:
                    raise KeyError(r.table)
                values = _decode(r.table, r.values)
            except (KeyError, ValueError, decimal.InvalidOperation) as e:
                counts.quarantined += 1
                # The reason names the column, never a value (it could be a pseudonym).
                reason = e.args[0] if isinstance(e, ValueError) else f"unknown field {e.args[0]!r}"
                quarantine.append(
                    QuarantineEntry(
                        kind="record",
                        location=where,
                        rule="exchange.row",
                        reason=str(reason)[:300],
                        payload={"table": r.table, "fields": sorted(r.values)},
                        source_key_hash=skh,
                    )
                )
                continue
            content = h16(crypto.canonical({"t": r.table, "v": r.values}))
            if existing.get(skh) == content and skh not in changes:
                counts.unchanged += 1
                continue
            changes[skh] = SourceRecordChange(
                skh,
                content,
                "upsert",
                (EntityRow(r.table, skh, values),),
                replaces=skh in existing or skh in changes,
            )
            counts.loaded += 1
        registry.commit_batch(
            run_id=run_id,
            connector=connector,
            stream=stream,
            org=sender,
            changes=list(changes.values()),
            quarantine=quarantine,
            counts=BatchCounts(
                read=counts.received,
                loaded=counts.loaded,
                unchanged=counts.unchanged,
                quarantined=counts.quarantined,
                deleted=counts.deleted,
            ),
            state={"package": package_id},
            retention=quarantine_retention,
        )
    except Exception as e:
        registry.finish_run(run_id, status="failed", error=f"{type(e).__name__}")
        raise
    registry.finish_run(run_id, status="succeeded")
    return counts


def purge_expired(
    registry: Registry,
    *,
    sender: str,
    convenzione: str,
    convenzione_digest: str,
    retention: dt.timedelta,
    now: dt.datetime | None = None,
) -> int:
    """Remove what was received from ``sender`` under ``convenzione`` and last changed longer
    ago than the convenzione's retention: one run of deletions, counted like any other."""
    now = now or dt.datetime.now(dt.UTC)
    connector = _connector(sender)
    stale = registry.source_records_unchanged_since(connector, convenzione, now - retention)
    if not stale:
        return 0
    run_id = registry.start_run(
        connector=connector,
        connector_type="exchange",
        org=sender,
        mapping=convenzione,
        mapping_version=convenzione_digest[:12],
    )
    registry.remove_source_records(
        run_id,
        stale,
        connector=connector,
        stream=convenzione,
        state={"retention_purge": now.isoformat()},
    )
    registry.finish_run(run_id, status="succeeded")
    return len(stale)
