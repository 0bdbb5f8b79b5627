"""The registry schema comes from Alembic migrations and matches the code."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from hub.errors import ConfigError
from hub.pseudonyms.pseudonymiser import parse_pseudonym_text as parse
from hub.registry import (
    BatchCounts,
    EntityRow,
    QuarantineEntry,
    ReadAhead,
    Registry,
    SourceRecordChange,
    h16,
    tables,
)
from hub.registry.migrate import alembic_config
from hub.registry.tables import metadata
from tests.support.rows import pseudonym


def test_migrations_produce_exactly_the_tables_the_code_uses(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    with reg.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    reg.close()
    assert diff == [], f"write an Alembic migration for: {diff}"


def test_opening_twice_is_idempotent(registry_url: str) -> None:
    Registry.open(registry_url).close()
    reg = Registry.open(registry_url)
    with reg.engine.connect() as conn:
        version = conn.execute(sa.text("select version_num from alembic_version")).scalar_one()
    reg.close()
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [version], "migrations must form one line (a single head)"


def test_unsupported_or_broken_url_is_a_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="registry_url"):
        Registry.open("mysql://nobody@localhost/x")
    with pytest.raises(ConfigError):
        Registry.open("sqlite:////nonexistent-dir/really/not/here.sqlite")


def _row(subject: str, opened: dt.date | None) -> dict[str, object]:
    return {"subject": subject, "area": "FAM", "opened_on": opened, "closed_on": None}


def test_batch_state_and_records_commit_together_and_changed_records_replace(
    registry_url: str,
) -> None:
    reg = Registry.open(registry_url)
    run = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
    )
    p = pseudonym("p")
    ep1 = EntityRow("case_episode", "k.ep1aaaaaaaaaaaaaaaa", _row(p, dt.date(2020, 1, 1)))
    ep2 = EntityRow("case_episode", "k.ep2aaaaaaaaaaaaaaaa", _row(p, dt.date(2021, 1, 1)))
    reg.commit_batch(
        run_id=run,
        connector="c",
        stream="s",
        org="O",
        changes=[SourceRecordChange("k.src1aaaaaaaaaaaaaaa", "r1", "upsert", (ep1, ep2))],
        quarantine=[
            QuarantineEntry(
                "record",
                "file.csv:3",
                "cf_check_char",
                "bad check",
                {"cf": "<invalid>"},
                field="cf",
            )
        ],
        counts=BatchCounts(read=2, loaded=1, quarantined=1),
        state={"next": 2},
        retention=dt.timedelta(days=30),
    )
    assert reg.count("case_episode") == 2
    assert reg.get_state("c", "s") == {"next": 2}
    # The same source record now produces only one episode: the other is removed.
    reg.commit_batch(
        run_id=run,
        connector="c",
        stream="s",
        org="O",
        changes=[SourceRecordChange("k.src1aaaaaaaaaaaaaaa", "r2", "upsert", (ep1,))],
        quarantine=[],
        counts=BatchCounts(read=1, loaded=1),
        state={"next": 3},
        retention=dt.timedelta(days=30),
    )
    assert reg.count("case_episode") == 1
    # A cancellation removes what the record produced.
    reg.commit_batch(
        run_id=run,
        connector="c",
        stream="s",
        org="O",
        changes=[SourceRecordChange("k.src1aaaaaaaaaaaaaaa", "r3", "delete")],
        quarantine=[],
        counts=BatchCounts(read=1, loaded=1, deleted=1),
        state={"next": 4},
        retention=dt.timedelta(days=30),
    )
    assert reg.count("case_episode") == 0
    summary = reg.finish_run(run, status="succeeded")
    assert (summary.read, summary.loaded, summary.quarantined, summary.deleted) == (4, 3, 1, 1)
    assert summary.balanced
    (q,) = reg.quarantine_entries(run_id=run)
    assert (q["location"], q["field"], q["rule"]) == ("file.csv:3", "cf", "cf_check_char")
    reg.close()


def test_what_a_run_found_unchanged_keeps_a_completed_unit_from_losing_it(
    registry_url: str,
) -> None:
    """A run lists the records it found unchanged (not rewriting them); when the unit
    completes, only what the run neither loaded nor found unchanged is removed. The list is
    in the registry: a second process continuing the run (the push hub after a restart)
    sees it; it goes when the run ends."""
    reg = Registry.open(registry_url)
    common = {"connector": "c", "stream": "s", "org": "O", "retention": dt.timedelta(days=1)}
    first = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1", stream="s"
    )
    keys = [f"k.src{i}aaaaaaaaaaaaaaaaaaa" for i in range(5)]
    reg.commit_batch(
        run_id=first,
        changes=[
            SourceRecordChange(
                k,
                f"r{i}",
                "upsert",
                (EntityRow("case_episode", f"k.ep{i}", _row(pseudonym("p"), dt.date(2020, 1, 1))),),
                "k.unit-a",
            )
            for i, k in enumerate(keys)
        ],
        quarantine=[],
        counts=BatchCounts(read=5, loaded=5),
        state=None,
        completed_units=["k.unit-a"],
        **common,  # type: ignore[arg-type]
    )
    reg.finish_run(first, status="succeeded")
    ids = {k: r.id for k, r in reg.loaded_records("c", "s", keys).items()}
    assert len(ids) == 5

    second = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1", stream="s"
    )
    # Two batches find records 0, 1 and 3 unchanged (nothing is rewritten)...
    for found in ([keys[0], keys[1]], [keys[3]]):
        reg.commit_batch(
            run_id=second,
            changes=[],
            quarantine=[],
            counts=BatchCounts(read=len(found), unchanged=len(found)),
            state=None,
            unchanged=[ids[k] for k in found],
            **common,  # type: ignore[arg-type]
        )
    assert all(r.run_id == first for r in reg.loaded_records("c", "s", keys).values())
    # ... which another process (another Registry) sees.
    other = Registry.open(registry_url)
    assert set(other.unchanged_ids(second)) == {ids[keys[0]], ids[keys[1]], ids[keys[3]]}
    # The unit completes: records 2 and 4 were not seen by this run and go.
    counts = BatchCounts()
    other.commit_batch(
        run_id=second,
        changes=[],
        quarantine=[],
        counts=counts,
        state=None,
        completed_units=["k.unit-a"],
        **common,  # type: ignore[arg-type]
    )
    assert counts.removed == 2
    assert set(other.loaded_records("c", "s", keys)) == {keys[0], keys[1], keys[3]}
    assert other.count("case_episode") == 3
    other.finish_run(second, status="succeeded")
    assert len(reg.unchanged_ids(second)) == 0
    with reg.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(tables.run_unchanged))
        assert left.scalar() == 0
    other.close()
    reg.close()


def test_loaded_records_read_ahead_finds_what_the_key_look_ups_find(registry_url: str) -> None:
    """Records looked up with a ReadAhead (ranges of a unit in id order, then the rest by
    key) are exactly those found key by key: in the order they were loaded, backwards,
    with gaps, mixed with other units, records of no unit and unknown keys. In the order
    of loading the ranges find them all; a unit read out of that order falls back to keys."""
    reg = Registry.open(registry_url)
    common = {"connector": "c", "stream": "s", "org": "O", "retention": dt.timedelta(days=1)}
    run = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1", stream="s"
    )
    unit_of = {"a": 300, "b": 200, None: 20}
    keys: dict[str | None, list[str]] = {
        u: [f"k.{u}-{i}-aaaaaaaaaaaaaaaaaaaa" for i in range(n)] for u, n in unit_of.items()
    }
    for u, ks in keys.items():
        for start in range(0, len(ks), 100):
            chunk = ks[start : start + 100]
            reg.commit_batch(
                run_id=run,
                changes=[
                    SourceRecordChange(k, f"r{k}", "upsert", (), None if u is None else f"k.u{u}")
                    for k in chunk
                ],
                quarantine=[],
                counts=BatchCounts(read=len(chunk), loaded=len(chunk)),
                state=None,
                **common,  # type: ignore[arg-type]
            )
    reg.finish_run(run, status="succeeded")
    units = reg.unit_ids("c", "s", ["k.ua", "k.ub"])
    unit_a, unit_b = units["k.ua"], units["k.ub"]
    a, b, none = keys["a"], keys["b"], keys[None]

    def both(batches: list[list[str]], ahead: ReadAhead) -> None:
        for batch in batches:
            per_unit = Counter(units[f"k.u{k[2]}"] for k in batch if k[2] in "ab")
            by_key = reg.loaded_records("c", "s", batch)
            assert reg.loaded_records("c", "s", batch, units=per_unit, ahead=ahead) == by_key

    in_order = ReadAhead()
    both([a[i : i + 50] for i in range(0, 300, 50)], in_order)
    assert in_order.after == {unit_a: max(r.id for r in reg.loaded_records("c", "s", a).values())}
    assert not in_order.off
    both([b[::-1][i : i + 40] for i in range(0, 200, 40)], ReadAhead())
    jumps = ReadAhead()  # a range of records the batch mostly does not hold: by key after it
    both([a[0:50], a[150:200], a[50:100]], jumps)
    assert unit_a in jumps.off
    gaps = ReadAhead()  # every third record gone from the file, and unknown keys between
    both(
        [
            [k for j, k in enumerate(a[i : i + 60]) if j % 3] + ["k.xa-new"]
            for i in range(0, 300, 60)
        ],
        gaps,
    )
    assert not gaps.off
    mixed = ReadAhead()
    both(
        [a[i : i + 30] + b[i : i + 30] + none[i // 30 : i // 30 + 2] for i in range(0, 180, 30)],
        mixed,
    )
    assert not mixed.off and set(mixed.after) == {unit_a, unit_b}
    reg.close()


def test_a_failed_batch_leaves_neither_records_nor_state(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    run = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
    )
    bad = EntityRow(
        "case_episode",
        "k.ep1aaaaaaaaaaaaaaaa",
        {**_row(pseudonym("p"), dt.date(2020, 1, 1)), "area": None},
    )
    with pytest.raises(sa.exc.IntegrityError):
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="O",
            changes=[SourceRecordChange("k.src1aaaaaaaaaaaaaaa", "r1", "upsert", (bad,))],
            quarantine=[],
            counts=BatchCounts(read=1, loaded=1),
            state={"next": 1},
            retention=dt.timedelta(days=30),
        )
    assert reg.get_state("c", "s") == {}
    assert reg.count("case_episode") == 0
    assert reg.run(run).read == 0
    reg.close()


def test_quarantine_entries_expire(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    run = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
    )
    for days in (-1, 30):
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="O",
            changes=[],
            quarantine=[QuarantineEntry("record", "f.csv:2", "r", "why", {}, field="x")],
            counts=BatchCounts(read=1, quarantined=1),
            state=None,
            retention=dt.timedelta(days=days),
        )
    assert reg.purge_expired_quarantine() == 1
    assert len(reg.quarantine_entries()) == 1
    reg.close()


def test_an_upsert_leaves_a_row_with_the_same_content_untouched(registry_url: str) -> None:
    """Unchanged values keep the row as first written (its run and source record); new
    values replace it. The check is in the upsert itself (no look-up before it)."""
    reg = Registry.open(registry_url)
    p = pseudonym("p")
    key = "k.ep1aaaaaaaaaaaaaaaa"
    runs = []
    for n, day in enumerate((1, 1, 3), start=1):
        run = reg.start_run(
            connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
        )
        runs.append(run)
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="O",
            changes=[
                SourceRecordChange(
                    f"k.src{n}aaaaaaaaaaaaaaa",
                    f"r{n}",
                    "upsert",
                    (EntityRow("case_episode", key, _row(p, dt.date(2020, 1, day))),),
                    replaces=False,
                )
            ],
            quarantine=[],
            counts=BatchCounts(read=1, loaded=1),
            state=None,
            retention=dt.timedelta(days=30),
        )
        reg.finish_run(run, status="succeeded")
        table = tables.RECORD_TABLES["case_episode"]
        sr = tables.source_records
        with reg.engine.connect() as conn:
            row = (
                conn.execute(sa.select(table).where(table.c.key_hash == h16(key))).mappings().one()
            )
            owner = conn.execute(
                sa.select(sr.c.key).where(sr.c.id == row["source_record"])
            ).scalar_one()
        if n == 2:  # same values: still the row of the first run and record
            assert (row["run_id"], owner) == (runs[0], h16("k.src1aaaaaaaaaaaaaaa"))
            assert row["opened_on"] == dt.date(2020, 1, 1)
        if n == 3:  # new values: replaced
            assert (row["run_id"], owner) == (runs[2], h16("k.src3aaaaaaaaaaaaaaa"))
            assert row["opened_on"] == dt.date(2020, 1, 3)
    assert reg.count("case_episode") == 1
    reg.close()


def test_a_large_batch_writes_the_same_as_row_by_row(registry_url: str) -> None:
    """A batch of many rows (on PostgreSQL: COPY into a staging table, then one
    INSERT ... SELECT ... ON CONFLICT) inserts new rows, replaces changed ones and leaves
    rows whose values are the same untouched, as the row-by-row statements do."""
    from hub.registry import COPY_MIN_ROWS

    reg = Registry.open(registry_url)
    if registry_url.startswith("postgresql"):
        assert reg._copies  # the staged path is the one under test
    n = COPY_MIN_ROWS + 100
    people = [pseudonym(f"p{i % 50}") for i in range(n)]
    runs = []
    for round_ in (1, 2):
        run = reg.start_run(
            connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
        )
        runs.append(run)
        changes = [
            SourceRecordChange(
                f"k.src{i:05d}aaaaaaaaaaaa",
                f"r{i}.{round_ if i % 3 == 0 else 1}",
                "upsert",
                (
                    EntityRow(
                        "case_episode",
                        f"k.ep{i:05d}aaaaaaaaaaaaa",
                        # In the second round every third record changes its date.
                        _row(people[i], dt.date(2020, 1, 1 + (round_ - 1) * (i % 3 == 0))),
                    ),
                ),
                replaces=round_ == 2,
            )
            for i in range(n)
        ]
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="O",
            changes=changes,
            quarantine=[],
            counts=BatchCounts(read=n, loaded=n),
            state=None,
            retention=dt.timedelta(days=30),
        )
        reg.finish_run(run, status="succeeded")
    table = tables.RECORD_TABLES["case_episode"]
    with reg.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.run_id, table.c.opened_on)).all()
        persons = conn.execute(sa.select(sa.func.count()).select_from(tables.pseudonyms)).scalar()
    assert len(rows) == n and persons == 50
    changed = sum(1 for i in range(n) if i % 3 == 0)
    assert sorted((r[0], r[1]) for r in rows) == sorted(
        [(runs[1], dt.date(2020, 1, 2))] * changed
        + [(runs[0], dt.date(2020, 1, 1))] * (n - changed)
    )
    reg.close()


def test_a_v1_registry_is_rebuilt_by_the_storage_migration_and_the_next_sync(
    registry_url: str,
) -> None:
    """0005_storage drops the v1 record rows and every cursor (the next sync re-reads the
    sources into the v2 shape); runs and quarantine entries stay."""
    from hub.registry.migrate import upgrade

    engine = sa.create_engine(registry_url)
    upgrade(engine, "0004_engine")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO case_episodes (org, key_hash, source_key_hash, content_hash, "
                "connector, run_id, mapping, mapping_version, updated_at, subject, area, "
                "opened_on) VALUES ('O', 'k1.a', 'k1.s', 'c', 'c', 1, 'm', '1', :t, "
                "'v2.1.abc', 'FAM', '2020-01-01')"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO connector_state (connector, stream, state, run_id, updated_at) "
                "VALUES ('c', 's', '{\"next\": 9}', 1, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO quarantine (run_id, connector, stream, org, kind, location, rule, "
                "reason, payload, created_at, expires_at) VALUES (1, 'c', 's', 'O', 'record', "
                "'f.csv:2', 'r', 'why', '{}', :t, :t)"
            ),
            {"t": now},
        )
    engine.dispose()
    reg = Registry.open(registry_url)  # upgrades to head
    assert reg.count("case_episode") == 0
    assert reg.get_state("c", "s") == {}  # the next sync reads everything again
    assert len(reg.quarantine_entries()) == 1
    with reg.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []
    reg.close()


@pytest.mark.parametrize("records", [1, 250])
def test_unkeyed_rows_are_positions_of_their_source_record(registry_url: str, records: int) -> None:
    """Rows without a key are (source record, position), with no key hash: a changed record
    updates its positions in place, leaves unchanged ones untouched and removes the ones it
    no longer produces (and a keyed row it no longer produces); on PostgreSQL 250 rows go
    through the staging table (COPY)."""
    reg = Registry.open(registry_url)
    p = pseudonym("p")
    runs: list[int] = []

    def write(entities: tuple[EntityRow, ...], record_hash: str) -> None:
        run = reg.start_run(
            connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
        )
        runs.append(run)
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="O",
            changes=[
                SourceRecordChange(
                    f"k.src{i:05d}aaaaaaaaaaaa", record_hash, "upsert", entities, replaces=True
                )
                for i in range(records)
            ],
            quarantine=[],
            counts=BatchCounts(read=records, loaded=records),
            state=None,
            retention=dt.timedelta(days=30),
        )
        reg.finish_run(run, status="succeeded")

    def placed(day: int, n: int) -> EntityRow:
        return EntityRow("case_episode", None, _row(p, dt.date(2020, 1, day)), n)

    keyed = EntityRow("case_episode", "k.ep1aaaaaaaaaaaaaaaa", _row(p, dt.date(2020, 2, 1)))
    write((placed(1, 0), placed(2, 1), keyed), "r1")
    write((placed(1, 0), placed(3, 1)), "r2")  # position 1 changes, the keyed row goes
    write((placed(1, 0),), "r3")  # position 1 goes
    table = tables.RECORD_TABLES["case_episode"]
    with reg.engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.key_hash, table.c.position, table.c.run_id, table.c.opened_on)
        ).all()
    # Position 0 never changed: still the row the first run wrote.
    assert sorted(rows) == [(None, 0, runs[0], dt.date(2020, 1, 1))] * records
    write((placed(4, 0), keyed), "r4")
    with reg.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.key_hash, table.c.position, table.c.opened_on)).all()
    assert sorted(rows, key=repr) == sorted(
        [(None, 0, dt.date(2020, 1, 4))] * records
        + [(h16("k.ep1aaaaaaaaaaaaaaaa"), None, dt.date(2020, 2, 1))],
        key=repr,
    )
    reg.close()


@pytest.mark.parametrize("extra", [0, 250], ids=["few rows", "many rows"])
def test_a_subject_row_shared_by_records_keeps_the_first_that_gave_its_values(
    registry_url: str, extra: int
) -> None:
    """Several records naming the same person write one subject row: it ends with the last
    values given and the first record that gave them, in one batch as across batches (a
    resumed run equals an uninterrupted one); every pseudonym named is stored, also one whose
    values a later record of the batch replaced; the records of a person in several
    transactions of one load name the same ``pseudonyms`` row. With ``extra`` filler
    records, the rows go through PostgreSQL's COPY path."""
    reg = Registry.open(registry_url)
    person, h1, h2, h3 = (pseudonym(n) for n in ("shared", "h1", "h2", "h3"))

    def subject(household: str) -> EntityRow:
        values = {
            "subject": person,
            "household": household,
            "birth_year": 1950,
            "sex": "F",
            "residence_comune_istat": "003024",
            "citizenship": None,
        }
        return EntityRow("subject", "k.subject-shared", values)

    def change(n: int, household: str, *, replaces: bool = False) -> SourceRecordChange:
        episode = EntityRow("case_episode", f"k.ep-{n}", _row(person, dt.date(2020, 1, 1 + n)))
        return SourceRecordChange(
            f"k.src-{n}", f"r{n}", "upsert", (subject(household), episode), replaces=replaces
        )

    fillers = [
        SourceRecordChange(
            f"k.fill-{i}",
            "r",
            "upsert",
            (
                EntityRow(
                    "case_episode",
                    f"k.fill-ep-{i}",
                    _row(pseudonym(f"f{i % 7}"), dt.date(2021, 1, 1)),
                ),
            ),
        )
        for i in range(extra)
    ]
    tx = reg.load_transaction(commit_every=10**6, commit_seconds=3600, sqlite_cache_mib=16)
    run = reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
    )

    def commit(changes: list[SourceRecordChange]) -> None:
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="O",
            changes=changes,
            quarantine=[],
            counts=BatchCounts(read=len(changes), loaded=len(changes)),
            state=None,
            retention=dt.timedelta(days=30),
            tx=tx,
        )

    # One batch: h1, then h2 (replaced), then h1 again; the row ends with h1 from record 3.
    commit([change(1, h1), change(2, h2), change(3, h1), *fillers])
    tx.commit()
    # Another transaction of the same load: record 4 gives the same values (the row keeps
    # record 3), then record 5 a new household (the row is record 5's).
    commit([change(4, h1)])
    tx.commit()
    commit([change(5, h3)])
    tx.close()
    reg.finish_run(run, status="succeeded")

    sr, ps, subjects = tables.source_records, tables.pseudonyms, tables.subjects
    with reg.engine.connect() as conn:
        ids = dict(conn.execute(sa.select(ps.c.value, ps.c.id)).all())
        sources = {bytes(k): i for k, i in conn.execute(sa.select(sr.c.key, sr.c.id))}
        rows = conn.execute(
            sa.select(subjects.c.subject, subjects.c.household, subjects.c.source_record)
        ).all()
        episodes = conn.execute(
            sa.select(tables.case_episodes.c.subject)
            .distinct()
            .where(tables.case_episodes.c.key_hash.in_([h16(f"k.ep-{n}") for n in range(1, 6)]))
        ).all()
    by_value = {parse(p)[1]: p for p in (person, h1, h2, h3)}
    named = {by_value[bytes(v)] for v in ids if bytes(v) in by_value}
    assert named == {person, h1, h2, h3}  # h2 too, though no row keeps it
    assert len(ids) == 4 + min(extra, 7)
    pid = {p: ids[parse(p)[1]] for p in (person, h1, h2, h3)}
    assert rows == [(pid[person], pid[h3], sources[h16("k.src-5")])]
    assert episodes == [(pid[person],)]  # one person id across the transactions
    reg.close()


