"""The district registry: SQLAlchemy 2 on SQLite (default) or PostgreSQL.

Only the pipeline writes records, and it does so through
:meth:`Registry.commit_batch`, which applies a batch of records, its
quarantine entries, the run counters and the connector's new state in the
same transaction: a crash can lose no data and a re-run duplicates nothing.
A sync holds one :class:`LoadTransaction` that spans several batches and is
committed every ``commit_every`` records or ``commit_seconds`` (each commit
writes every page the batches dirtied, so fewer commits mean far less I/O).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import operator
import os
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import Any, Literal, NamedTuple, cast

import sqlalchemy as sa
from pyroaring import BitMap64

from hub.errors import ConfigError, RaccordoError
from hub.registry import tables as t
from hub.registry.migrate import upgrade

__all__ = [
    "BatchCounts",
    "ColumnChanges",
    "ColumnRows",
    "EntityRow",
    "LoadTransaction",
    "LoadedPart",
    "LoadedRecord",
    "PartChanges",
    "QuarantineEntry",
    "ReadAhead",
    "Registry",
    "RunSummary",
    "SourceRecordChange",
    "SyncRefused",
    "h16",
    "storage_error",
    "tables",
]

tables = t


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def h16(value: str | bytes) -> bytes:
    """The 16 bytes the registry stores for a keyed hash given as text (BLAKE2b-128 of it;
    16-byte values are kept as they are). Keys and record hashes are stored this way."""
    if isinstance(value, bytes) and len(value) == 16:
        return value
    data = value.encode() if isinstance(value, str) else value
    return hashlib.blake2b(data, digest_size=16).digest()


class EntityRow(NamedTuple):
    """A validated common-schema record ready for its table (a named tuple: a sync builds
    one per output of every record it loads).

    ``key_hash``: the row's identity (a keyed hash: text, or its 16 bytes as the registry
    stores them, :func:`h16`), or None for a row identified by ``position``: the n-th
    output of its model in the source record (an output without a mapping ``key``, of a
    kind a source record owns, :data:`hub.registry.tables.OWNED_KINDS`). ``values``: the
    model's fields, with ``subject`` / ``household`` as text pseudonyms (the registry
    stores them once, in ``pseudonyms``, and keeps their integer ids in the row).
    """

    kind: str
    key_hash: str | bytes | None
    values: Mapping[str, Any]
    position: int | None = None


class SourceRecordChange(NamedTuple):
    """A source record that is new, changed or cancelled, with what it now produces (a
    named tuple, like :class:`EntityRow`)."""

    source_key_hash: str
    #: The keyed record hash (16 bytes), or any text that stands for the content (hashed).
    record_hash: bytes | str
    op: Literal["upsert", "delete"]
    entities: tuple[EntityRow, ...] = ()
    unit_hash: str | None = None
    #: The record was loaded before: what it produced then may need removing.
    replaces: bool = True


class ColumnRows(NamedTuple):
    """The rows one mapping spec gives over the records of a :class:`ColumnChanges`, as
    columns: the row of record ``i`` holds ``columns[c][i]`` for each name ``names[c]``."""

    kind: str
    #: The model's fields (``subject`` / ``household`` as text pseudonyms, as in
    #: :class:`EntityRow`).
    names: tuple[str, ...]
    columns: Sequence[Sequence[Any]]
    #: Each record's row identity: its key hash (16 bytes) or, ``by_position``, its
    #: position among the record's outputs of that kind; ``None``: the record gives no row.
    ident: Sequence[bytes | int | None]
    by_position: bool


@dataclass
class ColumnChanges:
    """Source records, none twice, with their rows as columns: what the transform stage's
    fast path gives for a batch it decides whole. The registry writes the columns as they
    are, without a row object per output; :meth:`changes` gives the same records one by one
    (what the row path gives)."""

    source_key_hashes: list[str]
    #: Their keyed record hashes (16 bytes each).
    record_hashes: list[bytes]
    unit_hashes: list[str | None]
    #: One per mapping spec, in the mapping's order.
    rows: list[ColumnRows]
    #: Per record, whether it was loaded before (what it produced then may need removing);
    #: ``None``: none was.
    replaces: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.source_key_hashes)

    def outputs(self, i: int) -> list[tuple[str, dict[str, Any]]]:
        """Record ``i``'s rows as (kind, values), in spec order."""
        return [
            (spec.kind, dict(zip(spec.names, (c[i] for c in spec.columns), strict=True)))
            for spec in self.rows
            if spec.ident[i] is not None
        ]

    def changes(self) -> list[SourceRecordChange]:
        """The same records one by one, each with its rows in spec order."""
        per_spec = [
            (spec, list(zip(*spec.columns, strict=True)) if spec.columns else None)
            for spec in self.rows
        ]
        out = []
        replaces = self.replaces or [False] * len(self)
        for i, (skh, record_hash, unit_hash) in enumerate(
            zip(self.source_key_hashes, self.record_hashes, self.unit_hashes, strict=True)
        ):
            entities = []
            for spec, rows in per_spec:
                ident = spec.ident[i]
                if ident is None:
                    continue
                values = {} if rows is None else dict(zip(spec.names, rows[i], strict=True))
                if spec.by_position:
                    entities.append(EntityRow(spec.kind, None, values, cast(int, ident)))
                else:
                    entities.append(EntityRow(spec.kind, cast(bytes, ident), values))
            out.append(
                SourceRecordChange(
                    skh, record_hash, "upsert", tuple(entities), unit_hash, replaces=replaces[i]
                )
            )
        return out


@dataclass(frozen=True)
class QuarantineEntry:
    kind: Literal["record", "source"]
    location: str
    rule: str
    reason: str
    payload: Mapping[str, Any]
    source_key_hash: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class WarningEntry:
    """A data-quality warning about a record that loaded (``hub.quality``): never a value."""

    location: str
    rule: str
    field: str
    message: str
    source_key_hash: str | None = None


class SyncRefused(RaccordoError):
    """Another process is syncing the same connector."""

    exit_code = 7


def storage_error(e: sa.exc.DBAPIError) -> RaccordoError:
    """A database error in one line for people: never the statement nor its values.

    (PostgreSQL's detail lines can quote key values, i.e. pseudonyms: only the
    primary message and the SQLSTATE are kept.)
    """
    orig = e.orig
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = str(primary if primary is not None else orig).strip().splitlines()
    first = text[0] if text else type(orig).__name__
    if sqlstate == "53100" or "disk is full" in first or "No space left" in first:
        return RaccordoError(
            "the disk holding the registry is full",
            where="registry_url",
            hint="free space on that disk, then sync again: the run resumes from its last commit",
        )
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    return RaccordoError(
        f"the registry database refused a write: {first[:200]}{code}",
        where="registry_url",
        hint="check the database server and its disk; the sync resumes from its last commit",
    )


class LoadedPart(NamedTuple):
    """A part of a unit (:class:`hub.connector.RecordPart`) all of whose records a batch
    loaded or found unchanged: remembered in ``unit_parts``."""

    #: The keyed hashes of its unit and of its digest (16 bytes).
    unit_hash: str
    key: bytes
    #: The ids of its records the registry held before the batch.
    ids: list[int]
    #: The source key hashes of its records new in the batch (ids known once written).
    keys: list[str]


@dataclass
class PartChanges:
    """What one batch did to the unit parts the registry holds (``unit_parts``)."""

    #: Parts found as they are and not read (``(units.id, key)``): seen by the run.
    skipped: Sequence[tuple[int, bytes]] = ()
    #: The ids of their records: found unchanged by the run.
    skipped_records: BitMap64 = field(default_factory=BitMap64)
    #: Parts read whole, all of whose records loaded: remembered.
    loaded: Sequence[LoadedPart] = ()
    #: Parts that no longer hold what they say (a record of theirs changed): dropped.
    dropped: Sequence[tuple[int, bytes]] = ()
    #: Units all of whose parts are dropped (a record of theirs moved to another unit).
    dropped_units: Collection[int] = ()


class LoadedRecord(NamedTuple):
    """What the registry holds of a source record already loaded."""

    #: Its record hash, as stored (16 bytes, :func:`h16`).
    record_hash: bytes
    #: The last run that loaded it (inserted or changed it).
    run_id: int
    #: The unit (file, flow) it last came in (``units.id``, :meth:`Registry.unit_ids`), or None.
    unit: int | None
    #: ``source_records.id``.
    id: int


class ReadAhead:
    """Where one run's look-ups of stored records stand in each unit (file, flow).

    A unit read again mostly gives its records in the order they were first loaded, which is
    the order of their ids; :meth:`Registry.loaded_records` then fetches the next ones as one
    range of the ``(stream_id, unit)`` index (a sequential read) instead of looking each key
    up in the ``(stream_id, key)`` index (a random one): about four times cheaper per record.
    Whatever the range does not hold is looked up by key as before, so the answer is the same
    either way; a unit whose records do not come in that order stops using ranges.
    """

    __slots__ = ("after", "off")

    def __init__(self) -> None:
        #: Per unit id: the highest ``source_records.id`` the ranges matched so far.
        self.after: dict[int, int] = {}
        #: Units whose ranges matched less than half of what they fetched.
        self.off: set[int] = set()


@dataclass
class BatchCounts:
    read: int = 0
    loaded: int = 0
    unchanged: int = 0
    quarantined: int = 0
    duplicates: int = 0
    deleted: int = 0
    removed: int = 0
    source_errors: int = 0
    unmapped: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    id: int
    connector: str
    connector_type: str
    org: str
    mapping: str
    mapping_version: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    read: int
    loaded: int
    unchanged: int
    quarantined: int
    deleted: int
    removed: int
    source_errors: int
    batches: int
    unmapped_codes: dict[str, dict[str, int]]
    error: str | None
    #: Records repeated within one unit (file, flow) of the run: only the first was used.
    duplicates: int = 0
    #: The connector's stream (None for runs recorded before streams were).
    stream: str | None = None

    @property
    def balanced(self) -> bool:
        """The accounting invariant: every record read is accounted for."""
        return self.read == self.loaded + self.unchanged + self.duplicates + self.quarantined


