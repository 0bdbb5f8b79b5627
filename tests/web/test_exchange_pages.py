"""The exchange pages of the web app: flows per convenzione (analysts) and the convenzioni
with their state (administrators), on a real hub that really sent and received packages.

District A's web app shows its exchange home. A sent B a package that B (a real HTTP
server) accepted, then two people were cancelled at A (erasures owed to B), one package
waits for its receipt, one was refused at A before it left, and A received a package
from B. A second convenzione, with the consortium CISS, is signed by A only (a draft).
The pages read all this without the home's private keys (moved away before serving).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.config import Config, load_config
from hub.exchange import convenzioni as cv
from hub.exchange import keyfile, overview
from hub.exchange import package as pk
from hub.exchange.errors import PackageRefused
from hub.exchange.home import init_home, open_home
from hub.exchange.keyfile import PASSPHRASE_ENV
from hub.exchange.receive import Receiver
from hub.exchange.send import Outbox, send_records
from hub.exchange.server import create_app as exchange_app
from hub.registry import Registry
from hub.web import accounts
from hub.web.app import create_app
from tests.exchange.conftest import (
    PASSPHRASE,
    RECORD_FLOW,
    TODAY,
    share,
    sign_both,
    write_convenzione,
)
from tests.exchange.support import (
    InProcessTestConverter,
    app_in_thread,
    cancel,
    double_convert,
    pseudonym,
    seed,
)
from tests.support.web import PASSWORD, free_port, live_server, web_workspace
from tests.web.conftest import csrf_of

CONV = "conv-A-B-2026"
CONV_CISS = "conv-A-CISS-2026"
BACK_FLOW = {**RECORD_FLOW, "from": "DISTRETTO_B", "to": "DISTRETTO_A"}


@dataclass
class Site:
    cfg: Config
    home: Path


def _with_exchange_home(cfg: Config, home: Path) -> Config:
    text = re.sub(r'(?m)^exchange_home = ".*"\n', "", cfg.path.read_text())
    text = text.replace("[hub]\n", f'[hub]\nexchange_home = "{home}"\n', 1)
    cfg.path.write_text(text)
    return load_config(cfg.path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with pytest.MonkeyPatch.context() as m:
        # Setting up signs and seals (the home's keys); the web itself never needs them.
        m.setenv(PASSPHRASE_ENV, PASSPHRASE)
        m.setattr(keyfile, "SCRYPT_N", 2**10)
        made = _make_site(Path(tmp_path_factory.mktemp("exchange-pages")))
    yield made


def _make_site(tmp: Path) -> Site:
    cfg = web_workspace(tmp / "ws")
    reg_a = Registry.open(cfg.registry_url)
    accounts.create_user(reg_a.engine, "analista-ciss", PASSWORD, "analyst", "CISS")
    a = init_home(
        tmp / "ws" / "exchange",
        party="DISTRETTO_A",
        pseudonym_domain="DOM_A",
        registry_url=cfg.registry_url,
    )
    b = init_home(tmp / "B", party="DISTRETTO_B", pseudonym_domain="DOM_B")
    ciss = init_home(tmp / "C", party="CISS", pseudonym_domain="DOM_C")
    port = free_port()
    conv = write_convenzione(
        tmp / "shared",
        a,
        b,
        endpoint_b=f"http://127.0.0.1:{port}",
        flows=[{**RECORD_FLOW, "frequency": "monthly"}, BACK_FLOW],
    )
    sign_both(conv, a, b)
    share(conv, a, b)
    draft = write_convenzione(
        tmp / "shared",
        a,
        ciss,
        conv_id=CONV_CISS,
        flows=[{**RECORD_FLOW, "to": "CISS", "frequency": "quarterly"}],
    )
    cv.sign(draft, a.party, a.signing_key)
    share(draft, a, ciss)

    seed(reg_a, 5, org="CISS")
    reg_b = Registry.open(f"sqlite:///{tmp}/b.sqlite")
    with app_in_thread(exchange_app(b, reg_b), port):
        (d,) = send_records(a, reg_a, CONV, "DISTRETTO_B", InProcessTestConverter())
        assert d.status == "accepted", d
    reg_b.close()
    cancel(reg_a, [0, 1], org="CISS")  # gone at A, still held at B
    cf = a.convenzioni.get(CONV)
    rows = [pk.Row("case_episode", "waiting", {"subject": double_convert("DOM_B", "x")})]
    # Monthly: a second package this month only as part of the same flow (sending run).
    pending = pk.build(
        a, cf, recipient="DISTRETTO_B", rows=rows, period=(TODAY, TODAY), flow=d.package
    )
    Outbox(a).put(pending, None)  # B is down now: it waits for its receipt
    with pytest.raises(PackageRefused):
        bad = [pk.Row("subject", "k", {"subject": "2.x", "citizenship": "ITA"})]
        pk.build(a, cf, recipient="DISTRETTO_B", rows=bad, period=(TODAY, TODAY))
    inbound = [
        pk.Row(
            "case_episode",
            f"in{i}",
            {
                "subject": pseudonym(i),
                "area": "MINORI",
                "opened_on": dt.date(2025, 5, 1),
                "closed_on": None,
            },
        )
        for i in range(3)
    ]
    p = pk.build(
        b, b.convenzioni.get(CONV), recipient="DISTRETTO_A", rows=inbound, period=(TODAY, TODAY)
    )
    status, receipt = Receiver(a, reg_a).handle(p.headers, p.body)
    assert status == 200, receipt
    reg_a.close()
    # The web never needs the home's private keys: they are not even there.
    shutil.move(a.path / "keys", tmp / "keys-of-A-elsewhere")
    return Site(_with_exchange_home(cfg, a.path), a.path)


def _client(cfg: Config, username: str) -> TestClient:
    c = TestClient(create_app(cfg), base_url="http://127.0.0.1")
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return c


def _cells(html: str, conv: str, peer: str, direction: str) -> dict[str, str]:
    section = html.split(f'id="c-{conv}"', 1)[1].split("</section>", 1)[0]
    row = section.split(f'data-peer="{peer}" data-direction="{direction}"', 1)[1]
    row = row.split("</tr>", 1)[0]
    return {
        m.group(1): re.sub(r"\s+", " ", m.group(2)).strip()
        for m in re.finditer(r'data-col="([a-z]+)">(.*?)</td>', row, re.S)
    }


def test_an_analyst_sees_flows_per_convenzione(site: Site) -> None:
    c = _client(site.cfg, "analista")
    page = c.get("/cruscotto/scambi")
    assert page.status_code == 200
    html = page.text
    assert "Scambi con altri distretti" in html
    assert 'href="/cruscotto/scambi"' in html  # in the navigation
    out = _cells(html, CONV, "DISTRETTO_B", "out")
    # 5 subjects + 5 episodes accepted; one package awaits its receipt; the rows of the
    # 2 people cancelled at A are erasures B has not acknowledged yet.
    assert out["accepted"] == "1" and out["rows"] == "10"
    assert out["refused"] == "1"  # refused here, before it left
    assert out["pending"] == "1"
    assert out["erasures"] == "2"
    assert out["last"].endswith("rifiutato")  # the latest: refused here
    assert re.match(r"\d\d/\d\d/\d{4} \d\d:\d\d UTC", out["last"])
    inbound = _cells(html, CONV, "DISTRETTO_B", "in")
    assert inbound["accepted"] == "1" and inbound["rows"] == "3"
    assert inbound["pending"] == "—" and inbound["erasures"] == "—"
    assert "in vigore" in html.split(f'id="c-{CONV}"', 1)[1].split("</h2>", 1)[0]
    ciss = _cells(html, CONV_CISS, "CISS", "out")
    assert ciss["accepted"] == "0" and ciss["erasures"] == "0"
    assert "/admin/convenzioni" not in html  # not for analysts
    assert c.get("/admin/convenzioni").status_code == 403


def test_a_consortium_analyst_sees_only_convenzioni_its_organisation_is_party_to(
    site: Site,
) -> None:
    html = _client(site.cfg, "analista-ciss").get("/cruscotto/scambi").text
    assert f'id="c-{CONV_CISS}"' in html
    assert CONV not in html.replace(CONV_CISS, "")
    assert "DISTRETTO_B" not in html


def test_the_admin_sees_every_convenzione_and_its_state(site: Site) -> None:
    c = _client(site.cfg, "admin")
    page = c.get("/admin/convenzioni")
    assert page.status_code == 200
    html = page.text
    assert 'href="/admin/convenzioni"' in html and 'href="/cruscotto/scambi"' in html
    active = html.split(f'id="c-{CONV}"', 1)[1].split("</section>", 1)[0]
    assert 'data-state="active"' in active and "in vigore" in active
    assert "DISTRETTO_A</strong> · Distretto A (questo distretto)" in active
    assert "continuita-presa-in-carico" in active
    assert "Art. 2-sexies" in active
    assert "DISTRETTO_A → DISTRETTO_B" in active and "DISTRETTO_B → DISTRETTO_A" in active
    assert "case_episode: subject, area, opened_on, closed_on" in active
    assert "mensile" in active and "record pseudonimizzati" in active
    assert "365 giorni" in active
    assert "Firmata da</dt><dd" in active and "DISTRETTO_A, DISTRETTO_B" in active
    draft = html.split(f'id="c-{CONV_CISS}"', 1)[1].split("</section>", 1)[0]
    assert 'data-state="draft"' in draft and "non ancora firmata da tutte le parti" in draft
    assert "Manca la firma di: CISS." in draft and "trimestrale" in draft
    # The flows page is open to the admin too.
    assert c.get("/cruscotto/scambi").status_code == 200


def test_states_expired_revoked_and_a_broken_file_are_shown(site: Site, tmp_path: Path) -> None:
    """A copy of the home, with one convenzione expired, one revoked and one broken file."""
    home = tmp_path / "home"
    shutil.copytree(site.home, home, ignore=shutil.ignore_patterns("lock"))
    folder = home / "convenzioni"
    expired = folder / f"{CONV}.toml"
    cf = cv.load(expired)
    # Expired: the same signed file, seen as if today were after its expiry.
    h = open_home(home, keys=False)
    later = cf.convenzione.expiry + dt.timedelta(days=1)
    states = {v.id: v.state for v in overview.convenzioni(h, today=later)[0]}
    assert states == {CONV: "expired", CONV_CISS: "draft"}
    (folder / f"{CONV_CISS}.toml.revoked").write_text("{}")  # unverifiable: fails closed
    (folder / "broken.toml").write_text("id = 'x'\n")
    cfg = _with_exchange_home(site.cfg, home)
    try:
        html = _client(cfg, "admin").get("/admin/convenzioni").text
    finally:
        _with_exchange_home(site.cfg, site.home)
    draft = html.split(f'id="c-{CONV_CISS}"', 1)[1].split("</section>", 1)[0]
    assert 'data-state="revoked"' in draft and "revocata" in draft
    assert 'data-file="broken.toml"' in html and "non è una convenzione valida" in html


def test_third_sector_operators_cannot_open_the_exchange_pages(site: Site) -> None:
    c = _client(site.cfg, "op-a")
    for path in ("/cruscotto/scambi", "/admin/convenzioni"):
        r = c.get(path)
        assert r.status_code == 403, path
        assert "DISTRETTO_B" not in r.text and CONV not in r.text
    assert "/cruscotto/scambi" not in c.get("/schede").text


def test_without_an_exchange_home_the_pages_say_what_to_set(web_config: Config) -> None:
    for user, path in (("analista", "/cruscotto/scambi"), ("admin", "/admin/convenzioni")):
        r = _client(web_config, user).get(path)
        assert r.status_code == 200
        assert "exchange_home" in r.text and "raccordo.toml" in r.text


@pytest.mark.browser
def test_the_exchange_pages_fit_a_phone_and_pass_axe(site: Site) -> None:
    from playwright.sync_api import sync_playwright

    from tests.web.test_accessibility import AXE
    from tests.web.test_browser import ARGS, CHROMIUM

    problems: list[str] = []
    pages = {"analista": ("/cruscotto/scambi",), "admin": ("/admin/convenzioni",)}
    with live_server(site.cfg) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for user, paths in pages.items():
                context = browser.new_context(
                    locale="it-IT", viewport={"width": 390, "height": 800}
                )
                page = context.new_page()
                errors: list[str] = []
                page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else 0)
                page.goto(f"{base}/login")
                page.get_by_label("Nome utente").fill(user)
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Accedi").click()
                page.wait_for_load_state()
                errors.clear()  # only the exchange pages' own
                for path in paths:
                    for width in (390, 1280):
                        page.set_viewport_size({"width": width, "height": 800})
                        page.goto(base + path)
                        page.wait_for_load_state("networkidle")
                        overflow = page.evaluate(
                            "() => document.documentElement.scrollWidth"
                            " - document.documentElement.clientWidth"
                        )
                        if overflow > 0:
                            problems.append(f"{user} {path} at {width}px: {overflow}px too wide")
                        page.evaluate(Path(AXE).read_text(encoding="utf-8"))
                        result = page.evaluate(
                            "async () => (await axe.run(document, {runOnly: {type: 'tag', "
                            "values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations"
                            ".map(v => `${v.id}: ${v.help} (${v.nodes.length}) `"
                            " + v.nodes.slice(0, 2).map(n => n.target.join(' ')).join(', '))"
                        )
                        problems.extend(f"{user} {path} at {width}px: {v}" for v in result)
                        problems.extend(f"{user} {path}: console {e[:200]}" for e in errors)
                        errors.clear()
                context.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
