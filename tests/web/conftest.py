"""Fixtures of the web app tests: a real workspace, the app, signed-in clients."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.config import Config
from hub.demo.people import codice_fiscale, with_wrong_check_character
from hub.web.app import create_app
from tests.support.web import PASSWORD, web_workspace

#: Fictitious but valid codici fiscali (generated with the official algorithm).
CF_1 = codice_fiscale("Rossi", "Maria", dt.date(1961, 3, 14), "F", "F952")
CF_2 = codice_fiscale("Bianchi", "Luca", dt.date(1990, 7, 2), "M", "B016")
CF_BAD = with_wrong_check_character(CF_1)
NAMES = ("Rossi", "Maria", "Bianchi", "Luca")
COMUNE = "003106"  # Novara


@pytest.fixture
def web_config(tmp_path: Path) -> Config:
    return web_workspace(tmp_path / "ws")


@pytest.fixture
def app_client(web_config: Config) -> Iterator[TestClient]:
    with TestClient(create_app(web_config), base_url="http://127.0.0.1") as c:
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF token"
    return m.group(1)


@pytest.fixture
def login(web_config: Config) -> Callable[[str], TestClient]:
    """A new client signed in as ``username`` (each its own cookie jar)."""
    clients: list[TestClient] = []
    app = create_app(web_config)

    def make(username: str) -> TestClient:
        c = TestClient(app, base_url="http://127.0.0.1")
        clients.append(c)
        page = c.get("/login")
        r = c.post(
            "/login",
            data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return c

    yield make  # type: ignore[misc]
    for c in clients:
        c.close()


def entry_form(client: TestClient, **fields: object) -> dict[str, object]:
    page = client.get("/schede/nuova")
    assert page.status_code == 200
    m = re.search(r'name="entry_id" value="([^"]+)"', page.text)
    assert m
    data: dict[str, object] = {
        "csrf_token": csrf_of(page.text),
        "entry_id": m.group(1),
        "identifier_kind": "cf",
        "identifier": CF_1,
        "comune": f"Novara ({COMUNE})",
        "needs": ["food", "housing"],
        "services_given": ["food_parcel"],
        "on": "2026-11-02",
        "referred": "0",
    }
    data.update(fields)
    return data
