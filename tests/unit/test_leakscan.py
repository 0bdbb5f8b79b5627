"""The leak scanner finds what it must, where it must, says so without leaking, and no more."""

from __future__ import annotations

import base64
import gzip
import random
import sqlite3
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.codes import omocodic_variants
from tests.support.leakscan import (
    KIND_CF,
    KIND_NAME,
    KIND_STP_ENI,
    KIND_VALUE,
    Leak,
    assert_no_leaks,
    scan_database,
    scan_paths,
    scan_text,
)
from tests.support.postgres import PostgresServer

CF = "RSSMRA80A01H501U"
OMOCODIC = max(omocodic_variants(CF), key=lambda c: sum(ch.isalpha() for ch in c))  # all 7
STP = "STP0102061234567"
ENI = "ENI0102067654321"
PROVISIONAL = "12345678903"
NAME = "Ginepro"
CLEAR = [CF, OMOCODIC, STP, ENI, PROVISIONAL, NAME]


def kinds(leaks: list[Leak]) -> list[str]:
    return [leak.kind for leak in leaks]


def test_each_kind_is_found_in_text() -> None:
    text = (
        f'{{"cf": "{CF}"}} omocodic {OMOCODIC}; {STP},{ENI.lower()}; '
        f"utente MARIO {NAME.upper()}; provvisorio={PROVISIONAL}"
    )
    leaks = scan_text(text, where="t", names=[NAME], values=[PROVISIONAL])
    assert sorted(kinds(leaks)) == sorted(
        [KIND_CF, KIND_CF, KIND_STP_ENI, KIND_STP_ENI, KIND_NAME, KIND_VALUE]
    )
    assert OMOCODIC.count("L") + OMOCODIC.count("M") + OMOCODIC.count("N") > 0  # truly omocodic


def test_a_provisional_cf_is_only_a_leak_when_the_test_fed_it() -> None:
    text = f"rows={PROVISIONAL} other=98765432109"
    assert scan_text(text, where="t") == []
    (leak,) = scan_text(text, where="t", values=[PROVISIONAL])
    assert leak.kind == KIND_VALUE and leak.where == "t @ char 5"


def test_values_are_found_in_any_case_and_inside_longer_runs() -> None:
    lower = f"id {CF.lower()} end"
    assert scan_text(lower, where="t") == []  # lower-case CF shapes alone are not flagged...
    assert kinds(scan_text(lower, where="t", values=[CF])) == [KIND_VALUE]  # ...fed ones are
    glued = f"key=x{PROVISIONAL}y"
    assert kinds(scan_text(glued, where="t", values=[PROVISIONAL])) == [KIND_VALUE]


def test_names_are_whole_words_in_any_case() -> None:
    names = ["Lia", "De Luca", NAME]
    found = scan_text(f"lia; de\nLUCA; Mario-{NAME}; {NAME.lower()}_Rossi", where="t", names=names)
    assert kinds(found) == [KIND_NAME] * 4
    innocent = "Liam; made lucario; 1.x9-Lia-y; Ginepraio; tde luca"
    assert scan_text(innocent, where="t", names=names) == []


def test_reports_are_masked() -> None:
    leaks = scan_text(" ".join(CLEAR), where="t", names=[NAME], values=[PROVISIONAL])
    assert len(leaks) == len(CLEAR)
    assert {leak.excerpt for leak in leaks} == {v[:3] + "***" for v in CLEAR}
    with pytest.raises(AssertionError) as failure:
        assert_no_leaks(leaks)
    report = str(failure.value)
    assert "6 clear identifier(s)" in report
    for value in CLEAR:
        assert value not in report and value.lower() not in report.lower()


