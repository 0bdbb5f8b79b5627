"""``sql_query`` against a real PostgreSQL holding a plausible cartella sociale.

The test creates the vendor's database (persons with a nullable CF and a local id, case files,
interventions with an update timestamp), a read-only account, and reads it through the real
pipeline with the same mapping as the CSV export (``cartella-esempio.toml``).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from connectors.sql_query import SQLQueryConfig, SQLQueryConnector
from hub.connector import RawRecord, SourceError, StateCheckpoint
from hub.demo.people import codice_fiscale
from hub.registry import Registry
from tests.contract.suite import connector_contract_tests
from tests.e2e.conftest import registry_dump
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.postgres import PostgresServer
from tests.support.workspace import make_workspace, sync

pytestmark = pytest.mark.postgres

RACCORDO = [sys.executable, "-m", "hub"]
SURNAMES = ["Bertolotti", "Quaglino", "Zanetta", "Godio", "Barbaglia", "Ferrari", "Mora"]
NAMES_F = ["Clelia", "Giuseppina", "Rosa"]
NAMES_M = ["Renato", "Ercole", "Luigi"]
AREAS = ["ANZIANI", "ADULTI", "MINORI", "DISABILI", "IMMIGRATI"]
SERVICES = ["SAD", "PASTI", "CONTR-EC", "MEDIAZ", "EDU-DOM", "TELESOCC"]
BASE_TS = dt.datetime(2024, 3, 1, 9, 0, 0)

SCHEMA = """
CREATE SCHEMA cartella;
CREATE TABLE cartella.persone (
    id_persona integer PRIMARY KEY,
    codice_fiscale varchar(16) NULL,          -- unknown for some contacts: the local id is used
    cognome varchar(60) NOT NULL,
    nome varchar(60) NOT NULL,
    anno_nascita integer NOT NULL,
    sesso char(1) NOT NULL,
    comune_residenza char(6) NOT NULL,
    id_nucleo varchar(20) NULL
);
CREATE TABLE cartella.cartelle (
    id_cartella integer PRIMARY KEY,
    id_persona integer NOT NULL REFERENCES cartella.persone,
    area varchar(20) NOT NULL,
    data_presa_in_carico date NOT NULL,
    data_chiusura date NULL
);
CREATE TABLE cartella.interventi (
    id_intervento integer PRIMARY KEY,
    id_cartella integer NOT NULL REFERENCES cartella.cartelle,
    cod_intervento varchar(20) NOT NULL,
    descrizione varchar(200) NOT NULL,
    data_inizio date NOT NULL,
    data_fine date NULL,
    importo numeric(10, 2) NULL,
    aggiornato_il timestamp NOT NULL
);
CREATE ROLE {role} LOGIN PASSWORD 'sola-lettura';
GRANT USAGE ON SCHEMA cartella TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA cartella TO {role};
"""

QUERY = """
SELECT i.id_intervento AS "ID_INTERVENTO", c.id_cartella AS "ID_CARTELLA",
       CASE WHEN p.codice_fiscale IS NULL THEN 'LOCAL' ELSE 'CF' END AS "TIPO_DOCUMENTO",
       COALESCE(p.codice_fiscale, 'P' || p.id_persona) AS "CODICE_FISCALE",
       p.cognome AS "COGNOME", p.nome AS "NOME", p.anno_nascita AS "ANNO_NASCITA",
       p.sesso AS "SESSO", p.comune_residenza AS "COMUNE_RESIDENZA_ISTAT",
       p.id_nucleo AS "ID_NUCLEO", c.area AS "AREA",
       c.data_presa_in_carico AS "DATA_PRESA_IN_CARICO", c.data_chiusura AS "DATA_CHIUSURA",
       i.cod_intervento AS "COD_INTERVENTO", i.descrizione AS "DESCRIZIONE_INTERVENTO",
       i.data_inizio AS "DATA_INIZIO", i.data_fine AS "DATA_FINE", i.importo AS "IMPORTO",
       NULL AS "INVALIDITA", NULL AS "NON_AUTOSUFFICIENTE", NULL AS "DATA_VALUTAZIONE",
       NULL AS "NOTE", i.aggiornato_il AS "AGGIORNATO_IL"
