"""hub.orchestration: what the Airflow tasks and `raccordo connectors check` call."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.orchestration import (
    REFRESHERS,
    check,
    connection_overrides,
    cursor_shape,
    load_with_overrides,
    refresh,
    register_refresher,
    sync,
)
from tests.support.workspace import make_workspace

SYNTHETIC = """
[organisations.SYN]
name = "Consorzio sintetico"
kind = "ente_gestore"

[connectors.syn]
type = "synthetic"
org = "SYN"
mapping = "synthetic.toml"
queue = "syn-net"
[connectors.syn.config]
count = 300
bad_ratio = 0.05
seed = 3
checkpoint_every = 100
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws", SYNTHETIC) / "raccordo.toml"


def test_waas_connection_fields_become_base_url_and_token() -> None:
    full = connection_overrides(
        "siuss_waas", host="https://api.example.it/waas/v1/", password="s3cret"
    )
    assert full == {"base_url": "https://api.example.it/waas/v1", "token": "s3cret"}
    parts = connection_overrides(
        "siuss_waas", conn_type="http", host="127.0.0.1", port=8080, schema="waas/v1"
    )
    assert parts == {"base_url": "http://127.0.0.1:8080/waas/v1"}
    assert connection_overrides("siuss_waas", host="api.example.it")["base_url"] == (
        "https://api.example.it"
    )


def test_connection_extra_is_merged_for_every_connector_type() -> None:
    assert connection_overrides("csv_export", host="x", password="y", extra={"path": "a.csv"}) == {
        "path": "a.csv"
    }
    got = connection_overrides("siuss_waas", password="t", extra={"limit": 5, "token": "old"})
    assert got == {"limit": 5, "token": "t"}


def test_overrides_replace_settings_of_that_connector_only(cfg: Path) -> None:
    config = load_with_overrides(cfg, "syn", {"count": 7})
    assert config.connector("syn").config["count"] == 7
    assert config.connector("syn").config["seed"] == 3
    assert config.connector("syn").queue == "syn-net"
    with pytest.raises(ConfigError, match="no connector named 'nope'"):
        load_with_overrides(cfg, "nope", {})


def test_cursor_shape_keeps_numbers_and_sizes_never_text() -> None:
    state = {"since": 1700, "seen": ["flow-a", "flow-b"], "files": {"x.csv": "ab"}, "tag": "CF"}
    assert cursor_shape(state) == {"since": 1700, "seen": 2, "files": 1}


def test_check_sync_refresh_return_small_json_summaries(cfg: Path) -> None:
    assert check(cfg, "syn")["ok"] is True
    first = sync(cfg, "syn")
    json.dumps(first)  # XCom-ready
    [run] = first["runs"]
    assert run["status"] == "succeeded" and run["balanced"]
    assert run["read"] == 300 and run["loaded"] + run["quarantined"] == 300
    assert run["stream"] == "cases"
    assert first["cursor"] == {"cases": {"next": 300}}
    assert first["org"] == "SYN"
    second = sync(cfg, "syn", {"count": 350})  # resumes from the cursor
    [run2] = second["runs"]
    assert run2["read"] == 50 and run2["run_id"] > run["run_id"]
    result = refresh(cfg, "syn")
    assert result["connector"] == "syn"
    [label] = result["refreshed"]
    assert re.fullmatch(r"observatory: [1-9][0-9]* tables", label), label  # tables were stored


def test_refreshers_run_after_a_sync(cfg: Path) -> None:
    def touch(config: object, name: str) -> str:
        return f"touched {name}"

    register_refresher(touch)
    try:
        assert refresh(cfg, "syn")["refreshed"][-1] == "touched syn"
    finally:
        REFRESHERS.remove(touch)
