"""Excel and OpenDocument exports through csv_export: the same mapping, the same registry as CSV.

The workbooks are built here from the CSV fixture (openpyxl for .xlsx, odfpy for .ods): dates
as real date cells in the .xlsx and as Italian date text in the .ods, numbers as numbers, a
title above the header and a second sheet, as offices really save them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.csv_export import CSVExportConfig, CSVExportConnector
from hub.inputs.spreadsheet import SpreadsheetInputError, open_spreadsheet, sniff_kind
from hub.registry import Registry
from hub.registry import tables as t
from tests.contract.suite import connector_contract_tests
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.postgres import PostgresServer
from tests.support.workspace import make_workspace, sync

openpyxl = pytest.importorskip("openpyxl")
odf_opendoc = pytest.importorskip("odf.opendocument")

RACCORDO = [sys.executable, "-m", "hub"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "csv"
CFS = {"BRTCLL41C45B019A", "QGLRNT79S23F952Z", "QGLRNT79S23F952A", "STP0102061234567"}
NAMES = {"Bertolotti", "Clelia", "Quaglino", "Renato", "Sconosciuto", "Ahmed"}
DATE_COLUMNS = {"DATA_PRESA_IN_CARICO", "DATA_CHIUSURA", "DATA_INIZIO", "DATA_FINE"}
DATE_COLUMNS |= {"DATA_VALUTAZIONE"}

CONFIG = """
[organisations.CISS]
name = "Consorzio"
[connectors.csv]
type = "csv_export"
org = "CISS"
mapping = "cartella-esempio.toml"
[connectors.csv.config]
path = "{path}"
{extra}
source_key = ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"]
personal_columns = ["COGNOME", "NOME", "NOTE"]
[connectors.csv.config.identifier_columns.CODICE_FISCALE]
type_column = "TIPO_DOCUMENTO"
[connectors.csv.config.identifier_columns.ID_NUCLEO]
type = "LOCAL"
optional = true
"""


def _csv_rows() -> tuple[list[str], list[list[str]]]:
    text = (FIXTURES / "cartella-esempio.csv").read_text(encoding="cp1252")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    return rows[0], rows[1:]


def _typed(column: str, value: str) -> Any:
    """The cell an office would have: dates as dates, amounts and years as numbers."""
    if not value:
        return None
    if column in DATE_COLUMNS:
        return dt.datetime.strptime(value, "%d/%m/%Y").date()
    if column == "IMPORTO":
        return float(value.replace(".", "").replace(",", "."))
    if column in ("ANNO_NASCITA", "ID_CARTELLA"):
        return int(value)
    return value  # codes such as 003024 stay text, as a careful export keeps them


def write_xlsx(path: Path, *, title_rows: int = 2) -> None:
    header, rows = _csv_rows()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Note"
    ws.append(["Estratto dalla cartella sociale"])
    data = wb.create_sheet("Interventi")
    data.append(["Estrazione del 01/07/2022"])
    for _ in range(title_rows - 1):
        data.append([])
    data.append(header)
    for r in rows:
        data.append([_typed(c, v) for c, v in zip(header, r, strict=True)])
    for row in data.iter_rows(min_row=title_rows + 2):
        for cell in row:
            if isinstance(cell.value, dt.date):
                cell.number_format = "DD/MM/YYYY"
    wb.save(path)


def write_ods(path: Path) -> None:
    """Dates as Italian date text, numbers as float cells; the data on the first sheet."""
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    header, rows = _csv_rows()
    doc = OpenDocumentSpreadsheet()
    table = Table(name="Interventi")
    for r in [header, *rows]:
        tr = TableRow()
        for c, v in zip(header, r, strict=True):
            typed = v if r is header or c in DATE_COLUMNS else _typed(c, v)
            if typed is None:
                tr.addElement(TableCell())
            elif isinstance(typed, (int, float)):
                cell = TableCell(valuetype="float", value=typed)
                cell.addElement(P(text=str(typed)))
                tr.addElement(cell)
            else:
                cell = TableCell(valuetype="string")
                for part in str(typed).split("\n"):  # a multi-line note: one <text:p> a line
                    cell.addElement(P(text=part))
                tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    doc.save(str(path))


def _workspace(
    tmp_path: Path, registry_url: str, path: str, extra: str = "", keys_from: Path | None = None
) -> Path:
    return make_workspace(
        tmp_path / "ws",
        CONFIG.format(path=path, extra=extra),
        registry_url=registry_url,
        keys_from=keys_from,
    )


def _contents(reg: Registry) -> dict[str, list[tuple[Any, ...]]]:
    """Every common-schema table, without surrogate ids, run ids and timestamps."""
    skip = {"id", "run_id", "created_at", "updated_at", "loaded_at", "source_record_id"}
    out: dict[str, list[tuple[Any, ...]]] = {}
    with reg.engine.connect() as conn:
        for kind, table in t.RECORD_TABLES.items():
            cols = [c for c in table.c if c.name not in skip]
            rows = conn.execute(sa.select(*cols)).all()
            out[kind] = sorted(
                (tuple(_norm(v) for v in row) for row in rows), key=lambda r: repr(r)
            )
    return out


def _norm(v: Any) -> Any:
    return v.normalize() if isinstance(v, Decimal) else v


def _csv_registry(
    tmp_path: Path, registry_url: str
) -> tuple[dict[str, list[tuple[Any, ...]]], Path]:
    """The registry the CSV gives, and its workspace (whose keys the others reuse)."""
    (tmp_path / "csv" / "in").mkdir(parents=True)
    shutil.copy(FIXTURES / "cartella-esempio.csv", tmp_path / "csv" / "in" / "export.csv")
    ws = _workspace(tmp_path / "csv", registry_url, "../in/export.csv", 'encoding = "cp1252"')
    (run,), reg = sync(ws, "csv")
    assert (run.read, run.loaded, run.quarantined) == (5, 3, 2)
    contents = _contents(reg)
    reg.close()
    return contents, ws


def test_xlsx_gives_the_same_registry_as_the_csv(tmp_path: Path) -> None:
    expected, csv_ws = _csv_registry(tmp_path, f"sqlite:///{tmp_path}/csv.sqlite")
    (tmp_path / "x" / "in").mkdir(parents=True)
    write_xlsx(tmp_path / "x" / "in" / "export.xlsx")
    ws = _workspace(
        tmp_path / "x",
        f"sqlite:///{tmp_path}/x.sqlite",
        "../in/*.xlsx",
        'sheet = "Interventi"\nheader_row = 3',
        keys_from=csv_ws,
    )
    (run,), reg = sync(ws, "csv")
    assert (run.read, run.loaded, run.quarantined) == (5, 3, 2)
    assert run.unmapped_codes == {"service": {"BONUS-X": 1}}
    by_rule = {q["rule"]: q for q in reg.quarantine_entries(limit=10)}
    # The sheet's own row numbers: title on 1, blank 2, header 3, data from 4 (the note
    # that spans two lines in the CSV is one cell here).
    assert by_rule["cf_check_char"]["location"] == "export.xlsx row 7"
    assert by_rule["unmapped_code"]["location"] == "export.xlsx row 8"
    assert _contents(reg) == expected
    again, reg = sync(ws, "csv")
    assert again[0].read == 0
    leaks = scan_paths([ws], names=NAMES | {"lunedì"}, values=CFS)
    leaks += scan_database(
        reg.engine.url.render_as_string(hide_password=False), names=NAMES, values=CFS
    )
    assert_no_leaks(leaks)
    reg.close()


@pytest.mark.postgres
def test_ods_gives_the_same_registry_as_the_csv_on_postgres(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    expected, csv_ws = _csv_registry(
        tmp_path, postgres_server.url(postgres_server.create_database())
    )
    (tmp_path / "o" / "in").mkdir(parents=True)
    write_ods(tmp_path / "o" / "in" / "export.ods")
    url = postgres_server.url(postgres_server.create_database())
    ws = _workspace(tmp_path / "o", url, "../in/export.ods", keys_from=csv_ws)
    (run,), reg = sync(ws, "csv")
    assert (run.read, run.loaded, run.quarantined) == (5, 3, 2)
    by_rule = {q["rule"]: q for q in reg.quarantine_entries(limit=10)}
    assert by_rule["cf_check_char"]["location"] == "export.ods row 5"
    assert _contents(reg) == expected
    reg.close()


def test_ods_gives_the_same_registry_as_the_csv(tmp_path: Path) -> None:
    expected, csv_ws = _csv_registry(tmp_path, f"sqlite:///{tmp_path}/csv.sqlite")
    (tmp_path / "o" / "in").mkdir(parents=True)
    write_ods(tmp_path / "o" / "in" / "export.ods")
    ws = _workspace(
        tmp_path / "o", f"sqlite:///{tmp_path}/o.sqlite", "../in/export.ods", keys_from=csv_ws
    )
    (run,), reg = sync(ws, "csv")
    assert (run.read, run.loaded, run.quarantined) == (5, 3, 2)
    assert _contents(reg) == expected
    reg.close()


def _cli(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RACCORDO, *args, "--config", str(ws / "raccordo.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_spreadsheet_configured_as_csv_is_explained(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_xlsx(tmp_path / "in" / "export.csv")  # an .xlsx saved under a .csv name
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/*.csv", 'format = "csv"')
    (run,), reg = sync(ws, "csv")
    assert (run.loaded, run.source_errors) == (0, 1)
    (entry,) = reg.quarantine_entries(limit=10)
    assert "Excel workbook (.xlsx)" in entry["reason"]
    assert 'set format = "auto"' in entry["reason"]
    assert "encoding" not in entry["reason"]  # no contradictory encoding hints
    reg.close()
    res = _cli(ws, "connectors", "check", "csv")
    assert "Excel workbook" in res.stdout + res.stderr


def test_a_csv_configured_as_spreadsheet_is_explained(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / "cartella-esempio.csv", tmp_path / "in" / "export.csv")
    ws = _workspace(
        tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/*.csv", 'format = "spreadsheet"'
    )
    (run,), reg = sync(ws, "csv")
    assert (run.loaded, run.source_errors) == (0, 1)
    (entry,) = reg.quarantine_entries(limit=10)
    assert "text file" in entry["reason"] and 'set format = "auto" (or "csv")' in entry["reason"]
    reg.close()


def test_auto_reads_a_workbook_whatever_its_name_and_check_says_what_it_is(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    write_xlsx(tmp_path / "in" / "export.csv", title_rows=1)
    conn = CSVExportConnector(
        CSVExportConfig.model_validate(
            {
                "path": str(tmp_path / "in" / "export.csv"),
                "encoding": "cp1252",
                "sheet": 2,
                "header_row": 2,
                "source_key": ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"],
            }
        )
    )
    res = conn.check()
    assert res.ok, res.message
    assert "Excel workbook (.xlsx), sheet 'Interventi', header on row 2" in res.message
    assert "encoding" in res.message and "CSV files only" in res.message


def test_sheet_and_header_row_mistakes_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    write_xlsx(path)
    assert sniff_kind(path) == "xlsx"
    with pytest.raises(SpreadsheetInputError, match="'Note', 'Interventi'"):
        open_spreadsheet(path, sheet="Foglio1")
    with pytest.raises(SpreadsheetInputError, match="has 2 sheet"):
        open_spreadsheet(path, sheet=3)
    with pytest.raises(SpreadsheetInputError, match="is header_row right"):
        open_spreadsheet(path, sheet="Interventi", header_row=1)
    with pytest.raises(SpreadsheetInputError, match="header_row = 99"):
        open_spreadsheet(path, sheet="Interventi", header_row=99)


def test_cells_become_the_text_an_italian_csv_export_has(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["A", "DATA", "SERIALE", "IMPORTO", "TESTO_DATA", "FLAG"])
    ws.append(["x", dt.date(2022, 2, 5), 44561, 12.5, "05/02/2022", True])
    ws.append([])
    ws.append(["y", dt.datetime(2021, 12, 31, 0, 0), 1941, 1234.56, "31/12/2021", False])
    ws["B2"].number_format = "DD/MM/YYYY"
    ws["B4"].number_format = "DD/MM/YYYY"
    path = tmp_path / "cells.xlsx"
    wb.save(path)
    sheet = open_spreadsheet(path)
    rows = list(sheet.rows())
    assert [r.line for r in rows] == [2, 4]  # the blank row 3 is skipped, numbering kept
    assert rows[0].values == {
        "A": "x",
        "DATA": "05/02/2022",
        "SERIALE": "44561",  # a serial in a number cell: the mapping's excel_serial reads it
        "IMPORTO": "12,5",
        "TESTO_DATA": "05/02/2022",
        "FLAG": "TRUE",
    }
    assert rows[1].values is not None
    assert rows[1].values["DATA"] == "31/12/2021" and rows[1].values["IMPORTO"] == "1234,56"
    assert open_spreadsheet(
        path, decimal_comma=False, date_format="%Y-%m-%d"
    ).rows().__next__().values == {**rows[0].values, "DATA": "2022-02-05", "IMPORTO": "12.5"}


def test_a_value_right_of_the_header_is_a_row_problem(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["A", "B"])
    ws.append(["1", "2", "stray"])
    ws.append(["3", "4"])
    path = tmp_path / "stray.xlsx"
    wb.save(path)
    rows = list(open_spreadsheet(path).rows())
    assert rows[0].values is None and rows[0].line == 2 and "right of" in (rows[0].problem or "")
    assert rows[1].values == {"A": "3", "B": "4"}


_CONTRACT_BOOK: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _contract_workbook(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("contract") / "export.xlsx"
    write_xlsx(path)
    _CONTRACT_BOOK[:] = [path]


TestSpreadsheetContract = connector_contract_tests(
    lambda: CSVExportConnector(
        CSVExportConfig.model_validate(
            {
                "path": str(_CONTRACT_BOOK[0]),
                "source_key": ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"],
                "sheet": "Interventi",
                "header_row": 3,
                "personal_columns": ["COGNOME", "NOME", "NOTE"],
                "identifier_columns": {"CODICE_FISCALE": {"type_column": "TIPO_DOCUMENTO"}},
            }
        )
    )
)
