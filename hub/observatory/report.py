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
from collections.abc import Callable
from dataclasses import dataclass, field
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
from hub.observatory.geo import ATTRIBUTION, rates_per_1000, shapes, svg_map
from hub.observatory.indicators import latest_year, release_tables
from hub.observatory.notes import NOTES_IT, italian_note, with_service_names
from hub.observatory.rows import own
from hub.observatory.table import Period, Table, column_of, row_of
from hub.registry import tables as t

__all__ = ["NOTES_IT", "build_report", "italian_note", "with_comune_names", "with_service_names"]

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
    #: The year each table is shown for (one year unless each table has its own).
    years: dict[str, int] = field(default_factory=dict)


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


def is_empty(tb: Table | ProtectedTable) -> bool:
    spec = tb.spec if isinstance(tb, ProtectedTable) else tb
    return not any(v for row in spec.cells for v in row) and not spec.total


#: The records each table counts, by the start of its measure: a table's default year is
#: the latest year in which all of them are complete.
TABLE_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prese_in_carico", ("case_episodes",)),
    ("interventi.", ("interventions",)),
    ("ets.", ("need_signals",)),
    ("persone.multiente", ("case_episodes", "interventions")),
)
ALL_SOURCES = ("case_episodes", "interventions", "need_signals")
SOURCE_NAMES = {
    "case_episodes": "prese in carico",
    "interventions": "interventi",
    "need_signals": "schede del Terzo Settore",
}
#: Years a table looks back for data before it is said to have none.
LOOK_BACK = 5


def sources_of(tb: Table | ProtectedTable) -> tuple[str, ...]:
    spec = tb.spec if isinstance(tb, ProtectedTable) else tb
    for prefix, sources in TABLE_SOURCES:
        if spec.measure.startswith(prefix):
            return sources
    return ALL_SOURCES


def complete_years(engine: sa.Engine, *, org: str | None = None) -> dict[str, int | None]:
    """For each kind of record, the latest complete year of the organisation (of the
    district without ``org``): the year of its latest record, or the year before when
    the records of that year stop before December (a year still being loaded)."""
    dated = {
        "case_episodes": (t.case_episodes, t.case_episodes.c.opened_on),
        "interventions": (t.interventions, t.interventions.c.started_on),
        "need_signals": (t.need_signals, t.need_signals.c.on),
    }
    out: dict[str, int | None] = {}
    with engine.connect() as conn:
        for name, (table, column) in dated.items():
            q = sa.select(sa.func.max(column)).where(own(table))
            if org is not None:
                q = q.where(table.c.org == org)
            last = conn.execute(q).scalar()
            if isinstance(last, str):
                last = dt.date.fromisoformat(last[:10])
            out[name] = None if last is None else (last.year if last.month == 12 else last.year - 1)
    return out


@dataclass(frozen=True)
class Choice:
    """The year a report shows one table for, and why, when it is not the obvious one."""

    table: Table
    year: int
    note: str = ""


def choose_years(
    tables_of: Callable[[int], list[Table]],
    complete: dict[str, int | None],
    *,
    year: int | None,
    fallback: int,
    nothing_sent: str,
) -> list[Choice]:
    """Each table of a report with the year it is shown for.

    With ``year`` every table is of that year; without it, each table is of the latest
    year in which the records it counts are complete and it has data (at most
    ``LOOK_BACK`` years back). A table with no data says why, in Italian.
    """
    cache: dict[int, dict[str, Table]] = {}

    def at(y: int) -> dict[str, Table]:
        if y not in cache:
            cache[y] = {tb.id: tb for tb in tables_of(y)}
        return cache[y]

    def start_of(tb: Table) -> int:
        if year is not None:
            return year
        found = [y for s in sources_of(tb) if (y := complete.get(s)) is not None]
        return min(found) if len(found) == len(sources_of(tb)) else fallback

    reference = (
        year
        if year is not None
        else max((y for y in complete.values() if y is not None), default=fallback)
    )
    out: list[Choice] = []
    for tid, tb in at(reference).items():
        start = start_of(tb)
        first = at(start).get(tid, tb)
        if not is_empty(first):
            out.append(Choice(first, start))
            continue
        earlier = next(
            (
                (y, at(y)[tid])
                for y in range(start - 1, start - 1 - LOOK_BACK, -1)
                if tid in at(y) and not is_empty(at(y)[tid])
            ),
            None,
        )
        if year is None and earlier is not None:
            y, older = earlier
            out.append(
                Choice(
                    older,
                    y,
                    f"Per il {start} questa tabella non ha dati: {nothing_sent} "
                    f"per l'anno. È riportato il {y}, l'ultimo anno con dati.",
                )
            )
            continue
        text = f"Nessun dato per il {start} in questa tabella: {nothing_sent} per l'anno"
        text += (
            f"; l'ultimo anno con dati è il {earlier[0]}."
            if earlier is not None
            else f" né per i {LOOK_BACK} anni precedenti."
        )
        out.append(Choice(first, start, text))
    return out


