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
    """One real PostgreSQL server per test session (per xdist worker). Never skipped."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-postgres.sh")], check=True)
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database: SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.sqlite"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


@pytest.fixture(autouse=True)
def _fresh_plugins() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()
