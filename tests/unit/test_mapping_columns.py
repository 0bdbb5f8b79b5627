"""The mapping's fast path (hub.mappings.columns) against the row path it stands in for.

The row path (``CompiledMapping.apply`` and the model's validation) is the reference: the
fast path may leave any record to it, but a record it decides must be one the row path
loads, with the same rows; and it must decide the ordinary ones (or it is not a fast path).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from hub import registry as registry_module
from hub.mappings import compile_mapping, load_mapping, parse_mapping
from hub.mappings.columns import CROSS_FIELD_RULES, ColumnMapping
from hub.mappings.engine import source_fields
from hub.mappings.targets import plain
from hub.pipeline import transform as transform_module
from hub.pipeline.transform import Transform, record_hasher, record_hashes
from hub.pseudonyms import Keyring, KeySource, Pseudonymiser
from hub.pseudonyms.stage import Prepared
from hub.registry import BatchCounts, Registry, SharedRows
from hub.registry import tables as tables_module
from hub.schema import MODELS, model_for

ROOT = Path(__file__).resolve().parents[2]

PSEUDONYM = "v2.1." + "A" * 43
# Values a field may hold: ordinary ones first (most records get one), then odd ones.
ORDINARY: dict[str, list[Any]] = {
    "date": ["05/03/2020", "31/12/2019", "01/01/2021", "2020-03-05", "2021-12-31"],
    "code": ["ANZIANI", "MINORI", "SAD", "TRASPORTO", "1", "2", "3", "ANZ", "MIN", "M", "F"],
    "amount": ["12,50", "1.234,56", "0", "10.5", "300", "7,25"],
    "int": ["1950", "2001", "1990"],
    "bool": ["S", "N", "1", "2", "3", "s"],
    "text": ["001272", "003024", "001272"],
}
ODD = [
    "",
    "   ",
    None,
    " 05/03/2020 ",
    "5/3/2020",
    "31/02/2020",
    "00/01/2020",
    "01/01/0000",
    "29/02/2021",
    "12/13/2020",
    "2020-02-30",
    "0999-01-01",
    "1,2,3",
    "-5",
    "+5",
    "1e3",
    "12.345,678",
    "1.234.567,89",
    "12.",
    ".5",
    "999999999999999,99",
    "12,345",
    "anziani",
    "ANZIANI\t",
    "àèì",
    "2.14\u00a0",
    "1800",
    "2101",
    "x" * 250,
    "00123",
    "S ",
    "no",
    "short",
    "<invalid identifier removed>",
    PSEUDONYM,
    "v2.1." + "B" * 43,
    "12/03/2020",
    "0",
    "1",
    "A1.01",
    "0012720",
]


def _pools(spec: Any) -> dict[str, list[Any]]:
    """Ordinary values for each source field, from what the mapping does with it."""
    pools: dict[str, list[Any]] = {}

    def add(field: str, values: list[Any]) -> None:
        pools.setdefault(field, []).extend(values)

    for r in spec.records:
        if r.when is not None:
            w = r.when
            add(w.field, [w.equals] if w.equals else list(w.in_ or []) or ["x"])
            add(w.field, ["other"])
        for target, t in r.fields.items():
            kind = t.type
            src = getattr(t, "source", None)
            if src is None:
                continue
            if kind == "date":
                add(src, [d for d in ORDINARY["date"] if ("/" in d) == ("/" in t.formats[0])])
            elif kind == "code":
                add(src, list(spec.codes[t.table].values))
            elif kind == "decimal":
                add(src, [a for a in ORDINARY["amount"] if ("," in a) <= t.decimal_comma])
            elif kind == "int":
                add(src, ORDINARY["int"])
            elif kind == "bool":
                add(src, [*t.true, *t.false])
            elif target == "citizenship":
                add(src, ["100", "380"])
            elif target == "service_code":
                add(src, ["A2.14", "A1.16", "X-1"])
            else:
                add(src, ORDINARY["text"])
    for r in spec.records:
        for k in r.key or ():
            if k not in pools:
                add(k, ["K1", "K2", "K3"])
    return pools


def _records(spec: Any, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    pools = _pools(spec)
    fields = sorted(source_fields(spec))
    out = []
    for _ in range(n):
        row: dict[str, Any] = {}
        odd = rng.random() < 0.4
        for f in fields:
            if f in ("cf", "CODICE_FISCALE", "ID_NUCLEO", "household_id"):
                pool: list[Any] = [PSEUDONYM, "v2.1." + "C" * 43]
                if odd and rng.random() < 0.1:  # not a pseudonym: the model refuses it
                    pool = ["short", "<invalid identifier removed>", "v2.1." + "é" * 20]
            elif f.endswith("__birth_year"):
                pool = [1950, 1980, 2010]
            elif f.endswith("__sex"):
                pool = ["F", "M"]
            else:
                pool = pools.get(f) or ORDINARY["text"]
            if f.endswith("__birth_year"):  # whole numbers, or none (a mixed column: below)
                row[f] = rng.choice([*pool, None] if odd else pool)
                continue
            row[f] = rng.choice(ODD if odd and rng.random() < 0.25 else pool)
        out.append(row)
    return out


def _row_path(mapping: Any, data: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]] | None:
    """What the row path loads for a record (None: it refuses it or counts a code)."""
    result = mapping.apply(data)
    if result.problems or result.unmapped:
        return None
    outputs = []
    for o in result.outputs:
        try:
            obj = model_for(o.model).model_validate({**o.data, "org": "ORG"})
        except ValidationError:
            return None
        values = {k: plain(v) for k, v in obj.__dict__.items() if k != "org"}
        key = None if o.key is None else tuple(str(k) for k in o.key)
        outputs.append((o.model, key, values))
    return outputs


MAPPINGS = ["cartella-esempio.toml", "siuss_ps.toml", "synthetic.toml"]


@pytest.mark.parametrize("name", MAPPINGS)
def test_fast_path_decides_only_what_the_row_path_loads_and_the_same_rows(name: str) -> None:
    spec = load_mapping(ROOT / "mappings" / name)
    columns = ColumnMapping.compile(spec)
    assert columns is not None, f"{name} no longer compiles to the fast path"
    mapping = compile_mapping(spec)
    records = _records(spec, 6000, seed=len(name))
    fast = columns.apply(records)
    assert fast is not None
    decided = accepted = 0
    for data, got in zip(records, fast, strict=True):
        want = _row_path(mapping, data)
        if want is not None:
            accepted += 1
        if got is None:
            continue
        decided += 1
        assert want is not None, f"the fast path loads a record the row path refuses: {data}"
        assert got == want, data
        for (_, _, g), (_, _, w) in zip(got, want, strict=True):
            for k in g:  # the same Python types too (a date is no datetime, 1 no True)
                assert type(g[k]) is type(w[k]), (k, g[k], w[k])
    # The fast path is one: it decides most records the row path loads.
    assert accepted > 300
    assert decided >= 0.9 * accepted, (decided, accepted)


def test_a_mapping_with_lists_takes_the_row_path() -> None:
    """``split`` (lists of needs, in the Third Sector mappings) is not compiled to columns."""
    assert ColumnMapping.compile(load_mapping(ROOT / "mappings" / "ets-export.toml")) is None


def test_cross_field_rules_cover_every_model_validator() -> None:
    """A model rule the fast path does not know sends that model to the row path, and the
    known ones are checked in columns: a new rule cannot be skipped silently."""
    for kind, model in MODELS.items():
        decorators = model.__pydantic_decorators__
        names = set(decorators.model_validators) | set(decorators.field_validators)
        if names:
            assert kind in CROSS_FIELD_RULES, kind
            assert names == {"_ordered"}, (kind, names)


def test_cross_field_rules_refuse_like_the_model() -> None:
    spec = parse_mapping(
        """
