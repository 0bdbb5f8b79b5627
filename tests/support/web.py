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


@contextlib.contextmanager
def served(cfg: Config, *, workers: int = 1, log: Path | None = None) -> Iterator[tuple[str, int]]:
    """``raccordo serve`` as a real process (several workers if asked); yields (URL, pid)."""
    import os
    import subprocess
    import sys

    import requests

    port = free_port()
    out = (log or cfg.base_dir / "server.log").open("ab")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "raccordo"),
            "serve",
            "--config",
            str(cfg.path),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the web app did not start")
            time.sleep(0.1)
        yield base, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        out.close()


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (Linux /proc)."""
    import os

    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def sign_in(session: object, base: str, username: str, password: str = PASSWORD) -> int:
    """Sign a ``requests.Session`` in; the status of the POST (303 when it worked)."""
    import re

    import requests

    assert isinstance(session, requests.Session)
    page = session.get(f"{base}/login", timeout=30)
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert m
    r = session.post(
        f"{base}/login",
        data={"username": username, "password": password, "csrf_token": m.group(1)},
        allow_redirects=False,
        timeout=60,
    )
    return r.status_code
