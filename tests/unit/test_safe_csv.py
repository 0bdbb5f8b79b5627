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
