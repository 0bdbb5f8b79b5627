"""The one hardened CSV reader: files as Italian offices really export them.

Handles ``;`` separators, cp1252 or UTF-8 (with or without BOM), quoted fields
with newlines, and reports a wrong encoding or separator instead of loading
garbled data. Rows come with the physical line number where they start.

Memory: a file is never held whole. :func:`open_csv` reads it once in blocks,
checking its encoding and keeping a digest of each block; every later pass over
its rows (the whole-file check, then the rows) reads it again from disk and
verifies each block against that digest before using it, so all passes see the
content that was checked: a file rewritten while it is read raises
:class:`hub.inputs.InputChanged` instead of mixing two versions.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from hub.inputs import InputChanged, InputError

_T = TypeVar("_T")

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_FIELD_CHARS = 64 * 1024
MAX_COLUMNS = 500
SEPARATORS = (";", ",", "\t", "|")
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "latin-1", "iso-8859-15")
# What UTF-8 text looks like when decoded as cp1252 / latin-1: "Ã¨", "Ã ", "â€™", ...
MOJIBAKE = re.compile("[ÃÂ][\u0080-\u00bf\u2018-\u203a\u0152-\u0178]|â€")


class CSVInputError(InputError):
    """A CSV file that cannot be trusted as a whole."""


class CSVRow(NamedTuple):
    """One row (a named tuple: one is built per row, three times faster than a dataclass)."""

    line: int  # physical line where the row starts
    values: dict[str, str] | None  # None when the row has the wrong number of columns
    problem: str | None = None


@dataclass(frozen=True)
class CSVFile:
    encoding: str
    delimiter: str
    header: tuple[str, ...]
    #: The file; each pass reads it again (nothing of it is held in memory).
    path: Path
    #: Digests of the file's blocks as :func:`open_csv` read them: each pass verifies
    #: every block before it uses it (:class:`hub.inputs.InputChanged` otherwise).
    blocks: tuple[bytes, ...] = field(repr=False, default=())
    block_size: int = 1024 * 1024
    #: Where the text starts (after a byte order mark).
    start: int = 0
    #: The Python codec and error handler that decode the file from ``start``.
    codec: str = "utf-8"
    errors: str = "strict"

    @property
    def text(self) -> str:
        """The whole decoded text (built on each call: the reader never needs it)."""
        with self.stream() as f:
            return f.read()

    def stream(self) -> io.TextIOWrapper:
        """The text as a stream of lines (``newline=""``, as :mod:`csv` wants it), read
        from disk in verified blocks."""
        raw = io.BufferedReader(_VerifiedFile(self), buffer_size=64 * 1024)
        return io.TextIOWrapper(raw, encoding=self.codec, errors=self.errors, newline="")

    def rows(self) -> Iterator[CSVRow]:
        width = len(self.header)
        header = self.header
        for line, values in self.value_rows():
            if len(values) != width:
                yield CSVRow(line, None, width_problem(len(values), width))
            else:
                # strict=False: the width was checked just above.
                yield CSVRow(line, dict(zip(header, values, strict=False)))

    def value_rows(self) -> Iterator[tuple[int, list[str]]]:
        """The rows as ``(line where each starts, its values)``, without the header and the
        blank lines and without checking their width: what :meth:`rows` makes
        :class:`CSVRow` s of, for a reader that builds its records later or not at all
        (:func:`hub.inputs.parts.in_parts`; :func:`width_problem` says what a row of another
        width than the header's is)."""
        with self.stream() as text:
            reader = _reader(text, self.delimiter)
            start = 1
            try:
                for values in reader:
                    line, start = start, reader.line_num + 1
                    if line == 1:
                        continue  # the header
                    if not values or (not values[0].strip() and not "".join(values).strip()):
                        continue  # blank line
                    yield line, values
            except csv.Error as e:
                raise _structure_error(e, start) from None


def width_problem(columns: int, width: int) -> str:
    """Why a row of ``columns`` values under a header of ``width`` columns is skipped."""
    return (
        f"{columns} columns instead of {width}: "
        "a separator inside an unquoted value, or a cut line?"
    )


def _digest(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()[:16]


def _changed() -> InputChanged:
    return InputChanged(
        "the file changed while it was being read (is it still being written?): "
        "it is read again at the next sync"
    )


class _VerifiedFile(io.RawIOBase):
    """A CSV file's bytes from ``start``, each block checked against its digest."""

    def __init__(self, f: CSVFile) -> None:
        super().__init__()
        self._blocks = f.blocks
        self._size = f.block_size
        try:
            self._file = f.path.open("rb")
        except OSError:
            raise _changed() from None
        self._i = 0
        self._block = memoryview(b"")
        self._at = 0
        self._skip = f.start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._at >= len(self._block):
            block = self._file.read(self._size)
            if not block:
                if self._i != len(self._blocks):
                    raise _changed()  # shorter than it was
                return 0
            if self._i >= len(self._blocks) or _digest(block) != self._blocks[self._i]:
                raise _changed()
            self._i += 1
            self._block = memoryview(block)
            self._at, self._skip = min(self._skip, len(block)), max(0, self._skip - len(block))
        n = min(len(buffer), len(self._block) - self._at)
        buffer[:n] = self._block[self._at : self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _reader(lines: Iterable[str], delimiter: str) -> csv.Reader:  # type: ignore[name-defined]
    return csv.reader(lines, delimiter=delimiter, quotechar='"', strict=True)


def _records(reader: csv.Reader) -> Iterator[tuple[int, list[str]]]:  # type: ignore[name-defined]
    start = 1
    try:
        for values in reader:
            yield start, values
            start = reader.line_num + 1
    except csv.Error as e:
        raise _structure_error(e, start) from None


def _structure_error(e: csv.Error, line: int) -> CSVInputError:
    if "field limit" in str(e):
        return CSVInputError(
            "a value is too long (over 64 KiB): often a quote that is never closed "
            "swallows the rest of the file",
            line=line,
        )
    return CSVInputError(f"the CSV structure is broken ({e}): an unclosed quote?", line=line)


#: Bytes read (and decoded) at a time: no pass holds more of a file.
CHUNK_BYTES = 1024 * 1024
#: Text kept from the start of a file, to find its separator (the first lines).
HEAD_CHARS = 64 * 1024
#: Characters of a pair typical of mojibake (MOJIBAKE): when a chunk has none, the
#: regular expression need not run (most exports have none of them at all).
_MOJIBAKE_LEADS = ("Ã", "Â", "â€")


@dataclass(frozen=True)
class _Text:
    """How the bytes of a file decode: where the text starts, the codec, what it is called."""

    start: int
    codec: str
    errors: str
    name: str


class _Blocks:
    """A file read in blocks; the first read keeps their digests, later ones verify them."""

    def __init__(self, path: Path, size: int, max_bytes: int) -> None:
        self.path = path
        self.size = size
        self.max_bytes = max_bytes
        self.digests: list[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        first = self.digests is None
        digests: list[bytes] = [] if first else self.digests  # type: ignore[assignment]
        total = 0
        i = 0
        with self.path.open("rb") as f:
            while block := f.read(self.size):
                total += len(block)
                if total > self.max_bytes:
                    raise _too_big(total, self.max_bytes)
                if first:
                    digests.append(_digest(block))
                elif i >= len(digests) or _digest(block) != digests[i]:
                    raise _changed()
                i += 1
                yield block
        if first:
            self.digests = digests
        elif i != len(digests):
            raise _changed()


def _too_big(size: int, max_bytes: int) -> CSVInputError:
    return CSVInputError(
        f"the file is {size // (1024 * 1024)} MiB, over the limit of "
        f"{max_bytes // (1024 * 1024)} MiB (max_file_mb)"
    )


def _decode(blocks: _Blocks, bom: bool, encoding: str) -> tuple[_Text, str]:
    """How the file decodes, and the start of its text; the whole file is checked, in
    blocks, without keeping its text (CSVInputError with the line where it is wrong)."""
    start = len(codecs.BOM_UTF8) if bom else 0
    if encoding == "auto":
        if bom:
            how = _Text(start, "utf-8", "strict", "utf-8-sig")
            return how, _checked(blocks, how, encoding="utf-8")
        try:
            how = _Text(0, "utf-8", "strict", "utf-8")
            return how, _scan(blocks, how)
        except UnicodeDecodeError:
            how = _Text(0, "cp1252", "replace", "cp1252")
            return how, _checked(blocks, how, encoding="cp1252")
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise CSVInputError(
            f"unsupported encoding {encoding!r}; use one of {', '.join(ENCODINGS)} or auto"
        )
    how = (
        _Text(start, "utf-8", "strict", enc)
        if enc.startswith("utf-8")
        else _Text(0, enc, "strict", enc)
    )
    return how, _checked(blocks, how, encoding=encoding)


def _checked(blocks: _Blocks, how: _Text, *, encoding: str) -> str:
    """:func:`_scan`, a text that does not decode refused with the line where it breaks."""
    try:
        return _scan(blocks, how)
    except UnicodeDecodeError as e:
        raise CSVInputError(
            f"the file is not valid {encoding}; it is probably cp1252 "
            '(Excel\'s usual encoding): set encoding = "cp1252"',
            line=getattr(e, "csv_line", 0),
        ) from None


def _scan(blocks: _Blocks, how: _Text) -> str:
    """Decode the whole text in blocks (UnicodeDecodeError, with ``csv_line``, if it does
    not); return its start (at least :data:`HEAD_CHARS` characters, where the sample for
    the separator is taken).

    Refused (CSVInputError): a text with nothing but blanks; a text read with another
    encoding than UTF-8 that has pairs typical of UTF-8 read with the wrong encoding."""
    mojibake = how.name not in ("utf-8", "utf-8-sig")
    decoder = codecs.getincrementaldecoder(how.codec)(how.errors)
    head = ""
    blank = True
    newlines = 0  # characters "\n" before the current block (bytes b"\n" in raw_newlines)
    raw_newlines = 0
    tail = ""  # the previous block's last character (a pair may straddle two blocks)
    skip = how.start
    for block in blocks:
        if skip:
            block, skip = block[skip:], max(0, skip - len(block))
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block)
        except UnicodeDecodeError as e:
            # The buffered bytes of a cut character hold no newline.
            e.csv_line = raw_newlines + block.count(b"\n", 0, max(0, e.start - pending)) + 1  # type: ignore[attr-defined]
            raise
        raw_newlines += block.count(b"\n")
        if len(head) < HEAD_CHARS:
            head += text
        if blank and text.strip():
            blank = False
        if mojibake:
            pair = tail + text
            if any(lead in pair for lead in _MOJIBAKE_LEADS):
                m = MOJIBAKE.search(pair)
                if m:
                    before = newlines - (tail == "\n")
                    raise CSVInputError(
                        f"the file does not look like {how.name}: it contains character pairs "
                        "typical of UTF-8 text read with the wrong encoding; set "
                        'encoding = "utf-8"',
                        line=before + pair.count("\n", 0, m.start()) + 1,
                    )
            tail = text[-1:] or tail
            newlines += text.count("\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        e.csv_line = raw_newlines + 1  # type: ignore[attr-defined]
        raise
    if blank:
        raise CSVInputError("the file is empty")
    return head


def _sniff(text: str) -> str:
    sample = "\n".join(text.splitlines()[:50])
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS))
        guess = dialect.delimiter
    except csv.Error:
        guess = None
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in SEPARATORS}
    if guess is None or counts.get(guess, 0) == 0:
        best = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        if best[0][1] == 0 or (len(best) > 1 and best[0][1] == best[1][1]):
            raise CSVInputError(
                "cannot tell the separator from the header line; declare "
                'delimiter = ";" (or ",", "\\t", "|")',
                line=1,
            )
        guess = best[0][0]
    return guess


def open_csv(
    path: Path, *, encoding: str = "auto", delimiter: str = "auto", max_bytes: int = MAX_FILE_BYTES
) -> CSVFile:
    """Read and check a whole CSV file (bounded size); rows are parsed lazily.

    The file is read in blocks (the text is checked: encoding, mojibake, header) and
    never held; each pass over its rows reads it again, block by block, verifying each
    block is the one checked here (see the module's docstring)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise _too_big(size, max_bytes)
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")):
        raise CSVInputError(
            "this is not a CSV text but a binary file, most likely an Excel (.xlsx, .xls) or "
            "OpenDocument (.ods) spreadsheet: read it as a spreadsheet (csv_export does with "
            'format = "auto"), or save it from Excel as "CSV (separato da punto e virgola)"'
        )
    blocks = _Blocks(path, CHUNK_BYTES, max_bytes)
    how, head = _decode(blocks, magic.startswith(codecs.BOM_UTF8), encoding)
    delim = _sniff(head) if delimiter == "auto" else delimiter.replace("\\t", "\t")
    if delim not in SEPARATORS:
        raise CSVInputError(f"unsupported delimiter {delimiter!r}")
    f = CSVFile(
        how.name,
        delim,
        (),
        path,
        tuple(blocks.digests or ()),
        blocks.size,
        how.start,
        how.codec,
        how.errors,
    )
    old_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        with f.stream() as text:
            first = next(_records(_reader(text, delim)), None)
        header_values = first[1] if first else []
    except csv.Error:
        raise CSVInputError("a value is longer than 64 KiB", line=1) from None
    finally:
        csv.field_size_limit(old_limit)
    header = tuple(h.strip() for h in header_values)
    if len(header) < 2:
        raise CSVInputError(
            f"the header has a single column with separator {delim!r}: is the delimiter right?",
            line=1,
        )
    if len(header) > MAX_COLUMNS:
        raise CSVInputError(f"{len(header)} columns, more than {MAX_COLUMNS}", line=1)
    for i, h in enumerate(header, start=1):
        if not h:
            raise CSVInputError(f"column {i} of the header has no name", line=1)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CSVInputError(f"duplicate column names in the header: {', '.join(dup)}", line=1)
    return replace(f, header=header)


def check_rows(csv_file: CSVFile) -> None:
    """Read the whole file as :func:`iter_rows` would, raising the same :class:`CSVInputError`
    where the structure breaks, without building its rows (a first pass over a file before
    anything of it is loaded)."""
    old_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        try:
            with csv_file.stream() as text:
                deque(_reader(text, csv_file.delimiter), maxlen=0)  # at C speed
        except csv.Error:
            # Again, keeping track of where each record starts, to say where it breaks.
            with csv_file.stream() as text:
                for _ in _records(_reader(text, csv_file.delimiter)):
                    pass
            raise
    except csv.Error as e:
        raise CSVInputError(f"a value is too long or malformed ({e})") from None
    finally:
        csv.field_size_limit(old_limit)


def iter_value_rows(csv_file: CSVFile) -> Iterator[tuple[int, list[str]]]:
    """:meth:`CSVFile.value_rows` with the per-field size bound of :func:`iter_rows`."""
    return _bounded(csv_file.value_rows())


def iter_rows(csv_file: CSVFile) -> Iterator[CSVRow]:
    """Rows with a per-field size bound."""
    return _bounded(csv_file.rows())


def _bounded(rows: Iterator[_T]) -> Iterator[_T]:
    """``rows`` read with the per-field size bound, a broken value as a CSVInputError."""
    old_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        yield from rows
    except csv.Error as e:
        raise CSVInputError(f"a value is too long or malformed ({e})") from None
    finally:
        csv.field_size_limit(old_limit)
