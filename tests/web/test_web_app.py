"""The Third Sector web app through HTTP: roles, isolation between ETS, form, CSV, API."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hub.config import Config
from hub.pipeline import Pipeline, open_keyring
from hub.pseudonyms.pseudonymiser import pseudonym_text
from hub.registry import Registry
from hub.registry import tables as t
from hub.web.app import create_app
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.web import PASSWORD
from tests.web.conftest import CF_1, CF_2, CF_BAD, COMUNE, NAMES, csrf_of, entry_form

Login = Callable[[str], TestClient]

#: Every page route and who may use it. test_every_route_is_in_the_matrix keeps it whole.
MATRIX: list[tuple[str, str, set[str]]] = [
    ("GET", "/schede", {"ets"}),
    ("GET", "/schede/nuova", {"ets"}),
    ("POST", "/schede", {"ets"}),
    ("GET", "/schede/{entry_id}", {"ets"}),
    ("POST", "/schede/{entry_id}/elimina", {"ets"}),
    ("GET", "/schede/{entry_id}/modifica", {"ets"}),
    ("POST", "/schede/{entry_id}/modifica", {"ets"}),
    ("GET", "/restituzione", {"ets"}),
    ("GET", "/caricamento", {"ets"}),
    ("GET", "/caricamento/modello.csv", {"ets"}),
    ("POST", "/caricamento", {"ets"}),
    ("GET", "/token", {"ets"}),
    ("POST", "/token", {"ets"}),
    ("POST", "/token/{token_id}/revoca", {"ets"}),
    ("GET", "/admin", {"admin"}),
    ("POST", "/admin/organisations", {"admin"}),
    ("POST", "/admin/users", {"admin"}),
    ("POST", "/admin/users/{user_id}/stato", {"admin"}),
    ("GET", "/cruscotto", {"analyst", "admin"}),
    ("GET", "/password", {"ets", "analyst", "admin"}),
    ("POST", "/password", {"ets", "analyst", "admin"}),
    ("GET", "/schede.csv", {"ets"}),
    ("GET", "/schede/{entry_id}/elimina", {"ets"}),
    ("GET", "/caricamento/{job}", {"ets"}),
    ("POST", "/admin/organisations/{code}", {"admin"}),
    ("POST", "/admin/users/{user_id}", {"admin"}),
    ("POST", "/admin/users/{user_id}/password", {"admin"}),
    ("GET", "/cruscotto/tabella/{table_id}.csv", {"analyst", "admin"}),
    ("GET", "/cruscotto/scambi", {"analyst", "admin"}),
    ("GET", "/admin/convenzioni", {"admin"}),
]
PUBLIC = {"/", "/login", "/logout", "/healthz", "/static"}
ROLE_USER = {"admin": "admin", "analyst": "analista", "ets": "op-a"}


def _engine(cfg: Config) -> sa.Engine:
    return Registry.open(cfg.registry_url).engine


def _entries(cfg: Config) -> list[sa.Row[tuple[object, ...]]]:
    with _engine(cfg).connect() as conn:
        return list(conn.execute(sa.select(t.ets_entries)).all())


def test_every_route_is_in_the_matrix(web_config: Config) -> None:
    app = create_app(web_config)
    listed = {(m, p) for m, p, _ in MATRIX}
    missing = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/api/") or path in PUBLIC or path.startswith("/static"):
            continue
        for method in getattr(route, "methods", set()) - {"HEAD"}:
            if (method, path) not in listed:
                missing.append(f"{method} {path}")
    assert not missing, f"add these routes to MATRIX with their roles: {missing}"


@pytest.mark.parametrize(("method", "path", "allowed"), MATRIX)
def test_roles_on_every_route(
    method: str, path: str, allowed: set[str], login: Login, app_client: TestClient
) -> None:
    url = (
        path.replace("{entry_id}", "1")
        .replace("{token_id}", "1")
        .replace("{user_id}", "1")
        .replace("{job}", "x")
        .replace("{code}", "ETS-A")
        .replace("{table_id}", "prese_in_carico")
    )
    # Anonymous: sent to the login page, never served.
    r = app_client.request(method, url, follow_redirects=False)
    assert r.status_code in (303, 403), (method, url, r.status_code)
    if r.status_code == 303:
        assert r.headers["location"] == "/login"
    for role, username in ROLE_USER.items():
        client = login(username)
        token = csrf_of(client.get("/login").text)
        data = {"csrf_token": token} if method == "POST" else None
        r = client.request(method, url, data=data, follow_redirects=False)
        if role in allowed:
            assert r.status_code != 403, (role, method, url)
            assert r.headers.get("location") != "/login"
        else:
            assert r.status_code == 403, (role, method, url, r.status_code)


def test_form_entry_is_pseudonymised_listed_and_never_echoed(
    login: Login, web_config: Config, tmp_path: Path
) -> None:
    op = login("op-a")
    r = op.post("/schede", data=entry_form(op), follow_redirects=False)
    assert r.status_code == 303
    listing = op.get("/schede").text
    rows = _entries(web_config)
    assert len(rows) == 1
    row = rows[0]
    assert row.org == "ETS-A" and row.identifier_kind == "cf"
    assert row.birth_year == 1961 and row.sex == "F"  # derived from the CF, then discarded
    assert row.subject and CF_1 not in row.subject
    assert row.tag and row.tag in listing
    assert CF_1 not in listing and "Alimentare" in listing
    # Sending the same form again (double click, retry) stores nothing new.
    op.post("/schede", data=entry_form(op, entry_id=row.entry_uuid))
    assert len(_entries(web_config)) == 1
    leaks = scan_paths([web_config.base_dir], names=NAMES, values=[CF_1])
    leaks += scan_database(web_config.registry_url, names=NAMES, values=[CF_1])
    assert_no_leaks(leaks)


def test_wrong_check_character_gets_a_plain_message_and_stores_nothing(
    login: Login, web_config: Config
) -> None:
    op = login("op-a")
    r = op.post("/schede", data=entry_form(op, identifier=CF_BAD))
    assert r.status_code == 422
    assert "ultimo carattere (di controllo) non corrisponde" in r.text
    assert CF_BAD not in r.text  # the identifier is never written back into the page
    assert _entries(web_config) == []


def test_form_problems_name_the_field(login: Login, web_config: Config) -> None:
    op = login("op-a")
    r = op.post("/schede", data=entry_form(op, needs=[], comune="Milano"))
    assert r.status_code == 422
    assert "Seleziona almeno un bisogno." in r.text
    assert "Scegli dall&#39;elenco un comune del distretto." in r.text
    r = op.post("/schede", data=entry_form(op, on="2099-01-01"))
    assert "non futura" in r.text
    assert _entries(web_config) == []


def test_anonymous_and_stp_contacts_count(login: Login, web_config: Config) -> None:
    op = login("op-a")
    op.post(
        "/schede",
        data=entry_form(op, identifier_kind="none", identifier="", birth_year="1950", sex="M"),
    )
    op.post(
        "/schede", data=entry_form(op, identifier_kind="stp_eni", identifier="STP0102061234567")
    )
    rows = sorted(_entries(web_config), key=lambda r: r.identifier_kind)
    assert [r.identifier_kind for r in rows] == ["none", "stp_eni"]
    assert rows[0].subject is None and rows[0].birth_year == 1950
    assert rows[1].subject is not None


def test_an_ets_cannot_reach_another_ets_entries(login: Login, web_config: Config) -> None:
    a, b = login("op-a"), login("op-b")
    a.post("/schede", data=entry_form(a))
    (row,) = _entries(web_config)
    assert a.get(f"/schede/{row.id}").status_code == 200
    assert b.get(f"/schede/{row.id}").status_code == 404
    assert row.tag not in b.get("/schede").text
    token = csrf_of(b.get("/schede").text)
    r = b.post(f"/schede/{row.id}/elimina", data={"csrf_token": token})
    assert r.status_code == 404
    (still,) = _entries(web_config)
    assert not still.deleted
    # Through the API with B's token: not found either.
    tok_b = _token(b)
    headers = {"Authorization": f"Bearer {tok_b}"}
    r = b.get(f"/api/v1/entries/{row.id}", headers=headers)
    assert r.status_code == 404, r.text
    assert b.delete(f"/api/v1/entries/{row.id}", headers=headers).status_code == 404
    assert b.get("/api/v1/entries", headers=headers).json() == []
    assert not _entries(web_config)[0].deleted


def test_csrf_is_required_on_every_form(login: Login, web_config: Config) -> None:
    op = login("op-a")
    data = entry_form(op)
    data["csrf_token"] = "forged"
    r = op.post("/schede", data=data)
    assert r.status_code == 403
    assert _entries(web_config) == []


def test_login_is_rate_limited_and_cookies_are_safe(web_config: Config, tmp_path: Path) -> None:
    c = TestClient(create_app(web_config), base_url="http://127.0.0.1")
    cookie = c.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    for _ in range(3):
        page = c.get("/login")
        r = c.post(
            "/login",
            data={
                "username": "op-a",
                "password": "wrong-password",
                "csrf_token": csrf_of(page.text),
            },
        )
        assert r.status_code == 401
        assert "Nome utente o password errati." in r.text
    page = c.get("/login")
    r = c.post(
        "/login", data={"username": "op-a", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 429
    assert "Troppi tentativi falliti" in r.text
    # With the production default (cookie_secure = true) the cookie is Secure.
    secure = web_config.settings.model_copy(
        update={"web": web_config.settings.web.model_copy(update={"cookie_secure": True})}
    )
    cfg2 = Config(secure, web_config.path)
    c2 = TestClient(create_app(cfg2), base_url="https://127.0.0.1")
    assert "secure" in c2.get("/login").headers["set-cookie"].lower()


def test_passwords_are_argon2_hashes(web_config: Config) -> None:
    with _engine(web_config).connect() as conn:
        hashes = conn.execute(sa.select(t.web_users.c.password_hash)).scalars().all()
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)


def _token(client: TestClient) -> str:
    page = client.get("/token")
    r = client.post("/token", data={"csrf_token": csrf_of(page.text), "label": "gestionale"})
    m = re.search(r'<code id="new-token">([^<]+)</code>', r.text)
    assert m, "the new token is shown once"
    return m.group(1)


def test_api_entries_with_an_organisation_token(login: Login, web_config: Config) -> None:
    op = login("op-a")
    headers = {"Authorization": f"Bearer {_token(op)}"}
    body = {
        "entry_id": "1f0e4c1a-0000-4000-8000-000000000001",
        "identifier_kind": "cf",
        "identifier": CF_2,
        "comune_istat": COMUNE,
        "needs": ["work"],
        "services_given": ["job_orientation"],
        "on": "2026-10-01",
    }
    r = op.post("/api/v1/entries", json=body, headers=headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["created"] is True and created["tag"]
    again = op.post("/api/v1/entries", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == created["id"]
    listed = op.get("/api/v1/entries", headers=headers).json()
    assert [e["id"] for e in listed] == [created["id"]]
    assert CF_2 not in str(listed) and "identifier" not in listed[0]
    bad = op.post(
        "/api/v1/entries", json={**body, "entry_id": None, "identifier": CF_BAD}, headers=headers
    )
    assert bad.status_code == 422 and "check character" in bad.json()["detail"]
    assert op.get("/api/v1/entries").status_code == 401
    assert op.get("/api/v1/entries", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert op.delete(f"/api/v1/entries/{created['id']}", headers=headers).status_code == 204
    assert op.get("/api/v1/entries", headers=headers).json() == []


def test_a_revoked_token_stops_submissions_at_once(login: Login, web_config: Config) -> None:
    """The submission route remembers which organisation a token belongs to (no query
    per request): the revocation must still refuse the very next submission."""
    op = login("op-a")
    headers = {"Authorization": f"Bearer {_token(op)}"}
    body = {"identifier_kind": "none", "comune_istat": COMUNE, "needs": ["food"]}
    body |= {"birth_year": 1970, "sex": "F"}
    assert op.post("/api/v1/entries", json=body, headers=headers).status_code == 201
    page = op.get("/token")
    (token_id,) = re.findall(r'action="/token/(\d+)/revoca"', page.text)
    revoked = op.post(f"/token/{token_id}/revoca", data={"csrf_token": csrf_of(page.text)})
    assert revoked.status_code == 200, revoked.text
    r = op.post("/api/v1/entries", json=body, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert op.get("/api/v1/entries", headers=headers).status_code == 401
    with _engine(web_config).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.ets_entries)).scalar() == 1


def upload_and_wait(client: TestClient, content: bytes, timeout: float = 90) -> str:
    """Upload a CSV file and wait for its background job; the job page's final text."""
    page = client.get("/caricamento")
    r = client.post(
        "/caricamento",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": ("schede.csv", content, "text/csv")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    job = r.headers["location"]
    deadline = time.monotonic() + timeout
    while True:
        text = client.get(job).text
        if 'id="upload-progress"' not in text:
            assert 'id="upload-summary"' in text
            return text
        assert time.monotonic() < deadline, "the upload job did not finish"
        time.sleep(0.2)


def test_csv_upload_reports_each_row_and_never_duplicates(login: Login, web_config: Config) -> None:
    op = login("op-a")
    template = op.get("/caricamento/modello.csv")
    assert template.status_code == 200
    header = template.text.splitlines()[0]
    # Italian column labels and values in the template; no internal field names.
    assert header.lstrip("\ufeff").startswith("Tipo identificativo;Identificativo;Comune;Bisogni")
    assert "food" not in template.text and "none" not in template.text
    content = "\n".join(
        [
            header,
            f"cf;{CF_1};{COMUNE};food|housing;food_parcel;2026-10-03;0;;",
            f"cf;{CF_BAD};{COMUNE};food;;2026-10-03;0;;",
            f"none;;{COMUNE};;clothing;2026-10-03;0;1970;F",
            "none;;999999;food;;2026-10-03;1;1970;F",
            # Italian labels, a comune by name and a dd/mm/yyyy date are understood
            "nessuno;;Novara;Alimentare|Abitativo;Pacco alimentare;20/11/2026;sì;1975;M",
        ]
    ).encode("utf-8")

    def upload() -> str:
        return upload_and_wait(op, content)

    report = upload()
    assert "2 righe salvate, 3 rifiutate." in report
    assert "ultimo carattere (di controllo)" in report  # line 3
    assert "«Bisogni»: scrivi uno o più tra" in report  # line 4
    assert "Il comune non è tra quelli del distretto." in report  # line 5
    assert CF_BAD not in report and CF_1 not in report
    again = upload()
    assert "già caricata" in again
    assert len(_entries(web_config)) == 2


def test_entries_reach_the_registry_through_the_ets_form_connector(
    login: Login, web_config: Config
) -> None:
    a, b = login("op-a"), login("op-b")
    a.post("/schede", data=entry_form(a))
    a.post("/schede", data=entry_form(a, identifier=CF_2, needs=["work"]))
    b.post(
        "/schede",
        data=entry_form(b, identifier_kind="none", identifier="", birth_year="1980", sex="F"),
    )
    reg = Registry.open(web_config.registry_url)
    pipeline = Pipeline(web_config, reg, open_keyring(web_config))
    (run,) = pipeline.sync("intake")
    assert (run.read, run.loaded, run.quarantined) == (3, 3, 0)
    with reg.engine.connect() as conn:
        ns, ps = t.need_signals, t.pseudonyms
        signals = [
            (org, needs, None if raw is None else pseudonym_text(epoch, bytes(raw)))
            for org, needs, epoch, raw in conn.execute(
                sa.select(ns.c.org, ns.c.needs, ps.c.epoch, ps.c.value).select_from(
                    ns.outerjoin(ps, ps.c.id == ns.c.subject)
                )
            )
        ]
        subjects = dict(conn.execute(sa.select(t.ets_entries.c.id, t.ets_entries.c.subject)).all())
    assert sorted(s[0] for s in signals) == ["ETS-A", "ETS-A", "ETS-B"]
    assert {s[2] for s in signals} == set(subjects.values())
    # Deleting an entry removes its need signal at the next sync; nothing is read twice.
    first = min(subjects)
    page = a.get(f"/schede/{first}")
    a.post(f"/schede/{first}/elimina", data={"csrf_token": csrf_of(page.text)})
    (run2,) = pipeline.sync("intake")
    assert (run2.read, run2.loaded) == (1, 1)
    with reg.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.need_signals)).scalar() == 2
    (run3,) = pipeline.sync("intake")
    assert run3.read == 0
    reg.close()


