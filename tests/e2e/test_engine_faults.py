"""Engine v2 under faults and changes (issue 11 items 4, 5, 6), on SQLite and PostgreSQL.

A second sync of a connector is refused at once; a full disk stops a sync with one
line and a failed run; a new mapping version (or ``--full-refresh``) maps every record
again, the quarantined ones included, without duplicating quarantine entries; the same
source record twice in one file is counted as a duplicate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.synthetic import expected_bad
from hub.config import load_config
from hub.errors import RunFailed
from hub.registry import Registry, storage_error
from hub.registry import tables as t
from hub.service import Hub
from tests.e2e.conftest import WorkspaceFactory, registry_dump
from tests.e2e.test_csv_export import CONFIG as CSV_CONFIG
from tests.e2e.test_csv_export import FIXTURES as CSV_FIXTURES
from tests.support.workspace import make_workspace

RACCORDO = [sys.executable, "-m", "hub"]


def _raccordo(ws: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RACCORDO, *args, "--config", str(ws / "raccordo.toml")],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _quarantine_rows(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    q = t.quarantine.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(q.source_key_hash, q.rule).where(q.source_key_hash.is_not(None))
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_a_second_sync_of_the_same_connector_is_refused_at_once(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(500)
    cfg = load_config(ws / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    with reg.sync_lock("syn"):  # another process's sync holds the connector
        started = time.monotonic()
        refused = _raccordo(ws, "sync", "--quiet", "--no-refresh", "syn")
        elapsed = time.monotonic() - started
    assert refused.returncode == 7, refused.stderr
    assert "is being synced by another process" in refused.stderr
    assert "Traceback" not in refused.stderr and "Deadlock" not in refused.stderr
    assert elapsed < 30  # at once, not after waiting for a lock timeout
    assert reg.runs() == []  # nothing was started
    # Once the other sync is over, the connector syncs as usual.
    done = _raccordo(ws, "sync", "--quiet", "--no-refresh", "syn")
    assert done.returncode == 0, done.stderr
    (run,) = reg.runs()
    assert run.status == "succeeded" and run.read == 500 and run.balanced
    reg.close()


def test_killed_twice_then_rerun_leaves_one_quarantine_entry_per_record(
    make_workspace: WorkspaceFactory,
) -> None:
    count = 3_000
    ws = make_workspace(count, batch_size=300, commit_every=300)
    url = load_config(ws / "raccordo.toml").registry_url
    for crash_at in ("1217", "2419"):
        killed = _raccordo(ws, "sync", "--quiet", RACCORDO_SYNTHETIC_CRASH_AT=crash_at)
        assert killed.returncode < 0, killed.stderr  # SIGKILL
    done = _raccordo(ws, "sync", "--quiet")
    assert done.returncode == 0, done.stderr
    bad = expected_bad(count, 0.03, 11)
    rows = _quarantine_rows(url)
    assert len(rows) == len(set(rows)) == bad
    reg = Registry.open(url)
    runs = reg.runs()
    assert [r.status for r in runs] == ["succeeded", "interrupted", "interrupted"]
    # Counters moved with the committed batches and the cursor covers exactly them.
    assert sum(r.read for r in runs) == count
    assert sum(r.quarantined for r in runs) == bad
    assert all(r.balanced for r in runs)
    reg.close()


def test_a_new_mapping_version_maps_every_record_again_and_full_refresh_on_request(
    make_workspace: WorkspaceFactory,
) -> None:
    count = 2_000
    ws = make_workspace(count)
    bad = expected_bad(count, 0.03, 11)
    cfg = load_config(ws / "raccordo.toml")
    with Hub.open(cfg) as hub:
        (first,) = hub.sync("syn")
        assert (first.read, first.loaded, first.quarantined) == (count, count - bad, bad)
        (again,) = hub.sync("syn")
        assert again.read == 0  # nothing new, the file is skipped as before
    before = registry_dump(cfg.registry_url)

    source = cfg.mapping_path("synthetic.toml").read_text(encoding="utf-8")
    assert 'version = "2026.1"' in source
    own = cfg.resolve(cfg.hub.mappings_dir) / "synthetic.toml"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(source.replace('version = "2026.1"', 'version = "2026.2"'), encoding="utf-8")
    with Hub.open(ws / "raccordo.toml") as hub:
        (remapped,) = hub.sync("syn")
        assert remapped.mapping_version == "2026.2"
        # Every record mapped again, the quarantined ones included (refused again).
        assert (remapped.read, remapped.loaded, remapped.quarantined) == (count, count - bad, bad)
        (settled,) = hub.sync("syn")
        assert settled.read == 0
    assert len(_quarantine_rows(cfg.registry_url)) == bad  # replaced, not duplicated
    after = registry_dump(cfg.registry_url)
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}

    refreshed = _raccordo(ws, "sync", "--quiet", "--no-refresh", "--full-refresh", "syn")
    assert refreshed.returncode == 0, refreshed.stderr
    assert f"read {count:,} = loaded {count - bad:,}" in refreshed.stdout
    assert len(_quarantine_rows(cfg.registry_url)) == bad
    assert registry_dump(cfg.registry_url) == after
    refused = _raccordo(ws, "sync", "--full-refresh")
    assert refused.returncode == 2 and "--full-refresh NAME" in refused.stderr


@pytest.mark.parametrize("batch_size", [10_000, 1], ids=["one batch", "a batch per record"])
def test_the_same_record_twice_in_one_file_is_counted_as_a_duplicate(
    tmp_path: Path, batch_size: int
) -> None:
    """Also when the repeat comes in a later batch than its first copy, and the first copy
    was quarantined (the registry holds nothing of it)."""
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "export.csv"
    lines = (CSV_FIXTURES / "cartella-esempio.csv").read_bytes().split(b"\r\n")
    repeated = [line for line in lines if b";PASTI;" in line or line.startswith(b"1004;")]
    assert len(repeated) == 2  # one loaded record, one refused (an unmapped code)
    target.write_bytes(b"\r\n".join([*lines[:-1], *repeated, lines[-1]]))
    ws = make_workspace(
        tmp_path / "ws",
        CSV_CONFIG.format(path="../in/export.csv", encoding="cp1252"),
        registry_url=f"sqlite:///{tmp_path}/r.sqlite",
        batch_size=batch_size,
    )
    res = _raccordo(ws, "sync", "--quiet", "--no-refresh")
    assert res.returncode == 0, res.stderr
    assert "read 7 = loaded 3 + unchanged 0 + duplicates 2 + quarantined 2" in res.stdout
    listed = _raccordo(ws, "runs", "--json")
    (run,) = json.loads(listed.stdout)
    assert (run["read"], run["duplicates"], run["stream"], run["balanced"]) == (
        7,
        2,
        "rows",
        True,
    )
    table = _raccordo(ws, "runs")
    assert "duplicates" in table.stdout
    assert len(_quarantine_rows(f"sqlite:///{tmp_path}/r.sqlite")) == 2


@pytest.mark.parametrize("batch_size", [10_000, 1], ids=["one batch", "a batch per record"])
def test_a_repeat_of_a_record_found_unchanged_is_a_duplicate_and_nothing_is_removed(
    tmp_path: Path, batch_size: int
) -> None:
    """On a re-read, records found unchanged are not rewritten: the run lists them. A repeat
    of one later in the file is still a duplicate, and none of them is removed as unseen
    when the file completes."""
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "export.csv"
    lines = (CSV_FIXTURES / "cartella-esempio.csv").read_bytes().split(b"\r\n")
    target.write_bytes(b"\r\n".join(lines))
    ws = make_workspace(
        tmp_path / "ws",
        CSV_CONFIG.format(path="../in/export.csv", encoding="cp1252"),
        registry_url=f"sqlite:///{tmp_path}/r.sqlite",
        batch_size=batch_size,
    )
    first = _raccordo(ws, "sync", "--quiet", "--no-refresh")
    assert "read 5 = loaded 3 + unchanged 0 + quarantined 2" in first.stdout
    (repeat,) = [line for line in lines if b";PASTI;" in line]  # a record that loads
    target.write_bytes(b"\r\n".join([*lines[:-1], repeat, lines[-1]]))
    again = _raccordo(ws, "sync", "--quiet", "--no-refresh")
    assert again.returncode == 0, again.stderr
    assert "read 6 = loaded 0 + unchanged 3 + duplicates 1 + quarantined 2" in again.stdout
    (run, _) = json.loads(_raccordo(ws, "runs", "--json").stdout)
    assert (run["removed"], run["balanced"]) == (0, True)
    engine = sa.create_engine(f"sqlite:///{tmp_path}/r.sqlite")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from source_records")).scalar() == 3
        # What the run found unchanged is forgotten when it ends.
        assert conn.execute(sa.text("select count(*) from run_unchanged")).scalar() == 0
    engine.dispose()


def test_a_full_disk_stops_the_sync_in_one_line_and_marks_the_run_failed(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        from tests.e2e.conftest import SYNTHETIC

        ws = make_workspace(
            tmp_path / "ws",
            SYNTHETIC.format(count=20_000),
            registry_url=f"sqlite:///{disk}/registry.sqlite",
            batch_size=1000,
            commit_every=5000,
        )
        res = _raccordo(ws, "sync", "--quiet", "--no-refresh")
        assert res.returncode == 7, res.stdout + res.stderr
        err = [line for line in res.stderr.splitlines() if line.strip()]
        assert "the disk holding the registry is full" in err[0]
        assert len(err) <= 2 and "Traceback" not in res.stderr  # the message and its hint
        # Room again: the registry is intact, the run says failed, the next sync resumes.
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        reg = Registry.open(f"sqlite:///{disk}/registry.sqlite")
        (failed,) = reg.runs()
        assert failed.status == "failed" and "disk" in (failed.error or "")
        assert failed.balanced
        with reg.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        reg.close()
        done = _raccordo(ws, "sync", "--quiet", "--no-refresh")
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_no_database_error_prints_its_parameters(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    secret = f"1.{uuid.uuid4().hex}-looks-like-a-pseudonym"
    row = {"code": "X", "name": secret, "kind": "ets"}
    with pytest.raises(sa.exc.IntegrityError) as caught, reg.engine.begin() as conn:
        conn.execute(t.organisations.insert(), [row, row])
    assert secret not in str(caught.value)
    problem = storage_error(caught.value)
    assert secret not in str(problem) and "\n" not in problem.message
    reg.close()


def test_a_refused_write_fails_the_run_with_a_message_for_people(tmp_path: Path) -> None:
    from tests.e2e.conftest import SYNTHETIC

    url = f"sqlite:///{tmp_path}/r.sqlite"
    ws = make_workspace(tmp_path / "ws", SYNTHETIC.format(count=300), registry_url=url)
    hub = Hub.open(ws / "raccordo.toml")
    with hub.registry.engine.begin() as conn:  # a broken registry: the table is gone
        conn.exec_driver_sql("DROP TABLE source_records")
    with pytest.raises(RunFailed) as caught:
        hub.sync("syn")
    assert "the registry database refused a write" in str(caught.value)
    (run,) = hub.registry.runs()
    assert run.status == "failed"
    hub.close()
