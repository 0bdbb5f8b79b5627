"""The command line as an IT office meets it: real processes, readable errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RACCORDO = [sys.executable, "-m", "hub"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RACCORDO, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_help_lists_every_command() -> None:
    res = run("--help")
    assert res.returncode == 0
    for cmd in (
        "init",
        "connectors",
        "sync",
        "runs",
        "quarantine",
        "keys",
        "mappings",
        "report",
        "demo",
    ):
        assert cmd in res.stdout


def test_missing_config_is_exit_3_with_a_hint(tmp_path: Path) -> None:
    res = run("runs", cwd=tmp_path)
    assert res.returncode == 3
    assert "raccordo.toml" in res.stderr and "raccordo init" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    res = run("init", str(tmp_path / "ws"))
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "ws" / "raccordo.toml"
    cfg.write_text(cfg.read_text().replace("batch_size = 1000", "batch_sise = 1000"))
    res = run("sync", "--config", str(cfg))
    assert res.returncode == 3
    assert str(cfg) in res.stderr.replace("\n", "") and "hub.batch_sise" in res.stderr
    assert "Traceback" not in res.stderr
    cfg.write_text(
        cfg.read_text().replace("batch_sise = 1000", "batch_size = 1000")
        + '\n[connectors.x]\ntype = "synthetic"\norg = "NOBODY"\n'
    )
    res = run("sync", "--config", str(cfg))
    assert res.returncode == 3 and "organisations.NOBODY" in res.stderr


def test_init_keys_status_and_no_secret_printed(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "ws")).returncode == 0
    res = run("keys", "status", "--config", str(tmp_path / "ws" / "raccordo.toml"))
    assert res.returncode == 0 and "epoch 1" in res.stdout
    key = (tmp_path / "ws" / "keys" / "keyring.key").read_text().strip()
    assert key not in res.stdout
    assert oct((tmp_path / "ws" / "keys" / "keyring.key").stat().st_mode)[-3:] == "600"
    again = run("init", str(tmp_path / "ws"))
    assert again.returncode == 3 and "refusing to overwrite" in again.stderr


def test_locked_keyring_is_exit_5(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "ws")).returncode == 0
    (tmp_path / "ws" / "keys" / "keyring.key").unlink()
    res = run("sync", "--config", str(tmp_path / "ws" / "raccordo.toml"))
    assert res.returncode == 5 and "RACCORDO_KEYRING_KEY" in res.stderr


def test_mappings_validate(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[2] / "mappings" / "synthetic.toml"
    assert run("mappings", "validate", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'version = "1"\nname = "bad"\n[[records]]\nmodel = "subject"\n'
        '[records.fields]\nsubject = { type = "field" }\n'
    )
    res = run("mappings", "validate", str(bad))
    assert res.returncode == 6
    assert "records[0].fields.subject.source" in res.stdout.replace("\n", "")


def test_sync_prints_accounting_and_unknown_connector_is_an_error(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "ws")).returncode == 0
    cfg = tmp_path / "ws" / "raccordo.toml"
    cfg.write_text(
        cfg.read_text() + '\n[organisations.SYN]\nname = "S"\n'
        '[connectors.syn]\ntype = "synthetic"\norg = "SYN"\n'
        "[connectors.syn.config]\ncount = 300\n"
    )
    res = run("sync", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "read 300 = loaded" in res.stdout
    res = run("sync", "nope", "--config", str(cfg))
    assert res.returncode == 3 and "configured: syn" in res.stderr
    res = run("runs", "--json", "--config", str(cfg))
    assert '"balanced": true' in res.stdout
    # A misspelt connector type names the file and the table to fix.
    cfg.write_text(cfg.read_text().replace('type = "synthetic"', 'type = "synthetik"'))
    res = run("sync", "--config", str(cfg))
    assert res.returncode == 7, res.stderr  # the connector could not sync
    err = " ".join(res.stderr.split())
    assert "no connector type 'synthetik'" in err and "[connectors.syn] type" in err
    assert "Traceback" not in res.stderr
