"""The demo district on a real Airflow 3 CeleryExecutor cluster, started by the project's script.

``scripts/airflow-cluster.sh up`` starts PostgreSQL (Airflow's metadata, the Celery results and
the registry), Redis (the broker), the scheduler, the DAG processor, the API server and three
Celery workers, each from an empty environment plus its own env file:

* ``ciss`` on queue ``ciss``: the CSV export of CISS Borgomanero (its location is in the
  Connection ``raccordo_ciss_csv``, only in this worker's environment);
* ``cot`` on queue ``cot``: the WaaS e-service of COT (URL and token in the Connection
  ``raccordo_cot_waas``, only in this worker's environment);
* ``district`` on the default queue: the SIUSS inbox the district reaches itself, and every
  ``refresh`` task.

The tests run in order on one cluster (module scope) and ask the API server's REST API what
ran where. The registry must end up as ``raccordo sync`` builds it, through a stopped worker
and a worker killed in the middle of a sync; nothing Airflow keeps may hold a clear identifier
or a secret, and no worker may read another consortium's Connection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest

from connectors.siuss_waas.fake_server import FakeWaaS, flows_from_dir
from hub.demo import DEMO_TOKEN, prepare_workspace
from hub.demo.district import Truth, build_sources
from tests.airflow.conftest import DAGS, ROOT
from tests.airflow.test_airflow_e2e import INSTALLED, RACCORDO, runs, subjects
from tests.e2e.conftest import registry_dump
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.xdist_group("airflow-cluster")]

SCRIPT = ROOT / "scripts" / "airflow-cluster.sh"
TOKEN = "cluster-token-8d2f61a4"
DAG_IDS = ["raccordo_ciss_csv", "raccordo_cbv_files", "raccordo_cot_waas"]
#: Connector → (queue, worker) of the cluster.
PLACEMENT = {
    "raccordo_ciss_csv": ("ciss", "ciss"),
    "raccordo_cbv_files": ("default", "district"),
    "raccordo_cot_waas": ("cot", "cot"),
}
CONN_ENV = {"ciss": "AIRFLOW_CONN_RACCORDO_CISS_CSV", "cot": "AIRFLOW_CONN_RACCORDO_COT_WAAS"}
HEARTBEAT_TIMEOUT = 20  # seconds before the scheduler fails the task of a dead worker
PARSE_INTERVAL = 10  # seconds between two listings / parses of the DAGs folder

PROBE_DAG = '''
"""Probe (tests only): which Raccordo Connections can a task on each queue read?"""
import datetime as dt
import os

from airflow.sdk import dag, task

@dag(dag_id="cluster_probe", schedule="@once", start_date=dt.datetime(2025, 1, 1),
     catchup=False, is_paused_upon_creation=False)
def cluster_probe():
    def look() -> dict:
        from airflow.sdk import BaseHook
        found = {}
        for name in ("raccordo_ciss_csv", "raccordo_cot_waas"):
            try:
                BaseHook.get_connection(name)
                found[name] = True
            except Exception as e:  # AirflowNotFoundException, or the API's refusal
                found[name] = False
        env = sorted(k for k in os.environ if k.startswith("AIRFLOW_CONN_"))
        return {"found": found, "env": env}

    for queue in ("ciss", "cot", "default"):
        task(task_id=f"probe_{queue}", queue=queue)(look)()

cluster_probe()
'''


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports chosen by the kernel (port 0), held open together while
    chosen: nothing else scanning a fixed range (another test run, a developer's cluster)
    can be handed the same ones, as happened with a fixed 18540-18599 range."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Cluster:
    dir: Path
    pg_port: int
    redis_port: int
    api_port: int
    waas: FakeWaaS
    truth: Truth
    _token: str = ""
    #: The first scheduled runs of every DAG are done (see :func:`_first_runs`).
    baseline: bool = False

    # --- the script -------------------------------------------------------------------------
    def sh(self, *args: str, timeout: float = 400) -> str:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RACCORDO_"))},
            "CLUSTER_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "CLUSTER_PARSE_INTERVAL": str(PARSE_INTERVAL),
            "CLUSTER_DAGS_FOLDER": str(self.dir / "dags"),
            "RACCORDO_AIRFLOW_RETRY_DELAY": "1",
            "CLUSTER_PG_PORT": str(self.pg_port),
            "CLUSTER_REDIS_PORT": str(self.redis_port),
            "CLUSTER_API_PORT": str(self.api_port),
        }
        out = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, self.diagnose(out.stdout + out.stderr)
        return out.stdout

    def diagnose(self, text: str = "") -> str:
        tails = [text[-3000:]]
        for log in sorted((self.dir / "logs").glob("*.log")):
            tails.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(tails)

    # --- the API server's REST API ----------------------------------------------------------
    def api(self, method: str, path: str, body: object = None) -> Any:
        if not self._token:
            password = (self.dir / "run" / "admin_password").read_text().strip()
            r = httpx2.post(
                f"http://127.0.0.1:{self.api_port}/auth/token",
                json={"username": "admin", "password": password},
                timeout=30,
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        r = httpx2.request(
            method,
            f"http://127.0.0.1:{self.api_port}/api/v2{path}",
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=60,
        )
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str) -> str:
        return str(
            self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]
        )

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns?order_by=run_after")["dag_runs"])

    def wait_dags(self, dag_ids: list[str], timeout: float = 240) -> None:
        """Until the DAG processor has stored every DAG of ``dag_ids``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            have = {d["dag_id"] for d in self.api("GET", "/dags?limit=100")["dags"]}
            if set(dag_ids) <= have:
                return
            time.sleep(1)
        pytest.fail(self.diagnose(f"DAGs not parsed within {timeout}s: {dag_ids}"))

    def wait_run(self, dag_id: str, run_id: str | None = None, timeout: float = 300) -> str:
        """Until the run (or the DAG's only run) has ended; its run id."""
        deadline = time.monotonic() + timeout
        state = "none"
        while time.monotonic() < deadline:
            found = [r for r in self.dag_runs(dag_id) if run_id in (None, r["dag_run_id"])]
            if found:
                state = found[-1]["state"]
                if state in ("success", "failed"):
                    assert state == "success", self.diagnose(f"{dag_id}: {found[-1]}")
                    return str(found[-1]["dag_run_id"])
            time.sleep(2)
        pytest.fail(self.diagnose(f"{dag_id} run {run_id}: still {state} after {timeout}s"))

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        got = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t for t in got["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        got = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        )
        value = got["value"]
        return json.loads(value) if isinstance(value, str) else value

    # --- databases and processes ------------------------------------------------------------
    def db(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{name}"

    def sql(self, statement: str) -> None:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def pid(self, name: str) -> int:
        return int((self.dir / "run" / f"{name}.pid").read_text())

    def environments(self, name: str) -> list[dict[str, str]]:
        """The environment of every live process of ``name``'s session (it and what it forked)."""
        session = self.pid(name)
        envs = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                sid = int(stat.rsplit(")", 1)[1].split()[3])
                if sid != session:
                    continue
                raw = (proc / "environ").read_bytes()
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
            env = dict(
                e.split("=", 1) for e in raw.decode(errors="replace").split("\0") if "=" in e
            )
            # Celery and Airflow retitle their processes (setproctitle), which overwrites the
            # memory /proc/PID/environ shows: only an intact block (it has AIRFLOW_HOME) counts.
            if env.get("AIRFLOW_HOME"):
                envs.append(env)
        return envs

    def role_env(self, role: str) -> dict[str, str]:
        """The environment the script starts ``role`` (core, or a worker's name) with."""
        out = self.sh("env", str(self.dir), role)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _workspace(ws: Path, sources: Path, waas_url: str, *, secrets: bool) -> Path:
    """The demo district; without ``secrets`` the CSV path, the WaaS URL and its token are left
    to the consortia's workers (their Connections), and each consortium gets its queue."""
    ws.mkdir(parents=True, exist_ok=True)
    if not (ws / "sources").exists():
        shutil.copytree(sources, ws / "sources")
    cfg = prepare_workspace(ws, waas_url, INSTALLED)
    text = cfg.read_text().replace(DEMO_TOKEN, TOKEN)
    if not secrets:
        text = re.sub(r"^(base_url|token) = .*\n", "", text, flags=re.MULTILINE)
        text = re.sub(r'^path = "sources/ciss-borgomanero.csv"\n', "", text, flags=re.MULTILINE)
        text = text.replace('type = "csv_export"\n', 'type = "csv_export"\nqueue = "ciss"\n')
        text = text.replace('type = "siuss_waas"\n', 'type = "siuss_waas"\nqueue = "cot"\n')
        assert TOKEN not in text and waas_url not in text and "ciss-borgomanero" not in text
    cfg.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    truth = build_sources(base / "sources")
    pg, redis, api, *logs = _free_ports(6)
    with FakeWaaS(flows_from_dir(base / "sources" / "cot-waas"), token=TOKEN) as waas:
        d = base / "district"
        _workspace(d, base / "sources", waas.url, secrets=False)
        (d / "dags").mkdir()
        shutil.copy2(DAGS / "raccordo.py", d / "dags" / "raccordo.py")
        workers = d / "workers"
        workers.mkdir()
        ciss_conn = {"conn_type": "fs", "extra": {"path": str(d / "sources/ciss-borgomanero.csv")}}
        cot_conn = {"conn_type": "http", "host": waas.url, "password": TOKEN}
        for name, queue, port, conn in [
            ("ciss", "ciss", logs[0], ciss_conn),
            ("cot", "cot", logs[1], cot_conn),
            ("district", "default", logs[2], None),
        ]:
            lines = [f"QUEUES={queue}", f"LOG_PORT={port}"]
            if conn is not None:
                lines.append(f"{CONN_ENV[name]}='{json.dumps(conn)}'")
            (workers / f"{name}.env").write_text("\n".join(lines) + "\n")
        c = Cluster(d, pg, redis, api, waas, truth)
        try:
            c.sh("up", str(d), timeout=600)
            yield c
        finally:
            c.sh("down", str(d))


def _reference(c: Cluster, name: str, *connectors: str) -> str:
    """``raccordo sync`` of ``connectors`` (all when none) on the cluster's sources and keyring,
    into a new database ``name`` of the cluster's PostgreSQL; its URL."""
    ws = c.dir.parent / f"ref-{name}"
    ws.mkdir()
    shutil.copytree(c.dir / "keys", ws / "keys")
    os.symlink(c.dir / "sources", ws / "sources")
    cfg = _workspace(ws, c.dir / "sources", c.waas.url, secrets=True)
    c.sql(f'create database "{name}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RACCORDO_"))}
    env["RACCORDO_REGISTRY_URL"] = c.db(name)
    out = subprocess.run(
        [*RACCORDO, "sync", *connectors, "--quiet", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return c.db(name)


def _same_registry(url: str, reference: str) -> None:
    got, want = registry_dump(url), registry_dump(reference)
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
    assert all(want[k] for k in ("subject", "case_episode", "intervention", "source_records"))
    assert subjects(url) == subjects(reference)
    assert got == want
    keys = [(r[0], r[2]) for r in got["source_records"]]  # (connector, stream), key
    assert len(keys) == len(set(keys))  # no source record twice


def test_each_consortium_runs_on_its_own_worker_and_the_registry_equals_raccordo_sync(
    cluster: Cluster,
) -> None:
    _first_runs(cluster)


def _first_runs(c: Cluster) -> None:
    """Every DAG's first scheduled run, on its own worker, equal to ``raccordo sync``.

    The later tests start from this state; each makes sure of it, so that none depends on
    which test ran before it on this cluster (a test worker may build its own cluster).
    """
    c.wait_dags(DAG_IDS)
    for dag_id in DAG_IDS:
        c.unpause(dag_id)  # catchup is off: one scheduled run, the latest interval
    done = {dag_id: c.wait_run(dag_id, timeout=360) for dag_id in DAG_IDS}

    for dag_id, run_id in done.items():
        queue, worker = PLACEMENT[dag_id]
        tis = c.tasks(dag_id, run_id)
        assert set(tis) == {"check", "sync", "refresh"}
        for task_id in ("check", "sync"):
            ti = tis[task_id]
            assert (ti["state"], ti["queue"], ti["hostname"]) == (
                "success",
                queue,
                f"{worker}.cluster.localhost",
            ), f"{dag_id}.{task_id}"
        refresh = tis["refresh"]
        assert (refresh["queue"], refresh["hostname"]) == ("default", "district.cluster.localhost")
        summary = c.xcom(dag_id, run_id, "sync")
        assert summary["runs"] and all(
            r["balanced"] and r["status"] == "succeeded" for r in summary["runs"]
        )

    reference = _reference(c, "reference_all")
    _same_registry(c.db("raccordo"), reference)
    assert runs(c.db("raccordo")) == runs(reference)
    assert len(runs(reference)) == 5
    c.baseline = True


def test_a_stopped_worker_makes_its_dag_wait_while_the_other_consortium_completes(
    cluster: Cluster,
) -> None:
    c = cluster
    if not c.baseline:
        _first_runs(c)
    before = runs(c.db("raccordo"))
    c.sh("worker-down", str(c.dir), "ciss")
    ciss_run = c.trigger("raccordo_ciss_csv")
    cot_run = c.trigger("raccordo_cot_waas")
    c.wait_run("raccordo_cot_waas", cot_run)
    time.sleep(10)  # and some more: nobody takes the ciss queue's work
    waiting = c.tasks("raccordo_ciss_csv", ciss_run)
    assert waiting["check"]["state"] in ("scheduled", "queued"), waiting["check"]
    assert waiting["check"]["queue"] == "ciss"
    assert waiting["sync"]["state"] is None

    c.sh("worker-up", str(c.dir), "ciss")
    c.wait_run("raccordo_ciss_csv", ciss_run)
    tis = c.tasks("raccordo_ciss_csv", ciss_run)
    assert tis["sync"]["hostname"] == "ciss.cluster.localhost"
    assert tis["check"]["try_number"] == 1  # it waited, it did not fail
    # Both second syncs found nothing new: the same records, two more runs that loaded 0.
    _same_registry(c.db("raccordo"), c.db("reference_all"))
    added = list((Counter(runs(c.db("raccordo"))) - Counter(before)).elements())
    assert sorted(r[0] for r in added) == ["ciss_csv", "cot_waas", "cot_waas"]
    assert all(r[2] == "succeeded" and r[4] == 0 for r in added)


def test_a_worker_killed_in_the_middle_of_a_sync_retries_and_loses_or_doubles_nothing(
    cluster: Cluster,
) -> None:
    c = cluster
    # A fresh registry, so that the sync has all the WaaS flows to read; every answer of the
    # e-service 4 s late, so that the sync is waiting for one when its worker dies.
    c.sql('drop database "raccordo" with (force)')
    c.sql('create database "raccordo"')
    c.waas.faults.slow_s = 4
    c.waas.faults.slow_requests = 10_000
    run_id = c.trigger("raccordo_cot_waas")
    deadline = time.monotonic() + 240
    while c.tasks("raccordo_cot_waas", run_id).get("sync", {}).get("state") != "running":
        assert time.monotonic() < deadline, c.diagnose("the sync never started")
        time.sleep(0.3)
    time.sleep(1)
    c.sh("worker-down", str(c.dir), "cot", "KILL")  # the machine dies: worker and task at once
    assert c.tasks("raccordo_cot_waas", run_id)["sync"]["state"] == "running"
    c.waas.faults.slow_requests = 0
    c.sh("worker-up", str(c.dir), "cot")
    c.wait_run("raccordo_cot_waas", run_id, timeout=300)

    sync = c.tasks("raccordo_cot_waas", run_id)["sync"]
    assert sync["try_number"] == 2 and sync["hostname"] == "cot.cluster.localhost"
    reference = _reference(c, "reference_cot", "cot_waas")
    got, want = registry_dump(c.db("raccordo")), registry_dump(reference)
    assert got == want
    assert got["source_records"] and len(got["source_records"]) == len(set(got["source_records"]))
    # The retry's runs are the clean run's; the killed try left no succeeded run behind, and
    # nothing it read was kept (it committed nothing: the retry read everything again).
    everything = runs(c.db("raccordo"))
    succeeded = [r for r in everything if r[2] == "succeeded"]
    assert succeeded == runs(reference), everything
    print(f"runs left by the killed try: {[r for r in everything if r[2] != 'succeeded']}")


def test_nothing_leaks_and_no_worker_reads_another_consortiums_secrets(
    cluster: Cluster,
) -> None:
    c = cluster
    # 1. The environments: what the script gives each role, and what each live process of
    # that role really holds (those whose /proc/PID/environ is intact): a consortium's
    # Connection in its own worker only; no metadata database or JWT secret on a worker.
    for worker, own in [("ciss", "ciss"), ("cot", "cot"), ("district", None)]:
        live = c.environments(f"worker-{worker}")
        assert live, f"no process of worker {worker} shows its environment"
        for env in [c.role_env(worker), *live]:
            conns = {k for k in env if k.startswith("AIRFLOW_CONN_")}
            assert conns == ({CONN_ENV[own]} if own else set()), (worker, conns)
            assert own == "cot" or not any(TOKEN in v for v in env.values()), worker
            assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env  # no metadata database
            assert "AIRFLOW__API_AUTH__JWT_SECRET" not in env
    core = c.role_env("core")
    for role in ("scheduler", "dag-processor", "api-server"):
        for env in [core, *c.environments(role)]:
            assert not {k for k in env if k.startswith("AIRFLOW_CONN_")}, role
            assert not any(TOKEN in v for v in env.values()), role
            assert "RACCORDO_REGISTRY_URL" not in env, role
    # ...and none in the metadata database, where the API server could hand it to any task.
    assert c.api("GET", "/connections")["total_entries"] == 0

    # 2. A task on each queue asks for both Connections (Airflow's own lookup: the worker's
    # environment, then the API server): each finds only its own. Written into the DAGs
    # folder of the running cluster, it also times a DAG file change to a scheduled run.
    written = time.monotonic()
    (c.dir / "dags" / "cluster_probe.py").write_text(PROBE_DAG)
    c.wait_dags(["cluster_probe"], timeout=120)
    parsed = time.monotonic() - written
    deadline = time.monotonic() + 120
    while not c.dag_runs("cluster_probe"):
        assert time.monotonic() < deadline, c.diagnose("the @once probe was never scheduled")
        time.sleep(1)
    scheduled = time.monotonic() - written
    run_id = c.wait_run("cluster_probe", timeout=240)
    print(f"DAG file written -> DAG parsed in {parsed:.0f}s, run scheduled in {scheduled:.0f}s")
    assert scheduled <= 2 * PARSE_INTERVAL + 15
    seen = {q: c.xcom("cluster_probe", run_id, f"probe_{q}") for q in ("ciss", "cot", "default")}
    assert seen["ciss"] == {
        "found": {"raccordo_ciss_csv": True, "raccordo_cot_waas": False},
        "env": [CONN_ENV["ciss"]],
    }
    assert seen["cot"] == {
        "found": {"raccordo_ciss_csv": False, "raccordo_cot_waas": True},
        "env": [CONN_ENV["cot"]],
    }
    assert seen["default"] == {
        "found": {"raccordo_ciss_csv": False, "raccordo_cot_waas": False},
        "env": [],
    }

    # 3. No clear identifier or name in Airflow's metadata database (task instances, XCom,
    # rendered fields, logs' metadata), the Celery results, the task and process logs, or any
    # Airflow home; and the WaaS token, which only the cot worker's Connection holds, nowhere.
    stores = [c.dir / "logs", c.dir / "airflow"]
    t = c.truth
    leaks = scan_paths(stores, names=t.names, values=t.identifiers)
    for db in ("airflow", "celery_results"):
        leaks += scan_database(c.db(db), names=t.names, values=t.identifiers)
    assert_no_leaks(leaks)
    assert list((c.dir / "logs" / "tasks").rglob("*.log")), "no task log was written"
    hits = scan_paths(stores, values=[TOKEN])
    hits += scan_database(c.db("airflow"), values=[TOKEN])
    hits += scan_database(c.db("celery_results"), values=[TOKEN])
    assert hits == []
