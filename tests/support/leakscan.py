"""The leak scanner (BLUEPRINT §8.1): no clear identifier anywhere the hub writes.

Scans files (text, binary, gzip, SQLite databases cell by cell) and database
tables for:

* codice fiscale shapes (omocodic letters included), upper case, delimited by
  non-alphanumeric characters on both sides. Pseudonyms are base64url strings
  and could contain a CF-shaped run by chance; requiring delimiters and upper
  case makes that practically impossible while still catching a CF written in
  any log line, CSV cell, JSON string or SQL value;
* STP/ENI codes (``STP``/``ENI`` + 13 digits);
* ``values``: the exact clear identifiers a test fed in, as whole tokens (provisional CFs
  included, since an 11-digit number alone is not suspicious), in any case;
* ``names``: person names of the fixtures, case-insensitive, whole words.

Findings are reported with a masked excerpt: a leak report must not leak.
"""

from __future__ import annotations

import gzip
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

CF = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{6}[0-9LMNP-V]{2}[ABCDEHLMPRST][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]"
    r"(?![A-Za-z0-9])"
)
STP_ENI = re.compile(r"(?<![A-Za-z0-9])(?:STP|ENI)[0-9]{13}(?![0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Leak:
    where: str
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} {self.excerpt}"


def _mask(value: str) -> str:
    return value[:3] + "***"


_TOKEN = re.compile(r"[A-Za-z0-9]+")
# Names are whole words; a run of base64url characters (letters, digits, "_", "-") is one word,
# so a three-letter name inside a pseudonym ("1.x-Lia-y") is not a false alarm.
_WORD = re.compile(r"[\w-]+")


class _Matcher:
    """Patterns by regex; known values and names by set lookup of tokens (fast on big files)."""

    def __init__(self, names: Iterable[str], values: Iterable[str]) -> None:
        self.values = {"".join(v.split()).upper() for v in values if v and v.strip()}
        single, multi = set(), []
        for n in names:
            n = n.strip().lower()
            if len(n) < 3:
                continue
            if re.fullmatch(r"\w+", n):
                single.add(n)
            else:
                multi.append(n)
        self.names = single
        self.multi = re.compile("|".join(map(re.escape, multi)), re.IGNORECASE) if multi else None

    def scan(self, text: str, where: str) -> list[Leak]:
        out = [Leak(where, "codice fiscale", _mask(m.group())) for m in CF.finditer(text)]
        out += [Leak(where, "STP/ENI code", _mask(m.group())) for m in STP_ENI.finditer(text)]
        if self.values:
            out += [
                Leak(where, "identifier fed to the test", _mask(m.group()))
                for m in _TOKEN.finditer(text)
                if m.group().upper() in self.values
            ]
        if self.names:
            out += [
                Leak(where, "person name", _mask(m.group()))
                for m in _WORD.finditer(text)
                if m.group().lower() in self.names
            ]
        if self.multi:
            out += [Leak(where, "person name", _mask(m.group())) for m in self.multi.finditer(text)]
        return out


def scan_text(
    text: str, *, where: str, names: Iterable[str] = (), values: Iterable[str] = ()
) -> list[Leak]:
    return _Matcher(names, values).scan(text, where)


def _file_texts(path: Path) -> Iterable[tuple[str, str]]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    yield str(path), raw.decode("utf-8", errors="replace")
    if raw[:16] == b"SQLite format 3\x00":
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in conn.execute("select name from sqlite_master where type='table'")
            ]
            for table in tables:
                for i, row in enumerate(conn.execute(f'select * from "{table}"')):
                    cells = [
                        c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                        for c in row
                        if c is not None
                    ]
                    yield f"{path}:{table} row {i}", "\x1f".join(cells)
        finally:
            conn.close()


def scan_paths(
    paths: Iterable[Path], *, names: Iterable[str] = (), values: Iterable[str] = ()
) -> list[Leak]:
    """Every file under ``paths`` (recursively), raw bytes and SQLite cells."""
    m = _Matcher(names, values)
    leaks: list[Leak] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            for where, text in _file_texts(f):
                leaks += m.scan(text, where)
    return leaks


def scan_database(url: str, *, names: Iterable[str] = (), values: Iterable[str] = ()) -> list[Leak]:
    """Every text-like column of every table of a SQLite or PostgreSQL database."""
    m = _Matcher(names, values)
    engine = sa.create_engine(url)
    leaks: list[Leak] = []
    try:
        insp = sa.inspect(engine)
        with engine.connect() as conn:
            for table in insp.get_table_names():
                t = sa.Table(table, sa.MetaData(), autoload_with=conn)
                for i, row in enumerate(conn.execute(sa.select(t))):
                    cells = [str(c) for c in row if c is not None]
                    leaks += m.scan("\x1f".join(cells), f"{url.split('@')[-1]}:{table} row {i}")
    finally:
        engine.dispose()
    return leaks


def assert_no_leaks(leaks: list[Leak]) -> None:
    if leaks:
        shown = "\n".join(f"  {leak}" for leak in leaks[:30])
        raise AssertionError(
            f"{len(leaks)} clear identifier(s) found where the hub writes:\n{shown}"
        )
