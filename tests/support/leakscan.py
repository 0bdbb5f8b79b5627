"""The leak scanner (BLUEPRINT §8.1): no clear identifier anywhere the hub writes.

Every end-to-end test ends with ``assert_no_leaks(scan_paths(...) + scan_database(...))``.

What counts as a leak:

* a **codice fiscale** shape (omocodic letters included), in UPPER case and delimited by
  non-alphanumeric characters on both sides (or the start/end of the text). Pseudonyms are
  random base64url strings (``1.AbC…``) and a CF-shaped run can occur inside one by chance;
  requiring delimiters and upper case makes that practically impossible (about 1e-11 per
  position) while still catching a CF written in a log line, CSV cell, JSON string, SQL value or
  file name. A CF the test fed in is found in any case and anywhere through ``values``;
* an **STP/ENI code** (``STP``/``ENI`` + 13 digits), any case, not preceded by a letter or digit;
* ``values``: the exact clear identifiers the test fed in (provisional CFs included: an 11-digit
  number alone is not suspicious, the one the test used is), found literally in any case, also
  inside a longer run of letters and digits;
* ``names``: the fixtures' person names, case-insensitive, as whole words. A word is a run of
  letters, digits, ``_`` and ``-``, so that a run of base64url is one word and a short name
  inside a pseudonym (``1.x-Lia-y``) is no false alarm; a word made only of letters joined by
  ``-``/``_`` (``Mario-Rossi``) is also checked part by part. Names shorter than three
  characters are ignored (they are ordinary words: "Li", "Bo").

Where it looks: files (recursively), as raw bytes, gunzipped when gzip, member by member when
zip, and for SQLite files also every cell of every table (text split over overflow pages is
not contiguous in the raw bytes); file names; every column of every table of a SQLite or
PostgreSQL database (all columns, not only text ones: a provisional CF stored as a number is
still a leak).

Binary values (storage v2 keeps 16-byte keys and 32-byte pseudonym elements as raw bytes):
a cell holding bytes that are not valid UTF-8 is random binary, not text, and is checked
for codice fiscale and STP/ENI shapes and the fed values, not for names (three random
letters between two non-letters occur by chance in every few megabytes of random bytes).
In the raw bytes of a file, a name counts where it stands in text: four printable characters
on each side of it, or fewer up to the file's start or end (a name in a log line, a CSV cell,
a freed page of text cells); a name inside random binary bytes has them on both sides about
once in some GiB.

Findings carry a masked excerpt (first three characters + ``***``), and the places they name
(paths, tables) are masked the same way: a leak report must not leak.
"""

from __future__ import annotations

import bisect
import gzip
import io
import itertools
import json
import re
import shutil
import sqlite3
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

CF = re.compile(
    r"(?<![A-Za-z0-9])"
    r"[A-Z]{6}[0-9LMNP-V]{2}[A-EHLMPR-T][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]"
    r"(?![A-Za-z0-9])"
)
STP_ENI = re.compile(r"(?<![A-Za-z0-9])(?:STP|ENI)[0-9]{13}(?![0-9])", re.IGNORECASE)
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_WORD = re.compile(r"[\w-]+")  # base64url runs stay one word
# A word of letters only, joined by "-" or "_" (Mario-Rossi), not x1-Lia-y from a pseudonym.
_LETTERS_JOINED = re.compile(r"(?<![\w-])[^\W\d_]+(?:[-_][^\W\d_]+)+(?![\w-])")
_SEP = "\x1f"  # joins the cells of a row: neither a letter, a digit, "_" nor "-"

SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"

KIND_CF = "codice fiscale"
KIND_STP_ENI = "STP/ENI code"
KIND_VALUE = "identifier fed to the test"
KIND_NAME = "person name"


@dataclass(frozen=True)
class Leak:
    """One clear identifier found: where (file + byte offset, or table.column + row), what."""

    where: str
    kind: str
    excerpt: str  # masked: never the value itself

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} {self.excerpt}"


def mask(value: str) -> str:
    return value[:3] + "***"


