"""Push mode with real processes over loopback HTTP.

A district workspace holds the keyring and runs the real ``raccordo pseudonymiser
serve``; the district hub (no keyring, its own registry) runs ``raccordo push serve``;
a consortium worker (no keyring, no registry URL) runs ``raccordo sync --push``. The
registry the hub fills equals the one a direct sync of the same data fills.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from connectors.synthetic import SyntheticConfig, SyntheticConnector
from hub.config import REGISTRY_URL_ENV, load_config
from hub.connector import RawRecord
from hub.errors import ConfigError, RaccordoError
from hub.exchange import crypto
from hub.exchange.home import init_home, open_home
from hub.exchange.push import (
    PushClient,
    _batch_content,
    add_worker,
    create_push_app,
    iter_receipts,
    open_worker_home,
)
from hub.pipeline import PseudonymisedBatch
from hub.pseudonyms.service import add_client
from hub.pseudonyms.stage import Prepared
from hub.registry import Registry, SyncRefused
from hub.registry import tables as t
from hub.service import Hub
from tests.e2e.conftest import SYNTHETIC, registry_dump
from tests.exchange.support import app_in_thread
from tests.pseudonyms import server as service_server
from tests.pseudonyms.server import free_port  # kernel-chosen: the two xdist workers never race
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.workspace import make_workspace, sync

pytestmark = pytest.mark.slow

COUNT = 3_000
BATCH = 100
TOKEN_ENV = "RACCORDO_PSEUDONYMISER_TOKEN"

OTHER = """
[organisations.ALTRO]
name = "Altro consorzio"
kind = "ente_gestore"

[connectors.altro]
type = "synthetic"
org = "ALTRO"
mapping = "synthetic.toml"
[connectors.altro.config]
count = 50
seed = 3
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (REGISTRY_URL_ENV, TOKEN_ENV)}
    return {**env, **extra}


def _set_hub(cfg: Path, lines: str, *, drop_registry: bool = False) -> None:
    text = cfg.read_text()
    if drop_registry:
        text, n = re.subn(r"(?m)^registry_url = .*\n", "", text)
        assert n == 1
    cfg.write_text(text.replace("[hub]\n", "[hub]\n" + lines, 1))