# Subjects are keyed by the person, not by the source record that mentioned
# them, so many source records share a subject row: stale clean-up and
# cancellations never delete subjects.
_OWNED_TABLES = tuple(k for k in t.RECORD_TABLES if k in t.OWNED_KINDS)
#: Per record table, the columns a model fills (what "the row is unchanged" compares).
_REGISTRY_COLUMNS = frozenset({"id", "org", "key_hash", "source_record", "position", "run_id"})
_DATA_COLUMNS = {
    kind: tuple(c.name for c in table.columns if c.name not in _REGISTRY_COLUMNS)
    for kind, table in t.RECORD_TABLES.items()
}

#: The fields a sync writes of a source record, and its key within the registry.
_SOURCE_RECORD_FIELDS = ("stream_id", "org", "key", "record_hash", "unit", "run_id")
_SOURCE_RECORD_KEY = ("stream_id", "key")

#: Source records per ``INSERT ... RETURNING`` statement on SQLite (6 values each, within
#: SQLite's 32,766 parameters).
RETURNING_ROWS = 5000
#: From this many rows, a PostgreSQL write goes through a staging table loaded with COPY
#: (:meth:`Registry._upsert_staged`); fewer go as one multi-row statement.
COPY_MIN_ROWS = 200


def _parameters(
    columns: Sequence[Iterable[Any]], processors: Sequence[Any], rows: int
) -> list[tuple[Any, ...]]:
    """The first ``rows`` parameter tuples of a write given by columns, each value through
    its column's bind processor (``None``: none)."""
    converted = [c if p is None else map(p, c) for c, p in zip(columns, processors, strict=True)]
    # strict=False: a column of one value is an endless repeat, cut at ``rows``.
    return list(islice(zip(*converted, strict=False), rows))


#: The fields of the common-schema models that name a person (text pseudonyms in the
#: entities, ``pseudonyms`` ids in the tables).
_PERSON_FIELDS = frozenset({"subject", "household"})


def _data_columns(
    kind: str, data: Sequence[Mapping[str, Any]]
) -> tuple[tuple[str, ...], list[Any]]:
    """The model fields the rows of ``kind`` give (those of the first; never the registry's
    own columns) and each one's values over ``data``."""
    names = tuple(n for n in data[0] if n not in _REGISTRY_COLUMNS)
    return names, [list(map(operator.itemgetter(n), data)) for n in names]


class _TableWrite(NamedTuple):
    """One table's rows of a batch, as the columns of ``names``."""

    kind: str
    names: tuple[str, ...]
    columns: list[Any]
    rows: int
    #: Keyed rows (conflict on ``(org, key_hash)``), else by position.
    keyed: bool


def _table_write(
    kind: str,
    names: tuple[str, ...],
    columns: list[Any],
    *,
    org: str,
    run_id: int,
    idents: Sequence[Any],
    sids: Sequence[int],
    keyed: bool,
) -> _TableWrite:
    """``kind``'s rows (``columns`` of the model fields ``names``) with the registry's own
    columns in front: the organisation, each row's key hash (``keyed``) or position
    (``idents``), its source record (``sids``) and the run."""
    n = len(sids)
    if keyed:
        head = ("org", "key_hash", "source_record", "run_id")
        lead = [repeat(org, n), idents, sids, repeat(run_id, n)]
    else:
        head = ("org", "source_record", "position", "run_id")
        lead = [repeat(org, n), sids, idents, repeat(run_id, n)]
    return _TableWrite(kind, (*head, *names), lead + columns, n, keyed)


