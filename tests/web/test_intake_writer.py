"""Group commit of Third Sector entries: many threads, one writer, nothing lost or doubled."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
import sqlalchemy as sa

from hub.config import Config
from hub.pipeline import open_keyring
from hub.pseudonyms import Pseudonymiser
from hub.registry import Registry
from hub.registry import tables as t
from hub.web import intake
from hub.web.comuni import load_comuni


def _prepared(cfg: Config, n: int) -> list[intake.Prepared]:
    ps = Pseudonymiser(open_keyring(cfg), cfg.pseudonym_domain)
    comuni = load_comuni()
    return [
        intake.prepare(
            intake.EntryInput(
                entry_id=uuid.uuid4(),
                identifier_kind=intake.IdentifierKind.NONE,
                comune_istat="003106",
                needs=["food"],
                on=dt.date(2026, 1, 1),
                birth_year=1980,
                sex="F",
            ),
            org="ETS-A",
            pseudonymiser=ps,
            comuni=comuni,
        )
        for _ in range(n)
    ]


def test_concurrent_submissions_are_all_stored_once_in_seq_order(web_config: Config) -> None:
    engine = Registry.open(web_config.registry_url).engine
    writer = intake.IntakeWriter(engine)
    entries = _prepared(web_config, 300)
    sends = entries + entries[:60]  # retries of the same entries
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda p: writer.submit(p, org="ETS-A", user_id=None), sends))
    writer.close()
    assert sum(created for _, created in results) == 300
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.ets_entries.c.entry_uuid, t.ets_entries.c.seq)).all()
    assert sorted(r.entry_uuid for r in rows) == sorted(p.entry_uuid for p in entries)
    assert sorted(r.seq for r in rows) == list(range(1, 301))  # gap-free


def test_an_entry_id_of_another_organisation_is_refused(web_config: Config) -> None:
    engine = Registry.open(web_config.registry_url).engine
    (p,) = _prepared(web_config, 1)
    intake.store(engine, p, org="ETS-A", user_id=None)
    with pytest.raises(intake.IntakeProblem):
        intake.store(engine, p, org="ETS-B", user_id=None)


def test_person_tags_can_never_spell_a_name(web_config: Config) -> None:
    ps = Pseudonymiser(open_keyring(web_config), web_config.pseudonym_domain)
    tags = {intake.short_tag(ps, "ETS-A", f"k1.subject{i}") for i in range(2000)}
    assert len(tags) == 2000  # distinct enough for one organisation's people
    for tag in tags:
        assert len(tag) == 7 and tag[3] == "-"
        assert not set(tag) & set("AEIOUY01"), tag
    other = intake.short_tag(ps, "ETS-B", "k1.subject0")
    assert other != intake.short_tag(ps, "ETS-A", "k1.subject0")  # scoped to the organisation


def test_an_entry_submitted_while_a_sync_holds_its_transaction_is_stored_when_it_commits(
    web_config: Config,
) -> None:
    """A sync keeps its load transaction open for up to ``commit_seconds``; on SQLite a
    volunteer's submission then waits for it instead of failing, and is stored once."""
    reg = Registry.open(web_config.registry_url)
    engine = reg.engine
    tx = reg.load_transaction(commit_every=10**6, commit_seconds=3600, sqlite_cache_mib=16)
    # The sync has written something: on SQLite it now holds the write lock.
    tx.conn.execute(
        t.connector_state.insert().values(
            connector="sync", stream="s", state="{}", run_id=1, updated_at=dt.datetime.now(dt.UTC)
        )
    )
    (p,) = _prepared(web_config, 1)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(intake.store, engine, p, org="ETS-A", user_id=None)
        done, _ = wait([pending], timeout=1.0)
        assert engine.dialect.name == "sqlite" and not done  # waiting for the sync
        tx.close()
        _entry_id, created = pending.result(timeout=60)
    assert created
    with engine.connect() as conn:
        uuids = conn.execute(sa.select(t.ets_entries.c.entry_uuid)).scalars().all()
        state = conn.execute(sa.select(t.connector_state.c.connector)).scalars().all()
    assert uuids == [p.entry_uuid] and state == ["sync"]
    reg.close()


