"""DAG integrity: `dags/raccordo.py` as Airflow's own DagBag sees it.

The DagBag runs in a separate Python process with a temporary AIRFLOW_HOME, so the
test process never imports Airflow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.demo import prepare_workspace
from tests.airflow.conftest import DAGS, ROOT, airflow_env

pytestmark = pytest.mark.airflow

PROBE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
stats = [(s.file, s.duration.total_seconds(), s.dag_num) for s in bag.dagbag_stats]
dags = {}
for dag_id, d in bag.dags.items():
    dags[dag_id] = {
        "catchup": d.catchup,
        "tags": sorted(d.tags),
        "schedule": str(d.schedule) if d.schedule is not None else None,
        "max_active_runs": d.max_active_runs,
        "tasks": {
            t.task_id: {
                "retries": t.retries,
                "queue": t.queue,
                "downstream": sorted(t.downstream_task_ids),
            }
            for t in d.tasks
        },
    }
print(json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "stats": stats,
    "dags": dags,
    "hub_modules": sorted(m for m in sys.modules if m == "hub" or m.startswith("hub.")),
}))
"""


def _workspace(tmp_path: Path) -> Path:
    """The demo district's configuration, with a schedule and a queue on the WaaS connector
    and a disabled connector (which gets no DAG)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    cfg = prepare_workspace(
        ws, "http://127.0.0.1:9/waas/v1", {"csv_export", "siuss_files", "siuss_waas"}
    )
    text = cfg.read_text()
    text = text.replace(
        'type = "siuss_waas"\n', 'type = "siuss_waas"\nqueue = "cot"\nschedule = "0 3 * * *"\n'
    )
    text += '\n[connectors.old_csv]\ntype = "csv_export"\norg = "COT"\nenabled = false\n'
    cfg.write_text(text)
    return cfg


def _probe(tmp_path: Path, cfg: Path, **env: str) -> dict[str, Any]:
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS)],
        env=airflow_env(home, cfg, **env),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_one_dag_per_enabled_connector_with_retries_tags_and_no_catchup(tmp_path: Path) -> None:
    cfg = _workspace(tmp_path)
    got = _probe(tmp_path, cfg)
    assert got["import_errors"] == {}
    assert sorted(got["dags"]) == ["raccordo_cbv_files", "raccordo_ciss_csv", "raccordo_cot_waas"]
    orgs = {
        "raccordo_cbv_files": "CBV",
        "raccordo_ciss_csv": "CISS-BORGO",
        "raccordo_cot_waas": "COT",
    }
    for dag_id, d in got["dags"].items():
        assert d["catchup"] is False
        assert "raccordo" in d["tags"] and f"org:{orgs[dag_id]}" in d["tags"]
        assert d["max_active_runs"] == 1
        assert set(d["tasks"]) == {"check", "sync", "refresh"}
        assert d["tasks"]["check"]["downstream"] == ["sync"]
        assert d["tasks"]["sync"]["downstream"] == ["refresh"]
        for t in d["tasks"].values():
            assert t["retries"] >= 2
    # Schedule from the configuration, default @daily.
    assert got["dags"]["raccordo_cot_waas"]["schedule"] == "0 3 * * *"
    assert got["dags"]["raccordo_ciss_csv"]["schedule"] == "@daily"
    # Queue pinning: the tasks touching the source run on the consortium's queue.
    waas = got["dags"]["raccordo_cot_waas"]["tasks"]
    assert waas["check"]["queue"] == "cot" and waas["sync"]["queue"] == "cot"
    assert waas["refresh"]["queue"] != "cot"
    assert "queue:cot" in got["dags"]["raccordo_cot_waas"]["tags"]
    assert got["dags"]["raccordo_ciss_csv"]["tasks"]["sync"]["queue"] != "cot"
    # Cheap top level: nothing of hub is imported to parse the file...
    assert got["hub_modules"] == []
    # ...and parsing it takes well under the 1 s the issue allows.
    [(file, seconds, n)] = got["stats"]
    assert file.endswith("raccordo.py") and n == 3
    assert seconds < 1.0, f"parsing dags/raccordo.py took {seconds:.3f} s"


def test_a_task_run_builds_only_its_own_dag(tmp_path: Path) -> None:
    cfg = _workspace(tmp_path)
    got = _probe(tmp_path, cfg, _AIRFLOW_PARSING_CONTEXT_DAG_ID="raccordo_cbv_files")
    assert got["import_errors"] == {}
    assert sorted(got["dags"]) == ["raccordo_cbv_files"]


def test_a_missing_configuration_is_an_import_error_that_says_what_to_do(tmp_path: Path) -> None:
    got = _probe(tmp_path, tmp_path / "nowhere" / "raccordo.toml")
    [(file, message)] = got["import_errors"].items()
    assert file.endswith("raccordo.py")
    assert "cannot read the Raccordo configuration" in message
    assert got["dags"] == {}


def test_the_hub_package_never_imports_airflow() -> None:
    pattern = re.compile(r"^\s*(import airflow|from airflow)", re.MULTILINE)
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "hub").rglob("*.py"))
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
