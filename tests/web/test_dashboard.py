"""The analyst's dashboard on the demo district: tables, maps, filters, and who may see it.

Also a browser test: Chromium opens the dashboard and its map; screenshots go to
docs/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from hub.config import Config, load_config
from hub.demo import run_demo
from hub.demo.district import SEED_TABLE
from hub.demo.ets import DEMO_PASSWORD
from hub.registry import Registry
from hub.web import accounts
from hub.web.app import create_app
from tests.support.web import live_server
from tests.web.conftest import csrf_of

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo_dashboard")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Config:
    ws = Path(tmp_path_factory.mktemp("dash")) / "demo"
    run_demo(ws, serve=False, console=Console(file=open("/dev/null", "w")))  # noqa: SIM115
    cfg = load_config(ws / "raccordo.toml")
    engine = Registry.open(cfg.registry_url).engine
    accounts.create_user(engine, "analista-ciss", DEMO_PASSWORD, "analyst", "CISS-BORGO")
    return cfg


def _client(cfg: Config, username: str) -> TestClient:
    c = TestClient(create_app(cfg), base_url="http://127.0.0.1")
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"username": username, "password": DEMO_PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    return c


def test_district_dashboard_shows_tables_and_two_maps(demo: Config) -> None:
    c = _client(demo, "analista")
    page = c.get("/cruscotto?anno=2022")
    assert page.status_code == 200
    html = page.text
    maps = re.findall(r'<svg[^>]*class="raccordo-map"', html)
    assert len(maps) == 2
    assert html.count("data-istat=") == 2 * 87  # every comune of the province, twice
    for table_id in (
        "prese_in_carico",
        "interventi_area_numero",
        "ets_contatti_comune_mese",
        "sovrapposizioni_pubblico_ets",
        "copertura_fornitori",
    ):
        assert f'id="t-{table_id}"' in html, table_id
    assert "CC-BY-4.0" in html
    # CISS Borgomanero's seed table, through the organisation filter.
    ciss = c.get("/cruscotto?anno=2022&org=CISS-BORGO").text
    section = ciss.split('id="t-prese_in_carico"', 1)[1].split("</section>", 1)[0]
    assert str(SEED_TABLE[2022][-2]).replace("3374", "3.374") in section


def test_a_consortium_analyst_sees_only_that_consortium(demo: Config) -> None:
    c = _client(demo, "analista-ciss")
    own = c.get("/cruscotto?anno=2022").text
    forced = c.get("/cruscotto?anno=2022&org=CBV").text
    assert 'id="org"' not in own  # no organisation filter to choose from
    section = forced.split('id="t-prese_in_carico"', 1)[1].split("</section>", 1)[0]
    assert "3.374" in section  # still CISS Borgomanero's figures, not CBV's


def test_each_chart_table_downloads_through_disclosure_control(demo: Config) -> None:
    import json

    c = _client(demo, "analista")
    page = c.get("/cruscotto?anno=2022").text
    assert "/cruscotto/tabella/ets_contatti_comune_mese.csv?anno=2022" in page
    # needs under the entry form's own labels (one set of labels)
    assert "Famiglia, genitorialità" in page or "Solitudine, relazioni" in page
    r = c.get("/cruscotto/tabella/ets_contatti_comune_mese.csv?anno=2022")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").splitlines()
    assert lines[-1].startswith("Totale;")
    assert "<5" in r.text  # small cells hidden, as in the open data
    ledger = json.loads(demo.ledger_path.read_text(encoding="utf-8"))
    assert any(
        x["label"].startswith("cruscotto ets_contatti_comune_mese 2022") for x in ledger["releases"]
    )
    assert c.get("/cruscotto/tabella/nope.csv?anno=2022").status_code == 404
    # an unknown comune in the filter is said, not silently ignored
    assert "Comune sconosciuto" in c.get("/cruscotto?anno=2022&comune=Atlantide").text


def test_siuss_codes_are_shown_with_their_names_in_charts_and_downloads(demo: Config) -> None:
    c = _client(demo, "analista")
    page = c.get("/cruscotto?anno=2022").text
    section = page.split('id="t-interventi_service_numero"', 1)[1].split("</section>", 1)[0]
    assert "A1.09 · Telesoccorso e teleassistenza" in section
    labels = [
        " ".join(re.findall(r"<tspan[^>]*>([^<]*)</tspan>", t))
        for t in re.findall(r'<text font-size="11"[^>]*>(.*?)</text>', section)
    ]
    assert labels and len(set(labels)) == len(labels)  # no two bars read alike
    assert all(re.match(r"[A-Z]\d\.\d\d\b", label) for label in labels), labels
    r = c.get("/cruscotto/tabella/interventi_service_numero.csv?anno=2022")
    rows = [line.split(";")[0] for line in r.text.lstrip("\ufeff").splitlines()]
    assert rows[0] == "Prestazione SIUSS (area di utenza)"
    assert any(
        x.startswith("A2.16 · Interventi di supporto per reperimento alloggi (") for x in rows
    )
    assert any(re.fullmatch(r"A1\.02 \(.+\)", x) for x in rows)  # no name known: code alone


def test_report_tables_default_to_their_own_complete_year(demo: Config, tmp_path: Path) -> None:
    """CISS Borgomanero's data stop in December 2022 while other consortia's go on into
    2023: its report shows 2022 (not a 2023 of zero prese in carico beside the
    interventions still running), 2023 asked for says why its tables are empty, and an
    ETS's report leaves out the public services' tables, saying so."""
    from hub.observatory.comuni import load_comuni
    from hub.observatory.disclosure import Ledger
    from hub.observatory.indicators import latest_year
    from hub.observatory.report import build_report

    engine = Registry.open(demo.registry_url).engine
    assert latest_year(engine) == 2023

    def report(**kw: object) -> tuple[dict[str, int], str]:
        r = build_report(
            engine,
            tmp_path,
            comuni=load_comuni(),
            k=5,
            ledger=Ledger(),
            district_name="Distretto",
            **kw,  # type: ignore[arg-type]
        )
        return r.years, r.html.read_text(encoding="utf-8")

    years, html = report(year=None, org="CISS-BORGO")
    assert set(years.values()) == {2022} and "prese_in_carico" in years
    assert 'class="note empty"' not in html
    assert "3.374" in html  # the seed table's prese in carico
    _, html_2023 = report(year=2023, org="CISS-BORGO")
    prese = html_2023.split("<h2>Prese in carico", 1)[1].split("</section>", 1)[0]
    assert "Nessun dato per il 2023 in questa tabella" in prese
    assert "l&#39;ultimo anno con dati è il 2022" in prese
    years, html = report(year=None, org="ETS-CARITAS")
    assert years and all(tid.startswith("ets_") for tid in years)
    assert "Non sono riportate le tabelle di prese in carico e interventi" in html


def test_open_data_metadata_speak_italian(demo: Config, tmp_path: Path) -> None:
    """No English note in any file of the open data (district and one organisation)."""
    import json

    from hub.observatory.notes import NOTES_IT
    from hub.observatory.opendata import export_opendata
    from hub.observatory.table import Period

    engine = Registry.open(demo.registry_url).engine
    for org in (None, "CISS-BORGO", "ETS-CARITAS"):
        out = tmp_path / (org or "distretto")
        export_opendata(engine, out, Period.year(2022), org=org)
        for path in out.iterdir():
            text = path.read_text(encoding="utf-8")
            for english in NOTES_IT:
                assert english not in text, (path.name, english)
            for word in ("Row totals", "Whole amount", "counts under each", " org = "):
                assert word not in text, (path.name, word)
        notes = [
            json.loads(p.read_text(encoding="utf-8"))["notes"]
            for p in out.glob("*.json")
            if p.name != "indice.json"
        ]
        assert set(notes) <= {"", *NOTES_IT.values()} and set(notes) - {""}
    services = (tmp_path / "distretto" / "interventi_service_numero.csv").read_text("utf-8")
    assert "A1.09 · Telesoccorso e teleassistenza (" in services  # SIUSS names here too
    readme = (tmp_path / "distretto" / "LEGGIMI.md").read_text(encoding="utf-8")
    assert "## Campi dei file JSON" in readme and "I totali di riga contano gli utenti" in readme


def test_ets_operators_never_reach_the_dashboard(demo: Config) -> None:
    c = _client(demo, "caritas")
    assert c.get("/cruscotto").status_code == 403


@pytest.mark.browser
def test_dashboard_and_map_in_chromium(demo: Config) -> None:
    from playwright.sync_api import sync_playwright

    from tests.web.test_browser import ARGS, CHROMIUM, SCREENSHOTS

    with live_server(demo) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="it-IT")
        page.goto(f"{base}/login")
        page.get_by_label("Nome utente").fill("analista")
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Accedi").click()
        page.wait_for_url(f"{base}/cruscotto")
        page.get_by_label("Anno", exact=True).select_option("2022")
        page.get_by_label("Comune", exact=True).fill("Novara (003106)")
        page.get_by_role("button", name="Mostra").click()
        page.wait_for_url(re.compile(r".*comune=.*"))
        assert page.locator("svg.raccordo-map").count() == 2
        assert page.locator("#comune-panel").is_visible()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=False)
        page.locator("#maps").screenshot(path=str(SCREENSHOTS / "dashboard-map.png"))
        browser.close()