class Registry:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sql_cache: dict[tuple[Any, ...], Any] = {}

    # -- opening ------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Registry:
        try:
            # hide_parameters: no error message ever quotes a statement's values.
            engine = sa.create_engine(url, future=True, hide_parameters=True)
        except (sa.exc.ArgumentError, ImportError) as e:
            raise ConfigError(
                f"cannot use registry_url: {e}",
                where="registry_url",
                hint="use sqlite:///path/registry.sqlite or postgresql+psycopg://user@host/db",
            ) from None
        if engine.dialect.name == "sqlite":
            _sqlite_pragmas(engine)
        elif engine.dialect.name != "postgresql":
            raise ConfigError(
                f"unsupported database {engine.dialect.name!r}",
                where="registry_url",
                hint="the registry runs on SQLite or PostgreSQL",
            )
        reg = cls(engine)
        if migrate:
            try:
                upgrade(engine)
            except sa.exc.OperationalError as e:
                raise ConfigError(
                    f"cannot open the registry database: {e.orig}",
                    where="registry_url",
                    hint="check that the database exists, is reachable and writable",
                ) from None
        return reg

    def close(self) -> None:
        self.engine.dispose()

    @staticmethod
    def pseudonym_columns() -> tuple[tuple[str, str], ...]:
        """The ``(table, column)`` pairs holding pseudonyms (see
        :data:`hub.registry.tables.PSEUDONYM_COLUMNS`): what key rotation rewrites."""
        return t.PSEUDONYM_COLUMNS

    def load_transaction(
        self, *, commit_every: int, commit_seconds: float, sqlite_cache_mib: int
    ) -> LoadTransaction:
        """A transaction for one sync's batches (see :class:`LoadTransaction`)."""
        return LoadTransaction(
            self,
            commit_every=commit_every,
            commit_seconds=commit_seconds,
            sqlite_cache_mib=sqlite_cache_mib,
        )

    # -- organisations ------------------------------------------------------------
    def upsert_district(self, code: str, name: str, domain: str) -> None:
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                t.districts,
                [{"code": code, "name": name or code, "pseudonym_domain": domain}],
                ["code"],
            )

    def upsert_organisations(self, rows: Iterable[Mapping[str, Any]]) -> None:
        data = [dict(r) for r in rows]
        if data:
            with self.engine.begin() as conn:
                self._upsert(conn, t.organisations, data, ["code"])

    # -- runs ---------------------------------------------------------------------
    def start_run(
        self,
        *,
        connector: str,
        connector_type: str,
        org: str,
        mapping: str,
        mapping_version: str,
        stream: str | None = None,
        reset_state: bool = False,
    ) -> int:
        """Record a new run; with ``reset_state`` forget ``stream``'s cursor in the same
        transaction (everything is read again, even if this run is killed early)."""
        with self.engine.begin() as conn:
            if reset_state and stream is not None:
                conn.execute(
                    t.connector_state.delete().where(
                        t.connector_state.c.connector == connector,
                        t.connector_state.c.stream == stream,
                    )
                )
            # A run still "running" here was killed: the next run resumes from
            # its last committed state, so mark it for the record.
            conn.execute(
                t.runs.update()
                .where(t.runs.c.connector == connector, t.runs.c.status == "running")
                .values(status="interrupted", error="the process stopped before the run ended")
            )
            # What runs that ended without finish_run (killed) had found unchanged.
            ru = t.run_unchanged
            conn.execute(
                ru.delete().where(
                    ru.c.run_id.in_(
                        sa.select(t.runs.c.id).where(
                            t.runs.c.connector == connector, t.runs.c.status != "running"
                        )
                    )
                )
            )
            res = conn.execute(
                t.runs.insert().values(
                    connector=connector,
                    connector_type=connector_type,
                    org=org,
                    mapping=mapping,
                    mapping_version=mapping_version,
                    stream=stream,
                    started_at=utcnow(),
                    status="running",
                    read=0,
                    duplicates=0,
                    loaded=0,
                    unchanged=0,
                    quarantined=0,
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

    def finish_run(self, run_id: int, *, status: str, error: str | None = None) -> RunSummary:
        with self.engine.begin() as conn:
            conn.execute(
                t.runs.update()
                .where(t.runs.c.id == run_id)
                .values(status=status, error=error, finished_at=utcnow())
            )
            ru = t.run_unchanged
            conn.execute(ru.delete().where(ru.c.run_id == run_id))
        return self.run(run_id)

    def run(self, run_id: int) -> RunSummary:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.runs).where(t.runs.c.id == run_id)).mappings().one()
        return _run_summary(row)

    def runs(self, *, connector: str | None = None, limit: int = 20) -> list[RunSummary]:
        q = sa.select(t.runs).order_by(t.runs.c.id.desc()).limit(limit)
        if connector:
            q = q.where(t.runs.c.connector == connector)
        with self.engine.connect() as conn:
            return [_run_summary(r) for r in conn.execute(q).mappings()]

    def last_mapping_version(self, connector: str, stream: str) -> str | None:
        """The mapping version of the latest run of ``connector``'s ``stream`` (None: none)."""
        r = t.runs.c
        q = (
            sa.select(r.mapping_version)
            .where(r.connector == connector, sa.or_(r.stream == stream, r.stream.is_(None)))
            .order_by(r.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            value = conn.execute(q).scalar_one_or_none()
        return None if value is None else str(value)

    # -- one sync per connector at a time -------------------------------------------
    @contextlib.contextmanager
    def sync_lock(self, connector: str) -> Iterator[None]:
        """Hold the right to sync ``connector``; :class:`SyncRefused` at once if taken.

        PostgreSQL: a session advisory lock on a connection held for the sync. SQLite:
        an exclusive ``flock`` on a file beside the database. Both are released by the
        operating system or the server if the process dies, so a killed sync never
        blocks the next one.
        """
        if self.dialect == "postgresql":
            key = int.from_bytes(
                hashlib.blake2b(f"raccordo.sync.{connector}".encode(), digest_size=8).digest(),
                "big",
                signed=True,
            )
            with self.engine.connect() as conn:
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                if not got.scalar_one():
                    conn.rollback()
                    raise self._refused(connector)
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        path = self.engine.url.database
        if not path or path == ":memory:":
            yield
            return
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", connector)
        fd = os.open(f"{path}.sync-{safe}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refused(connector) from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _refused(self, connector: str) -> SyncRefused:
        r = t.runs.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(r.id, r.started_at)
                .where(r.connector == connector, r.status == "running")
                .order_by(r.id.desc())
                .limit(1)
            ).first()
        since = f" (run {row[0]}, started {row[1]:%Y-%m-%d %H:%M:%S})" if row else ""
        return SyncRefused(
            f"connector {connector!r} is being synced by another process{since}: "
            "this sync was not started",
            hint="wait for that sync to end (raccordo runs shows it), then run this one again",
        )

    # -- state --------------------------------------------------------------------
    def get_state(self, connector: str, stream: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            raw = conn.execute(
                sa.select(t.connector_state.c.state).where(
                    t.connector_state.c.connector == connector, t.connector_state.c.stream == stream
                )
            ).scalar_one_or_none()
        return dict(json.loads(raw)) if raw else {}

    def reset_state(self, connector: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.connector_state.delete().where(t.connector_state.c.connector == connector)
            )

    # -- loading ------------------------------------------------------------------
    def existing_record_hashes(
        self,
        connector: str,
        stream: str,
        keys: Sequence[str],
        *,
        tx: LoadTransaction | None = None,
    ) -> dict[str, bytes]:
        """``source_key_hash → record hash`` (16 bytes, :func:`h16`) for the keys already
        loaded.

        With ``tx``, read inside that transaction: it sees the batches written in
        it and not yet committed.
        """
        if tx is not None:
            return self._existing_record_hashes(tx.conn, connector, stream, keys)
        with self.engine.connect() as conn:
            return self._existing_record_hashes(conn, connector, stream, keys)

    def _existing_record_hashes(
        self, conn: sa.Connection, connector: str, stream: str, keys: Sequence[str]
    ) -> dict[str, bytes]:
        return {k: v[0] for k, v in self._loaded_records(conn, connector, stream, keys).items()}

    def loaded_records(
        self,
        connector: str,
        stream: str,
        keys: Sequence[str],
        *,
        tx: LoadTransaction | None = None,
        units: Mapping[int, int] | None = None,
        ahead: ReadAhead | None = None,
    ) -> dict[str, LoadedRecord]:
        """The :class:`LoadedRecord` of each source key hash already loaded.

        ``units`` (unit id → how many of ``keys`` come in it) and ``ahead`` (the run's
        :class:`ReadAhead`): read the next records of those units as ranges first; the
        result is the same, found faster when a unit is read again in the same order.
        """
        if tx is not None:
            return self._loaded_records(tx.conn, connector, stream, keys, units, ahead)
        with self.engine.connect() as conn:
            return self._loaded_records(conn, connector, stream, keys, units, ahead)

    def _loaded_records(
        self,
        conn: sa.Connection,
        connector: str,
        stream: str,
        keys: Sequence[str],
        units: Mapping[int, int] | None = None,
        ahead: ReadAhead | None = None,
    ) -> dict[str, LoadedRecord]:
        out: dict[str, LoadedRecord] = {}
        stream_id = self._stream_id(conn, connector, stream, create=False)
        if stream_id is None:
            return out
        blake2b = hashlib.blake2b  # h16 of each text key, without a call per key
        by_key = {blake2b(k.encode(), digest_size=16).digest(): k for k in keys}
        if ahead is not None and units:
            self._read_ahead(conn, stream_id, units, ahead, by_key, out)
        # Read for every record of every sync, a re-read of unchanged records above all:
        # one plain statement per 900 keys, its text built once per length (no statement
        # object compiled per call).
        for chunk in _chunks(list(by_key), 900):
            rows = _driver_rows(conn, self._loaded_sql(len(chunk)), (stream_id, *chunk))
            for k, h, r, u, i in rows:
                out[by_key[bytes(k)]] = LoadedRecord(bytes(h), r, u, i)
                if ahead is not None and units and u in units and i > ahead.after.get(u, 0):
                    # Found by key beyond the range (after a gap): the next range starts here.
                    ahead.after[u] = i
        return out

    def _read_ahead(
        self,
        conn: sa.Connection,
        stream_id: int,
        units: Mapping[int, int],
        ahead: ReadAhead,
        by_key: dict[bytes, str],
        out: dict[str, LoadedRecord],
    ) -> None:
        """Per unit, its records in the ids after the last one found (a little more than
        the batch has of it): those among ``by_key`` go to ``out`` and leave ``by_key``
        (the rest is looked up by key).

        A range of ids, not "the next n rows of the unit": both databases read it along
        the primary key, without sorting the unit's rows (PostgreSQL keeps the rows of
        an index entry in no id order)."""
        sql = self._ahead_sql()
        for unit, n in units.items():
            if unit in ahead.off or not by_key:
                continue
            after = ahead.after.get(unit, 0)
            rows = _driver_rows(conn, sql, (after, after + n + n // 8 + 64, stream_id, unit))
            matched = 0
            for k, h, r, u, i in rows:
                text = by_key.pop(bytes(k), None)
                if text is not None:
                    out[text] = LoadedRecord(bytes(h), r, u, i)
                    matched += 1
                    after = max(after, i)
            ahead.after[unit] = after
            if 2 * matched < min(n, len(rows)):
                ahead.off.add(unit)  # not in the order of the ids: key by key from now on

    def _ahead_sql(self) -> str:
        mark = self._mark
        return self._plain_sql(
            ("read_ahead",),
            f"SELECT {_LOADED} FROM source_records "  # noqa: S608
            f"WHERE id > {mark} AND id <= {mark} AND stream_id = {mark} AND unit = {mark}",
        )

    def _plain_sql(self, key: tuple[Any, ...], sql: str) -> str:
        """``sql`` (a statement built from our own table and column names only, no user
        input), kept under ``key`` so that each shape is built once per registry."""
        return str(self._sql_cache.setdefault(key, sql))

    def unit_ids(
        self,
        connector: str,
        stream: str,
        unit_hashes: Iterable[str],
        *,
        tx: LoadTransaction | None = None,
    ) -> dict[str, int]:
        """The ids (:attr:`LoadedRecord.unit`) of the units known among ``unit_hashes``."""
        if tx is not None:
            return self._known_unit_ids(tx.conn, connector, stream, unit_hashes)
        with self.engine.connect() as conn:
            return self._known_unit_ids(conn, connector, stream, unit_hashes)

    def _known_unit_ids(
        self, conn: sa.Connection, connector: str, stream: str, unit_hashes: Iterable[str]
    ) -> dict[str, int]:
        stream_id = self._stream_id(conn, connector, stream, create=False)
        if stream_id is None:
            return {}
        return self._unit_ids(conn, stream_id, unit_hashes, create=False)

    def _loaded_sql(self, n: int) -> str:
        mark = self._mark
        return self._plain_sql(
            ("loaded_records", n),
            f"SELECT {_LOADED} FROM source_records "  # noqa: S608
            f"WHERE stream_id = {mark} AND key IN ({', '.join([mark] * n)})",
        )

    def unchanged_ids(self, run_id: int, *, tx: LoadTransaction | None = None) -> BitMap64:
        """The ids of the source records run ``run_id`` found unchanged so far."""
        if tx is not None:
            return self._unchanged_ids(tx.conn, run_id)
        with self.engine.connect() as conn:
            return self._unchanged_ids(conn, run_id)

    def _unchanged_ids(self, conn: sa.Connection, run_id: int) -> BitMap64:
        ru = t.run_unchanged
        found = conn.execute(sa.select(ru.c.records).where(ru.c.run_id == run_id)).scalars()
        return BitMap64.union(BitMap64(), *(BitMap64.deserialize(bytes(b)) for b in found))

    def _unit_ids(
        self,
        conn: sa.Connection,
        stream_id: int,
        unit_hashes: Iterable[str],
        *,
        create: bool = True,
    ) -> dict[str, int]:
        """``units`` ids of a stream's units (keyed hashes of their names), added when new."""
        keys = {h16(u): u for u in unit_hashes}
        if not keys:
            return {}
        un = t.units
        if create:
            self._insert_ignore(
                conn, un, [{"stream_id": stream_id, "key": k} for k in keys], ["stream_id", "key"]
            )
        found = conn.execute(
            sa.select(un.c.key, un.c.id).where(
                un.c.stream_id == stream_id, un.c.key.in_(list(keys))
            )
        )
        return {keys[bytes(k)]: int(i) for k, i in found}

    def _stream_id(
        self, conn: sa.Connection, connector: str, stream: str, *, create: bool = True
    ) -> int | None:
        """The id of ``connector``'s ``stream`` in ``streams`` (added on first use)."""
        st = t.streams
        where = (st.c.connector == connector, st.c.stream == stream)
        found = conn.execute(sa.select(st.c.id).where(*where)).scalar_one_or_none()
        if found is not None or not create:
            return found
        res = conn.execute(st.insert().values(connector=connector, stream=stream))
        pk = res.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    def commit_batch(
        self,
        *,
        run_id: int,
        connector: str,
        stream: str,
        org: str,
        changes: Sequence[SourceRecordChange],
        quarantine: Sequence[QuarantineEntry],
        counts: BatchCounts,
        state: Mapping[str, Any] | None,
        retention: dt.timedelta,
        unchanged: Sequence[int] = (),
        completed_units: Sequence[str] = (),
        tx: LoadTransaction | None = None,
        parts: PartChanges | None = None,
        made_pseudonyms: Mapping[str, tuple[int, bytes]] | None = None,
        columns: ColumnChanges | None = None,
    ) -> None:
        """Apply one batch: records, cancellations, quarantine, counters, state, together.

        ``unchanged`` are the ids of the source records read again without change
        (listed as seen by this run in ``run_unchanged``, their rows are not rewritten);
        ``completed_units`` the unit hashes fully read in this run: what they held before
        and this run neither loaded nor found unchanged is removed.

        Without ``tx`` the batch is one transaction of its own. With ``tx`` it is
        written in that transaction, committed when the transaction decides to
        (:meth:`LoadTransaction.batch_written`); if writing it fails, the whole
        transaction is rolled back (its earlier batches and state included), so
        the registry never holds part of a batch.

        ``parts``: what the batch did to the unit parts the registry holds (``unit_parts``).
        ``made_pseudonyms``: those the pipeline's stage made for this batch (see
        :meth:`person_ids`). ``columns``: records with their rows as columns (the
        transform stage's fast path), written like ``changes``.
        """

        def write(conn: sa.Connection) -> None:
            now = utcnow()
            stream_id = self._stream_id(conn, connector, stream)
            assert stream_id is not None
            persons = tx.person_ids if tx is not None else {}
            shared = tx.shared_rows if tx is not None else SharedRows()
            if parts is not None:
                # Before the changes: a part is dropped for what changed before this batch.
                self._drop_parts(conn, parts.dropped, parts.dropped_units)
            written = self._apply_changes(
                conn, stream_id, org, run_id, changes, persons, made_pseudonyms, columns, shared
            )
            seen = BitMap64(unchanged)
            if parts is not None:
                seen |= parts.skipped_records
                self._write_parts(conn, stream_id, run_id, parts, written)
            if seen:
                seen.run_optimize()
                conn.execute(
                    t.run_unchanged.insert().values(run_id=run_id, records=seen.serialize())
                )
            for unit_hash in completed_units:
                counts.removed += self._remove_unseen(conn, stream_id, run_id, unit_hash)
            # A source record has at most one quarantine entry, its latest refusal: a
            # record read again (a crash and re-run, a new mapping version) replaces
            # its entry, and one loaded now has none.
            qt = t.quarantine
            settled = [c.source_key_hash for c in changes]
            if columns is not None:
                settled += columns.source_key_hashes
            settled += [q.source_key_hash for q in quarantine if q.source_key_hash]
            # (one look-up first: a stream with no entry, the usual case, has none to delete)
            if settled and self._has_quarantine(conn, connector, stream):
                for chunk in _chunks(settled, 900):
                    conn.execute(
                        qt.delete().where(
                            qt.c.connector == connector,
                            qt.c.stream == stream,
                            qt.c.source_key_hash.in_(chunk),
                        )
                    )
            if quarantine:
                conn.execute(
                    t.quarantine.insert(),
                    [
                        {
                            "run_id": run_id,
                            "connector": connector,
                            "stream": stream,
                            "org": org,
                            "kind": q.kind,
                            "location": q.location[:300],
                            "source_key_hash": q.source_key_hash,
                            "field": q.field,
                            "rule": q.rule,
                            "reason": q.reason,
                            "payload": json.dumps(q.payload, sort_keys=True, default=str),
                            "created_at": now,
                            "expires_at": now + retention,
                        }
                        for q in quarantine
                    ],
                )
            run = conn.execute(
                sa.select(t.runs.c.unmapped_codes).where(t.runs.c.id == run_id)
            ).scalar_one()
            unmapped: dict[str, dict[str, int]] = json.loads(run or "{}")
            for table, codes in counts.unmapped.items():
                slot = unmapped.setdefault(table, {})
                for code, n in codes.items():
                    slot[code] = slot.get(code, 0) + n
            r = t.runs.c
            conn.execute(
                t.runs.update()
                .where(r.id == run_id)
                .values(
                    read=r.read + counts.read,
                    loaded=r.loaded + counts.loaded,
                    unchanged=r.unchanged + counts.unchanged,
                    quarantined=r.quarantined + counts.quarantined,
                    duplicates=r.duplicates + counts.duplicates,
                    deleted=r.deleted + counts.deleted,
                    removed=r.removed + counts.removed,
                    source_errors=r.source_errors + counts.source_errors,
                    batches=r.batches + 1,
                    unmapped_codes=json.dumps(unmapped, sort_keys=True),
                )
            )
            if state is not None:
                self._save_state(conn, connector, stream, state, run_id)

        if tx is None:
            with self.engine.begin() as conn:
                write(conn)
        else:
            tx.write(write)

    def _has_quarantine(self, conn: sa.Connection, connector: str, stream: str) -> bool:
        """Whether ``connector``'s ``stream`` has any quarantine entry (by its index)."""
        qt = t.quarantine
        found = conn.execute(
            sa.select(qt.c.id).where(qt.c.connector == connector, qt.c.stream == stream).limit(1)
        ).first()
        return found is not None

    def _save_state(
        self,
        conn: sa.Connection,
        connector: str,
        stream: str,
        state: Mapping[str, Any],
        run_id: int,
    ) -> None:
        """Write a stream's cursor, as of run ``run_id``."""
        row = {
            "connector": connector,
            "stream": stream,
            "state": json.dumps(state, sort_keys=True),
            "run_id": run_id,
            "updated_at": utcnow(),
        }
        self._upsert(conn, t.connector_state, [row], ["connector", "stream"])

    def _remove_unseen(
        self, conn: sa.Connection, stream_id: int, run_id: int, unit_hash: str
    ) -> int:
        """Remove what a completed unit held and this run neither loaded nor found unchanged."""
        unit = self._unit_ids(conn, stream_id, [unit_hash], create=False).get(unit_hash)
        if unit is None:
            return 0
        mark = self._mark
        not_loaded = BitMap64(
            i
            for (i,) in _driver_rows(
                conn,
                f"SELECT id FROM source_records WHERE stream_id = {mark} "  # noqa: S608
                f"AND unit = {mark} AND run_id <> {mark}",
                (stream_id, unit, run_id),
            )
        )
        gone = list(not_loaded - self._unchanged_ids(conn, run_id))
        # What the run did not see of the unit is gone from it: its parts too (those it
        # saw hold only records it loaded or found unchanged, none of those removed now).
        up = t.unit_parts
        conn.execute(up.delete().where(up.c.unit == unit, up.c.run_id != run_id))
        self._drop_source_records(conn, gone, keep_parts=True)
        return len(gone)

    def _drop_source_records(
        self, conn: sa.Connection, ids: Sequence[int], *, keep_parts: bool = False
    ) -> None:
        """Delete source records and every row they own (set-based, by id); the parts of
        their units go too (unless ``keep_parts``: the caller knows none holds them)."""
        sr = t.source_records
        for chunk in _chunks(list(ids), 900):
            if not keep_parts:
                units = sa.select(sr.c.unit).where(sr.c.id.in_(chunk)).distinct()
                conn.execute(t.unit_parts.delete().where(t.unit_parts.c.unit.in_(units)))
            for kind in _OWNED_TABLES:
                table = t.RECORD_TABLES[kind]
                conn.execute(table.delete().where(table.c.source_record.in_(chunk)))
            conn.execute(sr.delete().where(sr.c.id.in_(chunk)))

    def source_records_unchanged_since(
        self, connector: str, stream: str, before: dt.datetime
    ) -> list[int]:
        """Ids of ``connector``'s ``stream`` source records none of whose rows was written
        by a run started at or after ``before`` (retention of received data)."""
        sr, r = t.source_records, t.runs
        with self.engine.connect() as conn:
            stream_id = self._stream_id(conn, connector, stream, create=False)
            if stream_id is None:
                return []
            ids = set(conn.execute(sa.select(sr.c.id).where(sr.c.stream_id == stream_id)).scalars())
            first_recent = conn.execute(
                sa.select(sa.func.min(r.c.id)).where(r.c.started_at >= before)
            ).scalar_one_or_none()
            if first_recent is not None:
                for table in t.RECORD_TABLES.values():
                    for chunk in _chunks(sorted(ids), 900):
                        ids -= set(
                            conn.execute(
                                sa.select(table.c.source_record).where(
                                    table.c.source_record.in_(chunk),
                                    table.c.run_id >= first_recent,
                                )
                            ).scalars()
                        )
            return sorted(ids)

    def remove_source_records(
        self,
        run_id: int,
        ids: Sequence[int],
        *,
        connector: str,
        stream: str,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete source records (by id) and what they produced, as run ``run_id``: counted
        as read, loaded and deleted; ``state`` becomes the stream's cursor if given."""
        n = len(ids)
        r = t.runs.c
        with self.engine.begin() as conn:
            self._drop_source_records(conn, ids)
            conn.execute(
                t.runs.update()
                .where(r.id == run_id)
                .values(
                    read=r.read + n,
                    loaded=r.loaded + n,
                    deleted=r.deleted + n,
                    batches=r.batches + 1,
                )
            )
            if state is not None:
                self._save_state(conn, connector, stream, state, run_id)

    def person_ids(
        self,
        conn: sa.Connection,
        texts: Iterable[Any],
        cache: dict[str, int] | None = None,
        *,
        made: Mapping[str, tuple[int, bytes]] | None = None,
    ) -> dict[str, int]:
        """The ``pseudonyms`` id of each text pseudonym (``v2.<epoch>.<b64>``), added when new
        (values of ``texts`` that are not text, such as ``None``, are skipped).

        ``cache`` (a load transaction's) remembers ids between batches of one transaction.
        ``made``: pseudonyms the pipeline's own stage just made (text → epoch and element,
        :attr:`hub.pseudonyms.stage.PseudonymiseStage.made`), stored as given; every other
        text is decoded and must be a group element.

        New pseudonyms are added in the order of their texts, so their ids do not depend on
        the order the texts came in (nor on the process's string hashing).
        """
        cache = {} if cache is None else cache
        todo = sorted({x for x in texts if isinstance(x, str) and x not in cache})
        if todo:
            from hub.pseudonyms.pseudonymiser import parse_pseudonym_text

            raw: dict[bytes, str] = {}
            epochs: list[int] = []
            values: list[bytes] = []
            known = made or {}
            for text in todo:
                given = known.get(text)
                if given is None:
                    try:
                        given = parse_pseudonym_text(text)
                    except ValueError:
                        raise RaccordoError(
                            "a value given as a pseudonym is not a v2 pseudonym",
                            where="subject/household",
                            hint="identifier fields must go through the pseudonymise stage",
                        ) from None
                epoch, value = given
                raw[value] = text
                epochs.append(epoch)
                values.append(value)
            ps = t.pseudonyms
            self._write_columns(
                conn,
                ps,
                ("epoch", "value"),
                [epochs, values],
                ("value",),
                rows=len(epochs),
                do_nothing=True,
            )
            for chunk in _chunks(list(raw), 900):
                for pid, value in _driver_rows(
                    conn, self._ids_sql("pseudonyms", len(chunk)), chunk
                ):
                    cache[raw[bytes(value)]] = int(pid)
        return cache

    def _ids_sql(self, table: str, n: int, *, scoped: bool = False) -> str:
        """``SELECT id, key`` of ``n`` keys of ``pseudonyms`` (by ``value``) or
        ``source_records`` (by ``key``, ``scoped`` by stream: its first parameter)."""
        mark = self._mark
        column = "value" if table == "pseudonyms" else "key"
        where = f"stream_id = {mark} AND " if scoped else ""
        return self._plain_sql(
            ("ids", table, n, scoped),
            f"SELECT id, {column} FROM {table} "  # noqa: S608
            f"WHERE {where}{column} IN ({', '.join([mark] * n)})",
        )

    def _apply_changes(
        self,
        conn: sa.Connection,
        stream_id: int,
        org: str,
        run_id: int,
        changes: Sequence[SourceRecordChange],
        persons: dict[str, int],
        made: Mapping[str, tuple[int, bytes]] | None,
        columns: ColumnChanges | None,
        shared: SharedRows,
    ) -> tuple[dict[Any, bytes], dict[bytes, int]]:
        """Write a batch's changed source records and what they now produce, set-based.

        1. ``source_records``: one upsert; then their ids in one select per 900 keys.
        2. Rows a changed record produced before and no longer produces: deleted by id.
        3. Rows: per table, one upsert of the keyed rows (on ``(org, key_hash)``) and one
           of the unkeyed ones (on ``(source_record, position)``: in the order of the
           source records, so mostly appended), each leaving a row whose values are the
           same untouched (``DO UPDATE ... WHERE`` a value differs).
        4. Cancelled records: their rows and their ``source_records`` row deleted.

        Each table's parameters are built column by column straight from the entities'
        values (no row dict per entity): a sync writes several rows per record here.
        ``columns``: records whose rows come as columns (:meth:`_apply_columns`); with
        ``changes`` too, they are written as changes after them. ``shared``: the load
        transaction's :attr:`LoadTransaction.shared_rows` (used by the columns, forgotten
        by a batch written as changes).

        Returns the 16-byte key of each change's source key hash and the id of each key.
        """
        if columns is not None and changes:
            changes = [*changes, *columns.changes()]
            columns = None
        if columns is not None:
            return self._apply_columns(conn, stream_id, org, run_id, columns, persons, made, shared)
        shared.clear()  # rows written below without looking at what it says of them
        if not changes:
            return {}, {}
        blake2b = hashlib.blake2b  # h16 of each text key, without a call per key
        keys = {
            k: blake2b(k.encode(), digest_size=16).digest() if isinstance(k, str) else h16(k)
            for k in (c.source_key_hash for c in changes)
        }
        deletes = [keys[c.source_key_hash] for c in changes if c.op == "delete"]
        upserts = [c for c in changes if c.op == "upsert"]
        if upserts:
            self._write_source_records(
                conn,
                stream_id,
                org,
                run_id,
                [keys[c.source_key_hash] for c in upserts],
                [
                    h if type(h := c.record_hash) is bytes and len(h) == 16 else h16(c.record_hash)
                    for c in upserts
                ],
                [c.unit_hash for c in upserts],
            )
        ids = self._source_record_ids(conn, stream_id, set(keys.values()))

        # Only records loaded before can leave stale rows behind (new ones cannot).
        touched = {
            ids[keys[c.source_key_hash]]: c
            for c in changes
            if (c.replaces or c.op == "delete") and keys[c.source_key_hash] in ids
        }
        # What each touched record produces now: (kind, key hash) or (kind, position).
        produced_now: dict[int, set[tuple[str, bytes | int]]] = defaultdict(set)
        #: Per kind, keyed rows: key hash → (values, source record id).
        keyed: dict[str, dict[bytes, tuple[Mapping[str, Any], int]]] = defaultdict(dict)
        #: Per kind, unkeyed rows: their values, source record ids and positions.
        placed: dict[str, tuple[list[Mapping[str, Any]], list[int], list[int]]] = {}
        #: Values a later record of the batch replaced in a keyed row (their pseudonyms are
        #: still stored, as when each record was written on its own).
        replaced: list[Mapping[str, Any]] = []
        owned = t.OWNED_KINDS
        for c in upserts:
            sid = ids[keys[c.source_key_hash]]
            now = produced_now[sid] if touched else None
            for kind, kh, values, position in c.entities:  # EntityRow
                if kh is None:
                    # The position-th unkeyed output of its model in record ``sid``.
                    assert position is not None and kind in owned, kind
                    slot = placed.get(kind)
                    if slot is None:
                        slot = placed[kind] = ([], [], [])
                    slot[0].append(values)
                    slot[1].append(sid)
                    slot[2].append(position)
                    if now is not None:
                        now.add((kind, position))
                    continue
                if type(kh) is not bytes or len(kh) != 16:
                    kh = h16(kh)
                if now is not None:
                    now.add((kind, kh))
                rows = keyed[kind]
                prev = rows.get(kh)
                if prev is not None:
                    # A row several source records share (a subject) keeps the first record
                    # that gave it its current values: the result is then the same whatever
                    # the batch boundaries (a resumed run equals an uninterrupted one).
                    if prev[0] == values:
                        continue
                    replaced.append(prev[0])
                rows[kh] = (values, sid)

        # The parameters of each table's writes, column by column.
        writes: list[_TableWrite] = []
        for kind, by_key in keyed.items():
            names, columns_ = _data_columns(kind, [v for v, _ in by_key.values()])
            writes.append(
                _table_write(
                    kind,
                    names,
                    columns_,
                    org=org,
                    run_id=run_id,
                    idents=list(by_key),
                    sids=[sid for _, sid in by_key.values()],
                    keyed=True,
                )
            )
        for kind, (data, sids, positions) in placed.items():
            names, columns_ = _data_columns(kind, data)
            writes.append(
                _table_write(
                    kind,
                    names,
                    columns_,
                    org=org,
                    run_id=run_id,
                    idents=positions,
                    sids=sids,
                    keyed=False,
                )
            )
        texts: set[Any] = set()
        for values in replaced:
            texts.update(values.get(name) for name in _PERSON_FIELDS)

        if touched:
            self._drop_stale(conn, list(touched), produced_now)
        self._write_tables(conn, writes, texts, persons, made)
        if deletes:
            self._drop_source_records(conn, [ids[k] for k in deletes if k in ids])
        return keys, ids

    def _drop_stale(
        self,
        conn: sa.Connection,
        touched: Sequence[int],
        produced_now: Mapping[int, Collection[tuple[str, bytes | int]]],
    ) -> None:
        """Delete the rows of the source records ``touched`` (ids) that they no longer produce
        (``produced_now``: per id, (kind, key hash) or (kind, position) of each row)."""
        for kind in _OWNED_TABLES:
            table = t.RECORD_TABLES[kind]
            stale: list[int] = []
            for chunk in _chunks(touched, 900):
                q = sa.select(
                    table.c.id, table.c.key_hash, table.c.position, table.c.source_record
                ).where(table.c.source_record.in_(chunk))
                for found in conn.execute(q).all():
                    key: bytes | None = found[1]
                    ident = int(found[2]) if key is None else bytes(key)
                    if (kind, ident) not in produced_now.get(int(found[3]), ()):
                        stale.append(int(found[0]))
            for chunk_ids in _chunks(stale, 900):
                conn.execute(table.delete().where(table.c.id.in_(chunk_ids)))

    def _apply_columns(
        self,
        conn: sa.Connection,
        stream_id: int,
        org: str,
        run_id: int,
        columns: ColumnChanges,
        persons: dict[str, int],
        made: Mapping[str, tuple[int, bytes]] | None,
        shared: SharedRows,
    ) -> tuple[dict[Any, bytes], dict[bytes, int]]:
        """:meth:`_apply_changes` of records whose rows come as columns: the same rows,
        in the same order, written by the same statements, with no row object per output.

        The rows that records loaded before (``columns.replaces``) no longer produce are
        deleted first. A kind given by one spec whose rows all differ is written from the
        spec's own columns; otherwise its rows are taken record by record, spec by spec, as
        :meth:`_apply_changes` takes them. A row of a kind many records share whose values
        this load transaction already wrote (``shared``, :attr:`LoadTransaction.shared_rows`)
        is not sent again.
        """
        if not len(columns):
            return {}, {}
        blake2b = hashlib.blake2b
        skhs = columns.source_key_hashes
        keys = {k: blake2b(k.encode(), digest_size=16).digest() for k in skhs}
        if len(keys) != len(skhs):
            raise ValueError("a source record twice among the records given as columns")
        ids = self._written_source_records(
            conn,
            stream_id,
            org,
            run_id,
            list(keys.values()),
            columns.record_hashes,
            columns.unit_hashes,
        )
        sids = [ids[k] for k in keys.values()]
        if columns.replaces is not None and any(columns.replaces):
            at = [x for x, r in enumerate(columns.replaces) if r]
            produced_now: dict[int, set[tuple[str, bytes | int]]] = {sids[x]: set() for x in at}
            for spec in columns.rows:
                for x in at:
                    ident = spec.ident[x]
                    if ident is not None:
                        produced_now[sids[x]].add((spec.kind, ident))
            self._drop_stale(conn, [sids[x] for x in at], produced_now)

        by_kind: dict[str, list[ColumnRows]] = {}
        for spec in columns.rows:
            by_kind.setdefault(spec.kind, []).append(spec)
        writes: list[_TableWrite] = []
        replaced: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []
        for kind, specs in by_kind.items():
            names = specs[0].names
            if any(s.names != names for s in specs):
                raise ValueError(f"the specs of {kind!r} give different fields")
            # Keyed rows first, then those by position: one write of each, as the row form.
            for group in (
                [s for s in specs if not s.by_position],
                [s for s in specs if s.by_position],
            ):
                if group:
                    writes.append(
                        self._column_writes(
                            org,
                            run_id,
                            kind,
                            group,
                            sids,
                            replaced,
                            None if kind in t.OWNED_KINDS else shared,
                        )
                    )
        texts: set[Any] = set()
        for names, values in replaced:
            texts.update(v for n, v in zip(names, values, strict=True) if n in _PERSON_FIELDS)
        self._write_tables(conn, writes, texts, persons, made)
        return keys, ids

    def _column_writes(
        self,
        org: str,
        run_id: int,
        kind: str,
        specs: Sequence[ColumnRows],
        sids: Sequence[int],
        replaced: list[tuple[tuple[str, ...], tuple[Any, ...]]],
        shared: SharedRows | None = None,
    ) -> _TableWrite:
        """The write of ``kind``'s rows that ``specs`` give (all keyed, or all by position).

        ``shared`` (keyed rows of a kind no record owns): what the load transaction wrote of
        them; a row given the same values again is left out."""
        names = specs[0].names
        by_position = specs[0].by_position

        def write(
            idents: Sequence[Any], rows_sids: Sequence[int], columns: list[Any]
        ) -> _TableWrite:
            return _table_write(
                kind,
                names,
                columns,
                org=org,
                run_id=run_id,
                idents=idents,
                sids=rows_sids,
                keyed=not by_position,
            )

        def transposed(data: list[tuple[Any, ...]]) -> list[Any]:
            return [list(c) for c in zip(*data, strict=True)] if data else [[] for _ in names]

        only = specs[0] if len(specs) == 1 else None
        if (
            shared is None
            and only is not None
            and None not in only.ident
            and (by_position or len(set(only.ident)) == len(only.ident))
        ):
            # Every record gives one row and no two share a key: the spec's columns as they are.
            return write(only.ident, sids, list(only.columns))
        # Record by record, spec by spec (the rows' order of the row form).
        per_spec = [(s.ident, list(zip(*s.columns, strict=True))) for s in specs]
        items: list[tuple[Any, tuple[Any, ...], int]] = []
        for i, sid in enumerate(sids):
            for ident, rows in per_spec:
                x = ident[i]
                if x is not None:
                    items.append((x, rows[i], sid))
        if by_position:
            return write(
                [x for x, _, _ in items],
                [sid for _, _, sid in items],
                transposed([row for _, row, _ in items]),
            )
        keyed: dict[Any, tuple[tuple[Any, ...], int]] = {}
        for kh, row, sid in items:
            prev = keyed.get(kh)
            if prev is not None:
                # As in _apply_changes: the first record that gave the row its values keeps it.
                if prev[0] == row:
                    continue
                replaced.append((names, prev[0]))
            keyed[kh] = (row, sid)
        if shared is not None:  # only the rows new to the transaction, or given other values
            keyed = shared.to_send(kind, keyed)
        data = [v for v, _ in keyed.values()]
        return write(list(keyed), [sid for _, sid in keyed.values()], transposed(data))

    def _write_source_records(
        self,
        conn: sa.Connection,
        stream_id: int,
        org: str,
        run_id: int,
        keys: Sequence[bytes],
        record_hashes: Sequence[bytes],
        unit_hashes: Sequence[str | None],
    ) -> None:
        """One upsert of ``source_records`` (16-byte keys and record hashes)."""
        n = len(keys)
        self._write_columns(
            conn,
            t.source_records,
            _SOURCE_RECORD_FIELDS,
            [
                repeat(stream_id, n),
                repeat(org, n),
                keys,
                record_hashes,
                self._unit_column(conn, stream_id, unit_hashes),
                repeat(run_id, n),
            ],
            _SOURCE_RECORD_KEY,
            rows=n,
        )

    def _unit_column(
        self, conn: sa.Connection, stream_id: int, unit_hashes: Sequence[str | None]
    ) -> list[int | None]:
        """The ``units.id`` of each keyed unit hash (None for a record of no unit)."""
        units = self._unit_ids(conn, stream_id, {u for u in unit_hashes if u})
        return [None if u is None else units[u] for u in unit_hashes]

    def _written_source_records(
        self,
        conn: sa.Connection,
        stream_id: int,
        org: str,
        run_id: int,
        keys: Sequence[bytes],
        record_hashes: Sequence[bytes],
        unit_hashes: Sequence[str | None],
    ) -> dict[bytes, int]:
        """:meth:`_write_source_records` of distinct keys, and the ids of those records.

        On SQLite the upsert itself gives the ids back (``RETURNING``, one multi-row
        statement per :data:`RETURNING_ROWS` records) instead of a look-up by key after it;
        elsewhere the look-up follows the write."""
        if self.dialect != "sqlite":
            self._write_source_records(
                conn, stream_id, org, run_id, keys, record_hashes, unit_hashes
            )
            return self._source_record_ids(conn, stream_id, keys)
        unit_ids = self._unit_column(conn, stream_id, unit_hashes)
        names, conflict = _SOURCE_RECORD_FIELDS, _SOURCE_RECORD_KEY
        action = self._conflict_action(t.source_records, names, conflict, (), False)
        ids: dict[bytes, int] = {}
        for start in range(0, len(keys), RETURNING_ROWS):
            end = min(start + RETURNING_ROWS, len(keys))
            n = end - start
            sql = self._plain_sql(
                ("returning", n),
                f"INSERT INTO source_records ({', '.join(names)}) VALUES "  # noqa: S608
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * n)
                + f" ON CONFLICT {self._conflict_target(conflict, None)} {action}"
                " RETURNING id, key",
            )
            params: list[Any] = []
            for row in zip(
                keys[start:end], record_hashes[start:end], unit_ids[start:end], strict=True
            ):
                params += (stream_id, org, row[0], row[1], row[2], run_id)
            ids.update({bytes(k): int(i) for i, k in _driver_rows(conn, sql, params)})
        if len(ids) != len(keys):  # the update left a row alone: it gave no id back
            missing = [k for k in keys if k not in ids]
            ids.update(self._source_record_ids(conn, stream_id, missing))
        return ids

    def _source_record_ids(
        self, conn: sa.Connection, stream_id: int, keys: Iterable[bytes]
    ) -> dict[bytes, int]:
        """The ids of the stream's source records with these 16-byte keys (those it has)."""
        ids: dict[bytes, int] = {}
        for chunk in _chunks(list(keys), 900):
            sql = self._ids_sql("source_records", len(chunk), scoped=True)
            ids.update({bytes(k): int(i) for i, k in _driver_rows(conn, sql, (stream_id, *chunk))})
        return ids

    def _write_tables(
        self,
        conn: sa.Connection,
        writes: Sequence[_TableWrite],
        texts: set[Any],
        persons: dict[str, int],
        made: Mapping[str, tuple[int, bytes]] | None,
    ) -> None:
        """Each table's write, once the pseudonyms its rows name are stored and their ids
        put in place of their texts (``texts``: other pseudonyms to store, those of values
        a later record of the batch replaced)."""
        # Person ids for every pseudonym the rows name.
        for w in writes:
            for i, name in enumerate(w.names):
                if name in _PERSON_FIELDS:
                    texts.update(w.columns[i])
        texts.discard(None)
        if texts:
            self.person_ids(conn, texts, persons, made=made)
            get = persons.get
            for w in writes:
                for i, name in enumerate(w.names):
                    if name in _PERSON_FIELDS:
                        # The pseudonym's id; any other value (None) as it is.
                        w.columns[i] = list(map(get, w.columns[i], w.columns[i]))
        for w in writes:
            table = t.RECORD_TABLES[w.kind]
            # One statement per table and no look-up of the current rows: the upsert
            # itself leaves a row whose values are unchanged untouched.
            self._write_columns(
                conn,
                table,
                w.names,
                w.columns,
                ("org", "key_hash") if w.keyed else ("source_record", "position"),
                rows=w.rows,
                unless_same=_DATA_COLUMNS[w.kind],
                # Owned tables index the keyed rows only (the others have a position).
                where=t.KEYED_ROWS if w.keyed and w.kind in t.OWNED_KINDS else None,
            )

    def unit_parts(self, unit: int, *, tx: LoadTransaction) -> dict[bytes, BitMap64]:
        """The parts the registry holds of unit ``unit`` (``units.id``): their keys and the
        ids of the source records each gave."""
        up = t.unit_parts
        rows = tx.conn.execute(sa.select(up.c.key, up.c.records).where(up.c.unit == unit))
        return {bytes(k): BitMap64.deserialize(bytes(b)) for k, b in rows}

    def _drop_parts(
        self, conn: sa.Connection, dropped: Sequence[tuple[int, bytes]], units: Collection[int]
    ) -> None:
        up = t.unit_parts
        if dropped:
            conn.execute(
                up.delete().where(up.c.unit == sa.bindparam("u"), up.c.key == sa.bindparam("k")),
                [{"u": u, "k": k} for u, k in dropped],
            )
        for chunk in _chunks(sorted(units), 900):
            conn.execute(up.delete().where(up.c.unit.in_(chunk)))

    def _write_parts(
        self,
        conn: sa.Connection,
        stream_id: int,
        run_id: int,
        parts: PartChanges,
        written: tuple[Mapping[Any, bytes], Mapping[bytes, int]],
    ) -> None:
        """The parts this batch found (their run) and those it loaded whole (their ids)."""
        up = t.unit_parts
        if parts.skipped:
            conn.execute(
                up.update()
                .where(up.c.unit == sa.bindparam("u"), up.c.key == sa.bindparam("k"))
                .values(run_id=run_id),
                [{"u": u, "k": k} for u, k in parts.skipped],
            )
        if not parts.loaded:
            return
        keys, ids = written
        units = self._unit_ids(conn, stream_id, {p.unit_hash for p in parts.loaded})
        rows = []
        for p in parts.loaded:
            records = BitMap64(p.ids)
            records.update([ids[keys[k]] for k in p.keys])
            records.run_optimize()
            rows.append(
                {
                    "unit": units[p.unit_hash],
                    "key": p.key,
                    "records": records.serialize(),
                    "run_id": run_id,
                }
            )
        self._upsert(conn, up, rows, ["unit", "key"])

    def _upsert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        rows: list[dict[str, Any]],
        conflict: list[str],
        *,
        unless_same: tuple[str, ...] = (),
        do_nothing: bool = False,
        where: str | None = None,
    ) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE`` of many rows given as dicts (the columns of
        the first row; see :meth:`_write_columns`)."""
        names = tuple(c for c in rows[0] if c != "id")
        self._write_columns(
            conn,
            table,
            names,
            [list(map(operator.itemgetter(n), rows)) for n in names],
            tuple(conflict),
            rows=len(rows),
            unless_same=unless_same,
            do_nothing=do_nothing,
            where=where,
        )

    def _write_columns(
        self,
        conn: sa.Connection,
        table: sa.Table,
        names: tuple[str, ...],
        columns: Sequence[Iterable[Any]],
        conflict: tuple[str, ...],
        *,
        rows: int,
        unless_same: tuple[str, ...] = (),
        do_nothing: bool = False,
        where: str | None = None,
    ) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE`` of many rows (SQLite and PostgreSQL), given
        as the values of each column of ``names`` (``rows`` of them: a list, or an iterable
        such as ``itertools.repeat`` for a column of one value).

        Values go to the driver's ``executemany`` through each column type's own bind
        processor (the same conversions SQLAlchemy applies), applied column by column,
        without building a statement object per call: this is the hot path of every sync.
        With ``unless_same`` (column names), an existing row whose values in those columns
        equal the new ones is left as it is (``DO UPDATE ... WHERE`` one differs). ``where``:
        the predicate of the partial unique index that ``conflict`` names, if it is one.
        """
        target = self._conflict_target(conflict, where)
        if rows >= COPY_MIN_ROWS and self._copies:
            create, copy_sql, insert, empty, processors = self._staged_sql(
                table, names, conflict, target, unless_same, do_nothing
            )
            params = _parameters(columns, processors, rows)
            self._upsert_staged(conn, names, conflict, params, (create, copy_sql, insert, empty))
            return
        sql, processors = self._upsert_sql(
            table, names, conflict, target, unless_same, do_nothing=do_nothing
        )
        params = _parameters(columns, processors, rows)
        if not params:
            return
        if self._named_params:
            conn.exec_driver_sql(sql, [dict(zip(names, p, strict=True)) for p in params])
        else:
            conn.exec_driver_sql(sql, params)

    def _insert_ignore(
        self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], conflict: list[str]
    ) -> None:
        """``INSERT ... ON CONFLICT DO NOTHING`` of many rows."""
        if rows:
            self._upsert(conn, table, rows, conflict, do_nothing=True)

    @property
    def _copies(self) -> bool:
        """Whether many-row writes go through a staging table loaded with COPY
        (PostgreSQL with psycopg 3)."""
        return self.dialect == "postgresql" and self.engine.dialect.driver == "psycopg"

    def _upsert_staged(
        self,
        conn: sa.Connection,
        names: tuple[str, ...],
        conflict: tuple[str, ...],
        params: list[tuple[Any, ...]],
        statements: tuple[str, str, str, str],
    ) -> None:
        """The write of :meth:`_write_columns`, set-based: the rows (``params``, bound
        values in ``names`` order) go by ``COPY`` into a temporary staging table of the
        session, then one ``INSERT ... SELECT ... ON CONFLICT`` (``statements``, from
        :meth:`_staged_sql`) moves them into the table; the staging table is emptied again.

        One statement cannot update a row twice, so a key given twice keeps its last row
        (what the row-by-row statements ended with).
        """
        if all(c in names for c in conflict):
            at = operator.itemgetter(*(names.index(c) for c in conflict))
            last = {at(p): p for p in params}
            if len(last) < len(params):
                params = list(last.values())
        create, copy_sql, insert, empty = statements
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        with dbapi.cursor() as cur:
            cur.execute(create)
            with cur.copy(copy_sql) as copy:
                for values in params:
                    copy.write_row(values)
            cur.execute(insert)
            cur.execute(empty)

    def _staged_sql(
        self,
        table: sa.Table,
        names: tuple[str, ...],
        conflict: tuple[str, ...],
        target: str,
        unless_same: tuple[str, ...],
        do_nothing: bool,
    ) -> tuple[str, str, str, str, list[Any]]:
        key = ("staged", table.name, names, target, unless_same, do_nothing)
        cached: tuple[str, str, str, str, list[Any]] | None = self._sql_cache.get(key)
        if cached is not None:
            return cached
        dialect = self.engine.dialect
        q = dialect.identifier_preparer.quote
        # One staging table per target table and column set, private to the session.
        digest = hashlib.blake2b("|".join(names).encode(), digest_size=4).hexdigest()
        staging = q(f"stage_{table.name}_{digest}")
        cols = ", ".join(q(n) for n in names)
        tn = q(table.name)
        action = self._conflict_action(table, names, conflict, unless_same, do_nothing)
        # Only names from our own table metadata, quoted by the dialect: no user input.
        create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} AS "  # noqa: S608
            f"SELECT {cols} FROM {tn} WITH NO DATA"
        )
        copy_sql = f"COPY {staging} ({cols}) FROM STDIN"
        insert = (
            f"INSERT INTO {tn} ({cols}) SELECT {cols} FROM {staging} "  # noqa: S608
            f"ON CONFLICT {target} {action}"
        )
        empty = f"TRUNCATE {staging}"
        processors = [table.c[n].type.bind_processor(dialect) for n in names]
        out = (create, copy_sql, insert, empty, processors)
        self._sql_cache[key] = out
        return out

    def _conflict_target(self, conflict: Sequence[str], where: str | None) -> str:
        """``(columns) [WHERE predicate]``: the unique index an upsert's conflict is on."""
        q = self.engine.dialect.identifier_preparer.quote
        target = f"({', '.join(q(c) for c in conflict)})"
        return f"{target} WHERE {where}" if where else target

    @property
    def _mark(self) -> str:
        """The driver's positional parameter mark (``?`` for sqlite3, ``%s`` for psycopg)."""
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    @property
    def _named_params(self) -> bool:
        return self.engine.dialect.paramstyle in ("pyformat", "named")

    def _conflict_action(
        self,
        table: sa.Table,
        names: tuple[str, ...],
        conflict: tuple[str, ...],
        unless_same: tuple[str, ...],
        do_nothing: bool,
    ) -> str:
        """The ``DO UPDATE SET ... [WHERE a value differs]`` or ``DO NOTHING`` of an upsert."""
        q = self.engine.dialect.identifier_preparer.quote
        updates = [] if do_nothing else [n for n in names if n not in conflict]
        if not updates:
            return "DO NOTHING"
        action = "DO UPDATE SET " + ", ".join(f"{q(n)} = excluded.{q(n)}" for n in updates)
        if unless_same:
            # NULL-safe "differs": IS NOT on SQLite, IS DISTINCT FROM on PostgreSQL.
            differs = "IS NOT" if self.dialect == "sqlite" else "IS DISTINCT FROM"
            tn = q(table.name)
            action += " WHERE " + " OR ".join(
                f"{tn}.{q(c)} {differs} excluded.{q(c)}" for c in unless_same
            )
        return action

    def _upsert_sql(
        self,
        table: sa.Table,
        names: tuple[str, ...],
        conflict: tuple[str, ...],
        target: str,
        unless_same: tuple[str, ...] = (),
        do_nothing: bool = False,
    ) -> tuple[str, list[Any]]:
        key = (table.name, names, target, unless_same, do_nothing)
        cached: tuple[str, list[Any]] | None = self._sql_cache.get(key)
        if cached is not None:
            return cached
        dialect = self.engine.dialect
        q = dialect.identifier_preparer.quote
        style = dialect.paramstyle
        if style == "qmark":
            marks = ["?"] * len(names)
        elif style == "pyformat":
            marks = [f"%({n})s" for n in names]
        elif style == "named":
            marks = [f":{n}" for n in names]
        else:  # format
            marks = ["%s"] * len(names)
        action = self._conflict_action(table, names, conflict, unless_same, do_nothing)
        # Only names from our own table metadata, quoted by the dialect: no user input.
        sql = (
            f"INSERT INTO {q(table.name)} ({', '.join(q(n) for n in names)}) "  # noqa: S608
            f"VALUES ({', '.join(marks)}) "
            f"ON CONFLICT {target} {action}"
        )
        # sqlite3 takes bytes as they are: LargeBinary's wrapping of each value is skipped.
        processors = [
            None
            if dialect.name == "sqlite" and isinstance(table.c[n].type, sa.LargeBinary)
            else table.c[n].type.bind_processor(dialect)
            for n in names
        ]
        self._sql_cache[key] = (sql, processors)
        return sql, processors

    # -- quarantine ---------------------------------------------------------------
    def quarantine_entries(
        self, *, connector: str | None = None, run_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        q = t.quarantine
        stmt = sa.select(q).order_by(q.c.id.desc()).limit(limit)
        if connector:
            stmt = stmt.where(q.c.connector == connector)
        if run_id:
            stmt = stmt.where(q.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def purge_expired_quarantine(self) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(t.quarantine.delete().where(t.quarantine.c.expires_at < utcnow()))
            n = int(res.rowcount or 0)
            res = conn.execute(t.warnings.delete().where(t.warnings.c.expires_at < utcnow()))
            return n + int(res.rowcount or 0)

    # -- data-quality warnings and refused units (hub/quality.py, issue 14) ---------------

    def add_warnings(
        self,
        *,
        run_id: int,
        connector: str,
        stream: str,
        org: str,
        warnings: Sequence[WarningEntry],
        retention: dt.timedelta,
        tx: LoadTransaction | None = None,
    ) -> None:
        """Store a batch's warnings, in the batch's transaction when ``tx`` is given (so a
        crash keeps them exactly for the batches that were committed)."""
        if not warnings:
            return
        now = utcnow()
        rows = [
            {
                "run_id": run_id,
                "connector": connector,
                "stream": stream,
                "org": org,
                "location": w.location[:300],
                "source_key_hash": w.source_key_hash,
                "field": w.field,
                "rule": w.rule,
                "message": w.message,
                "created_at": now,
                "expires_at": now + retention,
            }
            for w in warnings
        ]

        def write(conn: sa.Connection) -> None:
            conn.execute(t.warnings.insert(), rows)

        if tx is not None:
            tx.write(write)
        else:
            with self.engine.begin() as conn:
                write(conn)

    def warning_entries(
        self, *, connector: str | None = None, run_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        w = t.warnings
        stmt = sa.select(w).order_by(w.c.id.desc()).limit(limit)
        if connector:
            stmt = stmt.where(w.c.connector == connector)
        if run_id:
            stmt = stmt.where(w.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def warning_counts(self, run_ids: Sequence[int]) -> dict[int, int]:
        """Warnings per run (runs without any are absent)."""
        return self._counts_by_run(t.warnings, run_ids)

    def refused_unit_counts(self, run_ids: Sequence[int]) -> dict[int, int]:
        """Whole units (files, flows, pages) refused per run: quarantine entries of kind
        ``source`` (a record-level source error has kind ``record``)."""
        return self._counts_by_run(t.quarantine, run_ids, t.quarantine.c.kind == "source")

    def _counts_by_run(
        self, table: sa.Table, run_ids: Sequence[int], *where: sa.ColumnElement[bool]
    ) -> dict[int, int]:
        out: dict[int, int] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(run_ids), 900):
                stmt = (
                    sa.select(table.c.run_id, sa.func.count())
                    .where(table.c.run_id.in_(chunk), *where)
                    .group_by(table.c.run_id)
                )
                out.update({int(r): int(n) for r, n in conn.execute(stmt)})
        return out

    def count(self, kind: str, *, org: str | None = None) -> int:
        table = t.RECORD_TABLES[kind]
        q = sa.select(sa.func.count()).select_from(table)
        if org:
            q = q.where(table.c.org == org)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


#: How many pseudonym ids a load transaction remembers between commits (the distinct people
#: and households of a 1,000,000-record export, as the pseudonymise stage's own bound).
PERSON_IDS_LIMIT = 1_000_000
#: How many shared rows (:attr:`LoadTransaction.shared_rows`) a load transaction remembers
#: before it forgets them all (about 450 bytes each): the distinct people of a commit
#: interval of 200,000 records are about a third of that.
SHARED_ROWS_LIMIT = 300_000
#: A kind whose rows a load transaction has looked at this many times...
SHARED_ROWS_PROBE = 50_000
#: ... and found fewer than one in this many given the values it wrote is no longer
#: remembered (a source whose shared rows change with every record gains nothing from it).
SHARED_ROWS_RATE = 100


class SharedRows:
    """The rows of the kinds many records share (not owned by one record: ``subject``) that
    one load transaction wrote, by kind and key hash, with their values (pseudonyms as
    texts): a later batch giving a row the same values again need not send it.

    The upsert would leave such a row as it is (``DO UPDATE ... WHERE`` a value differs),
    and no other writer can have changed it since: SQLite's write lock and PostgreSQL's row
    lock (taken by the upsert even where it did not update) are held to the commit. So the
    transaction forgets them at every commit and rollback, and whenever a batch goes record
    by record (its rows are written without looking here). A kind for which this saves
    nothing (fewer than one row in :data:`SHARED_ROWS_RATE` after :data:`SHARED_ROWS_PROBE`
    looked at) is not remembered for the rest of the transaction: it would cost memory alone.
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[bytes, tuple[Any, ...]]] = {}
        self._looked: Counter[str] = Counter()
        self._kept: Counter[str] = Counter()
        self._off: set[str] = set()

    def clear(self) -> None:
        """Forget the rows (not what was learnt of each kind)."""
        self._rows.clear()

    def __len__(self) -> int:
        return sum(map(len, self._rows.values()))

    def to_send(
        self, kind: str, keyed: dict[Any, tuple[tuple[Any, ...], int]]
    ) -> dict[Any, tuple[tuple[Any, ...], int]]:
        """Of ``keyed`` (key hash → the row's values and its source record), those not
        written with the same values in this transaction; remembered as written."""
        if kind in self._off:
            return keyed
        rows = self._rows.setdefault(kind, {})
        if len(rows) + len(keyed) > SHARED_ROWS_LIMIT:
            rows.clear()
        out = {kh: v for kh, v in keyed.items() if rows.get(kh) != v[0]}
        self._looked[kind] += len(keyed)
        self._kept[kind] += len(keyed) - len(out)
        if (
            self._looked[kind] >= SHARED_ROWS_PROBE
            and self._kept[kind] * SHARED_ROWS_RATE < self._looked[kind]
        ):
            self._off.add(kind)
            del self._rows[kind]
        else:
            rows.update((kh, v[0]) for kh, v in out.items())
        return out


class LoadTransaction:
    """One database transaction holding several batches of a sync.

    Committing after every batch made each commit write every index page the
    batch touched; keys are keyed hashes, so those pages are spread all over
    the indexes and, with a large registry, nearly every record dirtied one
    page per index per commit. Holding the transaction over ``commit_every``
    records lets many records share each page write.

    Guarantees are unchanged: the connector's state (cursor) is written with
    the batch that covers it, so after a crash the next run resumes from the
    last commit and re-reads the rest (no loss, no duplicate). What a crash
    costs is at most ``commit_every`` records of work to redo. The transaction
    is also committed after ``commit_seconds``, so that other writers (the web
    app's intake, another sync) never wait long for the database.

    On SQLite, the connection's page cache is raised to ``sqlite_cache_mib``
    while loading (an upper bound: pages are only allocated when used) and put
    back to the default before the connection returns to the pool.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        commit_every: int,
        commit_seconds: float,
        sqlite_cache_mib: int,
    ) -> None:
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self._sqlite = registry.dialect == "sqlite"
        self._conn = registry.engine.connect()
        if self._sqlite:
            self._conn.exec_driver_sql(f"PRAGMA cache_size=-{int(sqlite_cache_mib) * 1024}")
            self._conn.commit()
        self._tx: sa.RootTransaction | None = self._conn.begin()
        self._pending = 0
        self._since = time.monotonic()
        #: Transactions committed (for tests and progress reports).
        self.commits = 0
        #: Text pseudonym → ``pseudonyms`` id, for the batches of this transaction (an id
        #: added in it is valid only once it commits; a rollback closes it). Forgotten at a
        #: commit once it holds more than ``person_ids_limit`` (about 150 bytes each), so a
        #: sync of any size keeps it bounded; a person met again is then looked up once more.
        self.person_ids: dict[str, int] = {}
        self.person_ids_limit = PERSON_IDS_LIMIT
        #: The shared rows this transaction wrote (:class:`SharedRows`).
        self.shared_rows = SharedRows()

    @property
    def conn(self) -> sa.Connection:
        if self._tx is None:
            raise RuntimeError("the load transaction is closed")
        return self._conn

    def write(self, fn: Callable[[sa.Connection], None]) -> None:
        """Run ``fn(conn)`` in the transaction; on any error roll all of it back."""
        try:
            fn(self.conn)
        except BaseException:
            self.rollback()
            raise

    def batch_written(self, records: int) -> bool:
        """Count a written batch; commit when enough records or time have gone by."""
        self._pending += records
        if (
            self._pending >= self.commit_every
            or time.monotonic() - self._since >= self.commit_seconds
        ):
            self.commit()
            return True
        return False

    def commit(self) -> None:
        """Commit what was written and go on in a new transaction."""
        if self._tx is None:
            return
        self._tx.commit()
        self.commits += 1
        self.shared_rows.clear()
        if len(self.person_ids) > self.person_ids_limit:
            self.person_ids.clear()  # committed: their rows are there for the next look-up
        self._tx = self._conn.begin()
        self._pending = 0
        self._since = time.monotonic()

    def rollback(self) -> None:
        """Drop everything written since the last commit and close."""
        if self._tx is None:
            return
        self._tx.rollback()
        self._tx = None
        self.person_ids.clear()
        self.shared_rows.clear()
        self._release()

    def close(self) -> None:
        """Commit what was written, then close (a no-op once closed)."""
        if self._tx is None:
            return
        self._tx.commit()
        self.commits += 1
        self._tx = None
        self._release()

    def _release(self) -> None:
        if self._sqlite:
            self._conn.exec_driver_sql(f"PRAGMA cache_size={_SQLITE_CACHE}")
            self._conn.commit()
        self._conn.close()


def _run_summary(row: Any) -> RunSummary:
    data = dict(row)
    data["unmapped_codes"] = json.loads(data.get("unmapped_codes") or "{}")
    return RunSummary(**data)


def _driver_rows(conn: sa.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of a plain statement, straight from the driver's cursor (in ``conn``'s
    transaction): for the look-ups that read a row per source record, where building
    SQLAlchemy rows would cost more than the query."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    dbapi = conn.dialect.loaded_dbapi
    try:
        cur.execute(sql, tuple(params))
        return list(cur.fetchall())
    except dbapi.Error as e:
        # As SQLAlchemy raises it for its own statements (the sync's one-line error for a
        # refused write or a full disk), and never with the statement's values.
        # The statement's start only: a multi-row one holds thousands of placeholders.
        statement = sql if len(sql) <= 120 else sql[:120] + "…"
        raise sa.exc.DBAPIError.instance(
            statement, None, e, dbapi.Error, hide_parameters=True, dialect=conn.dialect
        ) from None
    finally:
        cur.close()


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


#: What the look-ups of stored records read of each (:class:`LoadedRecord`, in this order).
_LOADED = "key, record_hash, run_id, unit, id"

#: Page cache of every SQLite connection (negative: KiB), 64 MiB; a sync's load
#: transaction raises its own (``[hub] sqlite_cache_mib``).
_SQLITE_CACHE = -65536


def _sqlite_date_adapters() -> None:
    """Dates and timestamps go to SQLite as the ISO text the standard library's default
    adapters give (``2020-03-05``, ``2020-03-05 10:00:00``), through adapters registered
    here: Python 3.12 deprecates the default ones, and a date's own ``isoformat`` (a C
    method) costs about a third less than the default adapter's Python function, for the
    several dates of every record a sync writes."""
    sqlite3.register_adapter(dt.date, dt.date.isoformat)
    sqlite3.register_adapter(dt.datetime, _iso_timestamp)


def _iso_timestamp(value: dt.datetime) -> str:
    return value.isoformat(" ")


def _sqlite_pragmas(engine: sa.Engine) -> None:
    _sqlite_date_adapters()

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # Bulk loads: keep the hot index pages in memory (64 MiB instead of 2 MiB) and
        # checkpoint the WAL every 64 MiB instead of every 4 MiB (each checkpoint
        # syncs the database file); the WAL file is cut back to 64 MiB afterwards.
        cur.execute(f"PRAGMA cache_size={_SQLITE_CACHE}")
        cur.execute("PRAGMA wal_autocheckpoint=16384")
        cur.execute("PRAGMA journal_size_limit=67108864")
        cur.close()
