"""CSV exports as Italian offices produce them, through the real pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.csv_export import CSVExportConfig, CSVExportConnector
from hub.registry import Registry, RunSummary
from tests.contract.suite import connector_contract_tests
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.workspace import make_workspace, sync

RACCORDO = [sys.executable, "-m", "hub"]
WIDE = {**os.environ, "COLUMNS": "250"}  # one summary line per run, as a person sees it
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "csv"
CFS = {"BRTCLL41C45B019A", "QGLRNT79S23F952Z", "QGLRNT79S23F952A", "STP0102061234567"}
NAMES = {"Bertolotti", "Clelia", "Quaglino", "Renato", "Sconosciuto", "Ahmed"}

CONFIG = """
[organisations.CISS]
name = "Consorzio"
[connectors.csv]
type = "csv_export"
org = "CISS"
mapping = "cartella-esempio.toml"
[connectors.csv.config]
path = "{path}"
encoding = "{encoding}"
source_key = ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"]
personal_columns = ["COGNOME", "NOME", "NOTE"]
[connectors.csv.config.identifier_columns.CODICE_FISCALE]
type_column = "TIPO_DOCUMENTO"
[connectors.csv.config.identifier_columns.ID_NUCLEO]
type = "LOCAL"
optional = true
"""


def _config(**kw: object) -> CSVExportConfig:
    base: dict[str, object] = {
        "path": str(FIXTURES / "cartella-esempio.csv"),
        "encoding": "cp1252",
        "source_key": ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"],
        "personal_columns": ["COGNOME", "NOME", "NOTE"],
        "identifier_columns": {"CODICE_FISCALE": {"type_column": "TIPO_DOCUMENTO"}},
    }
    return CSVExportConfig.model_validate({**base, **kw})


TestCSVExportContract = connector_contract_tests(lambda: CSVExportConnector(_config()))


def _workspace(tmp_path: Path, registry_url: str, path: str, encoding: str) -> Path:
    extra = CONFIG.format(path=path, encoding=encoding)
    return make_workspace(tmp_path / "ws", extra, registry_url=registry_url)


def _sync(ws: Path) -> tuple[RunSummary, Registry]:
    (run,), reg = sync(ws, "csv")
    return run, reg


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("cartella-esempio.csv", "cp1252"),
        ("cartella-esempio.csv", "auto"),
        ("cartella-esempio-utf8-bom.csv", "auto"),
    ],
)
def test_excel_export_loads_with_exact_accounting(
    tmp_path: Path, registry_url: str, name: str, encoding: str
) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / name, tmp_path / "in" / "export.csv")
    ws = _workspace(tmp_path, registry_url, "../in/*.csv", encoding)
    run, reg = _sync(ws)
    assert (run.read, run.loaded, run.quarantined) == (5, 3, 2)
    assert run.unmapped_codes == {"service": {"BONUS-X": 1}}
    by_rule = {q["rule"]: q for q in reg.quarantine_entries(limit=10)}
    assert by_rule["cf_check_char"]["location"] == "export.csv line 6"  # after a 2-line NOTE
    assert by_rule["unmapped_code"]["location"] == "export.csv line 7"
    assert reg.count("subject") == 2 and reg.count("case_episode") == 2
    assert reg.count("intervention") == 3 and reg.count("assessment") == 1
    # Re-sync reads nothing; the NOTE, names and codes are nowhere.
    again, reg = _sync(ws)
    assert again.read == 0
    leaks = scan_paths([ws], names=NAMES | {"lunedì"}, values=CFS)
    leaks += scan_database(
        reg.engine.url.render_as_string(hide_password=False), names=NAMES, values=CFS
    )
    assert_no_leaks(leaks)
    reg.close()


def test_changed_file_replaces_its_effects(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "export.csv"
    shutil.copy(FIXTURES / "cartella-esempio.csv", target)
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/export.csv", "cp1252")
    _sync(ws)
    lines = target.read_bytes().split(b"\r\n")
    # Drop the second intervention of case 1001 (the PASTI row).
    target.write_bytes(b"\r\n".join(line for line in lines if b";PASTI;" not in line))
    run, reg = _sync(ws)
    assert run.removed == 1 and run.unchanged == 2
    assert reg.count("intervention") == 2
    reg.close()


def test_a_file_rewritten_during_the_sync_is_read_again_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows pass reads the file again from disk: if it is no longer the content the
    first pass checked, the unit is reported read in part (nothing of it removed) and
    the next sync reads it whole."""
    import connectors.csv_export as csv_export

    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "export.csv"
    shutil.copy(FIXTURES / "cartella-esempio.csv", target)
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/export.csv", "cp1252")
    first, reg = _sync(ws)
    reg.close()
    lines = target.read_bytes().split(b"\r\n")
    changed = b"\r\n".join(line for line in lines if b";PASTI;" not in line)
    target.write_bytes(b"\r\n".join(lines) + b"\r\n")  # a new digest, the same rows
    checked = csv_export.check_rows

    def check_then_rewrite(f: object) -> None:
        checked(f)  # type: ignore[arg-type]
        target.write_bytes(changed)  # rewritten between the two passes

    monkeypatch.setattr(csv_export, "check_rows", check_then_rewrite)
    run, reg = _sync(ws)
    assert run.balanced and run.source_errors == 1 and run.removed == 0
    (q,) = [q for q in reg.quarantine_entries() if q["run_id"] == run.id]
    assert "changed while it was being read" in q["reason"], q["reason"]
    assert reg.count("intervention") == first.loaded
    reg.close()
    monkeypatch.setattr(csv_export, "check_rows", checked)
    run, reg = _sync(ws)
    assert run.source_errors == 0 and run.removed == 1 and run.unchanged == 2
    assert reg.count("intervention") == 2
    reg.close()


