"""The entry form in a real browser: Debian's Chromium driven by Playwright.

Saves screenshots of the form and of the restituzione page into docs/screenshots/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.config import Config
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.web import PASSWORD, live_server
from tests.web.conftest import CF_1, CF_2, CF_BAD, NAMES

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/ensure-chromium.sh"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(
            locale="it-IT", viewport={"width": 420, "height": 900}, device_scale_factor=1
        )
        yield context.new_page()
        browser.close()


def _sign_in(page, base: str, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    page.get_by_label("Nome utente").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Accedi").click()
    page.wait_for_url(f"{base}/schede")


def _fill(page, code: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Codice", exact=True).fill(code)
    page.get_by_label("Comune").fill("Novara (003106)")
    # Bootstrap Italia draws its own boxes: a person clicks the label.
    for label in ("Alimentare", "Solitudine, relazioni", "Pacco alimentare"):
        if not page.get_by_label(label, exact=True).is_checked():
            page.get_by_text(label, exact=True).click()


def test_operator_submits_sees_and_is_kept_out(browser_page, web_config: Config) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    with live_server(web_config) as base:
        _sign_in(page, base, "op-a")
        page.get_by_role("link", name="Nuova scheda").first.click()
        page.wait_for_url(f"{base}/schede/nuova")
        # Birth year and sex are asked only without a tax code.
        assert page.locator("#no-cf-fields").is_hidden()
        page.get_by_text("Non disponibile", exact=True).click()
        assert page.locator("#no-cf-fields").is_visible()
        assert page.locator("#identifier-group").is_hidden()
        page.get_by_text("Codice fiscale", exact=True).click()

        # A wrong check character is caught in the page, before anything is sent.
        _fill(page, CF_BAD)
        page.get_by_role("button", name="Salva").click()
        message = page.locator("#identifier-live")
        assert "ultimo carattere (di controllo) non corrisponde" in message.inner_text()
        assert page.url == f"{base}/schede/nuova"

        # The right code is accepted, the entry listed by its tag.
        # (the screenshot is taken with the code field empty: no code in docs/, even a fake one)
        page.get_by_label("Codice", exact=True).fill("")
        assert message.inner_text() == ""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "ets-form.png"), full_page=True)
        page.get_by_label("Codice", exact=True).fill(CF_1)
        assert message.inner_text() == ""
        page.get_by_role("button", name="Salva").click()
        page.wait_for_url(f"{base}/schede?salvata=1")
        assert "Scheda salvata" in page.content()
        reg = Registry.open(web_config.registry_url)
        with reg.engine.connect() as conn:
            (entry,) = conn.execute(sa.select(t.ets_entries)).all()
        assert entry.tag in page.locator("#entries").inner_text()

        # A second person, then the restituzione page.
        page.goto(f"{base}/schede/nuova")
        _fill(page, CF_2)
        page.get_by_role("button", name="Salva").click()
        page.wait_for_url(f"{base}/schede?salvata=1")
        page.goto(f"{base}/restituzione")
        assert page.locator("#n-entries").inner_text() == "2"
        page.set_viewport_size({"width": 1100, "height": 900})
        page.screenshot(path=str(SCREENSHOTS / "ets-restituzione.png"), full_page=True)

        # Another ETS cannot open the entry by its URL.
        page.get_by_role("button", name="Esci").click()
        _sign_in(page, base, "op-b")
        response = page.goto(f"{base}/schede/{entry.id}")
        assert response is not None and response.status == 404
        page.goto(f"{base}/schede")
        assert entry.tag not in page.content()
        reg.close()
    leaks = scan_paths([web_config.base_dir], names=NAMES, values=[CF_1, CF_2, CF_BAD])
    leaks += scan_database(web_config.registry_url, names=NAMES, values=[CF_1, CF_2, CF_BAD])
    assert_no_leaks(leaks)