version = "1"
name = "t"
[[records]]
model = "assessment"
[records.fields]
subject = { type = "field", source = "cf" }
assessed_on = { type = "date", source = "a" }
valid_until = { type = "date", source = "b", optional = true }
disability = { type = "bool", source = "d", optional = true }
non_self_sufficient = { type = "bool", source = "n", optional = true }
"""
    )
    columns = ColumnMapping.compile(spec)
    assert columns is not None
    out = columns.apply(
        [
            {"cf": PSEUDONYM, "a": "2020-01-02", "b": "2020-01-01", "d": "S", "n": None},
            {"cf": PSEUDONYM, "a": "2020-01-02", "b": None, "d": None, "n": None},
            {"cf": PSEUDONYM, "a": "2020-01-02", "b": "2020-01-02", "d": "N", "n": None},
        ]
    )
    assert out is not None
    assert out[0] is None and out[1] is None
    assert out[2] is not None and out[2][0][2]["disability"] is False


def test_a_batch_of_other_value_types_takes_the_row_path() -> None:
    spec = load_mapping(ROOT / "mappings" / "siuss_ps.toml")
    columns = ColumnMapping.compile(spec)
    assert columns is not None
    records = _records(spec, 3, seed=1)
    records[1]["importo"] = Decimal("12.50")
    assert columns.apply(records) is None


def _prepared(spec: Any, n: int, seed: int) -> list[Prepared]:
    """Records as the pseudonymise stage hands them on: identifiers as pseudonyms with their
    persons' keys, CF-derived year and sex, some source keys twice (a change feed)."""
    rng = random.Random(seed)
    prepared = []
    for i, data in enumerate(_records(spec, n, seed=seed)):
        person_keys = tuple(
            (f, "p1." + v[-22:])
            for f, v in sorted(data.items())
            if isinstance(v, str) and v.startswith("v2.") and rng.random() < 0.95
        )
        cf = rng.choice([None, (1950, "F"), (1980, "M"), (2010, "F")])
        key = f"k1.{rng.randrange(n) if i % 10 == 0 else i}"
        prepared.append(
            Prepared(key, f"line {i}", "upsert", data, (), None, cf, f"f{i}", person_keys)
        )
    return prepared