def test_restituzione_suppresses_small_cells(login: Login, web_config: Config) -> None:
    op = login("op-a")
    for cf in (CF_1, CF_2):
        op.post("/schede", data=entry_form(op, identifier=cf))
    page = op.get("/restituzione").text
    assert 'id="n-entries">2<' in page
    assert "&lt;5" in page  # two people: below k, shown as suppressed, not as 2
    assert "Novara" in page


def test_admin_creates_organisations_and_users(login: Login, web_config: Config) -> None:
    admin = login("admin")
    token = csrf_of(admin.get("/admin").text)
    r = admin.post(
        "/admin/organisations",
        data={"csrf_token": token, "code": "ETS-C", "name": "Associazione C", "kind": "ets"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = admin.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "username": "op-c",
            "password": "corta",
            "role": "ets",
            "org": "ETS-C",
        },
    )
    assert r.status_code == 422 and "almeno 10 caratteri" in r.text
    r = admin.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "username": "op-c",
            "password": PASSWORD,
            "role": "ets",
            "org": "ETS-C",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    c = login("op-c")
    assert c.get("/schede").status_code == 200


def test_an_entry_is_changed_by_its_organisation_only(login: Login, web_config: Config) -> None:
    a, b = login("op-a"), login("op-b")
    a.post("/schede", data=entry_form(a))
    (row,) = _entries(web_config)
    page = a.get(f"/schede/{row.id}/modifica")
    assert page.status_code == 200 and row.tag in page.text and CF_1 not in page.text
    assert b.get(f"/schede/{row.id}/modifica").status_code == 404
    forged = {
        "csrf_token": csrf_of(b.get("/schede").text),
        "identifier_kind": "keep",
        "comune": f"Novara ({COMUNE})",
        "needs": ["work"],
        "on": "2026-11-03",
    }
    assert b.post(f"/schede/{row.id}/modifica", data=forged).status_code == 404
    # The same person, other needs: pseudonym and derived data kept, seq moves on.
    data = {
        "csrf_token": csrf_of(page.text),
        "identifier_kind": "keep",
        "comune": f"Novara ({COMUNE})",
        "needs": ["work", "health"],
        "on": "2026-11-03",
        "referred": "1",
    }
    r = a.post(f"/schede/{row.id}/modifica", data=data, follow_redirects=False)
    assert r.status_code == 303
    (changed,) = _entries(web_config)
    assert changed.needs == "health|work" and changed.referred_by_social_services
    assert (changed.subject, changed.tag, changed.birth_year) == (row.subject, row.tag, 1961)
    assert changed.seq > row.seq
    # Another person: a new code replaces the pseudonym.
    data2 = {
        **data,
        "csrf_token": csrf_of(a.get(f"/schede/{row.id}/modifica").text),
        "identifier_kind": "cf",
        "identifier": CF_2,
    }
    a.post(f"/schede/{row.id}/modifica", data=data2)
    (other,) = _entries(web_config)
    assert other.subject != row.subject and other.birth_year == 1990


def test_restituzione_goes_through_the_observatory_ledger(login: Login, web_config: Config) -> None:
    import json

    op = login("op-a")
    for cf in (CF_1, CF_2):
        op.post("/schede", data=entry_form(op, identifier=cf))
    op.get("/restituzione")
    ledger = json.loads(web_config.ledger_path.read_text(encoding="utf-8"))
    labels = [r["label"] for r in ledger["releases"]]
    assert labels == ["restituzione ETS-A tutto"]
    # the suppressed cells are recorded as such (withheld), their true values kept
    assert any("schede_ets|comune=003106|org=ETS-A" in k for k in ledger["values"])
    op.get("/restituzione")  # nothing new to tell: nothing recorded
    again = json.loads(web_config.ledger_path.read_text(encoding="utf-8"))
    assert len(again["releases"]) == 1