FROM cartella.interventi i
JOIN cartella.cartelle c ON c.id_cartella = i.id_cartella
JOIN cartella.persone p ON p.id_persona = c.id_persona
"""

CONFIG = """
[organisations.CISS]
name = "Consorzio"
[connectors.db]
type = "sql_query"
org = "CISS"
mapping = "cartella-esempio.toml"
[connectors.db.config]
url_env = "{url_env}"
query = '''{query}'''
source_key = ["ID_INTERVENTO"]
cursor_column = "AGGIORNATO_IL"
personal_columns = ["COGNOME", "NOME", "NOTE"]
date_format = "%d/%m/%Y"
decimal_comma = true
fetch_size = 50
checkpoint_every = {checkpoint_every}
[connectors.db.config.identifier_columns.CODICE_FISCALE]
type_column = "TIPO_DOCUMENTO"
[connectors.db.config.identifier_columns.ID_NUCLEO]
type = "LOCAL"
optional = true
"""


def _people(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(1, n + 1):
        sex = "F" if i % 2 else "M"
        surname = SURNAMES[i % len(SURNAMES)]
        name = (NAMES_F if sex == "F" else NAMES_M)[i % 3]
        year = 1930 + (i * 7) % 80
        birth = dt.date(year, 1 + i % 12, 1 + i % 28)
        cf = codice_fiscale(surname, name, birth, sex, "F952") if i % 5 else None
        out.append(
            {
                "id_persona": i,
                "codice_fiscale": cf,
                "cognome": surname,
                "nome": name,
                "anno_nascita": year,
                "sesso": sex,
                "comune_residenza": "003106" if i % 3 else "003024",
                "id_nucleo": f"N{i // 2:03d}" if i % 4 else None,
            }
        )
    return out


def seed(url: str, *, persons: int = 40, per_person: int = 3) -> str:
    """The vendor database; every 4 interventions share one update timestamp (ties).
    Returns the URL of its read-only account (a role of its own)."""
    engine = sa.create_engine(url)
    role = "l_" + sa.make_url(url).database
    people = _people(persons)
    with engine.begin() as conn:
        for stmt in SCHEMA.format(role=role).split(";"):
            if stmt.strip():
                conn.execute(sa.text(stmt))
        conn.execute(
            sa.text(
                "INSERT INTO cartella.persone VALUES (:id_persona, :codice_fiscale, :cognome, "
                ":nome, :anno_nascita, :sesso, :comune_residenza, :id_nucleo)"
            ),
            people,
        )
        conn.execute(
            sa.text("INSERT INTO cartella.cartelle VALUES (:i, :p, :a, :d, NULL)"),
            [
                {
                    "i": 100 + p["id_persona"],
                    "p": p["id_persona"],
                    "a": AREAS[p["id_persona"] % 5],
                    "d": dt.date(2023, 1 + p["id_persona"] % 12, 10),
                }
                for p in people
            ],
        )
        rows = []
        n = 0
        for p in people:
            for k in range(per_person):
                n += 1
                rows.append(
                    {
                        "i": 10_000 - n * 7,  # ids not in cursor order: ties sort by id
                        "c": 100 + p["id_persona"],
                        "s": SERVICES[(p["id_persona"] + k) % len(SERVICES)],
                        "desc": "Intervento",
                        "d": dt.date(2023, 1 + k, 1 + p["id_persona"] % 28),
                        "e": None if k else dt.date(2023, 12, 31),
                        "imp": Decimal("120.50") if k == 1 else None,
                        "ts": BASE_TS + dt.timedelta(minutes=n // 4),
                    }
                )
        conn.execute(
            sa.text(
                "INSERT INTO cartella.interventi VALUES (:i, :c, :s, :desc, :d, :e, :imp, :ts)"
            ),
            rows,
        )
    engine.dispose()
    return url.replace("postgres@", f"{role}:sola-lettura@")


@pytest.fixture
def vendor_db(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """(owner URL, read-only URL) of a freshly seeded vendor database."""
    name = postgres_server.create_database()
    owner = postgres_server.url(name)
    reader = seed(owner)
    yield owner, reader
    engine = sa.create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "l_{name}"'))
    engine.dispose()


def _config(url: str, **kw: Any) -> SQLQueryConfig:
    base: dict[str, Any] = {
        "url": url,
        "query": QUERY,
        "source_key": ["ID_INTERVENTO"],
        "cursor_column": "AGGIORNATO_IL",
        "personal_columns": ["COGNOME", "NOME", "NOTE"],
        "identifier_columns": {
            "CODICE_FISCALE": {"type_column": "TIPO_DOCUMENTO"},
            "ID_NUCLEO": {"type": "LOCAL", "optional": True},
        },
        "fetch_size": 10,
        "checkpoint_every": 7,
    }
    return SQLQueryConfig.model_validate({**base, **kw})


def _workspace(
    tmp: Path,
    registry_url: str,
    env: str,
    *,
    keys_from: Path | None = None,
    checkpoint_every: int = 10,
    commit_every: int | None = None,
) -> Path:
    extra = CONFIG.format(url_env=env, query=QUERY, checkpoint_every=checkpoint_every)
    return make_workspace(
        tmp,
        extra,
        registry_url=registry_url,
        keys_from=keys_from,
        batch_size=10,
        commit_every=commit_every,
    )


def _records(conn: SQLQueryConnector, state: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    ids: list[str] = []
    last: dict[str, Any] = state
    for item in conn.read("rows", state):
        if isinstance(item, RawRecord):
            ids.append(item.data["ID_INTERVENTO"])
        elif isinstance(item, StateCheckpoint):
            last = item.state
        else:
            raise AssertionError(item)
    return ids, last


def test_incremental_cursor_across_ties_loses_and_repeats_nothing(
    vendor_db: tuple[str, str],
) -> None:
    owner, reader = vendor_db
    conn = SQLQueryConnector(_config(reader))
    first, state = _records(conn, {})
    assert len(first) == 120 and len(set(first)) == 120
    # Nothing new: nothing read.
    assert _records(conn, state)[0] == []
    # New rows AT the boundary timestamp (a tie with the last row read), with ids both below
    # and above the last id, plus an update of an old row: exactly the rows after the
    # (cursor, id) boundary come, once.
    last_ts = state["after"]["cursor"]["v"]
    last_id = state["after"]["key"][0]
    engine = sa.create_engine(owner)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO cartella.interventi VALUES "
                "(:hi, 101, 'SAD', 'x', '2024-01-01', NULL, NULL, :ts), "
                "(20000, 101, 'PASTI', 'x', '2024-01-02', NULL, NULL, :later)"
            ),
            {"hi": last_id + 1, "ts": last_ts, "later": "2030-01-01T00:00:00"},
        )
        c.execute(
            sa.text(
                "UPDATE cartella.interventi SET aggiornato_il = :later, importo = 5 "
                "WHERE id_intervento = :old"
            ),
            {"later": "2030-01-01T00:00:00", "old": int(first[0])},
        )
    engine.dispose()
    second, state2 = _records(conn, state)
    assert second == [str(last_id + 1), first[0], "20000"]  # (cursor, id) order
    assert _records(conn, state2)[0] == []


def test_resume_from_every_checkpoint(vendor_db: tuple[str, str]) -> None:
    _owner, reader = vendor_db
    conn = SQLQueryConnector(_config(reader, checkpoint_every=13))
    all_ids, _ = _records(conn, {})
    seen = 0
    for item in conn.read("rows", {}):
        if isinstance(item, RawRecord):
            seen += 1
        elif isinstance(item, StateCheckpoint) and item.state:
            rest, _ = _records(conn, item.state)
            assert rest == all_ids[seen:]


def test_sync_equals_the_csv_mapping_and_leaks_nothing(
    tmp_path: Path, vendor_db: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _owner, reader = vendor_db
    monkeypatch.setenv("RACCORDO_TEST_CARTELLA_URL", reader)
    ws = _workspace(tmp_path / "ws", f"sqlite:///{tmp_path}/r.sqlite", "RACCORDO_TEST_CARTELLA_URL")
    (run,), reg = sync(ws, "db")
    assert run.read == 120 and run.read == run.loaded + run.unchanged + run.quarantined
    # PASTI with an amount, SAD, CONTR-EC … all mapped; persons without CF by local id.
    assert reg.count("intervention") == run.loaded
    assert reg.count("subject") == 40
    again, reg = sync(ws, "db")
    assert again[0].read == 0
    people = _people(40)
    cfs = {p["codice_fiscale"] for p in people if p["codice_fiscale"]}
    names = set(SURNAMES) | set(NAMES_F) | set(NAMES_M)
    leaks = scan_paths([ws], names=names, values=cfs)
    leaks += scan_database(
        reg.engine.url.render_as_string(hide_password=False), names=names, values=cfs
    )
    assert_no_leaks(leaks)
    reg.close()


def test_the_session_is_read_only_and_writing_queries_are_refused(
    vendor_db: tuple[str, str],
) -> None:
    owner, _reader = vendor_db
    conn = SQLQueryConnector(_config(owner))  # even with the owner's account
    with conn._engine().connect() as c, pytest.raises(sa.exc.DBAPIError, match="read-only"):
        c.execute(sa.text("DELETE FROM cartella.interventi"))
    for bad in (
        "DELETE FROM cartella.interventi",
        "SELECT 1; DROP TABLE cartella.persone",
        "WITH x AS (DELETE FROM cartella.interventi RETURNING *) SELECT * FROM x",
    ):
        with pytest.raises(ValidationError, match=r"only reads|single statement"):
            _config(owner, query=bad)
    with pytest.raises(ValidationError, match="identifier or personal"):
        _config(owner, source_key=["CODICE_FISCALE"])


def test_unreachable_database_and_null_cursors_are_explained(
    vendor_db: tuple[str, str], postgres_server: PostgresServer
) -> None:
    owner, reader = vendor_db
    bad = SQLQueryConnector(_config(reader.replace(str(postgres_server.port), "1")))
    res = bad.check()
    assert not res.ok and "sola-lettura" not in res.message
    engine = sa.create_engine(owner)
    with engine.begin() as c:
        c.execute(sa.text("ALTER TABLE cartella.interventi ALTER aggiornato_il DROP NOT NULL"))
        c.execute(
            sa.text(
                "UPDATE cartella.interventi SET aggiornato_il = NULL WHERE id_intervento % 10 = 3"
            )
        )
    engine.dispose()
    items = list(SQLQueryConnector(_config(reader)).read("rows", {}))
    (err,) = [i for i in items if isinstance(i, SourceError)]
    assert err.rule == "sql_cursor_null" and err.reason.startswith("12 row(s)")
    assert sum(isinstance(i, RawRecord) for i in items) == 108


@pytest.mark.slow
def test_killed_mid_read_then_resumed_equals_an_uninterrupted_sync(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL once some batches are committed; the next sync resumes after the last
    checkpoint and the registry equals an uninterrupted sync's."""
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    seed(url, persons=1500)  # 4,500 rows: long enough to be killed half-way
    env = {**os.environ, "RACCORDO_TEST_CARTELLA_URL": url}
    monkeypatch.setenv("RACCORDO_TEST_CARTELLA_URL", url)
    ref = _workspace(
        tmp_path / "ref", f"sqlite:///{tmp_path}/ref.sqlite", "RACCORDO_TEST_CARTELLA_URL"
    )
    (_run,), reg = sync(ref, "db")
    expected = registry_dump(reg.engine.url.render_as_string(hide_password=False))
    reg.close()
    assert len(expected["intervention"]) > 4000

    db = tmp_path / "ws.sqlite"
    ws = _workspace(
        tmp_path / "ws",
        f"sqlite:///{db}",
        "RACCORDO_TEST_CARTELLA_URL",
        keys_from=ref,
        commit_every=10,
    )
    cfg = ws / "raccordo.toml"
    proc = subprocess.Popen(
        [*RACCORDO, "sync", "--quiet", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and _committed(db) >= 500:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the sync ended before it could be killed"
    partial = registry_dump(f"sqlite:///{db}")
    assert 0 < len(partial["intervention"]) < len(expected["intervention"])

    done = subprocess.run(
        [*RACCORDO, "sync", "--quiet", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert registry_dump(f"sqlite:///{db}") == expected
    reg = Registry.open(f"sqlite:///{db}")
    last, first = reg.runs(limit=2)
    assert first.status in ("interrupted", "running") and last.status == "succeeded"
    assert last.read < 4500 <= first.read + last.read  # resumed, not started over
    reg.close()
    engine = sa.create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "l_{name}"'))
    engine.dispose()


def _committed(db: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM interventions")).scalar_one())
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


_CONTRACT: list[str] = []


@pytest.fixture(autouse=True, scope="class")
def _contract_db(request: pytest.FixtureRequest) -> Iterator[None]:
    """A small seeded database for the contract suite's class (built once for it)."""
    if request.cls is None or request.cls is not TestSQLQueryContract:
        yield
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    _CONTRACT[:] = [seed(server.url(name), persons=10)]
    yield
    engine = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "l_{name}"'))
    engine.dispose()


TestSQLQueryContract = connector_contract_tests(
    lambda: SQLQueryConnector(
        _config(_CONTRACT[0] if _CONTRACT else "postgresql+psycopg://x@127.0.0.1:1/x")
    )
)
