"""``raccordo keys rotate`` / ``retire`` on a real registry (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.config import load_config
from hub.pseudonyms import Keyring, KeySource
from hub.pseudonyms.pseudonymiser import pseudonym_text
from hub.pseudonyms.rotation import (
    TODAY_BINARY_TABLES,
    MixedPseudonyms,
    epochs_in_use,
    refuse_mixed_schemes,
    today_registry_columns,
)
from hub.registry.tables import PERSON_COLUMNS
from tests.e2e.conftest import WorkspaceFactory
from tests.support.workspace import sync

RACCORDO = [sys.executable, "-m", "hub"]


def _pseudonyms(url: str) -> dict[str, list[str]]:
    """Every pseudonym of the registry as text, per column that names a person (a person
    column's ids resolved through ``pseudonyms``)."""
    engine = sa.create_engine(url)
    insp = sa.inspect(engine)
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table, column in today_registry_columns():
            if insp.has_table(table):
                rows = conn.execute(sa.text(f"SELECT {column} FROM {table}"))
                out[f"{table}.{column}"] = sorted(str(r[0]) for r in rows if r[0] is not None)
        for table, column in PERSON_COLUMNS:
            rows = conn.execute(
                sa.text(
                    f"SELECT p.epoch, p.value FROM {table} JOIN pseudonyms p ON p.id = {column}"
                )
            )
            out[f"{table}.{column}"] = sorted(pseudonym_text(e, bytes(v)) for e, v in rows)
    engine.dispose()
    return out


def _raccordo(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RACCORDO, *args, "-c", str(ws / "raccordo.toml")],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_rotation_resumes_after_sigkill_and_equals_a_fresh_sync(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(3_000)
    sync(ws, "syn")[1].close()
    url = load_config(ws / "raccordo.toml").registry_url
    before = _pseudonyms(url)
    assert sum(len(v) for v in before.values()) > 5_000
    assert all(p.startswith("v2.1.") for v in before.values() for p in v)

    progress = ws / "keys" / "rotation-progress.json"
    proc = subprocess.Popen(
        [*RACCORDO, "keys", "rotate", "--batch", "10", "-c", str(ws / "raccordo.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = json.loads(progress.read_text() or "{}").get("done") if progress.is_file() else {}
        if "pseudonyms.value" in done:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the rotation ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    engine = sa.create_engine(url)
    in_use = epochs_in_use(engine, today_registry_columns(), TODAY_BINARY_TABLES)
    assert in_use == {1, 2}  # really half done
    engine.dispose()

    resumed = _raccordo(ws, "keys", "rotate")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed and finished" in resumed.stdout and not progress.exists()
    after = _pseudonyms(url)
    assert all(p.startswith("v2.2.") for v in after.values() for p in v)
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}

    # A fresh sync of the same source under the new epoch computes the same pseudonyms.
    fresh = make_workspace(3_000, keys_from=ws, own_db=True)
    sync(fresh, "syn")[1].close()
    assert _pseudonyms(load_config(fresh / "raccordo.toml").registry_url) == after

    refused = _raccordo(ws, "keys", "retire", "2")
    assert refused.returncode == 5 and "current one" in refused.stderr
    retired = _raccordo(ws, "keys", "retire", "1")
    assert retired.returncode == 0, retired.stderr
    cfg = load_config(ws / "raccordo.toml")
    ring = Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))
    assert ring.epochs == (2,)
    # Quarantined records' payloads were converted too: nothing of epoch 1 is left.
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        payloads = [r[0] for r in conn.execute(sa.text("SELECT payload FROM quarantine"))]
    engine.dispose()
    assert payloads and not any('"v2.1.' in p for p in payloads)
    assert any('"v2.2.' in p for p in payloads)
    # Re-reading the source after the rotation duplicates nothing.
    reg = sync(ws, "syn")[1]
    reg.reset_state("syn")
    reg.close()
    (reread,), reg = sync(ws, "syn")
    counts = {k: reg.count(k) for k in ("subject", "case_episode", "intervention")}
    reg.close()
    assert reread.read == 3_000 and _pseudonyms(url) == after
    assert counts == {k: len(after[f"{t}.subject"]) for k, t in _TABLES.items()}


_TABLES = {"subject": "subjects", "case_episode": "case_episodes", "intervention": "interventions"}


def test_after_rotation_a_reread_finds_every_record_unchanged(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(200)
    sync(ws, "syn")[1].close()
    assert _raccordo(ws, "keys", "rotate").returncode == 0
    reg = sync(ws, "syn")[1]
    reg.reset_state("syn")
    reg.close()
    (reread,), reg = sync(ws, "syn")
    reg.close()
    assert reread.loaded == 0 and reread.unchanged + reread.quarantined == 200


def test_retire_refuses_an_epoch_still_in_use(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(50)
    sync(ws, "syn")[1].close()
    assert _raccordo(ws, "keys", "add-epoch").returncode == 0
    refused = _raccordo(ws, "keys", "retire", "1")
    assert refused.returncode == 5
    assert "still in the registry" in refused.stderr and "raccordo keys rotate" in refused.stderr


def test_v1_pseudonyms_are_refused_with_how_to_rebuild(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(50)
    _, reg = sync(ws, "syn")
    # The registry's record tables hold person ids since storage v2 (migration 0005 rebuilt
    # them); text pseudonyms remain in the web intake: one entry as Raccordo before v2 wrote it.
    with reg.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ets_entries (entry_uuid, org, seq, subject, identifier_kind, needs, "
                'services_given, comune_istat, "on", referred_by_social_services, deleted, '
                "created_at, updated_at) VALUES ('00000000-0000-0000-0000-000000000001', 'E1', "
                "1, :p, 'cf', 'food', '', '003106', '2024-01-01', false, false, "
                "'2024-01-01 00:00:00', '2024-01-01 00:00:00')"
            ),
            {"p": "1.Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm8"},
        )
    with pytest.raises(MixedPseudonyms) as e:
        refuse_mixed_schemes(reg.engine, where="registry")
    reg.close()
    assert "cannot be converted to v2 without the identifiers" in str(e.value)
    assert "raccordo sync" in str(e.value) and "ets_entries" in str(e.value)
    res = _raccordo(ws, "sync")
    assert res.returncode == 5 and "v1 pseudonyms" in res.stderr and "Traceback" not in res.stderr


def test_every_pseudonym_typed_column_is_listed_for_rotation() -> None:
    """A new column holding pseudonyms must be in PSEUDONYM_COLUMNS, or rotation misses it."""
    from hub.pseudonyms.rotation import registry_pseudonym_columns
    from hub.registry import tables

    typed = set(registry_pseudonym_columns(tables.metadata, tables.PSEUDONYM))
    assert typed == set(tables.PSEUDONYM_COLUMNS)
