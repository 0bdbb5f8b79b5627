"""Plugins: built-ins come through entry points; broken plugins never break the host."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub import hookspecs
from hub.errors import ConfigError
from hub.plugins import get_plugins, reset_plugins

ROOT = Path(__file__).resolve().parents[2]

PLUGINS = {
    "broken_plugin": "raise ImportError('this plugin needs a module that is not installed')\n",
    "old_plugin": "RACCORDO_HOOK_API = 99\n",
    "typo_plugin": (
        "from hub import hookimpl\n\n"
        "@hookimpl\n"
        "def raccordo_register_conectors(register):\n"
        "    pass\n"
    ),
}


def _fake_distribution(root: Path) -> Path:
    """A distribution on sys.path declaring three bad plugins, as pip would install it."""
    for name, code in PLUGINS.items():
        (root / f"{name}.py").write_text(code)
    info = root / "badplugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: badplugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[raccordo.plugins]\n" + "".join(f"{n} = {n}\n" for n in PLUGINS)
    )
    return root


def test_builtin_connectors_come_through_entry_points() -> None:
    (syn,) = [p for p in get_plugins().plugins() if p.name == "synthetic"]
    assert syn.status == "loaded" and syn.connectors == ("synthetic",)
    assert syn.distribution == "raccordo"


def test_bad_plugins_are_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path)))
    importlib.invalidate_caches()
    reset_plugins()
    status = {p.name: p for p in get_plugins().plugins()}
    assert status["synthetic"].status == "loaded"
    assert status["broken_plugin"].status == "failed"
    assert "not installed" in (status["broken_plugin"].error or "")
    assert status["old_plugin"].status == "incompatible"
    assert status["typo_plugin"].status == "failed"
    assert "raccordo_register_conectors" in (status["typo_plugin"].error or "")
    assert "synthetic" in get_plugins().connectors()


def test_connectors_list_command_shows_failures_and_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(_fake_distribution(tmp_path)), "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, "-m", "hub", "connectors", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = {
        line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.count("│") > 3
    }
    assert "loaded" in lines["synthetic"]
    assert "failed" in lines["broken_plugin"] and "incompatible" in lines["old_plugin"]
    assert "failed" in lines["typo_plugin"]


def test_env_var_restricts_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RACCORDO_PLUGINS", "nothing_by_that_name")
    reset_plugins()
    assert get_plugins().connectors() == {}
    assert {p.status for p in get_plugins().plugins()} == {"disabled"}
    with pytest.raises(ConfigError, match="raccordo connectors list"):
        get_plugins().connector("synthetic")


def test_every_hook_is_documented_with_its_signature() -> None:
    doc = (ROOT / "docs" / "plugin_hooks.md").read_text()
    hooks = [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("raccordo_")
    ]
    assert hooks
    for name in hooks:
        assert re.search(rf"^## {name}$", doc, re.M), f"document {name} in docs/plugin_hooks.md"
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"{name}({params})" in doc, f"docs/plugin_hooks.md: signature of {name}"
