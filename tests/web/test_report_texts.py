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