class _Matcher:
    """Every kind of finding in one text; built once per scan from the test's names and values.

    Hot path: most texts hold nothing, so each check runs first as a whole-text regex or set
    operation in C, and the position-by-position pass runs only when something is there.
    """

    def __init__(self, names: Iterable[str], values: Iterable[str]) -> None:
        plain: set[str] = set()
        other: list[str] = []
        for v in values:
            v = v.strip()
            if _ALNUM_RUN.fullmatch(v):
                plain.add(v.upper())
            elif v:
                other.append(v)
        self.values = plain
        # Values are found by their shape (which positions are letters, which digits): one
        # overlapping-lookahead regex per length runs in C, and only the rare runs of text with
        # a value's exact shape are looked up in the set. Found anywhere, even inside longer runs.
        shapes: dict[int, set[str]] = {}
        for v in plain:
            shapes.setdefault(len(v), set()).add(_shape(v))
        self.value_patterns = [
            re.compile("(?=(" + "|".join(sorted(group)) + "))") for group in shapes.values()
        ]
        self.other_values = (
            re.compile("|".join(map(re.escape, other)), re.IGNORECASE) if other else None
        )
        single: set[str] = set()
        multi: list[str] = []
        for n in names:
            n = " ".join(n.split()).casefold()
            if len(n) < 3:
                continue
            if re.fullmatch(r"\w+", n):
                single.add(n)
            else:
                multi.append(n)
        self.names = single
        self.multi_names = (
            re.compile(
                r"(?<![\w-])(?:"
                + "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in multi)
                + r")(?![\w-])",
                re.IGNORECASE,
            )
            if multi
            else None
        )

    def find(
        self, text: str, *, names: bool = True, binary: bool = False
    ) -> list[tuple[int, str, str]]:
        """(position, kind, matched text) of every finding, in text order, one per span.

        ``names=False``: no name matching (a binary value); ``binary``: the text is raw bytes
        that may mix text and binary: a name counts only in text (see the module's doc).
        """
        found: dict[tuple[int, int], tuple[str, str]] = {}

        def add(start: int, end: int, kind: str) -> None:
            found.setdefault((start, end), (kind, text[start:end]))

        for m in CF.finditer(text):
            add(m.start(), m.end(), KIND_CF)
        for m in STP_ENI.finditer(text):
            add(m.start(), m.end(), KIND_STP_ENI)
        for pattern in self.value_patterns:
            for m in pattern.finditer(text):
                if m.group(1).upper() in self.values:
                    add(m.start(), m.start() + len(m.group(1)), KIND_VALUE)
        if self.other_values:
            for m in self.other_values.finditer(text):
                add(m.start(), m.end(), KIND_VALUE)
        if names:
            add_name = _in_text(text, add) if binary else add
            if self.names:
                self._find_names(text, add_name)
            if self.multi_names:
                for m in self.multi_names.finditer(text):
                    add_name(m.start(), m.end(), KIND_NAME)
        return [(start, kind, value) for (start, _), (kind, value) in sorted(found.items())]

    def _find_names(self, text: str, add: Callable[[int, int, str], None]) -> None:
        if not self.names.isdisjoint(map(str.casefold, _WORD.findall(text))):
            for m in _WORD.finditer(text):
                if m.group().casefold() in self.names:
                    add(m.start(), m.end(), KIND_NAME)
        for m in _LETTERS_JOINED.finditer(text):  # Mario-Rossi, rossi_mario: part by part
            for part in re.finditer(r"[^-_]+", m.group()):
                if part.group().casefold() in self.names:
                    add(m.start() + part.start(), m.start() + part.end(), KIND_NAME)

    def redact(self, text: str) -> str:
        """``text`` (a path, a table name) with every finding masked, for use in a report."""
        out, last = [], 0
        for start, _, value in self.find(text):
            if start < last:
                continue
            out += [text[last:start], mask(value)]
            last = start + len(value)
        return "".join([*out, text[last:]])


