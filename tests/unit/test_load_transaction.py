"""A sync's load transaction: several batches per commit, never part of a batch.

What a user relies on: after a crash, the registry holds exactly the batches of
the last commit together with the cursor that covers them (so the next run
resumes there), and a batch that cannot be written takes nothing with it.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from hub.registry import BatchCounts, EntityRow, LoadTransaction, Registry, SourceRecordChange
from tests.support.rows import pseudonym
from tests.unit.test_registry import _row

PSEUDONYM = pseudonym("p")


def _episode(n: int, opened: dt.date | None, subject: str = PSEUDONYM) -> EntityRow:
    # The same case-episode row as the registry tests; a None date breaks NOT NULL.
    return EntityRow("case_episode", f"k.ep{n:04d}aaaaaaaaaaaaaaaa", _row(subject, opened))


def _write(
    reg: Registry,
    tx: LoadTransaction | None,
    run: int,
    n: int,
    *,
    broken: bool = False,
    subject: str = PSEUDONYM,
    made: dict[str, tuple[int, bytes]] | None = None,
) -> None:
    """One batch of one record of ``subject``, whose state says ``next = n + 1`` (``tx``
    None: a transaction of its own; ``made``: the pseudonyms the stage made for it)."""
    opened = None if broken else dt.date(2020, 1, 1) + dt.timedelta(days=n)
    reg.commit_batch(
        run_id=run,
        connector="c",
        stream="s",
        org="O",
        changes=[
            SourceRecordChange(
                f"k.src{n:04d}aaaaaaaaaaaaaaa", f"r{n}", "upsert", (_episode(n, opened, subject),)
            )
        ],
        quarantine=[],
        counts=BatchCounts(read=1, loaded=1),
        state={"next": n + 1},
        retention=dt.timedelta(days=30),
        tx=tx,
        made_pseudonyms=made,
    )
    if tx is not None:
        tx.batch_written(1)


def _seen_from_outside(url: str) -> tuple[int, dict[str, object], int]:
    """Episodes, cursor and run counter as another process would see them now."""
    other = Registry.open(url, migrate=False)
    try:
        run = other.runs(limit=1)[0]
        return other.count("case_episode"), other.get_state("c", "s"), run.read
    finally:
        other.close()


def _start(reg: Registry) -> int:
    return reg.start_run(
        connector="c", connector_type="t", org="O", mapping="m", mapping_version="1"
    )


def test_batches_become_visible_and_durable_only_when_the_transaction_commits(
    registry_url: str,
) -> None:
    reg = Registry.open(registry_url)
    run = _start(reg)
    tx = reg.load_transaction(commit_every=3, commit_seconds=3600, sqlite_cache_mib=16)
    _write(reg, tx, run, 0)
    _write(reg, tx, run, 1)
    # Written, not committed: a crash now would leave the registry as it was,
    # cursor included, and the next run would read these two records again.
    assert _seen_from_outside(registry_url) == (0, {}, 0)
    _write(reg, tx, run, 2)  # the third record: commit
    assert tx.commits == 1
    assert _seen_from_outside(registry_url) == (3, {"next": 3}, 3)
    _write(reg, tx, run, 3)
    assert _seen_from_outside(registry_url) == (3, {"next": 3}, 3)
    tx.close()  # the end of the sync commits the rest
    assert _seen_from_outside(registry_url) == (4, {"next": 4}, 4)
    with pytest.raises(RuntimeError, match="closed"):
        _ = tx.conn
    reg.close()


def test_a_batch_that_cannot_be_written_takes_back_the_uncommitted_ones_and_nothing_else(
    registry_url: str,
) -> None:
    reg = Registry.open(registry_url)
    run = _start(reg)
    tx = reg.load_transaction(commit_every=2, commit_seconds=3600, sqlite_cache_mib=16)
    _write(reg, tx, run, 0)
    _write(reg, tx, run, 1)  # committed with the cursor at 2
    _write(reg, tx, run, 2)  # written, not committed
    # A real database error inside a batch: a NOT NULL column left empty.
    with pytest.raises(sa.exc.IntegrityError):
        _write(reg, tx, run, 3, broken=True)
    # Nothing of the failed batch, nor of the uncommitted one before it, and the
    # cursor where the committed batches left it: the next run reads 2 and 3 again.
    assert _seen_from_outside(registry_url) == (2, {"next": 2}, 2)
    tx.close()  # already rolled back and closed: commits nothing
    assert _seen_from_outside(registry_url) == (2, {"next": 2}, 2)
    # The registry is usable afterwards (no lock or transaction left behind).
    tx2 = reg.load_transaction(commit_every=10, commit_seconds=3600, sqlite_cache_mib=16)
    _write(reg, tx2, run, 2)
    _write(reg, tx2, run, 3)
    tx2.close()
    assert _seen_from_outside(registry_url) == (4, {"next": 4}, 4)
    reg.close()


def test_the_transaction_is_also_committed_after_commit_seconds(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    run = _start(reg)
    # Far from commit_every, but past commit_seconds after every batch.
    tx = reg.load_transaction(commit_every=1_000_000, commit_seconds=1e-9, sqlite_cache_mib=16)
    _write(reg, tx, run, 0)
    assert _seen_from_outside(registry_url) == (1, {"next": 1}, 1)
    _write(reg, tx, run, 1)
    assert tx.commits == 2
    tx.close()
    reg.close()


def test_pseudonym_ids_forgotten_at_a_commit_are_found_again_not_added_twice(
    registry_url: str,
) -> None:
    """The transaction's pseudonym → id memory is bounded: past its limit it is emptied at
    a commit, and a person met again afterwards still names the one ``pseudonyms`` row."""
    from hub.registry import tables as t
    from tests.support.rows import pseudonyms_of

    reg = Registry.open(registry_url)
    run = _start(reg)
    tx = reg.load_transaction(commit_every=1, commit_seconds=3600, sqlite_cache_mib=16)
    tx.person_ids_limit = 1
    people = ["anna", "bruno", "anna", "carla", "bruno", "anna"]
    for n, name in enumerate(people):
        _write(reg, tx, run, n, subject=pseudonym(name))
        assert len(tx.person_ids) <= 2  # emptied at the commits once past the limit
    tx.close()
    with reg.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.pseudonyms)).scalar() == 3
        named = pseudonyms_of(conn, t.case_episodes)
    assert sorted(named) == sorted(pseudonym(p) for p in people)
    reg.close()


def test_a_text_that_is_no_group_element_is_refused_and_the_batch_is_not_written(
    registry_url: str,
) -> None:
    """Pseudonyms the pipeline's stage did not make are decoded and checked: a well-formed
    text whose 32 bytes are no ristretto255 element (a value mapped into ``subject`` that
    never went through the stage) is refused in one line, and nothing of its batch stays."""
    from hub.errors import RaccordoError
    from hub.pseudonyms.pseudonymiser import pseudonym_text
    from hub.registry import tables as t

    reg = Registry.open(registry_url)
    run = _start(reg)
    fake = pseudonym_text(1, b"\xff" * 32)  # not a canonical encoding
    with pytest.raises(RaccordoError, match="not a v2 pseudonym"):
        _write(reg, None, run, 0, subject=fake)
    with reg.engine.connect() as conn:
        for table in (t.pseudonyms, t.case_episodes, t.source_records):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    reg.close()


def test_pseudonyms_the_stage_made_are_stored_as_it_gave_them(registry_url: str) -> None:
    """The stage hands over the elements it made with their texts; the registry stores
    those elements (the same row a decoded text gives: the person is found again later)."""
    from hub.registry import tables as t
    from tests.support.rows import element

    reg = Registry.open(registry_url)
    run = _start(reg)
    text = pseudonym("anna")
    _write(reg, None, run, 0, subject=text, made={text: (1, element("anna"))})
    tx = reg.load_transaction(commit_every=1, commit_seconds=3600, sqlite_cache_mib=16)
    _write(reg, tx, run, 1, subject=text)  # the same person, from its text this time
    tx.close()
    with reg.engine.connect() as conn:
        rows = conn.execute(sa.select(t.pseudonyms.c.epoch, t.pseudonyms.c.value)).all()
    assert [(e, bytes(v)) for e, v in rows] == [(1, element("anna"))]
    reg.close()
