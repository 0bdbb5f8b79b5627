"""The demo district run by the real Airflow (`airflow dags test`), compared with `raccordo sync`.

Same sources, same keyring: the registry Airflow fills must be the one the CLI fills — same
rows, same pseudonyms, same run accounting — and nothing Airflow keeps (its logs, its
metadata database with the XCom table, the command output) may hold a clear identifier or
the WaaS token, which only the Airflow Connection carries.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.siuss_waas.fake_server import FakeWaaS, flows_from_dir
from hub.demo import DEMO_TOKEN, prepare_workspace
from hub.demo.district import Truth, build_sources
from hub.registry import tables as t
from tests.airflow.conftest import AirflowFactory
from tests.e2e.conftest import registry_dump
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.rows import pseudonyms_of

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

INSTALLED = {"csv_export", "siuss_files", "siuss_waas"}
TOKEN = "af-test-token-5c1e9b7d"
DAG_IDS = ["raccordo_ciss_csv", "raccordo_cbv_files", "raccordo_cot_waas"]
RACCORDO = [sys.executable, "-m", "hub"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    """The demo district's sources, written once (deterministic)."""
    folder = tmp_path_factory.mktemp("demo") / "sources"
    return folder, build_sources(folder)


def workspace(
    ws: Path, sources: Path, waas_url: str, *, keys_from: Path | None = None, secrets: bool
) -> Path:
    """A demo workspace over a copy of ``sources``. Without ``secrets`` the WaaS base URL
    and token are left out of raccordo.toml: the Airflow Connection supplies them."""
    ws.mkdir()
    shutil.copytree(sources, ws / "sources")
    if keys_from is not None:
        shutil.copytree(keys_from / "keys", ws / "keys")
    cfg = prepare_workspace(ws, waas_url, INSTALLED)
    text = cfg.read_text().replace(DEMO_TOKEN, TOKEN)
    if not secrets:
        text = re.sub(r"^(base_url|token) = .*\n", "", text, flags=re.MULTILINE)
        assert TOKEN not in text and waas_url not in text
    cfg.write_text(text)
    return cfg


def connection(url: str, token: str = TOKEN, **extra: object) -> str:
    """``AIRFLOW_CONN_RACCORDO_COT_WAAS``: the WaaS e-service as an Airflow Connection
    (``extra`` holds further connector settings)."""
    conn: dict[str, object] = {"conn_type": "http", "host": url, "password": token}
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def cli_sync(cfg: Path) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def registry_url(cfg: Path) -> str:
    return f"sqlite:///{cfg.parent / 'registry.sqlite'}"


def runs(url: str) -> list[tuple[Any, ...]]:
    """Run accounting, without ids and times, in a stable order."""
    engine = sa.create_engine(url)
    cols = ("connector", "mapping", "status", "read", "loaded", "unchanged", "quarantined")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*(t.runs.c[c] for c in cols))).all()
    engine.dispose()
    return sorted(tuple(r) for r in rows)