def _printable(chars: str) -> bool:
    return all(" " <= c <= "~" or c in "\t\n\r" or (c > "\x9f" and c.isprintable()) for c in chars)


def _in_text(text: str, add: Callable[[int, int, str], None]) -> Callable[[int, int, str], None]:
    """``add`` for the matches standing in text: on each side four printable characters, or
    fewer up to the start or end of ``text``.

    One side was once enough, but in random binary a short name between a non-letter and
    four printable bytes comes about once in 40 MiB (a registry's keys and pseudonyms are
    megabytes of it, stored twice with their indexes: the demo's test met "Ugo" so in
    2026-12); on both sides it is once in some GiB."""

    def add_if_text(start: int, end: int, kind: str) -> None:
        left, right = text[max(0, start - 4) : start], text[end : end + 4]
        # Shorter than four only at the start or the end of the text.
        if _printable(left) and _printable(right):
            add(start, end, kind)

    return add_if_text


def _shape(value: str) -> str:
    """Regex for the letter/digit pattern of a value: RSSMRA80A01H501U -> [A-Za-z]{6}[0-9]{2}…"""
    classes = ["[0-9]" if c.isdigit() else "[A-Za-z]" for c in value]
    return "".join(f"{cls}{{{len(list(run))}}}" for cls, run in itertools.groupby(classes))


def _leaks(m: _Matcher, text: str, where: str, unit: str = "char") -> list[Leak]:
    return [Leak(f"{where} @ {unit} {pos}", kind, mask(v)) for pos, kind, v in m.find(text)]


def _is_utf8(value: bytes | bytearray | memoryview) -> bool:
    try:
        bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _cell_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _rows_leaks(
    m: _Matcher, rows: Iterable[tuple[str, Sequence[object]]], columns: Sequence[str], table: str
) -> list[Leak]:
    """Findings in ``(row id, cells)`` rows, reported as ``table.column, row id``.

    Cells are scanned a thousand rows at a time, joined by a separator no finding can span:
    one regex pass per chunk instead of one per cell; offsets say which cell a finding is in.
    """
    leaks: list[Leak] = []
    it = iter(rows)
    while chunk := list(itertools.islice(it, 1000)):
        texts: list[str] = []
        owners: list[tuple[str, str]] = []
        for rowid, cells in chunk:
            for column, cell in zip(columns, cells, strict=True):
                if isinstance(cell, bytes | bytearray | memoryview) and not _is_utf8(cell):
                    # Random binary (a key, a pseudonym element): shapes and values only.
                    for _, kind, value in m.find(bytes(cell).decode("latin-1"), names=False):
                        leaks.append(Leak(f"{table}.{column}, {rowid}", kind, mask(value)))
                    cell = None
                texts.append("" if cell is None else _cell_text(cell))
                owners.append((column, rowid))
        starts = list(itertools.accumulate((len(t) + 1 for t in texts[:-1]), initial=0))
        for pos, kind, value in m.find(_SEP.join(texts)):
            column, rowid = owners[bisect.bisect_right(starts, pos) - 1]
            leaks.append(Leak(f"{table}.{column}, {rowid}", kind, mask(value)))
    return leaks


def scan_text(
    text: str, *, where: str, names: Iterable[str] = (), values: Iterable[str] = ()
) -> list[Leak]:
    """Findings in ``text``; ``where`` names it in the report (offsets are in characters)."""
    return _leaks(_Matcher(names, values), text, where)


