"""``raccordo connectors list`` as IT staff see it: every plugin, failures explained, exit 0."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from hub.cli.connectors_list import list_connectors
from hub.plugins import reset_plugins
from tests.unit.test_plugins import FAKE_PLUGINS, fake_distribution


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by plugin name (first column); continuation lines of folded cells skipped."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) >= 6 and cells[0] and cells[0] != "plugin":
            rows[cells[0]] = cells
    return rows


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RACCORDO_PLUGINS", raising=False)
    reset_plugins()
    yield
    for name in FAKE_PLUGINS:
        sys.modules.pop(name, None)
    reset_plugins()


def test_list_in_process_shows_each_plugin_with_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(fake_distribution(tmp_path)))
    importlib.invalidate_caches()
    reset_plugins()
    console = Console(record=True, width=250, color_system=None)
    assert list_connectors(console) == 0
    text = console.export_text()
    rows = _rows(text)
    assert rows["synthetic"][1:4] == ["loaded", "synthetic", "connectors.synthetic"]
    assert rows["broken_plugin"][1] == "failed"
    assert rows["broken_plugin"][4] == "fakeplug 0.1"
    assert (
        "ImportError: this plugin needs a module that is not installed" in rows["broken_plugin"][5]
    )
    assert rows["old_plugin"][1] == "incompatible"
    assert rows["typo_plugin"][1] == "failed"
    assert rows["extra_plugin"][1:3] == ["loaded", "extra"]
    assert "extra: a third-party connector" in text
    assert "5 plugin(s) not loaded" in text  # broken, old, typo, raising, impostor
    assert "Traceback" not in text


def test_cli_lists_broken_plugins_and_exits_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RACCORDO_PLUGINS"}
    env.update(PYTHONPATH=str(fake_distribution(tmp_path)), COLUMNS="250")
    res = subprocess.run(
        [sys.executable, "-m", "hub", "connectors", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = _rows(res.stdout)
    assert rows["synthetic"][1] == "loaded"
    assert rows["broken_plugin"][1] == "failed"
    assert rows["old_plugin"][1] == "incompatible"
    assert rows["typo_plugin"][1] == "failed"
    assert "Traceback" not in res.stdout + res.stderr


def test_cli_with_every_plugin_disabled_still_answers(tmp_path: Path) -> None:
    env = {**os.environ, "RACCORDO_PLUGINS": "none_of_them", "COLUMNS": "250"}
    res = subprocess.run(
        [sys.executable, "-m", "hub", "connectors", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = _rows(res.stdout)
    assert rows["synthetic"][1] == "disabled"
    assert "No connector type is available." in res.stdout
