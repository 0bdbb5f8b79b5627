"""hub.service.Hub: the one application service the CLI, Airflow and the demo call."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load_config
from hub.errors import KeyringError
from hub.registry import tables as t
from hub.service import Hub
from tests.support.workspace import make_workspace

SYNTHETIC = """
[organisations.SYN]
name = "Consorzio sintetico"
kind = "ente_gestore"

[connectors.syn]
type = "synthetic"
org = "SYN"
mapping = "synthetic.toml"
[connectors.syn.config]
count = 300
bad_ratio = 0.05
seed = 3
checkpoint_every = 100
"""


def test_check_sync_refresh_through_one_hub(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", SYNTHETIC)
    with Hub.open(ws / "raccordo.toml") as hub:
        assert hub.check("syn").ok
        (run,) = hub.sync("syn")
        assert run.status == "succeeded" and run.stream == "cases" and run.balanced
        assert run.read == 300 and run.loaded + run.quarantined == 300
        refreshed = hub.refresh()
        assert refreshed.tables > 0
        with hub.registry.engine.connect() as conn:
            stored = conn.execute(t.obs_tables.select()).all()
        assert len(stored) == refreshed.tables
        (again,) = hub.sync("syn")
        assert again.read == 0
    # A loaded configuration works the same.
    with Hub.open(load_config(ws / "raccordo.toml")) as hub:
        assert [r.id for r in hub.registry.runs()] == [again.id, run.id]


def test_opening_without_the_keyring_key_is_the_keyring_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", SYNTHETIC)
    (ws / "keys" / "keyring.key").unlink()
    with pytest.raises(KeyringError):
        Hub.open(ws / "raccordo.toml")
