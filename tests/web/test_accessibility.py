"""Accessibility of the Third Sector pages: axe-core (WCAG 2.1 A and AA rules) in Chromium.

axe-core is installed from the npm registry by scripts/build-assets.sh (package.json).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import Config
from tests.support.web import PASSWORD, live_server
from tests.web.test_browser import ARGS, CHROMIUM

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
PAGES = ("/login", "/schede/nuova", "/schede", "/restituzione", "/caricamento")


def test_pages_pass_wcag_aa_checks(web_config: Config) -> None:
    from playwright.sync_api import sync_playwright

    assert AXE.exists(), "axe-core is missing: run scripts/build-assets.sh"
    problems: list[str] = []
    with live_server(web_config) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        # The app's CSP forbids inline scripts: only the test's injected checker bypasses it.
        page = browser.new_context(bypass_csp=True, locale="it-IT").new_page()
        for path in PAGES:
            if path != "/login" and "/login" in page.url:
                page.get_by_label("Nome utente").fill("op-a")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Accedi").click()
                page.wait_for_url(f"{base}/schede")
            page.goto(f"{base}{path}")
            page.add_script_tag(path=str(AXE))
            result = page.evaluate(
                "async () => (await axe.run(document, {runOnly: {type: 'tag', values: "
                "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations"
                ".map(v => `${v.id}: ${v.help} (${v.nodes.length}) `"
                " + v.nodes.slice(0, 2).map(n => n.target.join(' ')).join(', '))"
            )
            problems += [f"{path}: {v}" for v in result]
        browser.close()
    assert not problems, "\n".join(problems)
