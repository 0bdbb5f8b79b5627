"""Provisional parts (:class:`hub.connector.RecordPart`): held until their unit is confirmed,
dropped when it is refused, in the pipeline's extract stage and in ``expand_parts``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyroaring import BitMap64

from hub.connector import (
    ProvisionalPartsLeft,
    RawRecord,
    ReadItem,
    RecordPart,
    SourceError,
    StateCheckpoint,
    UnitComplete,
    expand_parts,
)
from hub.pipeline.context import KnownPart
from hub.pipeline.extract import Extract


def _part(unit: str, name: str, n: int, *, provisional: bool = True) -> RecordPart:
    records = [RawRecord("s", {"k": f"{name}{i}"}, unit=unit) for i in range(n)]
    return RecordPart(unit, name.encode() * 16, lambda: records, provisional=provisional)


class _Reader:
    """A connector whose read is a fixed list of items."""

    def __init__(self, items: list[ReadItem]) -> None:
        self.items = items

    def read(self, stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        yield from self.items


def _keys(items: Any) -> list[str]:
    return [i.data["k"] for i in items if isinstance(i, RawRecord)]


def test_provisional_parts_load_once_their_unit_is_confirmed_in_order() -> None:
    items: list[ReadItem] = [
        _part("f", "a", 3),
        _part("f", "b", 2),
        _part("f", "c", 2, provisional=False),  # the flow was checked: the rest comes as is
        UnitComplete("f"),
        StateCheckpoint({"files": 1}),
    ]
    batches = list(Extract(_Reader(items), "s", {}, 100))  # type: ignore[arg-type]
    records = [r for b in batches for r in b.records]
    assert _keys(records) == ["a0", "a1", "a2", "b0", "b1", "c0", "c1"]
    spans = [(s.digest[:1], s.start, s.end) for b in batches for s in b.parts]
    assert spans == [(b"a", 0, 3), (b"b", 3, 5), (b"c", 5, 7)]
    assert [u for b in batches for u in b.units] == ["f"]
    assert _keys(expand_parts(items)) == _keys(records)


def test_a_refused_unit_drops_its_provisional_parts_and_reports_the_refusal() -> None:
    refusal = SourceError("refused, nothing loaded from it: truncated", "f line 9", rule="xml")
    items: list[ReadItem] = [
        _part("f", "a", 3),
        _part("f", "b", 2),
        refusal,
        _part("g", "c", 1, provisional=False),
        UnitComplete("g"),
    ]
    batches = list(Extract(_Reader(items), "s", {}, 100))  # type: ignore[arg-type]
    assert _keys(r for b in batches for r in b.records) == ["c0"]
    assert [e for b in batches for e in b.errors] == [refusal]
    assert [u for b in batches for u in b.units] == ["g"]
    assert [type(i).__name__ for i in expand_parts(items)] == [
        "SourceError",
        "RawRecord",
        "UnitComplete",
    ]


def test_a_record_scope_error_confirms_the_parts_before_it() -> None:
    # Only a unit-scope error refuses: a record-scope one is one bad record among good ones.
    bad = SourceError("beneficiary refused", "f line 3", rule="xsd", scope="record")
    items: list[ReadItem] = [_part("f", "a", 2), bad, UnitComplete("f")]
    (batch,) = Extract(_Reader(items), "s", {}, 100)  # type: ignore[arg-type]
    assert _keys(batch.records) == ["a0", "a1"] and batch.errors == [bad]


def test_a_read_ending_with_provisional_parts_is_a_connector_bug() -> None:
    items: list[ReadItem] = [_part("f", "a", 2)]
    with pytest.raises(ProvisionalPartsLeft, match="neither confirmed nor refused"):
        list(Extract(_Reader(items), "s", {}, 100))  # type: ignore[arg-type]
    with pytest.raises(ProvisionalPartsLeft):
        list(expand_parts(items))


def test_a_provisional_part_is_looked_up_and_read_while_the_connector_is_at_it() -> None:
    """``items`` may read a buffer the connector reuses: it is called when the part comes;
    a part the registry holds is not read at all, and its skip waits like the others."""
    buffer: list[RawRecord] = []
    calls: list[str] = []
    held_as_is = KnownPart(7, b"k" * 16, BitMap64([1, 2]))

    def read(stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        for name in ("a", "b", "c"):
            buffer[:] = [RawRecord("s", {"k": f"{name}0"}, unit="f")]
            yield RecordPart("f", name.encode() * 16, _reads(name), provisional=True)
        buffer.clear()
        yield UnitComplete("f")

    def _reads(name: str) -> Any:
        def items() -> list[RawRecord]:
            calls.append(name)
            return list(buffer)

        return items

    reader = type("R", (), {"read": staticmethod(read)})()
    extract = Extract(
        reader,  # type: ignore[arg-type]
        "s",
        {},
        100,
        known=lambda part: held_as_is if part.digest[:1] == b"b" else None,
    )
    batches = list(extract)
    assert calls == ["a", "c"]
    # The skipped part starts its batch: a's records before it, c's after.
    assert [(_keys(b.records), len(b.skipped)) for b in batches] == [
        (["a0"], 0),
        (["c0"], 1),
    ]


def test_held_parts_do_not_keep_what_the_connector_read() -> None:
    """A part's ``items`` holds the connector's rows (a flow's elements): held parts must
    not keep them, or a re-read holding every part of a large file holds the file."""
    import gc
    import weakref

    class Rows(list[RawRecord]):
        pass

    alive: list[weakref.ref[Rows]] = []
    held_as_is = KnownPart(7, b"k" * 16, BitMap64([1]))

    def read(stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        for i in range(50):
            rows = Rows([RawRecord("s", {"k": f"r{i}"}, unit="f")])
            alive.append(weakref.ref(rows))
            yield RecordPart("f", b"%016d" % i, lambda rows=rows: rows, provisional=True)
            del rows
        gc.collect()
        kept = sum(r() is not None for r in alive)
        yield SourceError(f"{kept} kept", scope="record")
        yield UnitComplete("f")

    reader = type("R", (), {"read": staticmethod(read)})()
    known = {b"%016d" % i for i in range(0, 50, 2)}  # every other one is held as it is
    extract = Extract(
        reader,  # type: ignore[arg-type]
        "s",
        {},
        100,
        known=lambda part: held_as_is if part.digest in known else None,
    )
    (error,) = [e.reason for b in extract for e in b.errors]
    # At most the part the reader has in hand (its loop variable), not the 49 before it.
    assert int(error.split()[0]) <= 1, error
