"""The one hardened spreadsheet reader: ``.xlsx``, ``.xlsm``, ``.xls`` and ``.ods``.

Most offices hold their exports as Excel workbooks. This reader turns one sheet
of a workbook into the same rows the CSV reader gives (:class:`CSVRow`: text
values keyed by the header, the physical row number of the sheet), so the same
connector and the same mapping files read both. It reads through
`python-calamine` (the Rust ``calamine`` reader: no macros, no formulas
evaluated, no external links followed).

Cells become the text an Italian Excel would write in a CSV export:

* dates (cells formatted as dates) as ``dd/mm/yyyy`` (``date_format``);
  a date typed as text ("05/02/2022") stays text; a serial day number in a
  cell formatted as a number ("44561") stays a number, which a mapping's
  ``date`` transform reads with ``excel_serial = true``;
* whole numbers without decimals ("1941", not "1941.0"); other numbers with a
  decimal comma ("12,5"), or a point with ``decimal_comma = False``;
* booleans as ``TRUE`` / ``FALSE``; empty cells as "".

Row numbers are the sheet's own (row 1 is the first row of the sheet whatever
is empty above the data), so every message points at the row a person sees.
Messages never quote cell values (they may be codici fiscali).
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.inputs import InputError
from hub.inputs.csv import MAX_COLUMNS, MAX_FIELD_CHARS, CSVRow

MAX_FILE_BYTES = 512 * 1024 * 1024
#: Suffixes read as spreadsheets by ``format = "auto"``.
SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 (.xls) compound file
_ZIP = b"PK\x03\x04"


class SpreadsheetInputError(InputError):
    """A workbook (or a sheet of it) that cannot be read as a whole."""


def sniff_kind(path: Path) -> str | None:
    """What the file's *content* is: ``"xlsx"``, ``"xls"``, ``"ods"``, or ``None``
    for anything else (text such as a CSV). The name's suffix is not trusted."""
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(_OLE):
        return "xls"
    if not head.startswith(_ZIP):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
                return "xlsx"
            if "mimetype" in names and b"opendocument.spreadsheet" in z.read("mimetype")[:100]:
                return "ods"
    except (zipfile.BadZipFile, OSError):
        return None
    return None


#: How each kind is named for people.
KIND_NAMES = {
    "xlsx": "an Excel workbook (.xlsx)",
    "xls": "an Excel 97-2003 workbook (.xls)",
    "ods": "an OpenDocument spreadsheet (.ods, LibreOffice Calc)",
}


def _text(value: Any, *, date_format: str, decimal_comma: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0):
            return value.strftime(date_format)
        return value.strftime(f"{date_format} %H:%M:%S")
    if isinstance(value, dt.date):
        return value.strftime(date_format)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        text = repr(value)
        return text.replace(".", ",") if decimal_comma else text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, dt.timedelta):
        return str(value)
    return str(value)


@dataclass(frozen=True)
class SheetFile:
    """One sheet of a workbook, checked; rows are produced lazily by :meth:`rows`."""

    kind: str
    sheet: str
    sheets: tuple[str, ...]
    header_row: int
    header: tuple[str, ...]
    path: Path
    date_format: str
    decimal_comma: bool

    @property
    def description(self) -> str:
        return f"{KIND_NAMES[self.kind]}, sheet {self.sheet!r}, header on row {self.header_row}"

    def rows(self) -> Iterator[CSVRow]:
        """The data rows below the header, converted one at a time (the workbook is
        opened again for each pass, so no Python copy of the whole sheet is kept)."""
        width = len(self.header)
        for index, raw in _iter_sheet(self.path, self.sheet):
            if index < self.header_row:
                continue
            line = index + 1
            cells = [
                _text(v, date_format=self.date_format, decimal_comma=self.decimal_comma)
                for v in raw
            ]
            if not any(c.strip() for c in cells):
                continue  # blank row
            extra = [c for c in cells[width:] if c.strip()]
            if extra:
                yield CSVRow(
                    line,
                    None,
                    f"{width + len(extra)} filled cells but the header names {width} columns: "
                    "a value to the right of the last named column?",
                )
                continue
            if any(len(c) > MAX_FIELD_CHARS for c in cells):
                yield CSVRow(line, None, "a cell holds more than 64 KiB of text")
                continue
            cells = (cells + [""] * width)[:width]
            yield CSVRow(line, dict(zip(self.header, cells, strict=True)))


