"""The one hardened CSV reader: files as Italian offices really export them.

Handles ``;`` separators, cp1252 or UTF-8 (with or without BOM), quoted fields
with newlines, and reports a wrong encoding or separator instead of loading
garbled data. Rows come with the physical line number where they start.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from hub.inputs import InputError

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_FIELD_CHARS = 64 * 1024
MAX_COLUMNS = 500
SEPARATORS = (";", ",", "\t", "|")
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "latin-1", "iso-8859-15")
# What UTF-8 text looks like when decoded as cp1252 / latin-1: "Ã¨", "Ã ", "â€™", ...
MOJIBAKE = re.compile("[ÃÂ][\u0080-\u00bf\u2018-\u203a\u0152-\u0178]|â€")


class CSVInputError(InputError):
    """A CSV file that cannot be trusted as a whole."""


@dataclass(frozen=True)
class CSVRow:
    line: int  # physical line where the row starts
    values: dict[str, str] | None  # None when the row has the wrong number of columns
    problem: str | None = None


@dataclass(frozen=True)
class CSVFile:
    encoding: str
    delimiter: str
    header: tuple[str, ...]
    #: The file's bytes, read once: every pass over the rows decodes them again in
    #: small chunks, so no pass holds the whole text (a decoded copy, or the four bytes
    #: per character of an ``io.StringIO``), and every pass reads the same content.
    data: bytes = field(repr=False)
    #: Where the text starts in ``data`` (after a byte order mark).
    start: int = 0
    #: The Python codec and error handler that decode ``data[start:]``.
    codec: str = "utf-8"
    errors: str = "strict"

    @property
    def text(self) -> str:
        """The whole decoded text (built on each call: the reader never needs it)."""
        return self.data[self.start :].decode(self.codec, self.errors)

    def stream(self) -> io.TextIOWrapper:
        """The text as a stream of lines (``newline=""``, as :mod:`csv` wants it)."""
        raw = io.BytesIO(self.data)  # shares ``data``, no copy
        raw.seek(self.start)
        return io.TextIOWrapper(raw, encoding=self.codec, errors=self.errors, newline="")

    def rows(self) -> Iterator[CSVRow]:
        reader = _reader(self.stream(), self.delimiter)
        line = 1
        first = True
        for record in _records(reader):
            start, values = record
            if first:
                first = False
                continue
            line = start
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(self.header):
                yield CSVRow(
                    line,
                    None,
                    f"{len(values)} columns instead of {len(self.header)}: "
                    "a separator inside an unquoted value, or a cut line?",
                )
                continue
            yield CSVRow(line, dict(zip(self.header, values, strict=True)))


def _reader(lines: Iterable[str], delimiter: str) -> csv.Reader:  # type: ignore[name-defined]
    return csv.reader(lines, delimiter=delimiter, quotechar='"', strict=True)


def _records(reader: csv.Reader) -> Iterator[tuple[int, list[str]]]:  # type: ignore[name-defined]
    start = 1
    try:
        for values in reader:
            yield start, values
            start = reader.line_num + 1
    except csv.Error as e:
        if "field limit" in str(e):
            raise CSVInputError(
                "a value is too long (over 64 KiB): often a quote that is never closed "
                "swallows the rest of the file",
                line=start,
            ) from None
        raise CSVInputError(
            f"the CSV structure is broken ({e}): an unclosed quote?", line=start
        ) from None


#: Bytes decoded at a time when a file is checked (no pass holds the whole text).
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


def _decode(raw: bytes, encoding: str) -> tuple[_Text, str]:
    """How ``raw`` decodes, and the start of its text; the whole file is checked, in
    chunks, without keeping its text (CSVInputError with the line where it is wrong)."""
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    if encoding == "auto":
        if bom:
            how = _Text(bom, "utf-8", "strict", "utf-8-sig")
            return how, _checked(raw, how, encoding="utf-8")
        try:
            how = _Text(0, "utf-8", "strict", "utf-8")
            return how, _scan(raw, how)
        except UnicodeDecodeError:
            how = _Text(0, "cp1252", "replace", "cp1252")
            return how, _checked(raw, how, encoding="cp1252")
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise CSVInputError(
            f"unsupported encoding {encoding!r}; use one of {', '.join(ENCODINGS)} or auto"
        )
    if enc in ("utf-8", "utf-8-sig"):
        return _Text(bom, "utf-8", "strict", enc), _checked(
            raw, _Text(bom, "utf-8", "strict", enc), encoding=encoding
        )
    how = _Text(0, enc, "strict", enc)
    return how, _checked(raw, how, encoding=encoding)


def _checked(raw: bytes, how: _Text, *, encoding: str) -> str:
    """:func:`_scan`, a text that does not decode refused with the line where it breaks."""
    try:
        return _scan(raw, how)
    except UnicodeDecodeError:
        # Where exactly: decode once more as a whole (only for a file that is refused).
        try:
            raw[how.start :].decode(how.codec, how.errors)
            line = 0
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", how.start, how.start + e.start) + 1
        raise CSVInputError(
            f"the file is not valid {encoding}; it is probably cp1252 "
            '(Excel\'s usual encoding): set encoding = "cp1252"',
            line=line,
        ) from None


def _scan(raw: bytes, how: _Text) -> str:
    """Decode the whole text in chunks (UnicodeDecodeError if it does not); return its start
    (at least :data:`HEAD_CHARS` characters, where the sample for the separator is taken).

    Refused (CSVInputError): a text with nothing but blanks; a text read with another
    encoding than UTF-8 that has pairs typical of UTF-8 read with the wrong encoding."""
    mojibake = how.name not in ("utf-8", "utf-8-sig")
    decoder = codecs.getincrementaldecoder(how.codec)(how.errors)
    head = ""
    blank = True
    newlines = 0  # before the current chunk
    tail = ""  # the previous chunk's last character (a pair may straddle two chunks)
    at = how.start
    while True:
        final = at >= len(raw)
        text = decoder.decode(raw[at : at + CHUNK_BYTES], final=final)
        at += CHUNK_BYTES
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
        if final:
            break
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

    The file is read once into memory as bytes; its text is checked here (encoding,
    mojibake, header) and decoded again, in chunks, by each pass over its rows."""
    size = path.stat().st_size
    if size > max_bytes:
        raise CSVInputError(
            f"the file is {size // (1024 * 1024)} MiB, over the limit of "
            f"{max_bytes // (1024 * 1024)} MiB (max_file_mb)"
        )
    raw = path.read_bytes()
    if raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")):
        raise CSVInputError(
            "this is not a CSV text but a binary file, most likely an Excel (.xlsx, .xls) or "
            "OpenDocument (.ods) spreadsheet: read it as a spreadsheet (csv_export does with "
            'format = "auto"), or save it from Excel as "CSV (separato da punto e virgola)"'
        )
    how, head = _decode(raw, encoding)
    delim = _sniff(head) if delimiter == "auto" else delimiter.replace("\\t", "\t")
    if delim not in SEPARATORS:
        raise CSVInputError(f"unsupported delimiter {delimiter!r}")
    f = CSVFile(how.name, delim, (), raw, how.start, how.codec, how.errors)
    old_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        first = next(_records(_reader(f.stream(), delim)), None)
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
        for _ in _records(_reader(csv_file.stream(), csv_file.delimiter)):
            pass
    except csv.Error as e:
        raise CSVInputError(f"a value is too long or malformed ({e})") from None
    finally:
        csv.field_size_limit(old_limit)


def iter_rows(csv_file: CSVFile) -> Iterator[CSVRow]:
    """Rows with a per-field size bound."""
    old_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        yield from csv_file.rows()
    except csv.Error as e:
        raise CSVInputError(f"a value is too long or malformed ({e})") from None
    finally:
        csv.field_size_limit(old_limit)
