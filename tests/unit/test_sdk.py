"""hub.sdk: the file inbox with its content-hash cursor, and the Arrow batch builder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.sdk import (
    ArrowBatchBuilder,
    FieldSpec,
    FileInbox,
    RawRecord,
    ReadItem,
    SourceError,
    StateCheckpoint,
    Stream,
    file_digest,
)


def _reader(path: Path) -> Iterator[ReadItem]:
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        yield RawRecord("s", {"v": line}, location=f"{path.name} line {i}", unit=path.name)


def test_inbox_reads_new_and_changed_files_once_with_a_checkpoint_after_each(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("1\n2\n")
    (tmp_path / "b.txt").write_text("3\n")
    (tmp_path / "skip.csv").write_text("x\n")
    inbox = FileInbox("*.txt", folder=tmp_path)
    items = list(inbox.read({}, _reader))
    assert [type(i).__name__ for i in items] == [
        "RawRecord", "RawRecord", "StateCheckpoint", "RawRecord", "StateCheckpoint",
        "StateCheckpoint",
    ]  # fmt: skip
    final = items[-1]
    assert isinstance(final, StateCheckpoint)
    assert final.state == {
        "files": {
            "a.txt": hashlib.sha256(b"1\n2\n").hexdigest(),
            "b.txt": file_digest(tmp_path / "b.txt"),
        }
    }
    assert [i for i in inbox.read(final.state, _reader) if isinstance(i, RawRecord)] == []
    (tmp_path / "b.txt").write_text("3\n4\n")
    again = [i.data["v"] for i in inbox.read(final.state, _reader) if isinstance(i, RawRecord)]
    assert again == ["3", "4"]
    # Resuming from the checkpoint after a.txt reads b.txt only.
    first = items[2]
    assert isinstance(first, StateCheckpoint)
    rest = [i.data["v"] for i in inbox.read(first.state, _reader) if isinstance(i, RawRecord)]
    assert rest == ["3", "4"]


def test_inbox_glob_pattern_and_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1\n")
    locked = tmp_path / "y.csv"
    locked.write_text("2\n")
    locked.chmod(0)
    try:
        inbox = FileInbox(str(tmp_path / "*.csv"))
        assert [p.name for p in inbox.files()] == ["x.csv", "y.csv"]
        items = list(inbox.read({}, _reader))
        import os

        if os.geteuid() != 0:  # root reads anything
            errors = [i for i in items if isinstance(i, SourceError)]
            assert errors and errors[0].location == "y.csv"
            final = items[-1]
            assert isinstance(final, StateCheckpoint) and "y.csv" not in final.state["files"]
    finally:
        locked.chmod(0o600)


def test_arrow_batches_hold_every_field_as_text_with_the_record_metadata() -> None:
    stream = Stream("s", (FieldSpec("a"), FieldSpec("b")), source_key=("a",))
    builder = ArrowBatchBuilder(stream, batch_size=2)
    assert builder.add(RawRecord("s", {"a": "1", "b": 2}, location="f line 2", unit="f")) is None
    batch = builder.add(RawRecord("s", {"a": "3"}, location="f line 3", op="delete"))
    assert batch is not None and batch.num_rows == 2
    assert batch.schema.names == ["a", "b", "__location", "__op", "__unit"]
    assert batch.to_pydict() == {
        "a": ["1", "3"],
        "b": ["2", None],
        "__location": ["f line 2", "f line 3"],
        "__op": ["upsert", "delete"],
        "__unit": ["f", None],
    }
    assert builder.flush() is None
    builder.add(RawRecord("s", {"a": "9"}))
    tail = builder.flush()
    assert tail is not None and tail.num_rows == 1
    with pytest.raises(ValueError, match="stream"):
        builder.add(RawRecord("other", {}))


def _parts_of(rows: list[str], **kw: int) -> list[tuple[bytes, list[str]]]:
    from hub.sdk import in_parts

    parts = in_parts(
        rows, unit="u", seed=b"settings", content=str.encode, build=lambda r: list(r), **kw
    )
    return [(p.digest, list(p.items())) for p in parts]  # type: ignore[misc]


def test_parts_hold_every_row_once_in_order_within_their_bounds() -> None:
    rows = [f"row {i};{'x' * (i % 13)}" for i in range(20_000)]
    parts = _parts_of(rows)
    assert [r for _, held in parts for r in held] == rows
    sizes = [len(held) for _, held in parts]
    assert all(64 <= n <= 8192 for n in sizes[:-1]) and 1 <= sizes[-1] <= 8192
    assert 10 <= len(parts) <= 40  # about 1,024 rows each
    assert len({d for d, _ in parts}) == len(parts)
    capped = _parts_of(rows, average=1 << 20, min_rows=1, max_rows=500)
    assert [len(held) for _, held in capped] == [500] * 40


def test_an_edit_changes_only_the_parts_around_it() -> None:
    """Content-defined cuts: a row changed, inserted or deleted changes its own part (and
    at most the next, where the cut moved); the parts before and after are found again."""
    rows = [f"row {i}" for i in range(30_000)]
    before = {d for d, _ in _parts_of(rows)}
    for edited in (
        [*rows[:15_000], "row 15000 changed", *rows[15_001:]],
        [*rows[:15_000], "a new row", "another", *rows[15_000:]],
        [*rows[:15_000], *rows[15_010:]],
    ):
        after = [d for d, _ in _parts_of(edited)]
        new = [d for d in after if d not in before]
        assert 1 <= len(new) <= 2, len(new)
        assert len(after) - len(new) >= len(before) - 3


def test_a_part_digest_covers_the_seed_and_where_rows_end() -> None:
    from hub.sdk import in_parts

    def digest(rows: list[str], seed: bytes = b"s") -> bytes:
        (part,) = in_parts(rows, unit="u", seed=seed, content=str.encode, build=list)
        return part.digest

    assert digest(["ab", "c"]) != digest(["a", "bc"])  # the same bytes, cut elsewhere
    assert digest(["ab", "c"]) != digest(["ab", "c"], seed=b"other settings")
    assert digest(["ab", "c"]) == digest(["ab", "c"])
    with pytest.raises(ValueError, match="power of two"):
        list(in_parts(["a"], unit="u", seed=b"", content=str.encode, build=list, average=1000))