def _changes(out: Any) -> dict[str, Any]:
    """A transform result's changes record by record, whether they came as columns or not."""
    if out.columns is not None:
        assert not out.changes
        return {c.source_key_hash: c for c in out.columns.changes()}
    return out.changes


def _both_paths(mapping: Any, prepared: list[Prepared], tmp_path: Path) -> tuple[Any, int]:
    """The stage's result with its fast path and with the row path only (they must be
    equal), and how many records the fast path decided."""
    keyring = Keyring.create(tmp_path / "k.json", KeySource.generate_key_file(tmp_path / "k.key"))
    pseudonymiser = Pseudonymiser(keyring, "D1")
    ctx = SimpleNamespace(mapping=mapping)
    district = frozenset({"001272", "003106"})
    results = []
    decided: list[int] = []
    for fast in (True, False):
        stage = Transform(pseudonymiser, district)
        if fast:
            inner = stage._fast_outputs

            def counted(*a: Any, inner: Any = inner) -> Any:
                index, rows, quiet = inner(*a)
                decided.append(len(index))
                return index, rows, quiet

            stage._fast_outputs = counted  # type: ignore[method-assign]
        else:
            stage._fast_outputs = lambda *a: ([], None, set())  # type: ignore[method-assign]
        counts = BatchCounts()
        out = stage(ctx, "ORG", prepared, {}, counts, loaded_before=set())  # type: ignore[arg-type]
        results.append((counts, _changes(out), out.quarantine, out.warnings))
    (c1, ch1, q1, w1), (c2, ch2, q2, w2) = results
    assert c1 == c2
    assert list(ch1) == list(ch2)
    for k in ch1:
        assert ch1[k] == ch2[k], k
    assert q1 == q2 and w1 == w2
    return results[0], decided[0]


@pytest.mark.parametrize("name", MAPPINGS)
def test_transform_gives_the_same_result_through_either_path(name: str, tmp_path: Path) -> None:
    """The transform stage builds the fast path's rows, keys, positions and warnings over
    the batch: they must be those the row path gives record by record (the row path is
    the stage with its fast path switched off)."""
    spec = load_mapping(ROOT / "mappings" / name)
    (counts, _, _, warnings), decided = _both_paths(
        compile_mapping(spec), _prepared(spec, 3000, len(name) + 1), tmp_path
    )
    # Records load, most of them decided in columns, and some warn.
    assert counts.loaded > 300 and decided >= 0.9 * counts.loaded and warnings


UNKEYED_SPEC = """
version = "1"
name = "t"
[[records]]
model = "subject"
[records.fields]
subject = { type = "field", source = "cf" }
[[records]]
model = "intervention"
when = { field = "w", equals = "x" }
[records.fields]
subject = { type = "field", source = "cf" }
service_code = { type = "field", source = "s" }
area = { type = "const", value = "FAM" }
started_on = { type = "date", source = "d", formats = ["%d/%m/%Y"] }
[[records]]
model = "intervention"
[records.fields]
subject = { type = "field", source = "cf" }
service_code = { type = "field", source = "s2" }
area = { type = "const", value = "ELD" }
started_on = { type = "date", source = "d", formats = ["%d/%m/%Y"] }
[[records]]
model = "subject"
[records.fields]
subject = { type = "field", source = "cf" }
"""