def _scan_bytes(
    m: _Matcher, raw: bytes, where: str, wal: bytes | None = None, gunzip: bool = True
) -> list[Leak]:
    """Raw bytes, then what they contain: gzip and zip transparently, SQLite cell by cell."""
    if gunzip and raw.startswith(GZIP_MAGIC):
        try:
            return _scan_bytes(m, gzip.decompress(raw), f"{where} (gunzipped)")
        except (OSError, EOFError, zlib.error):
            # Truncated (a process killed mid-write) or not gzip after all: scan what
            # decompresses, and the raw bytes below.
            partial = zlib.decompressobj(wbits=47)  # 32 + 15: gzip header, largest window
            try:
                head = partial.decompress(raw)
            except zlib.error:
                head = b""
            leaks = _scan_bytes(m, head, f"{where} (gunzipped, damaged)") if head else []
            return leaks + _scan_bytes(m, raw, f"{where} (raw)", gunzip=False)
    text = raw.decode("utf-8", "surrogateescape")  # round-trips: offsets map back to bytes
    found = m.find(text, binary=True)
    leaks = [
        Leak(f"{where} @ byte {offset}", kind, mask(v))
        for offset, (_, kind, v) in zip(_byte_offsets(text, found), found, strict=True)
    ]
    if raw.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for info in z.infolist():
                    member = f"{where}!{m.redact(info.filename)}"
                    leaks += _leaks(m, info.filename, f"name of {member}")
                    if not info.is_dir():
                        leaks += _scan_bytes(m, z.read(info), member)
        except zipfile.BadZipFile:
            pass  # merely starts like a zip: the raw bytes were scanned above
    if raw.startswith(SQLITE_MAGIC):
        leaks += _scan_sqlite(m, raw, wal, where)
    return leaks


def _byte_offsets(text: str, found: list[tuple[int, str, str]]) -> Iterator[int]:
    pos = offset = 0
    for start, _, _ in found:
        offset += len(text[pos:start].encode("utf-8", "surrogateescape"))
        pos = start
        yield offset


def _scan_sqlite(m: _Matcher, raw: bytes, wal: bytes | None, where: str) -> list[Leak]:
    """Every cell of every table, read from a copy of the database (and its write-ahead log).

    A copy takes no lock on a live registry and never changes it; with the ``-wal`` file next
    to it, SQLite replays the committed transactions not yet written into the main file.
    """
    leaks: list[Leak] = []
    with tempfile.TemporaryDirectory(prefix="leakscan-") as tmp:
        copy = Path(tmp) / "db.sqlite"
        copy.write_bytes(raw)
        if wal:
            Path(f"{copy}-wal").write_bytes(wal)
        try:
            conn = sqlite3.connect(copy)
            try:
                conn.text_factory = bytes  # undecodable text must not stop the scan
                tables = [
                    r[0].decode("utf-8", "surrogateescape")
                    for r in conn.execute("select name from sqlite_master where type='table'")
                ]
                for table in tables:
                    leaks += _scan_sqlite_table(m, conn, table, where)
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise RuntimeError(f"leak scan: cannot read the SQLite database {where}: {e}") from None
    return leaks


def _scan_sqlite_table(m: _Matcher, conn: sqlite3.Connection, table: str, where: str) -> list[Leak]:
    quoted = '"' + table.replace('"', '""') + '"'
    try:
        cur = conn.execute(f"select rowid, * from {quoted}")
        skip = 1
    except sqlite3.OperationalError:  # a WITHOUT ROWID table
        cur = conn.execute(f"select * from {quoted}")
        skip = 0
    columns = [m.redact(d[0]) for d in cur.description][skip:]
    rows = ((f"rowid {row[0]}" if skip else f"row {i}", row[skip:]) for i, row in enumerate(cur))
    return _rows_leaks(m, rows, columns, f"{where}: {m.redact(table)}")


def scan_paths(
    paths: Iterable[Path], *, names: Iterable[str] = (), values: Iterable[str] = ()
) -> list[Leak]:
    """Every file under ``paths`` (recursively): names, raw bytes, gzip, zip, SQLite cells.

    A path that does not exist is an error, not an empty (and reassuring) result.
    """
    m = _Matcher(names, values)
    leaks: list[Leak] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"leak scan: {m.redact(str(root))} does not exist")
        # A file that goes away while the tree is read (SQLite removes its -shm and -wal
        # when a connection closes, and checkpoints the WAL into the database first) makes
        # the whole tree be read again, so what moved is read where it went.
        for attempt in range(5):
            try:
                leaks += _scan_tree(m, root)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
    return leaks


