"""``sql_query``: a vendor's database read directly, a table or a query, incrementally.

Many cartelle sociali keep their data in a database the consortium can read
(PostgreSQL, SQL Server, Oracle, MySQL). This connector reads one table or one
``SELECT`` through SQLAlchemy, with a URL kept out of ``raccordo.toml`` (an
environment variable, a secret file, or the Airflow Connection), and hands the
rows to the same declarative mappings as the CSV connector.

* **Read-only**: the query must be one ``SELECT`` (or ``WITH … SELECT``); the
  session is opened read-only where the database has such a mode (PostgreSQL,
  MySQL/MariaDB, Oracle) and is always rolled back. Give it an account that can
  only read, all the same.
* **Incremental**: rows are read in ``(cursor_column, *source_key)`` order and
  the state keeps the last pair read. The next run asks for rows *after* that
  pair: rows sharing the cursor value at the boundary (same update timestamp)
  are neither lost nor read twice, and a crash resumes right after the last
  committed checkpoint.
* **Batched**: rows are fetched through a server-side cursor, ``fetch_size`` at a
  time, so memory does not grow with the table.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import Field, SecretStr, model_validator

from hub import hookimpl
from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    JSONState,
    RawRecord,
    ReadItem,
    SourceError,
    StateCheckpoint,
    Stream,
    WorkspacePath,
)
from hub.errors import SourceUnavailable
from hub.sdk.columns import IdentifierColumn, column_fields

RACCORDO_HOOK_API = 1

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,127}$")
_SELECT = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
#: Words that have no place in a read-only query (checked outside string literals).
_WRITES = re.compile(
    r"\b(insert|update|delete|merge|drop|alter|create|truncate|grant|revoke|call|exec|execute"
    r"|copy|vacuum|lock|into)\b",
    re.IGNORECASE,
)
_LITERAL = re.compile(r"'(?:[^']|'')*'")


class SQLQueryConfig(ConnectorConfig):
    #: The SQLAlchemy URL, e.g. "postgresql+psycopg://lettore:…@db.consorzio.local/cartella".
    #: Prefer url_env or url_file: the URL holds a password.
    url: SecretStr | None = None
    #: Name of an environment variable holding the URL.
    url_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,100}$")] | None = None
    #: A file (mode 600) holding the URL on its first line; relative to raccordo.toml.
    url_file: WorkspacePath | None = None
    #: A table (optionally "schema.table") ...
    table: str | None = None
    #: ... or one SELECT (or WITH … SELECT); its column names are the stream's fields.
    query: str | None = None
    stream: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")] = "rows"
    #: Columns whose values identify a row (stored only keyed-hashed); must be unique and not null.
    source_key: Annotated[list[str], Field(min_length=1)]
    #: The incremental cursor: an update timestamp or an increasing id, never null.
    cursor_column: str
    identifier_columns: dict[str, IdentifierColumn] = Field(default_factory=dict)
    #: Directly identifying columns that are not keys (names, notes, addresses): dropped.
    personal_columns: list[str] = Field(default_factory=list)
    #: Rows fetched from the server at a time (server-side cursor).
    fetch_size: Annotated[int, Field(ge=10, le=100_000)] = 2_000
    #: A state checkpoint every so many rows (what a crash can make read again).
    checkpoint_every: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    #: How date / timestamp / decimal values become text for the mapping.
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%dT%H:%M:%S"
    decimal_comma: bool = False
    connect_timeout_s: Annotated[int, Field(ge=1, le=600)] = 30

    @model_validator(mode="after")
    def _one_source(self) -> SQLQueryConfig:
        if sum(x is not None for x in (self.url, self.url_env, self.url_file)) != 1:
            raise ValueError("set exactly one of url_env, url_file or url (the database URL)")
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of table or query")
        if self.table is not None and not all(_NAME.match(p) for p in self.table.split(".")):
            raise ValueError("table must be a plain name or schema.name (letters, digits, _)")
        if self.query is not None:
            _check_read_only(self.query)
        for col in (self.cursor_column, *self.source_key):
            if not _NAME.match(col):
                raise ValueError(f"column {col!r} must be a plain name (letters, digits, _)")
        private = {*self.identifier_columns, *self.personal_columns}
        clear = sorted(private & set(self.source_key))
        if clear:
            raise ValueError(
                f"source_key column(s) {', '.join(clear)} are identifier or personal columns: "
                "the state keeps the last key read, so use the table's own row id instead"
            )
        if self.cursor_column in private:
            raise ValueError(
                "cursor_column cannot be an identifier or personal column: its values are "
                "kept in the state and shown in locations"
            )
        return self


def _check_read_only(query: str) -> None:
    body = _LITERAL.sub("''", query).strip().rstrip(";")
    if not _SELECT.match(body):
        raise ValueError("query must be one SELECT (or WITH … SELECT): this connector only reads")
    if ";" in body:
        raise ValueError("query must be a single statement (no ';' inside)")
    m = _WRITES.search(body)
    if m:
        raise ValueError(
            f"query contains {m.group(1).upper()!r}: this connector only reads (use a view "
            "or a plain SELECT)"
        )


def _text(value: Any, c: SQLQueryConfig) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.strftime(c.datetime_format)
    if isinstance(value, dt.date):
        return value.strftime(c.date_format)
    if isinstance(value, Decimal | float):
        text = format(value, "f") if isinstance(value, Decimal) else repr(value)
        return text.replace(".", ",") if c.decimal_comma else text
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _cursor_to_state(value: Any) -> dict[str, Any]:
    if isinstance(value, dt.datetime):
        return {"t": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"t": "date", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {"t": "decimal", "v": str(value)}
    if isinstance(value, bool | int | float | str):
        return {"t": type(value).__name__, "v": value}
    raise TypeError(f"unsupported cursor type {type(value).__name__}")


def _cursor_from_state(item: Mapping[str, Any]) -> Any:
    kind, v = item["t"], item["v"]
    if kind == "datetime":
        return dt.datetime.fromisoformat(v)
    if kind == "date":
        return dt.date.fromisoformat(v)
    if kind == "decimal":
        return Decimal(v)
    return v


class SQLQueryConnector(Connector):
    name = "sql_query"
    summary = (
        "A vendor database (PostgreSQL, SQL Server, Oracle, MySQL): table or query, incremental"
    )
    config_class = SQLQueryConfig
    config: SQLQueryConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self._engine_cache: sa.Engine | None = None

    # -- connection ----------------------------------------------------------

    def _url(self) -> str:
        c = self.config
        if c.url is not None:
            return c.url.get_secret_value()
        if c.url_env is not None:
            value = os.environ.get(c.url_env, "").strip()
            if not value:
                raise SourceUnavailable(
                    f"the environment variable {c.url_env} (the database URL) is not set",
                    hint=f"export {c.url_env}=... before the sync, or set url_file",
                )
            return value
        assert c.url_file is not None
        try:
            return c.url_file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError):
            raise SourceUnavailable(
                f"cannot read the database URL from {c.url_file}",
                hint="the file holds the SQLAlchemy URL on its first line",
            ) from None

    def _engine(self) -> sa.Engine:
        if self._engine_cache is not None:
            return self._engine_cache
        try:
            url = sa.make_url(self._url())
        except sa.exc.ArgumentError:
            raise SourceUnavailable(
                "the database URL is not a valid SQLAlchemy URL (dialect+driver://user@host/db)"
            ) from None
        backend = url.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            connect_args = {
                "connect_timeout": self.config.connect_timeout_s,
                "options": "-c default_transaction_read_only=on",
            }
        elif backend in ("mysql", "mariadb"):
            connect_args = {"connect_timeout": self.config.connect_timeout_s}
        try:
            engine = sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)
        except (ImportError, sa.exc.NoSuchModuleError) as e:
            raise SourceUnavailable(
                f"the database driver for {backend} is not installed ({type(e).__name__})",
                hint="install Raccordo's extra for it: pip install 'raccordo[sqlserver]', "
                "'raccordo[oracle]', 'raccordo[mysql]' or 'raccordo[postgres]'",
            ) from None

        if backend in ("mysql", "mariadb", "oracle"):

            @sa.event.listens_for(engine, "connect")
            def _read_only(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                if backend == "oracle":
                    cur.execute("SET TRANSACTION READ ONLY")
                else:
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
                cur.close()

        self._engine_cache = engine
        return engine

    def _unavailable(self, e: sa.exc.SQLAlchemyError) -> SourceUnavailable:
        # Never the statement nor its parameters: they may hold identifiers.
        orig = getattr(e, "orig", None)
        detail = type(orig).__name__ if orig is not None else type(e).__name__
        first = str(orig).strip().splitlines()[0] if orig is not None and str(orig) else ""
        first = _LITERAL.sub("'…'", first)[:200]
        return SourceUnavailable(
            f"the database stopped answering or refused the query ({detail}: {first})",
            where=self._label(),
            hint="check the database is reachable and the account may SELECT from it",
        )

    # -- the query -------------------------------------------------------------

    def _label(self) -> str:
        return self.config.table or "query"

    def _source(self) -> sa.FromClause:
        c = self.config
        if c.table is not None:
            schema, _, name = c.table.rpartition(".")
            return sa.table(name, schema=schema or None)
        assert c.query is not None
        return sa.text(c.query.strip().rstrip(";")).columns().subquery("src")

    def _columns(self, conn: sa.Connection) -> list[str]:
        src = self._source()
        stmt = sa.select(sa.text("*")).select_from(src).where(sa.false())
        return list(conn.execute(stmt).keys())

    def _ordered(self, after: Mapping[str, Any] | None) -> sa.Select[Any]:
        c = self.config
        order = [c.cursor_column, *c.source_key]
        cols: list[sa.ColumnClause[Any]] = [sa.column(n) for n in order]
        stmt = sa.select(sa.text("*")).select_from(self._source())
        stmt = stmt.where(sa.column(c.cursor_column).is_not(None))
        if after is not None:
            values = [_cursor_from_state(after["cursor"]), *after["key"]]
            # (cursor, k1, k2, ...) > (v0, v1, v2, ...), spelt out for every database.
            terms = []
            for i, col in enumerate(cols):
                eq = [cols[j] == values[j] for j in range(i)]
                terms.append(sa.and_(*eq, col > values[i]))
            stmt = stmt.where(sa.or_(*terms))
        return stmt.order_by(*cols)

    def check(self) -> CheckResult:
        try:
            with self._engine().connect() as conn:
                cols: list[str] = self._columns(conn)
                conn.rollback()
        except SourceUnavailable as e:
            return CheckResult(False, e.message)
        except sa.exc.SQLAlchemyError as e:
            return CheckResult(False, self._unavailable(e).message)
        missing = [k for k in (self.config.cursor_column, *self.config.source_key) if k not in cols]
        if missing:
            return CheckResult(
                False,
                f"{self._label()} has no column(s) {', '.join(missing)}; it has "
                f"{', '.join(cols[:40])}",
            )
        return CheckResult(
            True, f"{self._label()}: {len(cols)} columns, cursor {self.config.cursor_column}"
        )

    def streams(self) -> tuple[Stream, ...]:
        c = self.config
        try:
            with self._engine().connect() as conn:
                header = self._columns(conn)
                conn.rollback()
        except (SourceUnavailable, sa.exc.SQLAlchemyError):
            header = []
        types = [i.type_column for i in c.identifier_columns.values() if i.type_column]
        declared = [
            *c.identifier_columns,
            *types,
            *c.personal_columns,
            *c.source_key,
            c.cursor_column,
        ]
        fields = column_fields([*declared, *header], c.identifier_columns, c.personal_columns)
        return (
            Stream(
                c.stream,
                fields,
                source_key=tuple(c.source_key),
                description=f"rows of {self._label()}, by {c.cursor_column}",
                fields_complete=bool(header),
            ),
        )

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        c = self.config
        after: dict[str, Any] | None = state.get("after")
        label = self._label()
        try:
            with self._engine().connect() as conn:
                nulls = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(self._source())
                    .where(sa.column(c.cursor_column).is_(None))
                ).scalar_one()
                if nulls:
                    yield SourceError(
                        f"{nulls} row(s) have no {c.cursor_column} (the cursor column) and "
                        "are not read: give them a value, or choose a cursor that is never "
                        "empty",
                        f"{label} {c.cursor_column} empty",
                        rule="sql_cursor_null",
                        field=c.cursor_column,
                        scope="record",
                    )
                result = conn.execution_options(
                    stream_results=True, yield_per=c.fetch_size
                ).execute(self._ordered(after))
                keys = list(result.keys())
                missing = [k for k in (c.cursor_column, *c.source_key) if k not in keys]
                if missing:
                    result.close()
                    raise SourceUnavailable(
                        f"{label} has no column(s) {', '.join(missing)}",
                        hint="fix cursor_column / source_key, or the query's column names",
                    )
                since = 0
                for row in result:
                    values = dict(zip(keys, row, strict=True))
                    cursor = values[c.cursor_column]
                    yield RawRecord(
                        stream,
                        {k: _text(v, c) for k, v in values.items()},
                        location=f"{label} {c.cursor_column}={_text(cursor, c)}",
                    )
                    after = {
                        "cursor": _cursor_to_state(cursor),
                        "key": [_key_value(values[k]) for k in c.source_key],
                    }
                    since += 1
                    if since >= c.checkpoint_every:
                        since = 0
                        yield StateCheckpoint(_state(after))
                conn.rollback()
        except sa.exc.SQLAlchemyError as e:
            raise self._unavailable(e) from None
        yield StateCheckpoint(_state(after))


def _key_value(v: Any) -> Any:
    if isinstance(v, bool | int | str) or v is None:
        return v
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else str(v)
    return str(v)


def _state(after: dict[str, Any] | None) -> JSONState:
    return {"after": after} if after is not None else {}


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(SQLQueryConnector)