def test_transform_numbers_unkeyed_rows_like_the_row_path(tmp_path: Path) -> None:
    """Several outputs of one model without a key: each identified by its position among
    the record's (those a ``when`` leaves out not counted), or, for a kind no source record
    owns, by a hash of it."""
    spec = parse_mapping(UNKEYED_SPEC)
    (counts, changes, _, _), decided = _both_paths(
        compile_mapping(spec), _prepared(spec, 2000, 3), tmp_path
    )
    assert decided >= 0.9 * counts.loaded > 300
    positions = {
        e.position for c in changes.values() for e in c.entities if e.kind == "intervention"
    }
    assert positions == {0, 1}


def test_record_hashes_are_those_of_record_hasher() -> None:
    """The batch form of the record hash decides *unchanged* like the pipeline's re-read path
    (which uses record_hasher): the same bytes, and none for a refused record."""
    prepared = [
        Prepared(f"k{i}", "", "upsert", {}, (("f", "r", "m"),) if i == 3 else (), fingerprint=f)
        for i, f in enumerate(["a", "b" * 40, "", "c", "é"])
    ]
    hashed = record_hasher("2026.1")
    want = [b"" if p.problems else hashed(p.fingerprint) for p in prepared]
    assert record_hashes("2026.1", prepared) == want
    assert record_hashes("2026.2", prepared)[0] != want[0]