def test_a_subject_row_given_the_same_values_again_keeps_its_record(registry_url: str) -> None:
    """Across batches: record 1 gives a subject's values, record 2 other ones, record 3
    record 1's again; in one batch or three, the row ends as record 3 left it."""
    person, h1, h2 = (pseudonym(n) for n in ("same", "a1", "a2"))

    def change(n: int, household: str) -> SourceRecordChange:
        values = {
            "subject": person,
            "household": household,
            "birth_year": 1950,
            "sex": "M",
            "residence_comune_istat": None,
            "citizenship": None,
        }
        return SourceRecordChange(
            f"k.s{n}", f"r{n}", "upsert", (EntityRow("subject", "k.subject", values),)
        )

    results = []
    for batches in ([[1, 2, 3]], [[1], [2], [3]]):
        reg = Registry.open(registry_url)
        run = reg.start_run(
            connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
        )
        for batch in batches:
            reg.commit_batch(
                run_id=run,
                connector="c",
                stream="s",
                org="O",
                changes=[change(n, h1 if n != 2 else h2) for n in batch],
                quarantine=[],
                counts=BatchCounts(read=len(batch), loaded=len(batch)),
                state=None,
                retention=dt.timedelta(days=30),
            )
        s, sr, ps = tables.subjects, tables.source_records, tables.pseudonyms
        with reg.engine.connect() as conn:
            (row,) = conn.execute(
                sa.select(ps.c.value, sr.c.key)
                .select_from(s.join(sr, sr.c.id == s.c.source_record))
                .join(ps, ps.c.id == s.c.household)
            ).all()
            results.append((bytes(row[0]), bytes(row[1])))
            for table in (s, sr, ps, tables.runs, tables.quarantine):
                conn.execute(table.delete())
            conn.commit()
        reg.close()
    assert results == [(parse(h1)[1], h16("k.s3"))] * 2