def _scan_tree(m: _Matcher, root: Path) -> list[Leak]:
    leaks: list[Leak] = []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        where = m.redact(str(f))
        if f != root:  # names the hub chose (the root was chosen by the test)
            leaks += _leaks(m, str(f.relative_to(root)), f"name of {where}")
        raw = f.read_bytes()
        wal = Path(f"{f}-wal")
        with_wal = wal.read_bytes() if raw.startswith(SQLITE_MAGIC) and wal.is_file() else None
        leaks += _scan_bytes(m, raw, where, with_wal)
    return leaks


_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast"}


def scan_database(url: str, *, names: Iterable[str] = (), values: Iterable[str] = ()) -> list[Leak]:
    """Every column of every table (all schemas) of a SQLite or PostgreSQL database.

    A SQLite file that does not exist, or a database without tables, is an error: scanning
    the wrong place must not pass.
    """
    m = _Matcher(names, values)
    u = sa.engine.make_url(url)
    db = m.redact(f"{u.get_backend_name()}:{u.database}")
    if u.get_backend_name() != "sqlite":
        return _scan_engine(m, sa.create_engine(u), db)
    path = Path(u.database or "")
    if not u.database or not path.is_file():
        raise FileNotFoundError(f"leak scan: no SQLite database at {db}")
    # A copy (with its write-ahead log): opening the file itself would create -shm/-wal files
    # next to it, or a new empty database if the path were wrong.
    with tempfile.TemporaryDirectory(prefix="leakscan-") as tmp:
        copy = Path(tmp) / "db.sqlite"
        shutil.copyfile(path, copy)
        if Path(f"{path}-wal").is_file():
            shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        return _scan_engine(m, sa.create_engine(f"sqlite:///{copy}"), db)


def _scan_engine(m: _Matcher, engine: sa.Engine, db: str) -> list[Leak]:
    leaks: list[Leak] = []
    tables = 0
    try:
        insp = sa.inspect(engine)
        default = insp.default_schema_name
        with engine.connect() as conn:
            for schema in insp.get_schema_names():
                if schema in _SYSTEM_SCHEMAS or schema.startswith("pg_"):
                    continue
                for name in insp.get_table_names(schema=schema):
                    tables += 1
                    table = sa.Table(
                        name,
                        sa.MetaData(),
                        autoload_with=conn,
                        schema=None if schema == default else schema,
                    )
                    leaks += _scan_table(m, conn, table, db)
    finally:
        engine.dispose()
    if tables == 0:
        raise ValueError(f"leak scan: {db} has no tables (wrong database?)")
    return leaks


def _scan_table(m: _Matcher, conn: sa.Connection, table: sa.Table, db: str) -> list[Leak]:
    # Row ids are shown only when they are integers: a text key could itself be the leak.
    int_pk = _integer_key(table)
    columns = [m.redact(c.name) for c in table.columns]
    rows = (
        (f"{int_pk.name} {row._mapping[int_pk]}" if int_pk is not None else f"row {i}", row)
        for i, row in enumerate(conn.execute(sa.select(table)))
    )
    return _rows_leaks(m, rows, columns, f"{db}: {m.redact(table.fullname)}")


def _integer_key(table: sa.Table) -> sa.Column[object] | None:
    pk = list(table.primary_key.columns)
    if len(pk) != 1:
        return None
    try:
        return pk[0] if pk[0].type.python_type is int else None
    except NotImplementedError:  # a type SQLAlchemy has no Python equivalent for
        return None


def assert_no_leaks(leaks: Sequence[Leak], *, show: int = 30) -> None:
    """Fail with a readable, masked list of what was found where."""
    if not leaks:
        return
    counts = ", ".join(f"{n} {kind}" for kind, n in Counter(x.kind for x in leaks).most_common())
    lines = [f"  {leak}" for leak in leaks[:show]]
    if len(leaks) > show:
        lines.append(f"  ... and {len(leaks) - show} more")
    raise AssertionError(
        f"{len(leaks)} clear identifier(s) found where the hub writes ({counts}):\n"
        + "\n".join(lines)
    )