def test_an_entry_sent_twice_in_one_batch_is_stored_once(
    web_config: Config, registry_url: str
) -> None:
    """One multi-row INSERT per batch, its RETURNING ids matched to the items (SQLite
    and PostgreSQL)."""
    engine = Registry.open(registry_url).engine
    a, b = _prepared(web_config, 2)
    results = intake.store_many(
        engine, [(a, "ETS-A", None), (b, "ETS-A", None), (a, "ETS-A", None), (a, "ETS-B", None)]
    )
    first, second, again, other = results
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert first[1] and second[1] and again == (first[0], False)
    assert isinstance(other, intake.IntakeProblem) and other.field == "entry_id"
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.ets_entries.c.id, t.ets_entries.c.entry_uuid, t.ets_entries.c.seq)
        ).all()
    assert sorted((r.id, r.entry_uuid, r.seq) for r in rows) == sorted(
        [(first[0], a.entry_uuid, 1), (second[0], b.entry_uuid, 2)]
    )


def test_the_writer_prepares_entries_and_reports_each_problem_to_its_sender(
    web_config: Config,
) -> None:
    """The API hands raw entries to the writer thread: one bad identifier or comune
    fails its own submission only, and a revoked token is refused at commit."""
    from hub.web import accounts
    from tests.web.conftest import CF_1, CF_BAD

    engine = Registry.open(web_config.registry_url).engine
    ps = Pseudonymiser(open_keyring(web_config), web_config.pseudonym_domain)
    writer = intake.IntakeWriter(engine, pseudonymiser=ps, comuni=load_comuni())
    token = accounts.create_token(engine, "ETS-A", "t")
    revoked = accounts.create_token(engine, "ETS-A", "r")
    (revoked_id,) = [r["id"] for r in accounts.list_tokens(engine, "ETS-A") if r["label"] == "r"]
    assert accounts.revoke_token(engine, "ETS-A", int(str(revoked_id)))

    def entry(identifier: str, comune: str = "003106") -> intake.EntryInput:
        return intake.EntryInput(
            identifier_kind=intake.IdentifierKind.CF,
            identifier=identifier,
            comune_istat=comune,
            needs=["food"],
            on=dt.date(2026, 1, 1),
        )

    sends = [
        (entry(CF_1), accounts.token_hash(token)),
        (entry(CF_BAD), accounts.token_hash(token)),
        (entry(CF_1, comune="999999"), accounts.token_hash(token)),
        (entry(CF_1), accounts.token_hash(revoked)),
    ]
    futures = [writer.enqueue(intake.Submission(e, "ETS-A", token_hash=h)) for e, h in sends]
    stored = futures[0].result(timeout=30)
    problems = [f.exception(timeout=30) for f in futures[1:]]
    writer.close()
    assert stored.created and stored.tag and stored.entry_uuid
    assert [type(p) for p in problems] == [
        intake.IntakeProblem,
        intake.IntakeProblem,
        intake.TokenRevoked,
    ]
    assert [getattr(p, "field", None) for p in problems] == ["identifier", "comune_istat", "token"]
    assert CF_1 not in str(problems) and CF_BAD not in str(problems)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.ets_entries.c.id, t.ets_entries.c.tag)).all()
    assert [(r.id, r.tag) for r in rows] == [(stored.id, stored.tag)]


def test_one_entry_failing_unexpectedly_fails_alone(web_config: Config) -> None:
    """A pseudonymisation fault on one identifier (a remote service refusing a call, say)
    fails that submission only: the others of the same batch are stored."""
    from hub.pseudonyms import IdentifierType
    from tests.web.conftest import CF_1, CF_2

    class Faulty(Pseudonymiser):
        def pseudonymise_many(self, identifiers):  # type: ignore[no-untyped-def]
            if any(i.type is IdentifierType.CF and i.value == CF_2 for i in identifiers):
                raise RuntimeError("service refused the call")
            return super().pseudonymise_many(identifiers)

    engine = Registry.open(web_config.registry_url).engine
    ps = Faulty(open_keyring(web_config), web_config.pseudonym_domain)
    writer = intake.IntakeWriter(engine, pseudonymiser=ps, comuni=load_comuni())

    def entry(identifier: str) -> intake.Submission:
        return intake.Submission(
            intake.EntryInput(
                identifier_kind=intake.IdentifierKind.CF,
                identifier=identifier,
                comune_istat="003106",
                needs=["food"],
                on=dt.date(2026, 1, 1),
            ),
            "ETS-A",
        )

    from concurrent.futures import Future

    # One batch of three, as the writer thread would take them from its queue.
    batch: list[tuple[intake.Submission, Future[intake.Stored]]] = [
        (entry(cf), Future()) for cf in (CF_1, CF_2, CF_1)
    ]
    writer._write(batch)
    first, failed, again = (f.exception(timeout=1) or f.result() for _, f in batch)
    assert isinstance(failed, RuntimeError)
    assert isinstance(first, intake.Stored) and isinstance(again, intake.Stored)
    assert first.created and again.created and first.tag == again.tag