def test_wrong_encoding_is_reported_not_loaded(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / "cartella-esempio-utf8-bom.csv", tmp_path / "in" / "export.csv")
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/export.csv", "cp1252")
    run, reg = _sync(ws)
    assert run.read == 0 and run.source_errors == 1
    (q,) = reg.quarantine_entries()
    assert "does not look like cp1252" in q["reason"] and 'encoding = "utf-8"' in q["reason"]
    reg.close()


def test_repeated_identifiers_get_the_same_outcome_on_every_record(
    tmp_path: Path, registry_url: str
) -> None:
    """Identifier outcomes are remembered per run: a person on many records gets one
    pseudonym, and a bad code repeated on many records quarantines each of them."""
    header = (FIXTURES / "cartella-esempio.csv").read_text(encoding="cp1252").splitlines()[0]
    good, bad = "BRTCLL41C45B019A", "BRTCLL41C45B019B"  # bad: wrong check character
    rows = [
        f"{i};CF;{cf};Bertolotti;Clelia;1941;F;003024;N001;ANZIANI;05/02/2022;;SAD;SAD;"
        f"0{i}/03/2022;;;N;S;10/01/2022;"
        for i, cf in enumerate((good, bad, good, bad, bad), start=1)
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "export.csv").write_text(
        "\r\n".join([header, *rows]) + "\r\n", encoding="cp1252"
    )
    ws = _workspace(tmp_path, registry_url, "../in/*.csv", "cp1252")
    run, reg = _sync(ws)
    assert (run.read, run.loaded, run.quarantined) == (5, 2, 3)
    assert run.balanced
    entries = reg.quarantine_entries(run_id=run.id)
    assert sorted(e["location"] for e in entries) == [f"export.csv line {n}" for n in (3, 5, 6)]
    assert {(e["field"], e["rule"]) for e in entries} == {("CODICE_FISCALE", "cf_check_char")}
    assert reg.count("subject") == 1
    assert reg.count("intervention") == 2
    reg.close()
    assert_no_leaks(scan_database(registry_url, values={good, bad}))