def test_transform_keys_rows_the_same_when_its_key_cache_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row keys remembered between batches are forgotten past a bound: batches that
    pass it, their keys partly remembered, still get every key right."""
    monkeypatch.setattr(transform_module, "KEY_CACHE_SIZE", 50)
    spec = load_mapping(ROOT / "mappings" / "cartella-esempio.toml")
    prepared = [
        p._replace(data={**p.data, "ID_CARTELLA": f"C{i % 2000}"})
        for i, p in enumerate(_prepared(spec, 3000, 9))
    ]
    keyring = Keyring.create(tmp_path / "k.json", KeySource.generate_key_file(tmp_path / "k.key"))
    pseudonymiser = Pseudonymiser(keyring, "D1")
    ctx = SimpleNamespace(mapping=compile_mapping(spec))
    batches = [prepared[:700], prepared[300:1500], prepared[:2000]]
    stage = Transform(pseudonymiser)
    fresh = []
    for batch in batches:
        out = stage(ctx, "ORG", batch, {}, BatchCounts(), loaded_before=set())  # type: ignore[arg-type]
        # The same batch through the row path of a stage that remembers nothing yet.
        rows_only = Transform(pseudonymiser)
        rows_only._fast_outputs = lambda *a: ([], None, set())  # type: ignore[method-assign]
        alone = rows_only(ctx, "ORG", batch, {}, BatchCounts(), loaded_before=set())  # type: ignore[arg-type]
        assert _changes(out) == alone.changes
        fresh.append(sum(len(c.entities) for c in _changes(out).values()))
    assert min(fresh) > 300


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_registry_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two fresh, empty registries of one kind (SQLite files, or databases on the test server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/a.sqlite", f"sqlite:///{tmp_path}/b.sqlite"
    server = request.getfixturevalue("postgres_server")
    return server.url(server.create_database()), server.url(server.create_database())


#: The stage's own pseudonyms are stored as given (these stand-ins are not group elements).
MADE = {f"v2.1.{c * 43}": (1, bytes([i]) * 32) for i, c in enumerate("ABC")}


def _decided(name: str, tmp_path: Path) -> tuple[Any, Transform, list[Prepared]]:
    """A mapping, a transform stage and 4,000 records of ``name`` that its fast path decides
    whole (those naming a person by anything but :data:`MADE` are left out: the registry
    refuses them)."""
    spec = (
        parse_mapping(UNKEYED_SPEC) if name == "unkeyed" else load_mapping(ROOT / "mappings" / name)
    )
    mapping = compile_mapping(spec)
    persons = ("cf", "CODICE_FISCALE", "ID_NUCLEO", "household_id")
    prepared = [
        p._replace(source_key_hash=f"k1.{i}")
        for i, p in enumerate(_prepared(spec, 4000, 11))
        if all(p.data.get(f) is None or p.data[f] in MADE for f in persons)
    ]
    keyring = Keyring.create(tmp_path / "k.json", KeySource.generate_key_file(tmp_path / "k.key"))
    stage = Transform(Pseudonymiser(keyring, "D1"), frozenset({"001272"}))
    index, _, _ = stage._fast_outputs(
        mapping, prepared, record_hashes(mapping.version, prepared), {}
    )
    return mapping, stage, [prepared[i] for i in index]


def _write(
    url: str, outs: Sequence[Any], as_columns: Sequence[bool], *, one_transaction: bool
) -> dict[str, list[Any]]:
    """Write the transform results ``outs`` into the registry at ``url`` (each as columns or
    record by record, as ``as_columns`` says; in one load transaction or each in its own);
    every table of the rows, ids included."""
    reg = Registry.open(url)
    run = reg.start_run(
        connector="c",
        connector_type="t",
        org="ORG",
        mapping="m",
        mapping_version="1",
        stream="s",
    )
    tx = (
        reg.load_transaction(commit_every=10**9, commit_seconds=3600, sqlite_cache_mib=16)
        if one_transaction
        else None
    )
    for out, columns in zip(outs, as_columns, strict=True):
        assert out.columns is not None
        reg.commit_batch(
            run_id=run,
            connector="c",
            stream="s",
            org="ORG",
            changes=[] if columns else out.columns.changes(),
            columns=out.columns if columns else None,
            quarantine=[],
            counts=BatchCounts(read=len(out.columns), loaded=len(out.columns)),
            state=None,
            retention=dt.timedelta(days=1),
            made_pseudonyms=MADE,
            tx=tx,
        )
    if tx is not None:
        tx.close()
    tables = {
        "pseudonyms": tables_module.pseudonyms,
        "source_records": tables_module.source_records,
        **tables_module.RECORD_TABLES,
    }
    with reg.engine.connect() as conn:
        dump = {k: conn.execute(sa.select(tb).order_by(tb.c.id)).all() for k, tb in tables.items()}
    reg.close()
    return dump


@pytest.mark.parametrize("name", [*MAPPINGS, "unkeyed"])
def test_rows_given_as_columns_load_what_the_same_records_one_by_one_load(
    name: str, two_registry_urls: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the fast path decides whole goes to the registry as columns; written so, the
    registry holds exactly what the same records written one by one give: the same rows
    with the same ids, the same shared rows (a subject several records give, its values
    changed by a later one) and the same pseudonyms, over three batches, the last one giving
    records of the first again with other rows.

    Both go in one load transaction, as a sync's batches do. Given as columns, a subject row
    the transaction already wrote with the same values is not sent again: fewer subject rows
    are sent, the same are stored."""
    mapping, stage, decided = _decided(name, tmp_path)
    half = len(decided) // 2
    ctx = SimpleNamespace(mapping=mapping)
    first, second = decided[:half], decided[half:]
    # A third batch gives half the records of the first again, with the content of others
    # (their rows change: those no longer produced must go), and some new ones.
    k = half // 2
    again = [
        p._replace(data=q.data, person_keys=q.person_keys, cf_derived=q.cf_derived)
        for p, q in zip(first[:k], second[:k], strict=True)
    ]
    new = [p._replace(source_key_hash=p.source_key_hash + "b") for p in second[k:]]
    loaded = {p.source_key_hash for p in first}
    outs = [
        stage(ctx, "ORG", b, {}, BatchCounts(), loaded_before=before)  # type: ignore[arg-type]
        for b, before in ((first, set()), (second, set()), (again + new, loaded))
    ]
    assert all(o.columns is not None and not o.changes for o in outs)
    assert [len(o.columns) for o in outs if o.columns is not None] == [
        half,
        len(second),
        len(second),
    ]
    assert outs[2].columns is not None
    assert outs[2].columns.replaces == [True] * k + [False] * (len(second) - k)
    # The subject rows each registry is sent.
    sent: list[int] = []
    write_columns = Registry._write_columns

    def counting(self: Registry, conn: Any, table: Any, *a: Any, **kw: Any) -> None:
        if table is tables_module.subjects:
            sent[-1] += kw["rows"]
        write_columns(self, conn, table, *a, **kw)

    monkeypatch.setattr(Registry, "_write_columns", counting)
    dumps = []
    for url, as_columns in zip(two_registry_urls, (True, False), strict=True):
        sent.append(0)
        dumps.append(_write(url, outs, [as_columns] * 3, one_transaction=True))
    columns, one_by_one = dumps
    if two_registry_urls[0].startswith("postgresql"):
        # PostgreSQL takes a subject's id from its sequence for every row an upsert is sent,
        # stored or not: with fewer rows sent, later subjects get lower ids. Subject ids are
        # named by no other table; the subjects themselves must be the same.
        for dump in dumps:
            dump["subject"] = sorted(tuple(r)[1:] for r in dump["subject"])
    assert columns == one_by_one
    # Something was written: the records, their rows, subjects shared between records.
    records = len(decided) + len(new)
    assert len(columns["source_records"]) == records
    if name == "unkeyed":  # two subjects without a key per record: each its own row
        assert len(columns["subject"]) == 2 * records
    else:
        assert 0 < len(columns["subject"]) < records
    # The later batches' subjects given the values already written were not sent (without a
    # key, those of the records the third batch gives again with the same values).
    assert 0 < sent[0] < sent[1]
    assert sum(len(columns[k]) for k in tables_module.OWNED_KINDS) >= records


