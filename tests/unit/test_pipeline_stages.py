"""The pipeline's stages one by one: extract cuts batches at the cursor; pseudonymise
asks for each distinct identifier of a batch once and gives what the one-by-one
pseudonym gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from connectors.synthetic import SyntheticConfig, SyntheticConnector
from hub.connector import FieldRole, FieldSpec, RawRecord, StateCheckpoint, Stream
from hub.pipeline.extract import Extract
from hub.pseudonyms import Identifier, Keyring, KeySource, Pseudonymiser, parse_identifier
from hub.pseudonyms import stage as stage_module
from hub.pseudonyms.identifiers import IdentifierType, cf_birth_year_and_sex
from hub.pseudonyms.stage import (
    INVALID_MARKER,
    PreparedBatch,
    PseudonymiseStage,
    pseudonym_text,
)

CF = "RSSMRA80A01H501U"


@pytest.fixture
def pseudonymiser(tmp_path: Path) -> Pseudonymiser:
    keyring = Keyring.create(tmp_path / "k.json", KeySource.generate_key_file(tmp_path / "k.key"))
    return Pseudonymiser(keyring, "D1")


class Counting:
    """A pseudonymiser that records each batch call (the stage's only way in)."""

    def __init__(self, inner: Pseudonymiser) -> None:
        self.inner = inner
        self.epoch = inner.epoch
        self.calls: list[list[Identifier]] = []

    def pseudonymise_many(
        self, identifiers: Sequence[Identifier], *, remember: bool = True
    ) -> list[bytes]:
        self.calls.append(list(identifiers))
        return self.inner.pseudonymise_many(identifiers, remember=remember)

    def key_hash(self, *parts: str) -> str:
        return self.inner.key_hash(*parts)

    def key16(self, *parts: str) -> bytes:
        return self.inner.key16(*parts)

    def record_fingerprints(
        self, connector: str, stream: str, items: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        return self.inner.record_fingerprints(connector, stream, items)

    def person_key(self, identifier: Identifier) -> str:
        return self.inner.person_key(identifier)


def test_pseudonymise_many_is_the_raw_digest_of_the_text_pseudonym(
    pseudonymiser: Pseudonymiser,
) -> None:
    ident = parse_identifier(CF)
    (digest,) = pseudonymiser.pseudonymise_many([ident])
    assert len(digest) == 32
    assert pseudonym_text(pseudonymiser.epoch, digest) == pseudonymiser.pseudonym(ident)
    with pytest.raises(ValueError, match="absent"):
        pseudonymiser.pseudonymise_many([parse_identifier("", parse_identifier(CF).type.NONE)])


def test_each_distinct_identifier_of_a_batch_is_pseudonymised_once(
    pseudonymiser: Pseudonymiser,
) -> None:
    conn = SyntheticConnector(SyntheticConfig(count=600, bad_ratio=0.05, seed=3))
    (stream,) = conn.streams()
    records = [i for i in conn.read(stream.name, {}) if isinstance(i, RawRecord)]
    counting = Counting(pseudonymiser)
    stage = PseudonymiseStage(counting, connector="syn", stream=stream)
    out = stage(records, "ORG")
    assert len(out) == len(records) and len(counting.calls) == 1
    asked = counting.calls[0]
    assert len(asked) == len(set(asked))  # distinct
    people = {str(r.data["cf"]) for r in records}
    cfs_asked = [i for i in asked if i.type.value == "CF"]
    assert len(people) < len(records)  # people recur across records...
    assert len(cfs_asked) < len(people)  # ...each asked once; invalid ones never
    # The same outcome as one record at a time.
    for r, p in zip(records, out, strict=True):
        try:
            expected = pseudonymiser.pseudonym(parse_identifier(str(r.data["cf"])))
        except ValueError:
            assert p.data["cf"] == INVALID_MARKER and p.problems
            continue
        assert p.data["cf"] == expected
        assert str(r.data["cf"]) not in repr(p)
    # A second batch with the same people asks for nothing new.
    stage(records[:100], "ORG")
    assert len(counting.calls) == 1


class _Source:
    """Records 0..n-1 and a cursor after every ``every`` records."""

    def __init__(self, n: int, every: int) -> None:
        self.n, self.every = n, every

    def read(self, stream: str, state: dict[str, object]) -> Iterator[object]:
        for i in range(self.n):
            yield RawRecord(stream, {"i": i}, f"record {i}", key=str(i))
            if (i + 1) % self.every == 0:
                yield StateCheckpoint({"next": i + 1})


def test_batches_are_cut_where_the_connector_last_gave_a_cursor() -> None:
    extract = Extract(_Source(1_000, 70), "s", {}, 100)  # type: ignore[arg-type]
    batches = list(extract)
    assert sum(len(b.records) for b in batches) == 1_000
    for b in batches[:-1]:
        last = int(b.records[-1].key or 0)
        assert b.state == {"next": last + 1}  # the cursor covers exactly the batch
        assert len(b.records) <= 100
    assert batches[-1].state == {"next": 980}  # records after the last cursor go along


def test_a_source_without_cursors_is_loaded_in_bounded_batches() -> None:
    extract = Extract(_Source(1_000, 10_000), "s", {}, 100)  # type: ignore[arg-type]
    sizes = [len(b.records) for b in extract]
    assert sum(sizes) == 1_000 and max(sizes) == 100


def test_the_pseudonym_columns_are_listed_for_key_rotation() -> None:
    """Every column naming a person holds either a text pseudonym (rotated in place) or the
    id of a row of ``pseudonyms`` (rotated there, once per person)."""
    from hub.registry import Registry
    from hub.registry import tables as t

    text, persons = set(Registry.pseudonym_columns()), set(t.PERSON_COLUMNS)
    holding = {
        (table.name, c.name)
        for table in t.metadata.tables.values()
        for c in table.c
        if c.name in ("subject", "household")
    }
    assert text | persons == holding and not text & persons
    assert all(t.metadata.tables[tb].c[c].type is t.PSEUDONYM for tb, c in text)
    assert all(t.metadata.tables[tb].c[c].type is t.PERSON for tb, c in persons)


def test_a_run_that_forgets_identifier_outcomes_prepares_the_same_records(
    pseudonymiser: Pseudonymiser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage's memory of outcomes is bounded; forgetting some only costs pseudonymising
    them again: every prepared record (pseudonyms, person keys, birth year and sex,
    problems) is what a stage that remembers everything gives."""
    conn = SyntheticConnector(SyntheticConfig(count=1200, bad_ratio=0.05, seed=5))
    (stream,) = conn.streams()
    records = [i for i in conn.read(stream.name, {}) if isinstance(i, RawRecord)]
    batches = [records[i : i + 100] for i in range(0, len(records), 100)]
    remembering = PseudonymiseStage(pseudonymiser, connector="syn", stream=stream)
    expected = [remembering(b, "ORG") for b in batches]
    monkeypatch.setattr(stage_module, "CACHE_SIZE", 150)
    counting = Counting(pseudonymiser)
    forgetting = PseudonymiseStage(counting, connector="syn", stream=stream)
    for batch, want in zip(batches, expected, strict=True):
        assert forgetting(batch, "ORG") == want
        assert forgetting._remembered == sum(map(len, forgetting._outcomes.values()))
        assert forgetting._remembered <= 150 + 2 * len(batch)
    assert forgetting.pseudonymised > remembering.pseudonymised  # it did forget some
    # What it gives is what the pseudonymiser says, identifier by identifier.
    for r, p in zip(records, [p for b in expected for p in b], strict=True):
        try:
            ident = parse_identifier(str(r.data["cf"]))
        except ValueError:
            assert p.data["cf"] == INVALID_MARKER and p.cf_derived is None
            continue
        assert p.data["cf"] == pseudonymiser.pseudonym(ident)
        assert ("cf", pseudonymiser.person_key(ident)) in p.person_keys
        assert p.cf_derived == cf_birth_year_and_sex(
            ident.value, reference_year=dt.date.today().year
        )
        assert (p.data["cf__birth_year"], p.data["cf__sex"]) == p.cf_derived


def test_each_kind_of_outcome_is_given_back_from_the_stage_memory(
    pseudonymiser: Pseudonymiser,
) -> None:
    """Pseudonymised (with and without birth year and sex), absent (type NONE), invalid and
    of an unknown type: the same whether the outcome is new or remembered from a batch
    before, and a LOCAL id's namespace keeps two enti's equal numbers apart."""
    stream = Stream(
        "s",
        (
            FieldSpec("k"),
            FieldSpec(
                "id",
                FieldRole.IDENTIFIER,
                identifier_type=None,
                type_field="tipo",
                derive_birth_year_and_sex=True,
            ),
            FieldSpec("tipo"),
            FieldSpec(
                "local",
                FieldRole.IDENTIFIER,
                identifier_type=IdentifierType.LOCAL,
                namespace_field="ente",
                optional=True,
            ),
            FieldSpec("ente"),
        ),
        source_key=("k",),
    )
    rows = [
        {"k": "1", "id": CF, "tipo": "CF", "local": "7", "ente": "A"},
        {"k": "2", "id": "STP0102061234567", "tipo": "STP", "local": "7", "ente": "B"},
        {"k": "3", "id": "", "tipo": "NESSUNO", "local": ""},
        {"k": "4", "id": "RSSMRA80A01H501X", "tipo": "CF"},
        {"k": "5", "id": CF, "tipo": "PASSAPORTO"},
    ]
    records = [RawRecord("s", r, f"row {r['k']}", key=r["k"]) for r in rows]
    stage = PseudonymiseStage(pseudonymiser, connector="c", stream=stream)
    first, again = stage(records, "ORG"), stage(records, "ORG")
    assert first == again
    cf, stp, none, bad, unknown = first
    ident = parse_identifier(CF)
    assert cf.data["id"] == pseudonymiser.pseudonym(ident)
    assert cf.cf_derived == (1980, "M") == (cf.data["id__birth_year"], cf.data["id__sex"])
    assert cf.person_keys[0] == ("id", pseudonymiser.person_key(ident))
    assert stp.data["id"].startswith("v2.") and stp.cf_derived is None
    assert "id__birth_year" not in stp.data
    assert cf.data["local"] != stp.data["local"]  # "7" of ente A is not "7" of ente B
    assert [k for k, _ in cf.person_keys] == ["id", "local"]
    assert none.data["id"] is None and none.data["local"] is None and not none.person_keys
    assert none.problems == ()
    assert bad.data["id"] == INVALID_MARKER and bad.problems and bad.cf_derived is None
    assert unknown.data["id"] == INVALID_MARKER
    assert [rule for _, rule, _ in unknown.problems] == ["unknown_type"]
    assert CF not in repr(first)


@pytest.mark.parametrize("optional", [False, True])
def test_a_field_of_one_fixed_type_gives_what_a_type_field_naming_it_gives(
    pseudonymiser: Pseudonymiser, optional: bool
) -> None:
    """The stage decides a field of one fixed type (and a LOCAL id of the organisation)
    for the whole column at once; a field whose type (or ente) another field names, record
    by record. Both must give the same records: absent, empty, None, a number, invalid and
    valid values, with birth year and sex."""
    rows: list[dict[str, object]] = [
        {"k": "1", "cf": CF, "nucleo": "7"},
        {"k": "2", "cf": "RSSMRA80A01H501X", "nucleo": 12},
        {"k": "3", "cf": "", "nucleo": ""},
        {"k": "4", "cf": None, "nucleo": None},
        {"k": "5"},
        {"k": "6", "cf": f"  {CF.lower()} ", "nucleo": " 7"},
        {"k": "7", "cf": CF, "nucleo": "7"},
    ]

    def fields(fixed: bool) -> tuple[FieldSpec, ...]:
        return (
            FieldSpec("k"),
            FieldSpec(
                "cf",
                FieldRole.IDENTIFIER,
                identifier_type=IdentifierType.CF if fixed else None,
                type_field=None if fixed else "tipo",
                derive_birth_year_and_sex=True,
                optional=optional,
            ),
            FieldSpec(
                "nucleo",
                FieldRole.IDENTIFIER,
                identifier_type=IdentifierType.LOCAL,
                namespace_field=None if fixed else "ente",
                optional=optional,
            ),
            *(() if fixed else (FieldSpec("tipo"), FieldSpec("ente"))),
        )

    def prepared(fixed: bool) -> list[tuple[object, ...]]:
        stream = Stream("s", fields(fixed), source_key=("k",))
        records = [
            RawRecord("s", r if fixed else {**r, "tipo": "CF", "ente": "ORG"}, "x", key=str(r["k"]))
            for r in rows
        ]
        out = PseudonymiseStage(pseudonymiser, connector="c", stream=stream)(records, "ORG")
        # The type and ente fields are data fields of their own: left out of the comparison.
        return [
            (
                {k: v for k, v in p.data.items() if k not in ("tipo", "ente")},
                p.problems,
                p.cf_derived,
                p.person_keys,
            )
            for p in out
        ]

    fixed, named = prepared(True), prepared(False)
    assert fixed == named
    assert [list(data) for data, *_ in fixed] == [list(data) for data, *_ in named]  # key order
    valid = fixed[0]
    assert valid[2] == (1980, "M") and valid[0]["cf__birth_year"] == 1980
    assert fixed[5][0]["cf"] == valid[0]["cf"]  # normalised
    assert {**fixed[6][0], "k": "1"} == valid[0] and fixed[6][1:] == valid[1:]  # repeated
    assert fixed[1][0]["cf"] == INVALID_MARKER and fixed[1][1][0][0] == "cf"
    assert fixed[1][0]["nucleo"].startswith("v2.")  # a number is read as its text
    assert "cf" not in fixed[4][0] and "nucleo" not in fixed[4][0]  # absent: nothing


def test_a_fingerprint_changes_with_any_declared_value_whatever_its_form(
    pseudonymiser: Pseudonymiser,
) -> None:
    """Text values are joined with a separator (the fast form), others are ``repr``'d: a
    value moved across that separator, an absent field (as ``None``), a number or a value
    holding the separator itself all give another fingerprint; the same record the same one."""
    stream = Stream(
        "rows",
        fields=(FieldSpec("id"), FieldSpec("a"), FieldSpec("b")),
        source_key=("id",),
    )
    stage = PseudonymiseStage(pseudonymiser, connector="c", stream=stream)

    def fingerprint(data: dict[str, object], op: str = "upsert", org: str = "ORG") -> str:
        (fp,) = stage.fingerprints([RawRecord("rows", data, "line 2", key="1", op=op)], org)
        return fp.fingerprint

    base = {"id": "1", "a": "x\x1fy", "b": "z"}
    variants = [
        base,
        {"id": "1", "a": "x", "b": "y\x1fz"},  # the separator moved between fields
        {"id": "1", "a": "x\x1fy\x1fz", "b": ""},
        {"id": "1", "a": "xy", "b": "z"},
        {"id": "1", "a": "x\x1fy"},  # b absent (the same as None)
        {"id": "1", "a": 1, "b": "z"},
        {"id": "1", "a": "1", "b": "z"},
    ]
    seen = [fingerprint(v) for v in variants]
    assert len(set(seen)) == len(variants)
    assert fingerprint(dict(base)) == seen[0]
    assert fingerprint({**variants[3]}) == seen[3]  # the all-text form is stable too
    assert fingerprint({"id": "1", "a": "x\x1fy", "b": None}) == seen[4]
    assert fingerprint(base, op="delete") != seen[0]
    assert fingerprint(base, org="OTHER") != seen[0]
    # Fields the stream does not declare are not covered.
    assert fingerprint({**variants[3], "extra": "?"}) == seen[3]


def test_prepared_data_holds_the_declared_data_fields_a_record_has(
    pseudonymiser: Pseudonymiser,
) -> None:
    stream = Stream(
        "rows",
        fields=(
            FieldSpec("id"),
            FieldSpec("a"),
            FieldSpec("b"),
            FieldSpec("n", FieldRole.PERSONAL),
        ),
        source_key=("id",),
    )
    stage = PseudonymiseStage(pseudonymiser, connector="c", stream=stream)
    whole, partial = stage(
        [
            RawRecord("rows", {"b": "2", "a": "1", "id": "9", "n": "Mario", "x": "?"}, "l2"),
            RawRecord("rows", {"id": "8", "b": None}, "l3"),
        ],
        "ORG",
    )
    assert whole.data == {"id": "9", "a": "1", "b": "2"}  # no personal or undeclared field
    assert list(whole.data) == ["id", "a", "b"]
    assert partial.data == {"id": "8", "b": None}


def test_the_stage_hands_on_columns_that_give_back_each_record_as_it_was_built(
    pseudonymiser: Pseudonymiser,
) -> None:
    """What leaves the stage is a batch of columns (no data dict per record); each record
    taken out of it is the one built from the records one by one, and a column read for
    transform holds None where a record lacks the field."""
    stream = Stream(
        "s",
        fields=(
            FieldSpec("k"),
            FieldSpec("a"),
            FieldSpec(
                "cf",
                FieldRole.IDENTIFIER,
                identifier_type=IdentifierType.CF,
                derive_birth_year_and_sex=True,
            ),
        ),
        source_key=("k",),
    )
    rows = [
        {"k": "1", "a": "x", "cf": CF},
        {"k": "2", "cf": "NOT A CF"},  # a lacks; cf refused
        {"k": "3", "a": "y"},  # cf absent: nothing of it
    ]
    records = [RawRecord("s", r, f"line {i}", key=r["k"]) for i, r in enumerate(rows, 2)]
    batch = PseudonymiseStage(pseudonymiser, connector="c", stream=stream)(records, "ORG")
    assert isinstance(batch, PreparedBatch) and len(batch) == 3
    one, two, three = batch
    assert list(one.data) == ["k", "a", "cf", "cf__birth_year", "cf__sex"]
    assert one.data["cf"] == pseudonymiser.pseudonym(parse_identifier(CF))
    assert one.cf_derived == (1980, "M") and one.person_keys[0][0] == "cf"
    assert two.data == {"k": "2", "cf": INVALID_MARKER} and two.problems[0][0] == "cf"
    assert three.data == {"k": "3", "a": "y"} and not three.problems and not three.person_keys
    assert batch.values("a") == ["x", None, "y"]
    assert batch.values("cf__sex", [0, 2]) == ["M", None]
    assert batch.values("not declared") == [None, None, None]
    # The same records, built one by one, make the same columns.
    again = PreparedBatch.of(list(batch))
    assert again == batch and list(again) == [one, two, three]
    assert again.values("a") == batch.values("a") and again.person_keys == batch.person_keys
    assert batch[-1] == three and batch[1:] == [two, three]
    assert CF not in repr(batch)
