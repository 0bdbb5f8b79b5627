"""Shared fixtures: registries on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import glob
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.plugins import reset_plugins
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server per test session (per xdist worker). Never skipped.

    If the server binaries are missing they are installed first; when that or the server
    fails, every test using it fails with the reason.
    """
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        script = ROOT / "scripts" / "ensure-postgres.sh"
        res = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(
                f"PostgreSQL is needed and {script.name} could not install it:\n"
                f"{res.stdout}{res.stderr}",
                pytrace=False,
            )
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database: a SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.sqlite"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


@pytest.fixture(autouse=True)
def _fresh_plugins() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()