def test_a_subject_row_written_record_by_record_in_between_is_written_again(
    two_registry_urls: tuple[str, str], tmp_path: Path
) -> None:
    """A load transaction forgets the shared rows it wrote when a batch goes record by
    record: a subject row that batch changed, given its first values again by a later batch
    of columns, gets them back (as it does with each batch in its own transaction)."""
    mapping, stage, decided = _decided("cartella-esempio.toml", tmp_path)
    ctx = SimpleNamespace(mapping=mapping)
    third = len(decided) // 3
    first, second = decided[:third], decided[third : 2 * third]
    # The third batch: new records with the content of the first (its subjects' values).
    like_first = [
        p._replace(
            source_key_hash=p.source_key_hash + "c",
            data=q.data,
            person_keys=q.person_keys,
            cf_derived=q.cf_derived,
        )
        for p, q in zip(decided[2 * third : 3 * third], first, strict=True)
    ]
    outs = [
        stage(ctx, "ORG", b, {}, BatchCounts(), loaded_before=set())  # type: ignore[arg-type]
        for b in (first, second, like_first)
    ]
    assert all(o.columns is not None for o in outs)
    in_one = _write(two_registry_urls[0], outs, [True, False, True], one_transaction=True)
    each = _write(two_registry_urls[1], outs, [True, False, True], one_transaction=False)
    assert in_one == each
    # The second batch changed the subjects' values, the third gave the first ones back.
    after_first = _write(
        f"sqlite:///{tmp_path}/first.sqlite", outs[:1], [True], one_transaction=False
    )
    after_second = _write(
        f"sqlite:///{tmp_path}/second.sqlite", outs[:2], [True, False], one_transaction=True
    )

    def values(dump: dict[str, list[Any]]) -> dict[bytes, tuple[Any, ...]]:
        # Of the subjects the first batch gives: household, birth year, sex, comune and
        # citizenship, by key (not the id, owner or run).
        keys = {r[2] for r in after_first["subject"]}
        return {r[2]: tuple(r)[6:] for r in dump["subject"] if r[2] in keys}

    assert values(after_second) != values(after_first)
    assert values(in_one) == values(after_first)


def test_shared_rows_that_change_with_every_record_are_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A load transaction remembers the shared rows it wrote only while that spares writes:
    rows whose values change with every batch are all sent and, past the probe, no longer
    held; rows given the same values again are left out and stay remembered."""
    monkeypatch.setattr(registry_module, "SHARED_ROWS_PROBE", 1000)
    changing, repeating = SharedRows(), SharedRows()
    for batch in range(10):
        rows = {bytes([i % 256, i // 256]): ((f"v{batch}", i), i) for i in range(300)}
        assert changing.to_send("subject", rows) == rows  # every value new: all sent
        same = {k: (("v0", i), i) for k, (_, i) in rows.items()}
        assert len(repeating.to_send("subject", same)) == (300 if batch == 0 else 0)
    assert len(changing) == 0  # switched off after 1,000 rows looked at, none spared
    assert len(repeating) == 300
    # Forgotten at a commit: the same rows are sent again.
    repeating.clear()
    assert len(repeating.to_send("subject", same)) == 300