def test_a_misspelt_source_field_in_the_mapping_stops_the_sync_before_reading(
    tmp_path: Path,
) -> None:
    """The mapping reads a column the export does not have: nothing is read or loaded,
    and the error says which mapping entry and which fields exist."""
    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / "cartella-esempio.csv", tmp_path / "in" / "export.csv")
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/*.csv", "cp1252")
    builtin = Path(__file__).resolve().parents[2] / "mappings" / "cartella-esempio.toml"
    text = builtin.read_text(encoding="utf-8")
    assert 'source = "IMPORTO"' in text
    (ws / "mappings").mkdir(exist_ok=True)
    (ws / "mappings" / "vendor.toml").write_text(
        text.replace('source = "IMPORTO"', 'source = "IMPORT0"'), encoding="utf-8"
    )
    cfg = ws / "raccordo.toml"
    cfg.write_text(cfg.read_text().replace('"cartella-esempio.toml"', '"vendor.toml"'))
    result = subprocess.run(
        [*RACCORDO, "sync", "--config", str(cfg)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 7, result.stderr  # a connector could not sync
    assert "reads fields that stream" in result.stderr
    assert "records[2].fields.amount: no source field 'IMPORT0'" in result.stderr
    assert "IMPORTO" in result.stderr  # the fields that do exist are listed
    assert "Traceback" not in result.stderr
    reg = Registry.open(f"sqlite:///{tmp_path}/r.sqlite")
    assert reg.runs() == [] and reg.count("intervention") == 0
    reg.close()


def _crafted(tmp_path: Path) -> Path:
    """The sample export with a sex and a birth year contradicting the CF, and a comune
    outside the district (Torino in a Novara district)."""
    text = (FIXTURES / "cartella-esempio.csv").read_text(encoding="cp1252")
    lines = text.split("\n")
    lines[1] = lines[1].replace(";1941;F;", ";1941;M;")  # line 2: sex ≠ CF
    lines[3] = lines[3].replace(";1941;F;", ";1951;F;")  # line 4: birth year ≠ CF
    lines[4] = lines[4].replace(";003106;", ";001272;")  # line 5: comune outside
    (tmp_path / "in").mkdir(exist_ok=True)
    target = tmp_path / "in" / "export.csv"
    target.write_text("\n".join(lines), encoding="cp1252")
    return target


def test_data_quality_warnings_are_counted_located_and_refuse_nothing(
    tmp_path: Path, registry_url: str
) -> None:
    _crafted(tmp_path)
    ws = _workspace(tmp_path, registry_url, "../in/*.csv", "cp1252")
    cfg = ws / "raccordo.toml"
    result = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--no-refresh", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
        env=WIDE,
    )
    assert result.returncode == 0, result.stderr
    # Same accounting as the clean file: warnings refuse nothing.
    assert "read 5 = loaded 3 + unchanged 0 + quarantined 2" in result.stdout
    assert "warnings 4" in result.stdout and "raccordo warnings list --run" in result.stdout
    listed = subprocess.run(
        [*RACCORDO, "warnings", "list", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=WIDE,
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    got = sorted((r["location"], r["rule"], r["field"]) for r in rows)
    assert got == [
        ("export.csv line 2", "cf_sex_mismatch", "subject.sex"),
        ("export.csv line 4", "cf_birth_year_mismatch", "subject.birth_year"),
        ("export.csv line 5", "comune_outside_district", "intervention.comune_istat"),
        ("export.csv line 5", "comune_outside_district", "subject.residence_comune_istat"),
    ]
    runs = subprocess.run(
        [*RACCORDO, "runs", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=WIDE,
    )
    assert json.loads(runs.stdout)[0]["warnings"] == 4
    table = subprocess.run(
        [*RACCORDO, "warnings", "list", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=WIDE,
    )
    assert "cf_birth_year_mismatch" in table.stdout
    leaks = scan_paths([ws], names=NAMES | {"lunedì"}, values=CFS)
    reg = Registry.open(registry_url)
    leaks += scan_database(
        reg.engine.url.render_as_string(hide_password=False), names=NAMES, values=CFS
    )
    reg.close()
    assert_no_leaks(leaks)


def test_a_sync_that_refused_a_whole_file_exits_8(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / "cartella-esempio.csv", tmp_path / "in" / "a.csv")
    (tmp_path / "in" / "b.csv").write_bytes(b"ID_CARTELLA\n1\n")  # one column: refused whole
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/*.csv", "auto")
    cfg = ws / "raccordo.toml"
    result = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--no-refresh", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
        env=WIDE,
    )
    assert result.returncode == 8, result.stdout + result.stderr
    assert "1 unit(s) refused whole" in result.stderr
    assert "units refused whole 1" in result.stdout
    assert "Traceback" not in result.stderr
    # Fixed: the next sync refuses nothing and exits 0.
    (tmp_path / "in" / "b.csv").unlink()
    again = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--no-refresh", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
        env=WIDE,
    )
    assert again.returncode == 0, again.stderr


def test_a_row_level_problem_is_not_a_refused_unit(tmp_path: Path) -> None:
    text = (FIXTURES / "cartella-esempio.csv").read_text(encoding="cp1252")
    (tmp_path / "in").mkdir()
    # A cut line: that row is skipped, the file loads.
    (tmp_path / "in" / "a.csv").write_text(text + "1005;CF;X\n", encoding="cp1252")
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", "../in/*.csv", "cp1252")
    result = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--no-refresh", "--config", str(ws / "raccordo.toml")],
        capture_output=True,
        text=True,
        timeout=300,
        env=WIDE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source errors 1" in result.stdout and "refused whole" not in result.stdout


def test_records_carry_the_source_key_the_pipeline_would_build() -> None:
    """csv_export gives each record its source key (so that it is not joined again per
    record); it is exactly what the pipeline builds without it, or a registry loaded
    before would find every record changed."""
    from hub.connector import RawRecord, expand_parts

    for keys in (["ID_CARTELLA"], ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"]):
        connector = CSVExportConnector(_config(source_key=keys))
        items = expand_parts(connector.read("rows", {}))
        records = [i for i in items if isinstance(i, RawRecord)]
        assert records
        for r in records:
            assert r.key == "|".join(str(r.data.get(k, "")) for k in keys)
