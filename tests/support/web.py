"""A real web app on a real workspace: config, keyring, registry, accounts, live server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from hub.config import Config, load_config
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry
from hub.web import accounts
from hub.web.app import create_app
from tests.support.workspace import make_workspace

PASSWORD = "password-di-prova"
ORGS = """
[organisations.CISS]
name = "Consorzio di prova"
kind = "ente_gestore"

[organisations.ETS-A]
name = "Associazione A"
kind = "ets"

[organisations.ETS-B]
name = "Associazione B"
kind = "ets"

[organisations.UDP]
name = "Ufficio di Piano"
kind = "district"

[web]
cookie_secure = false
login_attempts = 3

[connectors.intake]
type = "ets_form"
org = "UDP"
[connectors.intake.config]
database_url = "sqlite:///registry.sqlite"
"""
#: (username, role, org)
USERS = (
    ("admin", "admin", None),
    ("analista", "analyst", None),
    ("op-a", "ets", "ETS-A"),
    ("op-b", "ets", "ETS-B"),
)


def web_workspace(directory: Path) -> Config:
    """A workspace with two ETS, a consortium, the intake connector and one user per role."""
    make_workspace(directory, ORGS)
    cfg = load_config(directory / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    Pipeline(cfg, reg, open_keyring(cfg))  # registers the organisations
    for username, role, org in USERS:
        accounts.create_user(reg.engine, username, PASSWORD, role, org)
    reg.close()
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(cfg: Config) -> Iterator[str]:
    """Serve the app with uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