def open_spreadsheet(
    path: Path,
    *,
    sheet: str | int | None = None,
    header_row: int = 1,
    date_format: str = "%d/%m/%Y",
    decimal_comma: bool = True,
    max_bytes: int = MAX_FILE_BYTES,
) -> SheetFile:
    """Open one sheet (a name, a 1-based position, or the first) and check its header.

    ``header_row`` is the 1-based row holding the column names (exports often
    have a title or notes above them); data rows are the ones below it.
    """
    from python_calamine import CalamineError, CalamineWorkbook

    size = path.stat().st_size
    if size > max_bytes:
        raise SpreadsheetInputError(
            f"the file is {size // (1024 * 1024)} MiB, over the limit of "
            f"{max_bytes // (1024 * 1024)} MiB (max_file_mb)"
        )
    kind = sniff_kind(path)
    if kind is None:
        raise SpreadsheetInputError(
            "the file is not an Excel or OpenDocument spreadsheet (it looks like text: a CSV?)"
        )
    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except (CalamineError, ValueError, OSError) as e:
        raise SpreadsheetInputError(
            f"cannot open {KIND_NAMES[kind]}: {type(e).__name__} (damaged, password-protected, "
            "or saved by a program that writes an unusual format?); open it and save it again"
        ) from None
    try:
        names = tuple(str(n) for n in workbook.sheet_names)
        if not names:
            raise SpreadsheetInputError("the workbook has no sheet")
        if sheet is None:
            chosen = names[0]
        elif isinstance(sheet, int):
            if not 1 <= sheet <= len(names):
                raise SpreadsheetInputError(
                    f"sheet = {sheet} but the workbook has {len(names)} sheet(s): {_listing(names)}"
                )
            chosen = names[sheet - 1]
        elif sheet in names:
            chosen = sheet
        else:
            raise SpreadsheetInputError(
                f"there is no sheet named {sheet!r}; the workbook has {_listing(names)}: "
                "set sheet to one of these names (or to its position, 1 for the first)"
            )
    finally:
        workbook.close()
    header_raw: list[Any] | None = None
    count = 0
    for index, raw in _iter_sheet(path, chosen):
        count = index + 1
        if index == header_row - 1:
            header_raw = raw
            break
    if header_raw is None:
        raise SpreadsheetInputError(
            f"header_row = {header_row} but sheet {chosen!r} has "
            f"{count} row(s){'' if count else ' (it is empty)'}",
            line=header_row if count else 0,
        )
    header_cells = [
        _text(v, date_format=date_format, decimal_comma=decimal_comma).strip() for v in header_raw
    ]
    while header_cells and not header_cells[-1]:
        header_cells.pop()
    header = tuple(header_cells)
    where = f"sheet {chosen!r} row {header_row}"
    if len(header) < 2:
        raise SpreadsheetInputError(
            f"{where} has fewer than two column names: is header_row right "
            "(the row holding the column names, 1 for the first row of the sheet)?",
            line=header_row,
        )
    if len(header) > MAX_COLUMNS:
        raise SpreadsheetInputError(
            f"{where}: {len(header)} columns, more than {MAX_COLUMNS}", line=header_row
        )
    for i, h in enumerate(header, start=1):
        if not h:
            raise SpreadsheetInputError(
                f"{where}: column {i} of the header has no name", line=header_row
            )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise SpreadsheetInputError(
            f"{where}: duplicate column names in the header: {', '.join(dup)}", line=header_row
        )
    return SheetFile(kind, chosen, names, header_row, header, path, date_format, decimal_comma)


def _iter_sheet(path: Path, sheet: str) -> Iterator[tuple[int, list[Any]]]:
    """(0-based row index, cells) of every row of ``sheet``, from the sheet's first row."""
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except (CalamineError, ValueError, OSError) as e:
        raise SpreadsheetInputError(
            f"cannot open the workbook again: {type(e).__name__} (was it changed or removed "
            "while being read?)"
        ) from None
    try:
        try:
            rows = workbook.get_sheet_by_name(sheet).iter_rows()
        except (CalamineError, ValueError) as e:
            raise SpreadsheetInputError(
                f"cannot read sheet {sheet!r}: {type(e).__name__}; open the file and save it again"
            ) from None
        yield from enumerate(rows)
    finally:
        workbook.close()


def _listing(names: tuple[str, ...]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")