@dataclass
class Setup:
    district: Path
    direct: Path
    hub: Path
    worker: Path
    service_url: str
    service_logs: Path
    hub_token: str
    worker_token: str
    port: int

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub_registry(self) -> str:
        return load_config(self.hub / "raccordo.toml").registry_url

    def start_hub(self) -> subprocess.Popen[bytes]:
        err = (self.hub / "push-serve.stderr").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "push",
                "serve",
                "--home",
                str(self.hub / "exchange"),
                "-c",
                str(self.hub / "raccordo.toml"),
                "--port",
                str(self.port),
            ],
            stdout=err,
            stderr=err,
            env=_clean_env(**{TOKEN_ENV: self.hub_token}),
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(self.hub_url + "/v1/push/status", timeout=1)
                return proc
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "push serve did not start:\n" + (self.hub / "push-serve.stderr").read_text()
                    ) from None
                time.sleep(0.2)

    def worker_sync(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "sync",
                "--push",
                "-q",
                "-c",
                str(self.worker / "raccordo.toml"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_clean_env(**{TOKEN_ENV: self.worker_token}),
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def setup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registry_url: str,
    request: pytest.FixtureRequest,
) -> Iterator[Setup]:
    """The hub's registry on SQLite or PostgreSQL; the direct sync's on the same kind."""
    direct_url = f"sqlite:///{tmp_path}/direct.sqlite"
    if not registry_url.startswith("sqlite"):
        server = request.getfixturevalue("postgres_server")
        direct_url = server.url(server.create_database())
    extra = SYNTHETIC.format(count=COUNT)
    district = make_workspace(tmp_path / "district", extra, batch_size=BATCH)
    clients = district / "keys" / "pseudonymiser-clients.json"
    hub_token = add_client(clients, {"id": "HUB", "domain": "TEST"})
    worker_token = add_client(clients, {"id": "SYN", "domain": "TEST"})
    hub = make_workspace(
        tmp_path / "hub", extra + OTHER, batch_size=BATCH, registry_url=registry_url
    )
    shutil.rmtree(hub / "keys")
    worker = make_workspace(tmp_path / "worker", extra, batch_size=BATCH)
    shutil.rmtree(worker / "keys")
    direct = make_workspace(tmp_path / "direct", extra, batch_size=BATCH, registry_url=direct_url)
    shutil.rmtree(direct / "keys")
    port = free_port()
    with service_server.running_service(district) as svc:
        _set_hub(hub / "raccordo.toml", f'pseudonymiser_url = "{svc.url}"\n')
        home = init_home(hub / "exchange", party="TEST", pseudonym_domain="TEST")
        add_worker(home, "syn-worker", ["SYN"], worker / "push")
        _set_hub(
            worker / "raccordo.toml",
            f'pseudonymiser_url = "{svc.url}"\npush_url = "http://127.0.0.1:{port}"\n',
            drop_registry=True,
        )
        yield Setup(
            district, direct, hub, worker, svc.url, svc.log_dir, hub_token, worker_token, port
        )


def _runs(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT connector, stream, status, read, loaded, unchanged, duplicates, "
                "quarantined, deleted FROM runs ORDER BY id"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def _direct(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same data synced the direct-database way by the same client of the service
    (a consortium writing a registry itself): what push mode must reproduce."""
    cfg = setup.direct / "raccordo.toml"
    _set_hub(cfg, f'pseudonymiser_url = "{setup.service_url}"\n')
    monkeypatch.setenv(TOKEN_ENV, setup.worker_token)
    (runs, reg) = sync(setup.direct, "syn")
    reg.close()
    monkeypatch.delenv(TOKEN_ENV)
    assert runs[0].read == COUNT and runs[0].balanced
    return load_config(cfg).registry_url


def _comparable(url: str) -> dict[str, object]:
    """The registry's rows; entity key hashes (computed by whoever maps, with its own
    record key) replaced by how many distinct ones there are."""
    dump = registry_dump(url)
    out: dict[str, object] = {"source_records": dump.pop("source_records")}
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for name, rows in dump.items():
            table = t.RECORD_TABLES[name]
            cols = [c.name for c in table.c if c.name not in ("id", "run_id", "updated_at")]
            k = cols.index("key_hash")
            out[name] = sorted((r[:k] + r[k + 1 :] for r in rows), key=repr)
            out[name + ".distinct_keys"] = conn.execute(
                sa.select(sa.func.count(sa.distinct(table.c.key_hash)))
            ).scalar_one()
    engine.dispose()
    return out


def _clear_values() -> tuple[set[str], set[str]]:
    cfs, names = set(), set()
    for item in SyntheticConnector(SyntheticConfig(count=COUNT, bad_ratio=0.03, seed=11)).read(
        "cases", {}
    ):
        if isinstance(item, RawRecord):
            cfs.add(str(item.data["cf"]))
            names.update({str(item.data["cognome"]), str(item.data["nome"])})
    return cfs, names


def test_push_sync_equals_direct_sync_and_the_worker_holds_nothing(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct_url = _direct(setup, monkeypatch)
    hub = setup.start_hub()
    try:
        w = setup.worker_sync()
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err.decode()
        assert f"read {COUNT:,}" in out.decode()
        # Again: the cursor is the hub's, so nothing is read twice.
        w = setup.worker_sync()
        out2, err2 = w.communicate(timeout=600)
        assert w.returncode == 0, err2.decode()
        # What an Airflow sync task on the worker calls pushes too (and reads nothing new).
        from hub import orchestration

        task = orchestration.sync(
            setup.worker / "raccordo.toml", "syn", pseudonymiser_token=setup.worker_token
        )
        assert [r["read"] for r in task["runs"]] == [0] and task["cursor"] == {}
    finally:
        _stop(hub)
    assert _comparable(setup.hub_registry) == _comparable(direct_url)
    (d_run,) = _runs(direct_url)
    first, second, by_task = _runs(setup.hub_registry)
    assert first == d_run
    # As after a direct `raccordo sync`, the hub refreshed the observatory's tables.
    engine = sa.create_engine(setup.hub_registry)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.obs_tables)).scalar_one() > 0
    engine.dispose()
    # The second sync resumed from the cursor the hub holds: nothing read again.
    assert second == by_task == ("syn", "cases", "succeeded", 0, 0, 0, 0, 0, 0)
    assert "read 0 = loaded 0" in out2.decode()

    # The worker: no registry, no URL of one, no key; nothing it wrote holds a clear value.
    worker_cfg = (setup.worker / "raccordo.toml").read_text()
    assert "registry" not in worker_cfg.lower()
    assert not list(setup.worker.rglob("*.sqlite*"))
    assert not (setup.worker / "keys").exists()
    cfs, names = _clear_values()
    assert_no_leaks(
        scan_paths(
            [setup.worker, setup.hub / "exchange", setup.service_logs], names=names, values=cfs
        )
        + scan_database(setup.hub_registry, names=names, values=cfs)
    )
    # Nothing on the worker can open a registry by mistake (an empty local one).
    with pytest.raises(ConfigError, match="consortium worker in push mode"):
        Hub.open(setup.worker / "raccordo.toml")
    assert not list(setup.worker.rglob("*.sqlite*"))
    # Each batch moved on only on its receipt, signed by the hub, kept by the worker.
    receipts = list(iter_receipts(open_worker_home(setup.worker / "push")))
    assert len(receipts) >= COUNT // 250 + 4  # batches cut at the checkpoints; open, finish
    assert {r["status"] for r in receipts} == {"accepted"}
    assert sum(r["result"].get("counts", {}).get("read", 0) for r in receipts) == COUNT


def test_hub_killed_midway_then_up_again_nothing_lost_nothing_twice(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct_url = _direct(setup, monkeypatch)
    hub = setup.start_hub()
    w = setup.worker_sync()
    try:
        engine = sa.create_engine(setup.hub_registry)
        deadline = time.monotonic() + 300
        loaded = 0
        while loaded < 5 * BATCH and time.monotonic() < deadline:
            with engine.connect() as conn:
                loaded = conn.execute(
                    sa.text("SELECT coalesce(max(read), 0) FROM runs")
                ).scalar_one()
            time.sleep(0.05)
        engine.dispose()
        assert loaded < COUNT, "the sync finished before the hub could be stopped"
        hub.send_signal(signal.SIGKILL)
        hub.wait()
        time.sleep(2)  # the worker retries against a hub that is down
        assert w.poll() is None, "the worker gave up while the hub was down"
        hub = setup.start_hub()
        _out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err.decode()
    finally:
        _stop(w)
        _stop(hub)
    assert _comparable(setup.hub_registry) == _comparable(direct_url)
    assert _runs(setup.hub_registry) == _runs(direct_url)


def _wait_for_reads(url: str, at_least: int) -> int:
    engine = sa.create_engine(url)
    deadline = time.monotonic() + 300
    read = 0
    try:
        while read < at_least and time.monotonic() < deadline:
            with engine.connect() as conn:
                read = conn.execute(sa.text("SELECT coalesce(sum(read), 0) FROM runs")).scalar_one()
            time.sleep(0.05)
    finally:
        engine.dispose()
    return int(read)


def test_worker_killed_midway_the_next_sync_resumes_from_the_hubs_cursor(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct_url = _direct(setup, monkeypatch)
    hub = setup.start_hub()
    w = setup.worker_sync()
    try:
        read = _wait_for_reads(setup.hub_registry, 5 * BATCH)
        w.send_signal(signal.SIGKILL)
        w.wait()
        assert read < COUNT, "the sync finished before the worker could be killed"
        w = setup.worker_sync()
        _out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err.decode()
    finally:
        _stop(w)
        _stop(hub)
    assert _comparable(setup.hub_registry) == _comparable(direct_url)
    runs = _runs(setup.hub_registry)
    (d_run,) = _runs(direct_url)
    # The killed run read part, the next the rest: every record read once, none twice.
    assert [r[2] for r in runs] == ["interrupted", "succeeded"]
    assert tuple(sum(r[i] for r in runs) for i in range(3, 9)) == d_run[3:]


def test_a_push_run_holds_the_connectors_sync_lock_on_the_hub(setup: Setup) -> None:
    hub = setup.start_hub()
    registry = Registry.open(setup.hub_registry)
    try:
        client = PushClient(setup.hub_url, open_worker_home(setup.worker / "push"), wait=5)
        run = int(client.send("open", {"connector": "syn", "stream": "cases"})["run"])
        # A direct sync of the same connector meanwhile is refused, as between two direct syncs.
        with pytest.raises(SyncRefused), registry.sync_lock("syn"):
            pass
        client.send("finish", {"run": run, "status": "succeeded"})
        with registry.sync_lock("syn"):
            pass
    finally:
        registry.close()
        _stop(hub)


def _batch(
    org: str, data: dict[str, object] | None = None, skh: str = "k" * 40
) -> PseudonymisedBatch:
    record = Prepared(skh, "row 1", "upsert", data or {"case_id": "1"}, ())
    return PseudonymisedBatch([(org, [record])], [], [], {"offset": 1})


def test_a_worker_cannot_push_rows_of_another_organisation(setup: Setup) -> None:
    hub = setup.start_hub()
    try:
        client = PushClient(setup.hub_url, open_worker_home(setup.worker / "push"), wait=5)
        # A connector of another organisation: refused, no run started.
        with pytest.raises(RaccordoError) as e:
            client.send("open", {"connector": "altro", "stream": "cases"})
        assert "belongs to organisation ALTRO" in str(e.value)
        assert "speaks only for SYN" in str(e.value)
        # Its own connector, then a batch claiming another organisation's records.
        opened = client.send("open", {"connector": "syn", "stream": "cases"})
        run = int(opened["run"])
        with pytest.raises(RaccordoError) as e:
            client.send("batch", _batch_content(run, 0, [_batch("ALTRO")]))
        assert "claims records of organisation ALTRO" in str(e.value)
        assert "nothing of it was loaded" in str(e.value)
        # What the worker did not pseudonymise never reaches the registry.
        with pytest.raises(RaccordoError) as e:
            client.send(
                "batch", _batch_content(run, 0, [_batch("SYN", {"cf": "RSSMRA80A01H501U"})])
            )
        assert "field 'cf' is not a pseudonym of the current epoch" in str(e.value)
        assert "RSSMRA80A01H501U" not in str(e.value)
        with pytest.raises(RaccordoError) as e:
            client.send("batch", _batch_content(run, 0, [_batch("SYN", {"cognome": "Rossi"})]))
        assert "carries field 'cognome'" in str(e.value)
        # Altered in transit: refused before the sender is proven (400), never loaded.
        home = open_worker_home(setup.worker / "push")
        from hub.exchange.push import seal_message

        msg = seal_message(
            home.signing_key,
            worker="syn-worker",
            hub="TEST",
            hub_encryption_key=home.settings.hub_encryption_key,
            kind="batch",
            content=_batch_content(run, 1, [_batch("SYN")]),
        )
        body = bytearray(msg.body)
        body[100] ^= 1
        resp = requests.post(
            setup.hub_url + "/v1/push", data=bytes(body), headers=msg.headers, timeout=30
        )
        assert resp.status_code == 400
        assert "altered in transit" in " ".join(resp.json()["reasons"])
        # A key the hub does not know: refused.
        stranger = crypto.new_signing_key()
        msg = seal_message(
            stranger,
            worker="syn-worker",
            hub="TEST",
            hub_encryption_key=home.settings.hub_encryption_key,
            kind="open",
            content={"connector": "syn", "stream": "cases"},
        )
        resp = requests.post(
            setup.hub_url + "/v1/push", data=msg.body, headers=msg.headers, timeout=30
        )
        assert resp.status_code == 400
        assert "not signed by syn-worker's key" in " ".join(resp.json()["reasons"])
    finally:
        _stop(hub)
    engine = sa.create_engine(setup.hub_registry)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM source_records")).scalar_one()
        orgs = conn.execute(sa.text("SELECT DISTINCT org FROM runs")).scalars().all()
    engine.dispose()
    assert rows == 0
    assert set(orgs) <= {"SYN"}


def test_a_dead_workers_sync_lock_expires_and_answered_receipts_are_purged(
    setup: Setup,
) -> None:
    """The worker opens a run and dies: the hub holds the connector's sync lock only until
    the worker has been quiet for ``push_lock_idle_minutes``, then says so. The receipts a
    finished run's worker already had are not kept."""
    with Hub.open(setup.hub / "raccordo.toml", pseudonymiser_token=setup.hub_token) as hub:
        app = create_push_app(open_home(setup.hub / "exchange"), hub.pipeline)
        receiver = app.state.receiver
        inbox = setup.hub / "exchange" / "inbox" / "push"
        registry = hub.registry
        with app_in_thread(app, setup.port):
            worker = open_worker_home(setup.worker / "push")
            client = PushClient(setup.hub_url, worker, wait=5)
            run = int(client.send("open", {"connector": "syn", "stream": "cases"})["run"])
            assert receiver.expire_idle_locks() == []  # it spoke a moment ago
            with pytest.raises(SyncRefused), registry.sync_lock("syn"):
                pass
            (said,) = receiver.expire_idle_locks(now=time.monotonic() + 31 * 60)
            assert said == (
                "the sync lock of connector 'syn' expired: worker syn-worker sent nothing for "
                f"30 minutes (it stopped or gave up); run {run} marked interrupted; the next "
                "sync resumes from the last batch the hub acknowledged"
            )
            with registry.sync_lock("syn"):  # a direct sync may go now
                pass
            summary = registry.run(run)
            assert (summary.status, summary.error) == ("interrupted", said)
            (expired,) = [e for e in hub_log(setup) if e["kind"] == "lock-expired"]
            assert expired["reason"] == said
            # The worker coming back late is told what to do; its next sync opens a new run.
            with pytest.raises(RaccordoError, match="is interrupted, not running: start the sync"):
                client.send("finish", {"run": run, "status": "succeeded"})
            before = {p.name for p in inbox.glob("*.json")}
            run2 = int(client.send("open", {"connector": "syn", "stream": "cases"})["run"])
            client.send("finish", {"run": run2, "status": "succeeded"})
            new = {p.name for p in inbox.glob("*.json")} - before
            (finish,) = [r for r in iter_receipts(worker) if r["result"].get("run") == run2][-1:]
            assert new == {f"{finish['message']}.json"}  # the open's receipt is gone
            assert receiver.purge_inbox() == 0
            assert receiver.purge_inbox(now=time.time() + 5 * 86400) == len(before) + 1
            assert not list(inbox.glob("*.json"))


def hub_log(setup: Setup) -> list[dict[str, object]]:
    path = setup.hub / "exchange" / "log" / "entries.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_push_worker_never_opens_a_local_registry(setup: Setup) -> None:
    """`raccordo runs` or `raccordo quarantine list` on a worker say where to look instead
    of creating an empty SQLite registry beside raccordo.toml."""
    cfg = str(setup.worker / "raccordo.toml")
    for args in (["runs"], ["quarantine", "list"], ["warnings", "list"]):
        res = subprocess.run(
            [sys.executable, "-m", "hub", *args, "-c", cfg],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=60,
        )
        said = " ".join((res.stdout + res.stderr).split())
        assert res.returncode != 0, args
        assert "consortium worker in push mode: it has no registry" in said, said
        assert "on the district hub" in said and "Traceback" not in said
    assert not list(setup.worker.rglob("*.sqlite*"))
