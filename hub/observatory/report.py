"""*Restituzione* reports for a comune or an organisation, in HTML and PDF.

The tables are the observatory's own (:func:`hub.observatory.indicators.release_tables`):
for an organisation, its tables; for a comune, the district tables sliced to that
comune (same keys, so disclosure control sees they are the district's cells).
Everything goes through :func:`hub.observatory.disclosure.protect_release` with
the ledger of earlier releases, exactly like the open-data export; the report
is recorded in the ledger. Charts are SVG; the PDF is printed by headless
Chromium (Debian's package, the one the browser tests use) when it is installed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, select_autoescape

from hub.observatory.charts import svg_bars
from hub.observatory.comuni import Comune
from hub.observatory.disclosure import (
    SUPPRESSED,
    Ledger,
    ProtectedTable,
    Value,
    protect_release,
)
from hub.observatory.geo import rates_per_1000, shapes, svg_map
from hub.observatory.indicators import AREA_HEADINGS, release_tables
from hub.observatory.table import Period, Table, column_of, row_of
from hub.schema.siuss import prestazione_label

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True)
class ReportResult:
    html: Path
    pdf: Path | None
    tables: int
    suppressed: int
    pdf_problem: str = ""
    #: The same protected tables as JSON (the open-data format), with an ``indice.json``.
    data: Path | None = None


def with_comune_names(tb: Table, comuni: dict[str, Comune]) -> Table:
    """Show comuni by name (keys keep the ISTAT codes, so disclosure control is unchanged)."""
    from dataclasses import replace

    def names(codes: tuple[str, ...], headings: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            comuni[c].name if c in comuni else h for c, h in zip(codes, headings, strict=True)
        )

    if tb.row_dim == "comune":
        tb = replace(tb, row_headings=names(tb.rows, tb.row_headings))
    if tb.col_dim == "comune":
        tb = replace(tb, col_headings=names(tb.cols, tb.col_headings))
    return tb


def with_service_names(tb: Table) -> Table:
    """Show SIUSS prestazioni as ``"A1.09 · Telesoccorso e teleassistenza (Anziani)"``:
    code first, then its name from the catalogue (:mod:`hub.schema.siuss`), the area of
    utenza last. Keys keep ``AREA/CODE``, so disclosure control is unchanged."""
    from dataclasses import replace

    if tb.row_dim != "area_code":
        return tb
    headings = []
    for key in tb.rows:
        area, _, code = key.partition("/")
        if not code:  # a total row or a row that is not an area/code pair
            headings.append(AREA_HEADINGS.get(key, key))
            continue
        headings.append(f"{prestazione_label(code)} ({AREA_HEADINGS.get(area, area)})")
    return replace(tb, row_headings=tuple(headings), row_label="Prestazione SIUSS (area di utenza)")


def comune_tables(district: list[Table], comune: str) -> list[Table]:
    """The district tables that have the comune as a row or a column, sliced to it."""
    out: list[Table] = []
    for tb in district:
        if tb.row_dim == "comune" and comune in tb.rows:
            out.append(row_of(tb, comune))
        elif tb.col_dim == "comune" and comune in tb.cols:
            out.append(column_of(tb, comune))
    return out


def _bars(pt: ProtectedTable) -> str:
    """Bar chart of the shown row totals (suppressed ones are left out, and said so)."""
    labels = list(pt.spec.row_headings)
    values: list[int | None] = [v if isinstance(v, int) else None for v in pt.row_totals]
    return svg_bars(labels, values, title=pt.spec.title)


#: The indicators' notes (English, for the open-data metadata) as the Italian report says them.
NOTES_IT = {
    "Whole amount of each intervention in the period, rounded to the euro per cell.": (
        "Importo intero di ogni intervento del periodo, arrotondato all'euro in ogni cella."
    ),
    "A contact citing several codes counts under each; totals count contacts with at least "
    "one code.": (
        "Un contatto che cita più codici è contato sotto ciascuno; i totali contano i contatti "
        "con almeno un codice."
    ),
    "Organisations, not people: not subject to disclosure control.": (
        "Organizzazioni, non persone: non soggette al controllo della riservatezza."
    ),
    "Row totals are utenti (a person changing group counts in each group, once in the total); "
    "column and grand totals are the district's distinct people.": (
        "I totali di riga contano gli utenti (una persona che cambia gruppo è contata in ogni "
        "gruppo, una volta sola nel totale); i totali di colonna e il totale generale contano "
        "le persone distinte del distretto."
    ),
}


def italian_note(note: str) -> str:
    """The Italian note of a table; an untranslated note is left out rather than shown in
    English (tests/unit check that every note the indicators use is here)."""
    return NOTES_IT.get(note, "")


def is_empty(tb: Table | ProtectedTable) -> bool:
    spec = tb.spec if isinstance(tb, ProtectedTable) else tb
    return not any(v for row in spec.cells for v in row) and not spec.total


def latest_years_with_data(
    engine: sa.Engine, ids: set[str], year: int, *, org: str | None, back: int = 6
) -> dict[str, int]:
    """For each table id, the latest year before ``year`` in which it has data."""
    found: dict[str, int] = {}
    for y in range(year - 1, year - 1 - back, -1):
        if ids <= set(found):
            break
        for tb in release_tables(engine, Period.year(y), org=org):
            if tb.id in ids and tb.id not in found and not is_empty(tb):
                found[tb.id] = y
    return found


def empty_notes(
    engine: sa.Engine, tables: list[ProtectedTable], year: int, *, org: str | None
) -> dict[str, str]:
    """Why a table is empty, in words, and where to look instead."""
    empty = {pt.spec.id for pt in tables if is_empty(pt)}
    if not empty:
        return {}
    latest = latest_years_with_data(engine, empty, year, org=org)
    out: dict[str, str] = {}
    for tid in empty:
        text = (
            f"Nessun dato per il {year} in questa tabella: "
            "l'ente non ha ancora trasmesso dati per l'anno"
        )
        if tid in latest:
            text += f"; l'ultimo anno con dati è il {latest[tid]}."
        else:
            text += " né per i cinque anni precedenti."
        out[tid] = text
    return out


def cell(v: Value, k: int) -> str:
    if v is SUPPRESSED:
        return f"<{k}"
    if v is None:
        return "—"
    return f"{v:,}".replace(",", ".")


def build_report(
    engine: sa.Engine,
    out_dir: Path,
    *,
    year: int,
    comuni: dict[str, Comune],
    k: int,
    ledger: Ledger,
    district_name: str,
    org: str | None = None,
    comune: str | None = None,
    org_name: str | None = None,
) -> ReportResult:
    if (org is None) == (comune is None):
        raise ValueError("a report is for one comune or one organisation")
    period = Period.year(year)
    if org is not None:
        tables = [tb for tb in release_tables(engine, period, org=org) if tb.sensitive]
        subject = org_name or org
        slug = f"org-{org}"
    else:
        assert comune is not None
        district = [tb for tb in release_tables(engine, period) if tb.sensitive]
        tables = comune_tables(district, comune)
        subject = comuni[comune].name if comune in comuni else comune
        slug = f"comune-{comune}"
    tables = [with_service_names(with_comune_names(tb, comuni)) for tb in tables]
    release = protect_release(tables, k, ledger)
    map_svg = ""
    if comune is not None and release.tables:
        # The comune's contacts per 1,000 residents beside the other comuni, from the same
        # protected district table (suppressed comuni are hatched, not coloured).
        contacts = next(
            (tb for tb in release_tables(engine, period) if tb.id == "ets_contatti_comune_mese"),
            None,
        )
        if contacts is not None:
            protected = protect_release([contacts], k, ledger).tables[0]
            counts = {
                r: (v if isinstance(v, int) else None)
                for r, v in zip(contacts.rows, protected.row_totals, strict=True)
            }
            map_svg = svg_map(
                shapes(comuni),
                rates_per_1000(counts, {c: v.population for c, v in comuni.items()}),
                {c: v.name for c, v in comuni.items()},
                title=f"Contatti del Terzo Settore ogni 1.000 residenti, {year}",
                unit="ogni 1.000 residenti",
                missing_label=f"nessun dato o meno di {k}",
                highlight=comune,
            )
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape())
    env.globals["cell"] = cell
    env.globals["note"] = italian_note
    html = env.get_template("report.html").render(
        subject=subject,
        kind="org" if org else "comune",
        year=year,
        district_name=district_name,
        tables=release.tables,
        charts={pt.spec.id: _bars(pt) for pt in release.tables},
        map_svg=map_svg,
        empty=empty_notes(engine, release.tables, year, org=org),
        k=k,
        created=dt.date.today().strftime("%d/%m/%Y"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"restituzione-{slug}-{year}.html"
    html_path.write_text(html, encoding="utf-8")
    data_dir = out_dir / f"restituzione-{slug}-{year}"
    _write_data(data_dir, release.tables, k=k, year=year, org=org, comune=comune)
    ledger.record(release, f"report {slug} {year}")
    pdf_path, problem = print_pdf(html_path)
    return ReportResult(
        html_path,
        pdf_path,
        len(release.tables),
        sum(len(p.suppressed) for p in release.tables),
        problem,
        data_dir,
    )


def _write_data(
    folder: Path,
    tables: list[ProtectedTable],
    *,
    k: int,
    year: int,
    org: str | None,
    comune: str | None,
) -> None:
    """The report's tables in the open-data JSON format, for re-use and for auditors."""
    import json

    from hub.observatory.opendata import MARKER, _write_json

    folder.mkdir(parents=True, exist_ok=True)
    for pt in tables:
        _write_json(folder / f"{pt.spec.id}.json", pt)
    index = {
        "district": tables[0].spec.scope.split("|")[0] if tables else "",
        "period": {"start": f"{year}-01-01", "end": f"{year}-12-31"},
        "org": org,
        "comune": comune,
        "k": k,
        "suppressed_marker": MARKER,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tables": [{"id": pt.spec.id, "title": pt.spec.title} for pt in tables],
    }
    (folder / "indice.json").write_text(
        json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def print_pdf(html_path: Path) -> tuple[Path | None, str]:
    """Print the HTML to PDF with headless Chromium; (None, why) when it cannot."""
    chromium = find_chromium()
    if chromium is None:
        return None, "Chromium is not installed (apt-get install chromium): HTML only"
    pdf = html_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html_path.resolve().as_uri(),
        ]
        try:
            subprocess.run(cmd, capture_output=True, timeout=120, check=True)  # noqa: S603
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"Chromium could not print the PDF: {type(e).__name__}"
    if not pdf.exists() or pdf.stat().st_size == 0:
        return None, "Chromium printed no PDF"
    return pdf, ""
