"""The restituzione report speaks Italian only, and says why a table is empty."""

from __future__ import annotations

import re
from pathlib import Path

from hub.config import Config
from hub.observatory.comuni import load_comuni
from hub.observatory.disclosure import Ledger
from hub.observatory.indicators import release_tables
from hub.observatory.report import NOTES_IT, build_report
from hub.observatory.table import Period
from hub.registry import Registry

INDICATORS = Path(__file__).resolve().parents[2] / "hub" / "observatory" / "indicators.py"


def test_every_note_of_the_indicators_has_an_italian_text(web_config: Config) -> None:
    engine = Registry.open(web_config.registry_url).engine
    notes = {tb.notes for tb in release_tables(engine, Period.year(2026)) if tb.notes}
    notes |= {tb.notes for tb in release_tables(engine, Period.year(2026), org="CISS") if tb.notes}
    assert notes, "the indicators have notes"
    assert not notes - set(NOTES_IT), f"translate in NOTES_IT: {sorted(notes - set(NOTES_IT))}"


def _notes_written_in_the_observatory() -> list[str]:
    """Every ``notes=`` text in hub/observatory, f-string placeholders filled with 30."""
    import ast

    found = []
    for path in INDICATORS.parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "notes":
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    found.append(node.value.value)
                elif isinstance(node.value, ast.JoinedStr):
                    found.append(
                        "".join(
                            v.value if isinstance(v, ast.Constant) else "30"
                            for v in node.value.values
                        )
                    )
    return found


def test_every_note_written_in_the_observatory_has_an_italian_text() -> None:
    """Including the cross-district tables, which the registries of these tests lack."""
    from hub.observatory.notes import italian_note

    notes = _notes_written_in_the_observatory()
    assert len(notes) >= 6, notes
    missing = [n for n in notes if not italian_note(n)]
    assert not missing, f"translate in hub/observatory/notes.py: {missing}"
    assert "entro 30 giorni" in " ".join(italian_note(n) for n in notes)


def test_report_is_italian_and_explains_empty_tables(web_config: Config, tmp_path: Path) -> None:
    engine = Registry.open(web_config.registry_url).engine
    result = build_report(
        engine,
        tmp_path,
        year=2026,
        comuni=load_comuni(),
        k=5,
        ledger=Ledger(),
        district_name="Distretto di prova",
        org="CISS",
        org_name="Consorzio di prova",
    )
    html = result.html.read_text(encoding="utf-8")
    for english in ("Row totals", "Whole amount", "counts under each", "not subject to"):
        assert english not in html
    sections = re.findall(r'<section class="table">.*?</section>', html, re.S)
    assert sections and all("Nessun dato per il 2026" in s for s in sections)


def test_map_legend_classes_are_sensible() -> None:
    from hub.observatory.geo import shapes, svg_map

    comuni = load_comuni()
    codes = list(comuni)[:8]
    values = {c: v for c, v in zip(codes, [0, 0, 0, 0.4, 1.2, 2.5, 3.1, 7.75], strict=True)}
    svg = svg_map(
        shapes(codes),
        values,
        {c: comuni[c].name for c in codes},
        title="t",
        unit="ogni 1.000 residenti",
        missing_label="nessun dato",
    )
    legend = re.findall(r'font-size="13" fill="#17324d">([^<]+)</text>', svg)
    assert "0,0 – 0,0" not in svg
    assert legend[0] == "0" and legend[-1] == "nessun dato"
    assert all(t.startswith("oltre ") for t in legend[1:-1])
    assert "7,75" in legend[-2]


def _table(table_id: str, measure: str, year: int, value: int) -> object:
    from hub.observatory.table import GridBuilder

    g = GridBuilder(["r"], ["CISS"], {("r", "CISS"): value})
    g.sums()
    return g.table(
        id=table_id,
        title=f"{table_id} ({year})",
        unit="persone",
        measure=measure,
        row_headings=["r"],
        col_headings=["CISS"],
        scope=f"D|{year}",
        row_dim="area",
        row_label="Area",
        col_dim="org",
        col_label="Ente",
        pattern=f"{measure}|D|{year}|*",
        fixed=(),
    )


def test_each_table_defaults_to_its_own_latest_complete_year() -> None:
    """Prese in carico complete up to 2022, interventions up to 2023: each table is shown
    for its own year; a table empty in its year falls back to the last year with data
    and says so; one with no data at all says why, in Italian."""
    from hub.observatory.report import choose_years

    data = {
        ("prese_in_carico", 2022): 40,
        ("interventi_area_numero", 2023): 72,
        ("interventi_area_importi", 2021): 900,  # amounts stopped after 2021
    }
    measures = {
        "prese_in_carico": "prese_in_carico",
        "interventi_area_numero": "interventi.n",
        "interventi_area_importi": "interventi.euro",
        "interventi_area_persone": "interventi.persone",
    }

    def tables_of(y: int) -> list:  # type: ignore[type-arg]
        return [_table(tid, m, y, data.get((tid, y), 0)) for tid, m in measures.items()]

    complete = {"case_episodes": 2022, "interventions": 2023, "need_signals": None}
    choices = choose_years(
        tables_of, complete, year=None, fallback=2023, nothing_sent="l'ente non ha trasmesso dati"
    )
    got = {c.table.id: (c.year, c.note) for c in choices}
    assert got["prese_in_carico"] == (2022, "")
    assert got["interventi_area_numero"] == (2023, "")
    year, note = got["interventi_area_importi"]
    assert year == 2021 and note.startswith("Per il 2023 questa tabella non ha dati")
    assert "È riportato il 2021, l'ultimo anno con dati." in note
    year, note = got["interventi_area_persone"]
    assert year == 2023 and note == (
        "Nessun dato per il 2023 in questa tabella: l'ente non ha trasmesso dati per l'anno "
        "né per i 5 anni precedenti."
    )
    # A year asked for is the year of every table; an empty one says where data are.
    asked = {
        c.table.id: (c.year, c.note)
        for c in choose_years(
            tables_of,
            complete,
            year=2023,
            fallback=2023,
            nothing_sent="l'ente non ha trasmesso dati",
        )
    }
    assert {y for y, _ in asked.values()} == {2023}
    assert asked["prese_in_carico"][1].endswith("l'ultimo anno con dati è il 2022.")