def subjects(url: str) -> set[str]:
    """The registry's subjects, as their text pseudonyms."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = set(pseudonyms_of(conn, t.subjects))
    engine.dispose()
    return found


def xcoms(airflow_db: Path) -> dict[tuple[str, str], Any]:
    """The XCom values Airflow stored, by (dag, task)."""
    conn = sqlite3.connect(airflow_db)
    try:
        rows = conn.execute("SELECT dag_id, task_id, key, value FROM xcom").fetchall()
    finally:
        conn.close()
    out: dict[tuple[str, str], Any] = {}
    for dag_id, task_id, key, value in rows:
        assert key == "return_value"
        out[(dag_id, task_id)] = json.loads(value) if isinstance(value, str | bytes) else value
    return out


def succeeded(out: subprocess.CompletedProcess[str], dag_id: str) -> bool:
    text = out.stdout + out.stderr
    return out.returncode == 0 and f"dag_id={dag_id}" in text and "state=success" in text


@pytest.fixture
def waas(sources: tuple[Path, Truth]) -> Iterator[FakeWaaS]:
    with FakeWaaS(flows_from_dir(sources[0] / "cot-waas"), token=TOKEN) as server:
        yield server


def test_airflow_fills_the_same_registry_as_raccordo_sync_and_leaks_nothing(
    tmp_path: Path, sources: tuple[Path, Truth], waas: FakeWaaS, airflow: AirflowFactory
) -> None:
    folder, truth = sources
    # The reference: `raccordo sync` of every connector.
    cli_cfg = workspace(tmp_path / "cli", folder, waas.url, secrets=True)
    cli_out = cli_sync(cli_cfg)

    # The same inputs and keyring under Airflow, the WaaS secrets in an Airflow Connection.
    af_cfg = workspace(tmp_path / "af", folder, waas.url, keys_from=cli_cfg.parent, secrets=False)
    af = airflow(af_cfg, AIRFLOW_CONN_RACCORDO_COT_WAAS=connection(waas.url))
    for dag_id in DAG_IDS:
        out = af.dags_test(dag_id)
        assert succeeded(out, dag_id), out.stdout[-6000:] + out.stderr[-6000:]
        # The sync task says, as its last line, whether whole units were refused.
        name = dag_id.removeprefix("raccordo_")
        assert f"{name}: no unit refused" in out.stdout + out.stderr, out.stdout[-6000:]

    cli_url, af_url = registry_url(cli_cfg), registry_url(af_cfg)
    cli_rows, af_rows = registry_dump(cli_url), registry_dump(af_url)
    # Same counts per table, and not trivially (every table of the demo has rows)...
    assert {k: len(v) for k, v in af_rows.items()} == {k: len(v) for k, v in cli_rows.items()}
    assert all(cli_rows[k] for k in ("subject", "case_episode", "intervention", "source_records"))
    # ...the same pseudonyms...
    assert subjects(af_url) == subjects(cli_url)
    assert len(subjects(cli_url)) > 500
    # ...the very same rows, and the same run accounting.
    assert af_rows == cli_rows
    assert runs(af_url) == runs(cli_url)
    assert len(runs(cli_url)) == 5  # csv rows; SIUSS inbox and WaaS: ps + sinba streams each

    # XCom holds the small summaries, which agree with the registry's runs.
    stored = xcoms(af.home / "airflow.db")
    assert set(stored) == {(d, task) for d in DAG_IDS for task in ("check", "sync", "refresh")}
    accounted = sorted(
        (stored[(f"raccordo_{r['connector']}", "sync")]["connector"], r["read"], r["loaded"])
        for d in DAG_IDS
        for r in [
            {**run, "connector": stored[(d, "sync")]["connector"]}
            for run in stored[(d, "sync")]["runs"]
        ]
    )
    expected = sorted((c, read, loaded) for c, _m, _s, read, loaded, _u, _q in runs(af_url))
    assert accounted == expected
    for d in DAG_IDS:
        assert all(
            r["balanced"] and r["status"] == "succeeded" for r in stored[(d, "sync")]["runs"]
        )
    assert stored[("raccordo_cot_waas", "sync")]["cursor"]["ps"]["since"] > 0

    # No clear identifier or name in Airflow's home (logs, config), its metadata database
    # (XCom, rendered fields, task instances), nor in what the commands printed; and the
    # WaaS token, which only the Connection carried, is nowhere either.
    printed = tmp_path / "printed.txt"
    printed.write_text("\n".join(af.outputs) + cli_out.stdout + cli_out.stderr)
    leaks = scan_paths([af.home, printed], names=truth.names, values=truth.identifiers)
    leaks += scan_database(af.db_url, names=truth.names, values=truth.identifiers)
    assert_no_leaks(leaks)
    token_hits = scan_paths([af.home, printed], values=[TOKEN])
    token_hits += scan_database(af.db_url, values=[TOKEN])
    assert token_hits == []


def cli_sync_waas(cfg: Path) -> None:
    subprocess.run(
        [*RACCORDO, "sync", "cot_waas", "--quiet", "--config", str(cfg)],
        check=True,
        capture_output=True,
        timeout=900,
    )


def waas_rows(url: str) -> dict[str, Counter[tuple[object, ...]]]:
    return {
        k: Counter(r for r in rows if "cot_waas" in r) for k, rows in registry_dump(url).items()
    }


def test_a_source_that_is_down_fails_its_task_readably_and_the_next_run_resumes(
    tmp_path: Path, sources: tuple[Path, Truth], airflow: AirflowFactory
) -> None:
    folder, truth = sources
    flows = flows_from_dir(folder / "cot-waas")
    half = len(flows) // 2
    server = FakeWaaS(flows[:half], token=TOKEN).start()
    try:
        cfg = workspace(tmp_path / "af", folder, server.url, secrets=False)
        # The reference: `raccordo sync` run at the same moments on the same keyring.
        ref = workspace(tmp_path / "ref", folder, server.url, keys_from=cfg.parent, secrets=True)
        af = airflow(
            cfg,
            # Give up fast on a dead server: settings from the Connection's extra.
            AIRFLOW_CONN_RACCORDO_COT_WAAS=connection(server.url, max_retries=1, backoff_s=0.1),
            RACCORDO_AIRFLOW_RETRY_DELAY="0.5",
        )
        url = registry_url(cfg)

        # 1. The first half of the flows.
        first = af.dags_test("raccordo_cot_waas")
        assert succeeded(first, "raccordo_cot_waas"), first.stdout[-6000:]
        cli_sync_waas(ref)
        first_runs = runs(url)
        first_read = sum(r[3] for r in first_runs)
        assert sum(r[4] for r in first_runs) > 0

        # 2. The e-service is down: the DAG fails, after its retries, saying why.
        server.down()
        down = af.dags_test("raccordo_cot_waas")
        text = down.stdout + down.stderr
        assert "state=failed" in text and "state=success" not in text, text[-6000:]
        assert "RaccordoTaskError: connector 'cot_waas': the source does not answer" in text
        assert "the WaaS endpoint did not answer after 2 attempts" in text
        assert text.count("RaccordoTaskError: connector 'cot_waas'") >= 3  # 1 try + 2 retries
        assert runs(url) == first_runs  # no sync was attempted, nothing half-done

        # 3. The other connectors' DAGs are unaffected.
        other = af.dags_test("raccordo_ciss_csv")
        assert succeeded(other, "raccordo_ciss_csv"), other.stdout[-6000:]

        # 4. Back up, with the second half published meanwhile: the next run starts from the
        # cursor (reads only the new flows) and duplicates nothing.
        server.flows = sorted(flows, key=lambda f: f.ts_ms)
        server.up()
        again = af.dags_test("raccordo_cot_waas")
        assert succeeded(again, "raccordo_cot_waas"), again.stdout[-6000:]
        cli_sync_waas(ref)
        waas_runs = [r for r in runs(url) if r[0] == "cot_waas"]
        assert all(r[2] == "succeeded" for r in waas_runs)
        later_read = sum(r[3] for r in waas_runs) - first_read
        assert later_read > 0
        # The same rows and runs as the CLI's two syncs...
        assert waas_rows(url) == waas_rows(registry_url(ref))
        assert waas_runs == runs(registry_url(ref))
        # ...no source record twice...
        keys = [(r[0], r[1], r[3]) for r in registry_dump(url)["source_records"]]
        assert len(keys) == len(set(keys))
        # ...and nothing read twice: the two runs read what one sync of everything reads.
        full = workspace(tmp_path / "full", folder, server.url, keys_from=cfg.parent, secrets=True)
        cli_sync_waas(full)
        assert first_read + later_read == sum(r[3] for r in runs(registry_url(full)))
    finally:
        server.stop()

    printed = tmp_path / "printed.txt"
    printed.write_text("\n".join(af.outputs))
    leaks = scan_paths([af.home, printed], names=truth.names, values=truth.identifiers)
    leaks += scan_database(af.db_url, names=truth.names, values=truth.identifiers)
    assert_no_leaks(leaks)
    assert scan_paths([af.home, printed], values=[TOKEN]) == []
