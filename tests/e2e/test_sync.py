"""The acceptance of the hub core, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from connectors.synthetic import SyntheticConfig, SyntheticConnector, expected_bad
from hub.config import load_config
from hub.connector import RawRecord
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry
from tests.e2e.conftest import WorkspaceFactory, registry_dump
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths

RACCORDO = [sys.executable, "-m", "hub"]


def _pipeline(ws: Path) -> tuple[Pipeline, Registry]:
    cfg = load_config(ws / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    return Pipeline(cfg, reg, open_keyring(cfg)), reg


def _clear_identifiers(count: int) -> tuple[set[str], set[str]]:
    """The CFs and names the synthetic source holds, to prove none reached the hub."""
    conn = SyntheticConnector(SyntheticConfig(count=count, bad_ratio=0.03, seed=11))
    cfs, names = set(), set()
    for item in conn.read("cases", {}):
        if isinstance(item, RawRecord):
            cfs.add(str(item.data["cf"]))
            names.update({str(item.data["cognome"]), str(item.data["nome"])})
    return cfs, names


def test_10000_records_with_3_percent_bad_are_accounted_exactly(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(10_000)
    pipeline, reg = _pipeline(ws)
    bad = expected_bad(10_000, 0.03, 11)
    assert 200 < bad < 400  # the generator really makes ~3% bad records

    (run,) = pipeline.sync("syn")
    assert run.status == "succeeded"
    assert (run.read, run.loaded, run.unchanged, run.quarantined) == (10_000, 10_000 - bad, 0, bad)
    assert run.balanced
    quarantined = reg.quarantine_entries(run_id=run.id, limit=100_000)
    assert len(quarantined) == bad
    assert {q["rule"] for q in quarantined} >= {"cf_check_char", "unmapped_code"}
    assert all(q["location"].startswith("synthetic record ") for q in quarantined)
    counts = {k: reg.count(k) for k in ("subject", "case_episode", "intervention")}
    assert counts["case_episode"] == counts["intervention"] == 10_000 - bad
    assert 0 < counts["subject"] < 10_000 - bad  # people recur across records

    # Syncing again adds nothing: the cursor says everything was read.
    before = registry_dump(reg.engine.url.render_as_string(hide_password=False))
    (again,) = pipeline.sync("syn")
    assert (again.read, again.loaded, again.quarantined) == (0, 0, 0)
    # Forgetting the cursor re-reads everything: all unchanged, bad ones refused again.
    reg.reset_state("syn")
    (reread,) = pipeline.sync("syn")
    assert (reread.read, reread.loaded, reread.unchanged, reread.quarantined) == (
        10_000,
        0,
        10_000 - bad,
        bad,
    )
    assert registry_dump(reg.engine.url.render_as_string(hide_password=False)) == before
    reg.close()


def test_killed_mid_sync_then_rerun_equals_uninterrupted_run(
    make_workspace: WorkspaceFactory,
) -> None:
    reference = make_workspace(5_000, batch_size=300)
    pipeline, reg = _pipeline(reference)
    pipeline.sync("syn")
    expected = registry_dump(reg.engine.url.render_as_string(hide_password=False))
    reg.close()

    # Same keys (so same pseudonyms), its own registry.
    # One commit per 300-record batch, so that the kill lands after some commits.
    ws = make_workspace(5_000, keys_from=reference, batch_size=300, commit_every=300, own_db=True)
    env = {**os.environ, "RACCORDO_SYNTHETIC_CRASH_AT": "3217"}
    killed = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--config", str(ws / "raccordo.toml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cfg = load_config(ws / "raccordo.toml")
    reg2 = Registry.open(cfg.registry_url)
    partial = registry_dump(cfg.registry_url)
    assert 0 < len(partial["case_episode"]) < len(expected["case_episode"])
    (interrupted,) = reg2.runs(limit=1)
    assert interrupted.status == "running"
    reg2.close()

    done = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--config", str(ws / "raccordo.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert registry_dump(cfg.registry_url) == expected
    reg3 = Registry.open(cfg.registry_url)
    last, first = reg3.runs(limit=2)
    assert first.status == "interrupted" and last.status == "succeeded"
    assert last.balanced and first.balanced  # counters moved with the committed batches
    # Batches are cut at the connector's cursor: what was committed is exactly what the
    # cursor covers, so nothing is read twice.
    assert first.read + last.read == 5_000
    reg3.close()


def test_no_clear_identifier_anywhere_after_a_run(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(2_000)
    result = subprocess.run(
        [*RACCORDO, "sync", "--config", str(ws / "raccordo.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(
        [
            *RACCORDO,
            "quarantine",
            "list",
            "--json",
            "--limit",
            "1000",
            "--config",
            str(ws / "raccordo.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0
    cfs, names = _clear_identifiers(2_000)
    url = load_config(ws / "raccordo.toml").registry_url
    leaks = scan_paths([ws], names=names, values=cfs)
    leaks += scan_database(url, names=names, values=cfs)
    out = tmp_output = ws / "cli-output.txt"
    tmp_output.write_text(result.stdout + result.stderr + listing.stdout + listing.stderr)
    leaks += scan_paths([out], names=names, values=cfs)
    assert_no_leaks(leaks)
    assert "cf_check_char" in listing.stdout  # the quarantine explains itself


def test_a_reread_pseudonymises_only_what_it_cannot_find_unchanged(
    make_workspace: WorkspaceFactory,
) -> None:
    """Re-reading records already loaded decides "unchanged" from their fingerprints, before
    pseudonymisation: only the quarantined records (which the registry does not hold) are
    pseudonymised again; the registry is the same afterwards."""
    from tests.unit.test_pipeline_stages import Counting

    ws = make_workspace(400)
    cfg = load_config(ws / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    (first,) = Pipeline(cfg, reg, open_keyring(cfg)).sync("syn")
    before = registry_dump(cfg.registry_url)
    reg.reset_state("syn")
    pipeline = Pipeline(cfg, reg, open_keyring(cfg))
    counting = Counting(pipeline.pseudonymiser)
    pipeline.pseudonymiser = counting  # type: ignore[assignment]
    (again,) = pipeline.sync("syn")
    reg.close()
    assert (again.read, again.loaded, again.unchanged) == (400, 0, 400 - first.quarantined)
    assert again.quarantined == first.quarantined > 0 and again.balanced
    asked = sum(len(call) for call in counting.calls)
    assert 0 < asked <= 2 * first.quarantined  # at most two identifiers per refused record
    assert registry_dump(cfg.registry_url) == before


def test_sync_timings_says_where_the_cpu_went(make_workspace: WorkspaceFactory) -> None:
    """``raccordo sync --timings`` ends with the CPU time of each stage, which add up."""
    import re

    ws = make_workspace(3_000)
    result = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--timings", "--config", str(ws / "raccordo.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("CPU by stage:")]
    stages = dict(re.findall(r"(\w+) ([0-9.]+) s", line.split("(total")[0]))
    assert list(stages) == ["extract", "fingerprint", "pseudonymise", "transform", "load", "gc"]
    total = float(re.search(r"total ([0-9.]+) s", line).group(1))  # type: ignore[union-attr]
    assert total > 0
    assert abs(sum(map(float, stages.values())) - total) <= 0.1 * len(stages)


def test_rows_keyed_the_old_way_are_replaced_after_the_person_keys_migration(
    make_workspace: WorkspaceFactory,
) -> None:
    """0007_person_keys makes the next sync map every record again: rows whose keys were
    built the old way (simulated here by changing them) are replaced, and the registry ends
    as a fresh sync leaves it, with no second row for anybody."""
    import hashlib

    import sqlalchemy as sa
    from alembic import command

    from hub.registry import tables as t
    from hub.registry.migrate import alembic_config

    ws = make_workspace(2_000)
    pipeline, reg = _pipeline(ws)
    (first,) = pipeline.sync("syn")
    url = reg.engine.url.render_as_string(hide_password=False)
    expected = registry_dump(url)
    old_way = ("subject", "assessment")  # the synthetic mapping keys these by person
    with reg.engine.begin() as conn:
        for kind in old_way:
            table = t.RECORD_TABLES[kind]
            for rid, key in conn.execute(sa.select(table.c.id, table.c.key_hash)).all():
                other = hashlib.blake2b(bytes(key), digest_size=16).digest()
                conn.execute(table.update().where(table.c.id == rid).values(key_hash=other))
        command.downgrade(alembic_config(conn), "0006_obs_months")
    reg.close()

    pipeline, reg = _pipeline(ws)  # opening the registry upgrades it: 0006 runs
    assert reg.get_state("syn", "cases") == {}
    (again,) = pipeline.sync("syn")
    assert again.read == first.read and again.unchanged == 0
    assert again.loaded == first.loaded and again.balanced
    assert registry_dump(url) == expected
    reg.close()


def test_unkeyed_rows_keyed_the_old_way_become_positions_after_migration_0009(
    make_workspace: WorkspaceFactory,
) -> None:
    """A registry of 0008, whose unkeyed rows (case episodes and interventions of the
    synthetic mapping) carry a key hash and no position, is upgraded by 0009_positions; the
    next sync maps every record again and the registry ends as a fresh sync leaves it: each
    such row once, by position, none left under its old key."""
    import hashlib

    import sqlalchemy as sa
    from alembic import command

    from hub.registry import tables as t
    from hub.registry.migrate import alembic_config

    ws = make_workspace(2_000)
    pipeline, reg = _pipeline(ws)
    (first,) = pipeline.sync("syn")
    url = reg.engine.url.render_as_string(hide_password=False)
    expected = registry_dump(url)
    owned = [t.RECORD_TABLES[k] for k in sorted(t.OWNED_KINDS)]
    with reg.engine.begin() as conn:
        placed = {
            table.name: [
                dict(r)
                for r in conn.execute(sa.select(table).where(table.c.position.is_not(None)))
                .mappings()
                .all()
            ]
            for table in owned
        }
        keyed = {
            table.name: conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.key_hash.is_not(None))
            ).scalar_one()
            for table in owned
        }
        hashes = conn.execute(
            sa.select(t.source_records.c.id, t.source_records.c.record_hash)
        ).all()
        state = [dict(r) for r in conn.execute(sa.select(t.connector_state)).mappings()]
        command.downgrade(alembic_config(conn), "0008_run_unchanged")
        # What 0008 held: the same rows, each under a 16-byte key hash; the same record
        # hashes and cursor (so only the upgrade can make the next sync map them again).
        for table in owned:
            old = sa.Table(table.name, sa.MetaData(), autoload_with=conn)
            assert "position" not in old.c
            # The downgrade removed the rows it could not key, and only those.
            count = sa.select(sa.func.count()).select_from(old)
            assert conn.execute(count).scalar_one() == keyed[table.name]
            rows = [
                {
                    **{k: v for k, v in r.items() if k not in ("id", "position")},
                    "key_hash": hashlib.blake2b(
                        f"{table.name}|{r['source_record']}|{r['position']}".encode(),
                        digest_size=16,
                    ).digest(),
                }
                for r in placed[table.name]
            ]
            if rows:
                conn.execute(old.insert(), rows)
        sr = t.source_records
        for rid, record_hash in hashes:
            conn.execute(sr.update().where(sr.c.id == rid).values(record_hash=record_hash))
        conn.execute(t.connector_state.delete())
        conn.execute(t.connector_state.insert(), state)
    reg.close()
    assert sum(map(len, placed.values())) >= 2 * first.loaded  # case episode + intervention

    pipeline, reg = _pipeline(ws)  # opening the registry upgrades it: 0009 runs
    assert reg.get_state("syn", "cases") == {}
    assert reg.count("intervention") == first.loaded  # the old rows, until the next sync
    (again,) = pipeline.sync("syn")
    assert again.read == first.read and again.unchanged == 0
    assert again.loaded == first.loaded and again.balanced
    assert registry_dump(url) == expected
    with reg.engine.connect() as conn:
        for table in owned:
            assert not conn.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.key_hash.is_not(None), table.c.position.is_not(None))
            ).scalar_one()
    reg.close()
