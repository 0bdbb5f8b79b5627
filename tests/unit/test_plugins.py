"""Plugins: built-ins come through entry points; broken plugins never break the host."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.plugins import get_plugins, reset_plugins

#: Modules of a fake third-party distribution, as pip would install them.
FAKE_PLUGINS = {
    # fails at import
    "broken_plugin": "raise ImportError('this plugin needs a module that is not installed')\n",
    # written for a hook API this Raccordo does not know
    "old_plugin": "RACCORDO_HOOK_API = 99\n",
    # a misspelt hook next to a good one: nothing of it may stay registered
    "typo_plugin": (
        "from hub import hookimpl\n"
        "from hub.connector import Connector\n\n"
        "class Typo(Connector):\n"
        "    name = 'typo_connector'\n"
        "    summary = 'never available'\n\n"
        "@hookimpl\n"
        "def raccordo_register_connectors(register):\n"
        "    register(Typo)\n\n"
        "@hookimpl\n"
        "def raccordo_register_conectors(register):\n"
        "    pass\n"
    ),
    # sorts before the built-ins and claims the name of one of them
    "aaa_impostor": (
        "from hub import hookimpl\n"
        "from hub.connector import Connector\n\n"
        "class Impostor(Connector):\n"
        "    name = 'synthetic'\n"
        "    summary = 'not the real one'\n\n"
        "@hookimpl\n"
        "def raccordo_register_connectors(register):\n"
        "    register(Impostor)\n"
    ),
    # its hook raises, with a multi-line message
    "raising_plugin": (
        "from hub import hookimpl\n\n"
        "@hookimpl\n"
        "def raccordo_register_connectors(register):\n"
        "    raise RuntimeError('licence server unreachable\\nsecond line')\n"
    ),
    # a well-behaved third-party plugin with a connector and a mapping folder
    "extra_plugin": (
        "from pathlib import Path\n"
        "from hub import hookimpl\n"
        "from hub.connector import Connector\n\n"
        "RACCORDO_HOOK_API = 1\n\n"
        "class Extra(Connector):\n"
        "    name = 'extra'\n"
        "    summary = 'a third-party connector'\n\n"
        "@hookimpl\n"
        "def raccordo_register_connectors(register):\n"
        "    register(Extra)\n\n"
        "@hookimpl\n"
        "def raccordo_register_mapping_dirs(register):\n"
        "    register(Path(__file__).parent / 'extra_mappings')\n"
    ),
}


def fake_distribution(root: Path) -> Path:
    """Write the FAKE_PLUGINS distribution (dist-info + modules) into ``root``."""
    for name, code in FAKE_PLUGINS.items():
        (root / f"{name}.py").write_text(code)
    (root / "extra_mappings").mkdir()
    info = root / "fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[raccordo.plugins]\n" + "".join(f"{n} = {n}\n" for n in FAKE_PLUGINS)
    )
    return root


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RACCORDO_PLUGINS", raising=False)
    reset_plugins()
    yield
    for name in FAKE_PLUGINS:
        sys.modules.pop(name, None)
    reset_plugins()


@pytest.fixture
def installed_fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(fake_distribution(tmp_path)))
    importlib.invalidate_caches()
    reset_plugins()
    return tmp_path


def test_builtin_connectors_come_through_entry_points() -> None:
    (syn,) = [p for p in get_plugins().plugins() if p.name == "synthetic"]
    assert syn.status == "loaded" and syn.connectors == ("synthetic",)
    assert (syn.module, syn.distribution) == ("connectors.synthetic", "raccordo")
    from connectors.synthetic import SyntheticConnector

    assert get_plugins().connector("synthetic") is SyntheticConnector


def test_bad_plugins_are_reported_not_fatal(installed_fakes: Path) -> None:
    status = {p.name: p for p in get_plugins().plugins()}
    assert status["synthetic"].status == "loaded"
    broken = status["broken_plugin"]
    assert (broken.status, broken.distribution, broken.version) == ("failed", "fakeplug", "0.1")
    assert broken.error == (
        "import failed: ImportError: this plugin needs a module that is not installed"
    )
    assert status["old_plugin"].status == "incompatible"
    assert "99" in (status["old_plugin"].error or "")
    assert status["typo_plugin"].status == "failed"
    assert "raccordo_register_conectors" in (status["typo_plugin"].error or "")
    assert status["raising_plugin"].status == "failed"
    assert status["raising_plugin"].error == (
        "RuntimeError: licence server unreachable second line"
    )
    for info in status.values():
        assert info.error is None or "\n" not in info.error


def test_a_misspelt_hook_undoes_the_whole_plugin(installed_fakes: Path) -> None:
    assert "typo_connector" not in get_plugins().connectors()
    (typo,) = [p for p in get_plugins().plugins() if p.name == "typo_plugin"]
    assert typo.connectors == ()


def test_a_plugin_cannot_take_the_name_of_a_builtin_connector(installed_fakes: Path) -> None:
    from connectors.synthetic import SyntheticConnector

    status = {p.name: p for p in get_plugins().plugins()}
    impostor = status["aaa_impostor"]
    assert impostor.status == "failed"
    assert impostor.error == (
        "connector type 'synthetic' is already provided by plugin 'synthetic'"
    )
    assert get_plugins().connector("synthetic") is SyntheticConnector


def test_a_good_third_party_plugin_loads_next_to_the_broken_ones(installed_fakes: Path) -> None:
    (extra,) = [p for p in get_plugins().plugins() if p.name == "extra_plugin"]
    assert (extra.status, extra.connectors, extra.error) == ("loaded", ("extra",), None)
    assert get_plugins().connector("extra").summary == "a third-party connector"
    assert installed_fakes / "extra_mappings" in get_plugins().mapping_dirs()


def test_env_var_restricts_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RACCORDO_PLUGINS", "synthetic")
    reset_plugins()
    assert list(get_plugins().connectors()) == ["synthetic"]
    others = [p for p in get_plugins().plugins() if p.name != "synthetic"]
    assert others and {p.status for p in others} == {"disabled"}
    with pytest.raises(ConfigError, match="raccordo connectors list"):
        get_plugins().connector("csv_export")


def test_env_var_naming_a_plugin_that_is_not_installed_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RACCORDO_PLUGINS", "synthtic")
    reset_plugins()
    assert get_plugins().connectors() == {}
    (typo,) = [p for p in get_plugins().plugins() if p.name == "synthtic"]
    assert typo.status == "failed" and "RACCORDO_PLUGINS" in (typo.error or "")


def test_unknown_connector_type_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as e:
        get_plugins().connector("siuss_filez", where="raccordo.toml [connectors.x].type")
    text = str(e.value)
    assert "'siuss_filez'" in text and "synthetic" in text and "siuss_files" in text
    assert text.startswith("raccordo.toml [connectors.x].type: ")
    assert "raccordo connectors list" in text


def test_plugins_load_lazily_not_when_hub_is_imported() -> None:
    code = (
        "import sys, hub, hub.plugins, hub.connector\n"
        "print('connectors.synthetic' in sys.modules)\n"
        "hub.plugins.get_plugins().connectors()\n"
        "print('connectors.synthetic' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RACCORDO_PLUGINS"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "True"]
