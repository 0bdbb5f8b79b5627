"""The web app in production (issue 15): each test would have caught one "Broke" line.

Sessions that really end, a login limit that whitespace, case and a forged
X-Forwarded-For do not bypass, body caps on every route, no identifier in any
answer or log line, Italian error pages.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.config import Config
from hub.registry import Registry
from hub.web import accounts
from hub.web.app import create_app
from hub.web.limits import LoginLimiter, client_address, login_key, parse_networks
from hub.web.store import StateStore
from tests.support.leakscan import assert_no_leaks, scan_paths
from tests.support.web import PASSWORD
from tests.web.conftest import CF_1, CF_2, COMUNE, NAMES, csrf_of

Login = Callable[[str], TestClient]


def _login(c: TestClient, username: str, password: str = PASSWORD) -> int:
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    return r.status_code


def _with_web(cfg: Config, **changes: object) -> Config:
    web = cfg.settings.web.model_copy(update=changes)
    return Config(cfg.settings.model_copy(update={"web": web}), cfg.path)


# -- sessions ---------------------------------------------------------------------------
def test_a_copied_cookie_dies_at_logout_and_cannot_mint_a_token(web_config: Config) -> None:
    app = create_app(web_config)
    c = TestClient(app, base_url="http://127.0.0.1")
    assert _login(c, "op-a") == 303
    stolen = c.cookies.get("raccordo_session")
    assert stolen
    token_page = c.get("/token")
    csrf = csrf_of(token_page.text)
    c.post("/logout", data={"csrf_token": csrf_of(c.get("/schede").text)})
    thief = TestClient(app, base_url="http://127.0.0.1", cookies={"raccordo_session": stolen})
    r = thief.get("/schede", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = thief.post("/token", data={"csrf_token": csrf, "label": "x"}, follow_redirects=False)
    assert r.status_code in (303, 403)
    assert "rac_" not in r.text
    assert accounts.list_tokens(Registry.open(web_config.registry_url).engine, "ETS-A") == []


def test_password_change_and_disabling_end_sessions_at_once(
    login: Login, web_config: Config
) -> None:
    phone, desk = login("op-a"), login("op-a")
    assert phone.get("/schede", follow_redirects=False).status_code == 200
    r = desk.post(
        "/password",
        data={
            "csrf_token": csrf_of(desk.get("/password").text),
            "current": PASSWORD,
            "new": "una-password-nuova",
            "confirm": "una-password-nuova",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert phone.get("/schede", follow_redirects=False).status_code == 303  # signed out
    assert desk.get("/schede", follow_redirects=False).status_code == 200  # kept, renewed
    # A password set from the CLI ends the web sessions too.
    engine = Registry.open(web_config.registry_url).engine
    accounts.set_password(engine, "op-a", PASSWORD)
    assert desk.get("/schede", follow_redirects=False).status_code == 303
    # Disabling by the admin ends the user's session at the next request.
    op = login("op-b")
    admin = login("admin")
    (b,) = [u for u in accounts.list_users(engine) if u["username"] == "op-b"]
    r = admin.post(
        f"/admin/users/{b['id']}/stato",
        data={"csrf_token": csrf_of(admin.get("/admin").text), "active": "0"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert op.get("/schede", follow_redirects=False).status_code == 303
    assert "Utente disattivato." in admin.get("/admin").text


def test_admin_gives_a_temporary_password_shown_once(login: Login, web_config: Config) -> None:
    admin, op = login("admin"), login("op-b")
    engine = Registry.open(web_config.registry_url).engine
    (b,) = [u for u in accounts.list_users(engine) if u["username"] == "op-b"]
    r = admin.post(
        f"/admin/users/{b['id']}/password", data={"csrf_token": csrf_of(admin.get("/admin").text)}
    )
    m = re.search(r'<code id="temporary-password">([^<]+)</code>', r.text)
    assert m
    assert op.get("/schede", follow_redirects=False).status_code == 303
    fresh = TestClient(create_app(web_config), base_url="http://127.0.0.1")
    assert _login(fresh, "op-b", m.group(1)) == 303
    assert m.group(1) not in admin.get("/admin").text


# -- login limit ------------------------------------------------------------------------
def test_whitespace_and_case_variants_share_one_limit(web_config: Config) -> None:
    c = TestClient(create_app(web_config), base_url="http://127.0.0.1")
    for variant in ("op-a ", "\top-a", "OP-A"):  # login_attempts = 3 in the test workspace
        assert _login(c, variant, "wrong-password") == 401
    assert _login(c, " op-a\t") == 429
    assert _login(c, "op-a") == 429


def test_a_forged_forwarded_for_changes_nothing(web_config: Config) -> None:
    c = TestClient(create_app(web_config), base_url="http://127.0.0.1", client=("192.0.2.9", 1))
    for i in range(3):
        c.headers["X-Forwarded-For"] = f"198.51.100.{i}"
        assert _login(c, "op-a", "wrong-password") == 401
    c.headers["X-Forwarded-For"] = "198.51.100.77"
    assert _login(c, "op-a") == 429


def test_behind_a_trusted_proxy_the_attacker_cannot_lock_the_real_user_out(
    web_config: Config,
) -> None:
    cfg = _with_web(web_config, trusted_proxies=["10.0.0.0/8"])
    app = create_app(cfg)
    attacker = TestClient(
        app,
        base_url="http://127.0.0.1",
        client=("10.0.0.5", 1),
        headers={"X-Forwarded-For": "203.0.113.66"},
    )
    for _ in range(40):
        assert _login(attacker, "op-a", "wrong-password") in (401, 429)
    assert _login(attacker, "op-a") == 429
    user = TestClient(
        app,
        base_url="http://127.0.0.1",
        client=("10.0.0.5", 1),
        headers={"X-Forwarded-For": "203.0.113.10"},
    )
    assert _login(user, "op-a") == 303


def test_attempts_while_locked_do_not_extend_the_lock(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    limiter = LoginLimiter(store, attempts=3, window_s=60)
    for _ in range(3):
        limiter.failed("203.0.113.1", "banco")
    assert limiter.blocked("203.0.113.1", "banco ")
    assert not limiter.blocked("203.0.113.2", "banco")  # the real user elsewhere
    key = login_key("203.0.113.1", "banco")
    assert store.failures([key], 60)[key] == 3


def test_the_login_route_does_not_count_attempts_while_locked(web_config: Config) -> None:
    app = create_app(web_config)
    c = TestClient(app, base_url="http://127.0.0.1")
    for _ in range(10):
        _login(c, "op-a", "wrong-password")
    store: StateStore = app.state.web.store
    key = login_key("testclient", "op-a")
    assert store.failures([key], 3600)[key] == 3  # the lock ends a window after the 3rd


def test_client_address_reads_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = parse_networks(["10.0.0.0/8", "192.168.1.1"])
    assert client_address("203.0.113.5", "1.2.3.4", trusted) == "203.0.113.5"
    assert client_address("10.1.1.1", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("10.1.1.1", "6.6.6.6, 1.2.3.4, 192.168.1.1", trusted) == "1.2.3.4"
    assert client_address("10.1.1.1", "not-an-ip", trusted) == "10.1.1.1"


def test_the_store_is_shared_by_apps_on_the_same_workspace(web_config: Config) -> None:
    """Two apps (as two worker processes would) see the same sessions and limits."""
    one, two = create_app(web_config), create_app(web_config)
    a = TestClient(one, base_url="http://127.0.0.1")
    for _ in range(3):
        assert _login(a, "op-a", "wrong-password") == 401
    b = TestClient(two, base_url="http://127.0.0.1")
    assert _login(b, "op-a") == 429
    c = TestClient(one, base_url="http://127.0.0.1", client=("192.0.2.1", 1))
    assert _login(c, "op-b") == 303
    d = TestClient(two, base_url="http://127.0.0.1", cookies=dict(c.cookies))
    assert d.get("/schede", follow_redirects=False).status_code == 200


# -- body caps, bad input, leaks ----------------------------------------------------------
def _api_headers(op: TestClient) -> dict[str, str]:
    page = op.get("/token")
    r = op.post("/token", data={"csrf_token": csrf_of(page.text), "label": "t"})
    m = re.search(r'<code id="new-token">([^<]+)</code>', r.text)
    assert m
    return {"Authorization": f"Bearer {m.group(1)}", "Content-Type": "application/json"}


def test_every_route_has_a_body_cap(login: Login, app_client: TestClient) -> None:
    op = login("op-a")
    headers = _api_headers(op)
    big = b'{"identifier": "' + b"A" * 200_000 + b'"}'
    r = op.post("/api/v1/entries", content=big, headers=headers)
    assert r.status_code == 413 and len(r.content) < 1000
    # anonymous, no token: refused before anything reads it
    r = app_client.post(
        "/api/v1/entries", content=big, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    # sent chunked, without a Content-Length
    r = app_client.post(
        "/api/v1/entries",
        content=iter([b"{" + b" " * 50_000] * 4),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = app_client.post("/login", content=b"username=" + b"x" * 100_000)
    assert r.status_code == 413 and "troppo grande" in r.text


#: The start of a JSON body: the CF, then the comune.
_HEAD = '{"identifier_kind": "cf", "identifier": "%s", "comune_istat": "%s", '


@pytest.mark.parametrize(
    "body",
    [
        _HEAD + '"needs": ["food"], "birth_year": NaN}',
        _HEAD + '"needs": ["food"], "birth_year": Infinity}',
        _HEAD.replace('"%s", "comune', '"%s\\ud800", "comune') + '"needs": ["food"]}',
        _HEAD + '"needs": ["\\udfff"]}',
        _HEAD + '"needs": ["food"], "on": -Infinity}',
        _HEAD + '"needs": ["nope"]}',
        _HEAD + '"needs": ["food"], "%s": 1}',
        _HEAD.replace('"cf"', '"bogus"') + '"needs": ["food"]}',
    ],
)
def test_bad_json_is_a_422_that_echoes_no_identifier(
    body: str, login: Login, caplog: pytest.LogCaptureFixture
) -> None:
    op = login("op-a")
    headers = _api_headers(op)
    values = (CF_1, COMUNE, CF_2)[: body.count("%s")]
    caplog.set_level(logging.DEBUG)
    r = op.post("/api/v1/entries", content=(body % values).encode(), headers=headers)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list | str)
    for cf in (CF_1, CF_2):
        assert cf not in r.text
        assert cf not in caplog.text


def test_a_code_typed_as_user_name_is_not_stored(web_config: Config) -> None:
    c = TestClient(create_app(web_config), base_url="http://127.0.0.1")
    assert _login(c, CF_1, "wrong-password") == 401
    assert_no_leaks(scan_paths([web_config.base_dir], names=NAMES, values=[CF_1]))


def test_no_log_line_and_no_answer_holds_an_identifier(
    login: Login, web_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    op = login("op-a")
    headers = _api_headers(op)
    answers: list[str] = []
    for ident in (CF_1, CF_1.lower(), f" {CF_2} ", "STP0102061234567"):
        body = {
            "identifier_kind": "cf",
            "identifier": ident,
            "comune_istat": "999999",
            "needs": ["food"],
        }
        for path in ("/api/v1/entries",):
            answers.append(op.post(path, content=json.dumps(body), headers=headers).text)
    page = op.get("/schede/nuova")
    answers.append(
        op.post(
            "/schede",
            data={
                "csrf_token": csrf_of(page.text),
                "identifier_kind": "cf",
                "identifier": CF_1,
                "comune": "x",
            },
        ).text
    )
    text = "\n".join(answers) + caplog.text
    for value in (CF_1, CF_2, "STP0102061234567"):
        assert value.casefold() not in text.casefold()
    assert_no_leaks(
        scan_paths([web_config.base_dir], names=NAMES, values=[CF_1, CF_2, "STP0102061234567"])
    )


# -- pages ------------------------------------------------------------------------------
def test_errors_are_italian_pages_for_pages_and_json_for_the_api(
    login: Login, app_client: TestClient
) -> None:
    r = app_client.get("/non-esiste")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Pagina non trovata" in r.text and "Not Found" not in r.text
    op = login("op-a")
    r = op.get("/schede/999")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    r = op.get("/schede/abc")
    assert r.status_code == 422 and "Alcuni dati non sono validi" in r.text
    r = op.get("/cruscotto")
    assert r.status_code == 403 and "Accesso negato" in r.text
    r = app_client.get("/api/v1/entries/1")
    assert r.status_code == 401 and r.json()["detail"]
    r = app_client.get("/api/v1/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_delete_asks_for_confirmation_and_says_it_is_done(login: Login) -> None:
    from tests.web.conftest import entry_form

    op = login("op-a")
    op.post("/schede", data=entry_form(op))
    m = re.search(r'href="/schede/(\d+)"', op.get("/schede").text)
    assert m
    entry = m.group(1)
    detail = op.get(f"/schede/{entry}").text
    assert f'action="/schede/{entry}/elimina"' not in detail  # no one-click delete
    confirm = op.get(f"/schede/{entry}/elimina")
    assert confirm.status_code == 200 and "Sì, eliminala" in confirm.text
    r = op.post(f"/schede/{entry}/elimina", data={"csrf_token": csrf_of(confirm.text)})
    assert "Scheda eliminata." in r.text
    assert "Scheda eliminata." not in op.get("/schede").text  # shown once


def test_entry_list_is_paged_searched_counted_and_downloadable(
    login: Login, web_config: Config
) -> None:
    import datetime as dt

    from hub.demo.people import codice_fiscale
    from hub.web import intake
    from hub.web.state import build_state

    state = build_state(web_config)
    for i in range(262):
        cf = codice_fiscale(
            "Verdi", f"Anna{i}", dt.date(1950 + i % 40, 1 + i % 12, 1 + i % 28), "F", "F952"
        )
        entry = intake.EntryInput.model_validate(
            {
                "identifier_kind": "cf",
                "identifier": cf,
                "comune_istat": COMUNE,
                "needs": ["food"] if i % 2 else ["work"],
                "on": (dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat(),
            }
        )
        p = intake.prepare(
            entry, org="ETS-A", pseudonymiser=state.pseudonymiser, comuni=state.comuni
        )
        intake.store(state.engine, p, org="ETS-A", user_id=None)
    op = login("op-a")
    first = op.get("/schede").text
    assert "262 schede" in first and "Pagina 1 di 6" in first
    assert first.count('href="/schede/') - first.count('href="/schede/nuova"') == 50
    last = op.get("/schede?pagina=6").text
    assert last.count("<tr>") - 1 == 12
    food = op.get("/schede?bisogno=food").text
    assert "131 schede" in food
    since = op.get("/schede?dal=01/09/2026").text
    assert "schede" in since and "Scrivi le date" not in since
    tag = re.search(r"<code>([A-Z0-9]{3}-[A-Z0-9]{3})</code>", first)
    assert tag
    assert "1 scheda" in op.get(f"/schede?etichetta={tag.group(1)}").text
    csv_text = op.get("/schede.csv").text
    assert len(csv_text.strip().splitlines()) == 263
    assert "Verdi" not in csv_text