def _italian_list(items: list[str]) -> str:
    """``"a"``, ``"a e b"``, ``"a, b e c"``."""
    return " e ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else "".join(items)


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
    year: int | None,
    comuni: dict[str, Comune],
    k: int,
    ledger: Ledger,
    district_name: str,
    org: str | None = None,
    comune: str | None = None,
    org_name: str | None = None,
) -> ReportResult:
    """The report of one organisation or one comune.

    ``year=None`` (the default of ``raccordo export report``) shows each table for its
    own latest complete year (:func:`choose_years`): a consortium whose prese in carico
    stop a year before its interventions gets each table where it has data, and a
    table without any says why.
    """
    if (org is None) == (comune is None):
        raise ValueError("a report is for one comune or one organisation")
    complete = complete_years(engine, org=org)
    #: Kinds of records the organisation never sent while it sent others (an ETS has no
    #: prese in carico): their tables are left out, and the report says so. One that
    #: sent nothing yet gets every table, each saying it has no data.
    never = {s for s, y in complete.items() if y is None}
    if org is None or len(never) == len(complete):
        never = set()
    if org is not None:
        subject = org_name or org
        slug = f"org-{org}"
        nothing_sent = "l'ente non ha trasmesso dati"

        def tables_of(y: int) -> list[Table]:
            return [
                tb
                for tb in release_tables(engine, Period.year(y), org=org)
                if tb.sensitive and not set(sources_of(tb)) <= never
            ]

    else:
        assert comune is not None
        subject = comuni[comune].name if comune in comuni else comune
        slug = f"comune-{comune}"
        nothing_sent = "nessun ente del distretto ha trasmesso dati sul comune"

        def tables_of(y: int) -> list[Table]:
            district = [tb for tb in release_tables(engine, Period.year(y)) if tb.sensitive]
            return comune_tables(district, comune)

    fallback = year or max((y for y in complete.values() if y is not None), default=None)
    if fallback is None:
        fallback = latest_year(engine) or dt.date.today().year
    choices = choose_years(
        tables_of, complete, year=year, fallback=fallback, nothing_sent=nothing_sent
    )
    years = sorted({c.year for c in choices}) or [fallback]
    shown_year = year if year is not None else years[-1]
    tables = [with_service_names(with_comune_names(c.table, comuni)) for c in choices]
    release = protect_release(tables, k, ledger)
    map_svg = ""
    if comune is not None and release.tables:
        # The comune's contacts per 1,000 residents beside the other comuni, from the same
        # protected district table (suppressed comuni are hatched, not coloured).
        map_year = next(
            (c.year for c in choices if c.table.id == "ets_contatti_comune_mese"), shown_year
        )
        contacts = next(
            (
                tb
                for tb in release_tables(engine, Period.year(map_year))
                if tb.id == "ets_contatti_comune_mese"
            ),
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
                title=f"Contatti del Terzo Settore ogni 1.000 residenti, {map_year}",
                unit="ogni 1.000 residenti",
                missing_label=f"nessun dato o meno di {k}",
                highlight=comune,
            )
    years_label = str(years[0]) if len(years) == 1 else f"{years[0]}–{years[-1]}"
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape())
    env.globals["cell"] = cell
    env.globals["note"] = italian_note
    html = env.get_template("report.html").render(
        subject=subject,
        kind="org" if org else "comune",
        year=years_label,
        per_table=year is None and len(years) > 1,
        district_name=district_name,
        tables=release.tables,
        charts={pt.spec.id: _bars(pt) for pt in release.tables},
        map_svg=map_svg,
        boundaries=ATTRIBUTION,
        empty={c.table.id: c.note for c in choices if c.note},
        left_out=_italian_list([SOURCE_NAMES[s] for s in ALL_SOURCES if s in never]),
        k=k,
        created=dt.date.today().strftime("%d/%m/%Y"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"restituzione-{slug}-{shown_year}.html"
    html_path.write_text(html, encoding="utf-8")
    data_dir = out_dir / f"restituzione-{slug}-{shown_year}"
    _write_data(
        data_dir,
        release.tables,
        k=k,
        years={c.table.id: c.year for c in choices},
        org=org,
        comune=comune,
    )
    ledger.record(release, f"report {slug} {years_label}")
    pdf_path, problem = print_pdf(html_path)
    return ReportResult(
        html_path,
        pdf_path,
        len(release.tables),
        sum(len(p.suppressed) for p in release.tables),
        problem,
        data_dir,
        {c.table.id: c.year for c in choices},
    )


def _write_data(
    folder: Path,
    tables: list[ProtectedTable],
    *,
    k: int,
    years: dict[str, int],
    org: str | None,
    comune: str | None,
) -> None:
    """The report's tables in the open-data JSON format, for re-use and for auditors."""
    import json

    from hub.observatory.opendata import MARKER, _write_json

    folder.mkdir(parents=True, exist_ok=True)
    for pt in tables:
        _write_json(folder / f"{pt.spec.id}.json", pt)
    first, last = min(years.values(), default=0), max(years.values(), default=0)
    index = {
        "district": tables[0].spec.scope.split("|")[0] if tables else "",
        "period": {"start": f"{first}-01-01", "end": f"{last}-12-31"},
        "org": org,
        "comune": comune,
        "k": k,
        "suppressed_marker": MARKER,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tables": [
            {"id": pt.spec.id, "title": pt.spec.title, "year": years.get(pt.spec.id)}
            for pt in tables
        ],
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
