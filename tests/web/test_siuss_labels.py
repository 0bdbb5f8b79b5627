"""SIUSS prestazioni under their names, and chart labels that never read alike."""

from __future__ import annotations

import re
from pathlib import Path

from hub.observatory.charts import _label_lines, svg_bars
from hub.observatory.report import with_service_names
from hub.observatory.table import GridBuilder
from hub.schema.siuss import BUILTIN, prestazione_label, prestazioni

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inps"


def test_the_catalogue_holds_every_code_named_in_the_inps_material() -> None:
    """Every CodicePrestazione/DenominazionePrestazione pair of the INPS sample flows
    (copied in tests/fixtures/inps) is in the shipped catalogue, spelt the same."""
    pairs: dict[str, str] = {}
    for xml in FIXTURES.glob("*.xml"):
        text = xml.read_text(encoding="utf-8")
        for code, name in re.findall(
            r'CodicePrestazione="([^"]+)"[^>]*?DenominazionePrestazione="([^"]+)"', text
        ):
            pairs[code] = name
    assert pairs, "the INPS samples name some prestazioni"
    assert prestazioni() == pairs
    assert "INPS" in BUILTIN.read_text(encoding="utf-8").splitlines()[1]  # source noted
    assert prestazione_label("A1.09") == "A1.09 · Telesoccorso e teleassistenza"
    assert prestazione_label("A1.02") == "A1.02"  # no name in the material: never guessed


def _service_table() -> object:
    rows = ["POV/A2.16", "FAM/A2.16", "ELD/A1.09", "IMMNOM/A1.16", "FAM/A1.02"]
    g = GridBuilder(rows, ["CISS"], {(r, "CISS"): 10 + i for i, r in enumerate(rows)})
    g.sums()
    return g.table(
        id="interventi_service_numero",
        title="Interventi per prestazione SIUSS (2022)",
        unit="interventi",
        measure="interventi.n",
        row_headings=[r.replace("/", " · ") for r in rows],
        col_headings=["CISS"],
        counts_people=False,
        scope="D|2022",
        row_dim="area_code",
        row_label="Area di utenza · codice prestazione SIUSS",
        col_dim="org",
        col_label="Ente",
        pattern="interventi.service|D|2022|*",
        fixed=(),
    )


def test_service_rows_read_code_name_and_area() -> None:
    tb = with_service_names(_service_table())  # type: ignore[arg-type]
    assert tb.rows == ("POV/A2.16", "FAM/A2.16", "ELD/A1.09", "IMMNOM/A1.16", "FAM/A1.02")
    assert tb.row_headings == (
        "A2.16 · Interventi di supporto per reperimento alloggi (Povertà e disagio adulti)",
        "A2.16 · Interventi di supporto per reperimento alloggi (Famiglia e minori)",
        "A1.09 · Telesoccorso e teleassistenza (Anziani)",
        "A1.16 · Contributi economici per servizio trasporto e mobilità "
        "(Immigrati, Rom, Sinti e Caminanti)",
        "A1.02 (Famiglia e minori)",
    )


def test_chart_labels_keep_code_and_area_and_never_read_alike() -> None:
    tb = with_service_names(_service_table())  # type: ignore[arg-type]
    svg = svg_bars(list(tb.row_headings), list(tb.row_totals), title=tb.title)
    labels = [
        " ".join(re.findall(r"<tspan[^>]*>([^<]*)</tspan>", t))
        for t in re.findall(r'<text font-size="11"[^>]*>(.*?)</text>', svg)
    ]
    assert len(labels) == 5 and len(set(labels)) == 5
    for label, key in zip(labels, tb.rows, strict=True):
        assert label.startswith(key.split("/")[1]), label  # the code is never cut
    assert labels[3].endswith("(Immigrati, Rom, Sinti e Caminanti)")  # nor the area
    assert "…" in labels[3]  # the name gave way
    assert "Interventi di supporto per reperimento alloggi" in labels[0]  # fits: whole
    for full in tb.row_headings:  # the whole label stays in the tooltip
        assert f"<title>{full}:" in svg.replace("&#x27;", "'")


def test_a_long_label_without_an_area_is_cut_at_its_end() -> None:
    lines = _label_lines("parola " * 30)
    assert len(lines) == 3 and lines[-1].endswith("…")
