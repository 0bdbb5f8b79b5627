"""``csv_export``: any CSV or spreadsheet export, driven by its configuration and a mapping file.

Reads the files matching ``path`` in name order through the hardened entry
points: CSV text through :mod:`hub.inputs.csv`, Excel (``.xlsx``, ``.xls``) and
OpenDocument (``.ods``) workbooks through :mod:`hub.inputs.spreadsheet` — the
same rows, the same mapping. Each file is a unit: an unchanged file (same
SHA-256) is not read again; a changed file is read again and replaces what its
earlier version produced.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from hub import hookimpl
from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    JSONState,
    RawRecord,
    ReadItem,
    RecordPart,
    SourceError,
    Stream,
    UnitComplete,
    WorkspaceGlob,
)
from hub.inputs import InputChanged, InputError
from hub.inputs.csv import (
    CSVFile,
    CSVInputError,
    check_rows,
    iter_value_rows,
    open_csv,
    width_problem,
)
from hub.inputs.parts import in_parts
from hub.inputs.spreadsheet import KIND_NAMES, SheetFile, open_spreadsheet, sniff_kind
from hub.sdk.columns import IdentifierColumn, column_fields
from hub.sdk.inbox import FileInbox

RACCORDO_HOOK_API = 1


class CSVExportConfig(ConnectorConfig):
    #: A file or a glob pattern; relative to raccordo.toml.
    path: WorkspaceGlob
    encoding: str = "auto"
    delimiter: str = "auto"
    stream: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")] = "rows"
    #: Columns whose values identify a row in the source (stored only keyed-hashed).
    source_key: Annotated[list[str], Field(min_length=1)]
    identifier_columns: dict[str, IdentifierColumn] = Field(default_factory=dict)
    #: Directly identifying columns that are not keys (names, notes, addresses): dropped.
    personal_columns: list[str] = Field(default_factory=list)
    max_file_mb: Annotated[int, Field(ge=1, le=4096)] = 512
    #: "auto": each file is read as what its content is (a CSV text or a workbook);
    #: "csv" or "spreadsheet" insist, and a file of the other kind is refused with
    #: a message saying what to change.
    format: Literal["auto", "csv", "spreadsheet"] = "auto"
    #: Spreadsheets: the sheet to read, by name or 1-based position (default: the first).
    sheet: str | Annotated[int, Field(ge=1)] | None = None
    #: Spreadsheets: the 1-based row holding the column names (data are the rows below).
    header_row: Annotated[int, Field(ge=1, le=1000)] = 1
    #: Spreadsheets: how date cells become text for the mapping (as an Italian Excel
    #: writes them in a CSV export, so one mapping reads both).
    date_format: str = "%d/%m/%Y"
    #: Spreadsheets: numbers with decimals become "12,5" (True) or "12.5" (False).
    decimal_comma: bool = True


class CSVExportConnector(Connector):
    name = "csv_export"
    summary = (
        "CSV exports (Excel-style ';', cp1252, BOM, dd/mm/yyyy, decimal commas) "
        "and spreadsheets (.xlsx, .xls, .ods) + mapping"
    )
    config_class = CSVExportConfig
    config: CSVExportConfig
    #: The header of the first readable file, for (path, size, mtime) of that file.
    _seen_header: tuple[tuple[str, int, int], tuple[str, ...]] | None = None

    def _files(self) -> list[Path]:
        return FileInbox(self.config.path).files()

    def _open(self, path: Path) -> CSVFile | SheetFile:
        """The file as CSV text or as a sheet, after checking it is what the
        configuration says (InputError otherwise, saying what to change)."""
        c = self.config
        kind = sniff_kind(path)
        if kind is not None:
            if c.format == "csv":
                raise CSVInputError(
                    f"this is {KIND_NAMES[kind]}, not a CSV file, but the connector has "
                    'format = "csv": set format = "auto" (or "spreadsheet"), and sheet / '
                    "header_row if the data are not on the first sheet's first row"
                )
            return open_spreadsheet(
                path,
                sheet=c.sheet,
                header_row=c.header_row,
                date_format=c.date_format,
                decimal_comma=c.decimal_comma,
                max_bytes=c.max_file_mb * 1024 * 1024,
            )
        if c.format == "spreadsheet":
            raise CSVInputError(
                "this is not an Excel or OpenDocument spreadsheet but a text file (a CSV?), "
                'while the connector has format = "spreadsheet": set format = "auto" (or "csv")'
            )
        return open_csv(
            path,
            encoding=c.encoding,
            delimiter=c.delimiter,
            max_bytes=c.max_file_mb * 1024 * 1024,
        )

    def check(self) -> CheckResult:
        files = self._files()
        if not files:
            return CheckResult(False, f"no file matches {self.config.path}")
        try:
            f = self._open(files[0])
        except (InputError, OSError) as e:
            return CheckResult(False, f"{files[0].name}: {e}")
        if isinstance(f, SheetFile):
            ignored = [k for k in ("encoding", "delimiter") if getattr(self.config, k) != "auto"]
            note = f" ({' and '.join(ignored)} apply to CSV files only)" if ignored else ""
            return CheckResult(
                True,
                f"{len(files)} file(s); {files[0].name}: {f.description}, "
                f"{len(f.header)} columns{note}",
            )
        return CheckResult(
            True,
            f"{len(files)} file(s); {files[0].name}: encoding "
            f"{f.encoding}, separator {f.delimiter!r}, "
            f"{len(f.header)} columns",
        )

    def _header(self) -> tuple[str, ...]:
        for path in self._files():
            try:
                stat = path.stat()
                seen = (str(path), stat.st_size, stat.st_mtime_ns)
                if self._seen_header is None or self._seen_header[0] != seen:
                    # streams() is asked more than once per sync: open (a whole-file
                    # check) each version of the file once.
                    self._seen_header = (seen, self._open(path).header)
                return self._seen_header[1]
            except (InputError, OSError):
                continue
        return ()

    def streams(self) -> tuple[Stream, ...]:
        c = self.config
        declared = [*c.identifier_columns, *c.personal_columns, *c.source_key]
        header = self._header()
        columns = list(dict.fromkeys([*declared, *header]))
        fields = column_fields(columns, c.identifier_columns, c.personal_columns)
        return (
            Stream(
                c.stream,
                fields,
                source_key=tuple(c.source_key),
                description=f"rows of {c.path}",
                # Without a readable file the columns are not known yet.
                fields_complete=bool(header),
            ),
        )

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        yield from FileInbox(self.config.path).read(state, lambda p: self._read_file(p, stream))

    def _read_file(self, path: Path, stream: str) -> Iterator[ReadItem]:
        name = path.name
        try:
            f = self._open(path)
            missing = [c for c in self.config.source_key if c not in f.header]
            if missing:
                raise CSVInputError(
                    f"the key column(s) {', '.join(missing)} are not in the header",
                    line=f.header_row if isinstance(f, SheetFile) else 1,
                )
            # First pass: the whole file is checked before anything is yielded, without
            # keeping (or building) its rows.
            if isinstance(f, SheetFile):
                for _ in f.rows():
                    pass
            else:
                check_rows(f)
        except InputError as e:
            where = f"{name} {_unit_word(path)} {e.line}" if e.line else name
            yield SourceError(
                f"file refused, nothing loaded from it: {e.reason}", where, rule="csv"
            )
            return
        except OSError as e:
            yield SourceError(f"cannot read the file: {e.strerror}", name)
            return
        word = "row" if isinstance(f, SheetFile) else "line"
        # The record's source key as the pipeline would join it (values are all text),
        # given here so that it is not built again from the row for every record.
        key_of: Callable[[dict[str, str]], str]
        if len(self.config.source_key) == 1:
            key_of = operator.itemgetter(self.config.source_key[0])
        else:
            key_of = _joined(operator.itemgetter(*self.config.source_key))
        # The last line (row) read, for a file rewritten while it is read.
        at = [0]
        try:
            if isinstance(f, SheetFile):
                for row in f.rows():
                    at[0] = row.line
                    yield self._item(stream, name, word, row.line, row.values, row.problem, key_of)
            else:
                yield from self._parts(f, stream, name, key_of, at)
        except InputChanged as e:
            # Rewritten since the first pass checked it: the rows read so far are of the
            # checked version; the unit is not complete (nothing of it is removed), and
            # its new content differs from the digest kept, so the next sync reads it again.
            where = f"{name} after {word} {at[0]}" if at[0] else name
            yield SourceError(f"file read in part: {e.reason}", where, rule="csv")
            return
        yield UnitComplete(name)

    def _parts(
        self,
        f: CSVFile,
        stream: str,
        name: str,
        key_of: Callable[[dict[str, str]], str],
        at: list[int],
    ) -> Iterator[RecordPart]:
        """A CSV text's rows as parts (:func:`hub.inputs.parts.in_parts`): a changed file is
        re-read at the cost of the parts that changed. A part's digest covers its rows'
        values, the header and the connector's settings; not the line numbers, which only
        locate a record (a part is skipped only if all its records loaded last time)."""
        header = f.header
        width = len(header)
        seed = "\x1e".join([self.config.model_dump_json(), stream, *header]).encode()

        def records(rows: Sequence[tuple[int, list[str]]]) -> Iterator[RawRecord | SourceError]:
            for line, values in rows:
                if len(values) != width:
                    yield self._item(
                        stream, name, "line", line, None, width_problem(len(values), width), key_of
                    )
                    continue
                data = dict(zip(header, values, strict=False))
                yield RawRecord(
                    stream, data, location=f"{name} line {line}", key=key_of(data), unit=name
                )

        def content(row: tuple[int, list[str]]) -> bytes:
            # What stands for a row in its part's digest: its values, not its line number.
            at[0] = row[0]
            return "\x1f".join(row[1]).encode("utf-8", "surrogatepass")

        rows = iter_value_rows(f)
        yield from in_parts(rows, unit=name, seed=seed, content=content, build=records)

    @staticmethod
    def _item(
        stream: str,
        name: str,
        word: str,
        line: int,
        values: dict[str, str] | None,
        problem: str | None,
        key_of: Callable[[dict[str, str]], str],
    ) -> RawRecord | SourceError:
        if values is None:
            return SourceError(
                f"row skipped: {problem}",
                f"{name} {word} {line}",
                rule="csv_row",
                scope="record",
            )
        return RawRecord(
            stream, values, location=f"{name} {word} {line}", key=key_of(values), unit=name
        )


def _joined(get: Callable[[dict[str, str]], tuple[str, ...]]) -> Callable[[dict[str, str]], str]:
    return lambda values: "|".join(get(values))


def _unit_word(path: Path) -> str:
    """Spreadsheets have rows, text files lines (what the office software shows)."""
    try:
        return "row" if sniff_kind(path) else "line"
    except OSError:
        return "line"


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(CSVExportConnector)