def test_text_and_gzip_files_with_byte_offsets(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "hub.log"
    log.write_text(f"città: {CF}\nok\n{NAME} {OMOCODIC}\n", encoding="utf-8")
    archive = tmp_path / "export.json.gz"
    archive.write_bytes(gzip.compress(f'{{"code": "{STP}"}}'.encode()))
    (tmp_path / "clean.txt").write_text("nothing to see")
    leaks = scan_paths([tmp_path], names=[NAME])
    found = {(leak.where, leak.kind) for leak in leaks}
    offset = len(f"città: {CF}\nok\n".encode())
    assert found == {
        (f"{log} @ byte 8", KIND_CF),  # "à" is two bytes
        (f"{log} @ byte {offset}", KIND_NAME),
        (f"{log} @ byte {offset + len(NAME) + 1}", KIND_CF),
        (f"{archive} (gunzipped) @ byte 10", KIND_STP_ENI),
    }


def test_a_truncated_gzip_is_scanned_as_far_as_it_goes(tmp_path: Path) -> None:
    whole = gzip.compress(f"{ENI}\n".encode() + bytes(range(256)) * 400)
    (tmp_path / "killed.log.gz").write_bytes(whole[: len(whole) // 2])
    (leak,) = scan_paths([tmp_path])
    assert leak.kind == KIND_STP_ENI and "(gunzipped, damaged) @ byte 0" in leak.where


def test_zip_members_and_file_names(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "out.xlsx", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("sheet1.xml", f"<c>{ENI}</c>" + "padding " * 200)
    (tmp_path / f"report_{CF}.csv").write_text("ok")
    leaks = scan_paths([tmp_path])
    assert sorted(kinds(leaks)) == sorted([KIND_CF, KIND_STP_ENI])
    assert any("out.xlsx!sheet1.xml" in leak.where for leak in leaks)
    assert all(CF not in leak.where for leak in leaks)  # the place is masked too


def _sqlite_with_split_value(path: Path) -> None:
    """A long cell where the CF straddles two overflow pages: absent from the raw bytes."""
    for tail in range(5000, 15000, 7):  # the payload's layout is aligned on its end
        path.unlink(missing_ok=True)
        conn = sqlite3.connect(path)
        conn.execute("create table notes (id integer primary key, body text)")
        conn.execute("insert into notes (body) values (?)", ("x" * 5000 + f" {CF} " + "y" * tail,))
        conn.commit()
        conn.close()
        if CF.encode() not in path.read_bytes():
            return
    raise AssertionError("could not build a database with a split value")


def test_sqlite_cells_are_read_not_only_raw_bytes(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite"
    _sqlite_with_split_value(db)
    (leak,) = scan_paths([tmp_path])
    assert leak.kind == KIND_CF and leak.where == f"{db}: notes.body, rowid 1"
    (leak,) = scan_database(f"sqlite:///{db}")
    assert leak.where == f"sqlite:{db}: notes.body, id 1"


def test_sqlite_write_ahead_log_of_a_live_database(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    conn = sqlite3.connect(db)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table people (id integer primary key, surname text, born date)")
    conn.commit()
    conn.execute("insert into people (surname) values (?)", (NAME,))
    conn.commit()  # in the -wal file, not yet in the main file
    try:
        leaks = scan_paths([tmp_path], names=[NAME])
        assert f"{db}: people.surname, rowid 1" in {leak.where for leak in leaks}
        (leak,) = scan_database(f"sqlite:///{db}", names=[NAME])
        assert leak.where.endswith("people.surname, id 1")
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "live.db",
            "live.db-shm",
            "live.db-wal",
        ]
    finally:
        conn.close()


@pytest.mark.postgres
def test_postgresql_tables_columns_and_schemas(postgres_server: PostgresServer) -> None:
    url = postgres_server.url(postgres_server.create_database())
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table quarantine (id serial primary key, payload jsonb)"))
        conn.execute(
            sa.text("insert into quarantine (payload) values (cast(:p as jsonb))"),
            {"p": '{"ok": 1}'},
        )
        conn.execute(
            sa.text("insert into quarantine (payload) values (cast(:p as jsonb))"),
            {"p": f'{{"raw": "bad record {CF}"}}'},
        )
        conn.execute(sa.text("create schema audit"))
        conn.execute(sa.text("create table audit.events (code text, provisional bigint)"))
        conn.execute(sa.text(f"insert into audit.events values ('{STP}', {PROVISIONAL})"))
    engine.dispose()
    leaks = scan_database(url, values=[PROVISIONAL])
    found = {(leak.where.split(": ", 1)[1], leak.kind) for leak in leaks}
    assert found == {
        ("quarantine.payload, id 2", KIND_CF),
        ("audit.events.code, row 0", KIND_STP_ENI),
        ("audit.events.provisional, row 0", KIND_VALUE),
    }


def test_pseudonyms_are_not_leaks(tmp_path: Path) -> None:
    rnd = random.Random(20240601)
    pseudonyms = [
        "1." + base64.urlsafe_b64encode(rnd.randbytes(32)).decode().rstrip("=")
        for _ in range(10_000)
    ]
    assert {len(p) for p in pseudonyms} == {45}
    (tmp_path / "pseudonyms.csv").write_text("\n".join(pseudonyms))
    with gzip.open(tmp_path / "pseudonyms.json.gz", "wt") as f:
        f.write(",".join(f'"{p}"' for p in pseudonyms))
    short_names = ["Lia", "Ada", "Ugo", "Eva", "Ivo", "Rai"]
    assert_no_leaks(scan_paths([tmp_path], names=short_names, values=[PROVISIONAL]))


def test_scanning_the_wrong_place_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_paths([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError):
        scan_database(f"sqlite:///{tmp_path / 'missing.sqlite'}")
    assert not (tmp_path / "missing.sqlite").exists()
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(ValueError, match="no tables"):
        scan_database(f"sqlite:///{tmp_path / 'empty.sqlite'}")


def test_binary_keys_and_pseudonyms_are_not_read_as_names_but_text_in_them_is(
    tmp_path: Path,
) -> None:
    """Storage v2 keeps keys and pseudonym elements as random bytes: a short name found by
    chance among them is no leak; a name or CF stored as bytes that are text still is."""
    rng = random.Random(7)
    name = "Lia"
    noise = b"".join(
        bytes(rng.getrandbits(8) for _ in range(13)) + b"\xff" + name.encode() + b"\xfe"
        for _ in range(300)
    )  # never valid UTF-8, "Lia" between non-letters 300 times
    db = tmp_path / "registry.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("create table pseudonyms (id integer primary key, value blob)")
    conn.executemany(
        "insert into pseudonyms (value) values (?)",
        [(noise[i : i + 32],) for i in range(0, len(noise), 32)],
    )
    conn.commit()
    assert scan_paths([tmp_path], names=[name]) == []
    assert scan_database(f"sqlite:///{db}", names=[name]) == []
    # Bytes that are text are text: found in the cell and in the raw file.
    conn.execute("insert into pseudonyms (value) values (?)", (f"utente {name} ok".encode(),))
    conn.execute(
        "insert into pseudonyms (value) values (?)", (b"\xff\x00" + CF.encode() + b"\x00",)
    )
    conn.commit()
    conn.close()
    found = scan_database(f"sqlite:///{db}", names=[name])
    assert sorted(kinds(found)) == [KIND_CF, KIND_NAME]
    assert KIND_NAME in kinds(scan_paths([tmp_path], names=[name]))


def test_a_short_name_in_binary_with_printable_bytes_on_one_side_is_no_leak(
    tmp_path: Path,
) -> None:
    """The bytes the demo's test once met in its registry (an organisation code, then a
    16-byte key whose random bytes spelt "UGO" with four printable bytes after it): random
    binary, stored twice (table and index). A name with text on both sides is found."""
    key = b'\xd2\xf6\xb0\xeb\xc8UGO"-*g\x84\xa6\x8d\x86'
    (tmp_path / "pages.bin").write_bytes((b"\x02\x0f\x19\x00CISS-BORGO" + key) * 2)
    assert scan_paths([tmp_path], names=["Ugo"]) == []
    (tmp_path / "log.txt").write_bytes(b"\x00\x01\x02 nome: UGO, anni 80\x00\x03")
    (found,) = scan_paths([tmp_path], names=["Ugo"])
    assert found.kind == KIND_NAME and "log.txt" in found.where
