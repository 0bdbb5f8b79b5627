"""The hardened CSV reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.inputs.csv import CSVInputError, iter_rows, open_csv


def _file(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "f.csv"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("sep", [";", ",", "\t", "|"])
def test_separator_detection(tmp_path: Path, sep: str) -> None:
    text = sep.join(["A", "B", "C"]) + "\n" + sep.join(["1", "2", "3"]) + "\n"
    f = open_csv(_file(tmp_path, text.encode()))
    assert f.delimiter == sep and f.header == ("A", "B", "C")


def test_encodings(tmp_path: Path) -> None:
    text = "A;B\nperché;città\n"
    assert open_csv(_file(tmp_path, text.encode("cp1252"))).encoding == "cp1252"
    assert open_csv(_file(tmp_path, b"\xef\xbb\xbf" + text.encode())).encoding == "utf-8-sig"
    f = open_csv(_file(tmp_path, b"\xef\xbb\xbf" + text.encode()))
    assert f.header == ("A", "B")  # the BOM is not part of the first column's name
    with pytest.raises(CSVInputError, match="not valid utf-8") as e:
        open_csv(_file(tmp_path, text.encode("cp1252")), encoding="utf-8")
    assert e.value.line == 2
    with pytest.raises(CSVInputError, match="does not look like cp1252"):
        open_csv(_file(tmp_path, text.encode()), encoding="cp1252")


def test_quoted_newlines_keep_the_starting_line(tmp_path: Path) -> None:
    text = 'A;B\n1;"two\nlines"\n3;x\n'
    rows = list(iter_rows(open_csv(_file(tmp_path, text.encode()))))
    assert [(r.line, r.values) for r in rows] == [
        (2, {"A": "1", "B": "two\nlines"}),
        (4, {"A": "3", "B": "x"}),
    ]


def test_ragged_rows_are_reported_without_values(tmp_path: Path) -> None:
    rows = list(iter_rows(open_csv(_file(tmp_path, b"A;B\nRSSMRA80A01H501U;x;y\n"))))
    assert rows[0].values is None and "3 columns instead of 2" in (rows[0].problem or "")
    assert "RSSMRA" not in (rows[0].problem or "")


def test_limits_and_bad_headers(tmp_path: Path) -> None:
    with pytest.raises(CSVInputError, match="over the limit"):
        open_csv(_file(tmp_path, b"A;B\n1;2\n"), max_bytes=3)
    with pytest.raises(CSVInputError, match="duplicate column"):
        open_csv(_file(tmp_path, b"A;A\n1;2\n"))
    with pytest.raises(CSVInputError, match="no name"):
        open_csv(_file(tmp_path, b"A;;C\n1;2;3\n"))
    with pytest.raises(CSVInputError, match="empty"):
        open_csv(_file(tmp_path, b"  \n"))
    long = b"A;B\n1;" + b"x" * (70 * 1024) + b"\n"
    with pytest.raises(CSVInputError, match="too long"):
        list(iter_rows(open_csv(_file(tmp_path, long))))


def test_checks_in_chunks_find_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The open decodes the file in chunks: a bad byte, or a mojibake pair cut in two by a
    chunk boundary, is still found, at its line."""
    import hub.inputs.csv as csv_module

    monkeypatch.setattr(csv_module, "CHUNK_BYTES", 7)
    lines = ["A;B", "1;uno", "2;due", "3;tre", "4;perché", "5;x"]
    data = "\n".join(lines).encode("utf-8") + b"\n"
    for cut in range(len(data)):  # wherever the chunks fall
        monkeypatch.setattr(csv_module, "CHUNK_BYTES", max(1, cut))
        with pytest.raises(CSVInputError, match="does not look like cp1252") as e:
            open_csv(_file(tmp_path, data), encoding="cp1252")
        assert e.value.line == 5
        with pytest.raises(CSVInputError, match="not valid utf-8") as e:
            open_csv(_file(tmp_path, "\n".join(lines).encode("cp1252")), encoding="utf-8")
        assert e.value.line == 5
        f = open_csv(_file(tmp_path, data))
        assert f.encoding == "utf-8"
        assert [r.values for r in iter_rows(f)][3] == {"A": "4", "B": "perché"}


def test_a_pass_does_not_hold_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is never held: the open reads it in blocks and keeps their digests, a pass
    over its rows reads it again block by block (never the whole text: an io.StringIO of
    it took 4 bytes a character)."""
    import tracemalloc

    import hub.inputs.csv as csv_module
    from hub.inputs.csv import check_rows

    chunk = 16 * 1024
    monkeypatch.setattr(csv_module, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(csv_module, "HEAD_CHARS", 4 * 1024)
    row = "RSSMRA80A01H501U;Via Roma 1;perché;1.234,56\r\n"
    data = ("CF;ADDRESS;NOTE;AMOUNT\r\n" + row * 20_000).encode("cp1252")  # 0.9 MB
    path = _file(tmp_path, data)
    tracemalloc.start()
    try:
        f = open_csv(path, encoding="auto")
        opened, at_open = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        check_rows(f)
        n = sum(1 for _ in iter_rows(f))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000 and f.encoding == "cp1252"
    assert opened < 16 * 1024  # digests, not the bytes
    assert at_open < 10 * chunk < len(data) / 5, at_open
    assert peak - opened < 10 * chunk, (opened, peak)


def test_a_file_rewritten_between_passes_is_not_mixed(tmp_path: Path) -> None:
    """Every pass reads the content the open checked, or raises InputChanged."""
    from hub.inputs import InputChanged
    from hub.inputs.csv import check_rows

    path = _file(tmp_path, b"A;B\n1;x\n2;y\n")
    f = open_csv(path)
    check_rows(f)
    path.write_bytes(b"A;B\n1;x\n2;z\n")  # same size, another value
    with pytest.raises(InputChanged, match="changed while it was being read"):
        list(iter_rows(f))
    path.write_bytes(b"A;B\n1;x\n2;y\n3;w\n")  # longer
    with pytest.raises(InputChanged):
        check_rows(f)
    path.unlink()
    with pytest.raises(InputChanged):
        list(iter_rows(f))
    path.write_bytes(b"A;B\n1;x\n2;y\n")  # the same again: fine
    assert [r.values for r in iter_rows(f)] == [{"A": "1", "B": "x"}, {"A": "2", "B": "y"}]


def test_the_first_pass_says_where_the_structure_breaks(tmp_path: Path) -> None:
    from hub.inputs.csv import check_rows

    long = b"A;B\n1;x\n2;y\n3;" + b"x" * (70 * 1024) + b"\n4;z\n"
    with pytest.raises(CSVInputError, match="too long") as e:
        check_rows(open_csv(_file(tmp_path, long)))
    assert e.value.line == 4
    f = open_csv(_file(tmp_path, b"A;B\n1;x\n\n;\n2;y\n"))
    check_rows(f)  # blank lines are fine
    assert [r.line for r in iter_rows(f)] == [2, 5]
