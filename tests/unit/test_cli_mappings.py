"""``raccordo mappings validate|schema`` as a person runs them before a sync."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.mappings import app
from hub.mappings import mapping_json_schema

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC = ROOT / "mappings" / "synthetic.toml"
BAD = """version = "1"
name = "bad"
[[records]]
model = "case_episode"
[records.fields]
subject = { type = "field", source = "cf" }
area = { type = "const", value = "ANZIANI" }
opened_on = { type = "date", source = "opened", formats = ["%d/%m/%Q"] }
"""

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mappings").mkdir()
    shutil.copy(SYNTHETIC, tmp_path / "mappings" / "synthetic.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_validate_without_arguments_checks_the_mappings_folder(workspace: Path) -> None:
    res = runner.invoke(app, ["validate"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("OK synthetic 2026.1 (4 records)")
    assert "mappings/synthetic.toml" in res.stdout


def test_an_invalid_file_is_exit_6_with_each_error_located(workspace: Path) -> None:
    (workspace / "mappings" / "bad.toml").write_text(BAD)
    res = runner.invoke(app, ["validate"])
    assert res.exit_code == 6
    lines = res.stdout.splitlines()
    assert lines[0] == "INVALID mappings/bad.toml: invalid mapping file"
    assert lines[1].startswith("  - records[0].fields.opened_on.formats: format '%d/%m/%Q' uses %Q")
    assert lines[-1] == "OK synthetic 2026.1 (4 records)  mappings/synthetic.toml"
    assert "1 of 2 mapping files invalid." in res.stderr
    # Once the syntax is right, the check against the schema reports the constant.
    (workspace / "mappings" / "bad.toml").write_text(BAD.replace("%Q", "%Y"))
    res = runner.invoke(app, ["validate", "mappings/bad.toml"])
    assert res.exit_code == 6
    assert res.stdout.splitlines()[1].startswith(
        "  - records[0].fields.area.value: not valid for case_episode.area: Input should be 'FAM'"
    )


def test_files_and_folders_as_arguments(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(SYNTHETIC, other / "a.toml")
    res = runner.invoke(app, ["validate", str(other), "mappings/synthetic.toml"])
    assert res.exit_code == 0
    assert len(res.stdout.splitlines()) == 2


def test_syntax_errors_show_line_and_column(workspace: Path) -> None:
    (workspace / "broken.toml").write_text('version = "1"\nname = \n')
    res = runner.invoke(app, ["validate", "broken.toml"])
    assert res.exit_code == 6
    assert "INVALID broken.toml: not valid TOML" in res.stdout
    assert "line 2, column 8" in res.stdout


def test_missing_file_and_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["validate"])
    assert res.exit_code == 6 and "No mapping files found in ./mappings" in res.stderr
    res = runner.invoke(app, ["validate", "nope.toml"])
    assert res.exit_code == 6 and "INVALID nope.toml: mapping file not found" in res.stdout


def test_schema_prints_the_published_json_schema() -> None:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0
    assert json.loads(res.stdout) == mapping_json_schema()
    published = (ROOT / "docs" / "schema" / "mapping.schema.json").read_text(encoding="utf-8")
    assert res.stdout == published
