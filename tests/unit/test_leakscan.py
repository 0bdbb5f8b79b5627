"""The leak scanner finds what it must and nothing else."""

from __future__ import annotations

import base64
import gzip
import secrets
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths, scan_text
from tests.support.postgres import PostgresServer

CF = "RSSMRA80A01H501U"
OMOCODIC = "RSSMRA80A01H50MF"  # omocodic shape (last digit replaced by a letter)


def test_finds_each_kind_in_text() -> None:
    text = f'{{"x": "{CF}"}} ok; omocodic {OMOCODIC}; STP0102061234567; Mario Ginepro; 12345678903'
    kinds = [
        leak.kind for leak in scan_text(text, where="t", names=["Ginepro"], values=["12345678903"])
    ]
    assert kinds.count("codice fiscale") == 2
    assert "STP/ENI code" in kinds and "person name" in kinds
    assert "identifier fed to the test" in kinds


def test_masked_excerpt_never_shows_the_value() -> None:
    (leak,) = scan_text(f"a {CF} b", where="t")
    assert CF not in str(leak) and leak.excerpt == "RSS***"


def test_files_gzip_and_sqlite_cells(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text(f"loaded {CF}\n")
    (tmp_path / "out.json.gz").write_bytes(gzip.compress(b'{"code": "ENI0102061234567"}'))
    db = tmp_path / "r.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("create table t (v text)")
    conn.execute("insert into t values (?)", ("Bertolotti",))
    conn.commit()
    conn.close()
    leaks = scan_paths([tmp_path], names=["Bertolotti"])
    wheres = " ".join(leak.where for leak in leaks)
    assert "log.txt" in wheres and "out.json.gz" in wheres and "r.sqlite:t row 0" in wheres


def test_no_false_positive_on_pseudonyms(tmp_path: Path) -> None:
    lines = [
        f"1.{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip('=')}"
        for _ in range(10_000)
    ]
    (tmp_path / "p.txt").write_text("\n".join(lines))
    assert_no_leaks(scan_paths([tmp_path]))


def test_postgres_tables(postgres_server: PostgresServer) -> None:
    url = postgres_server.url(postgres_server.create_database())
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table q (payload text)"))
        conn.execute(sa.text("insert into q values (:v)"), {"v": f"bad record {CF}"})
    engine.dispose()
    (leak,) = scan_database(url)
    assert leak.kind == "codice fiscale" and "q row 0" in leak.where
