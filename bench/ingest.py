"""Ingestion speed: SIUSS XML → registry and CSV → registry, against a floor.

    .venv/bin/python bench/ingest.py [--records 1000000] [--only csv|xml] [--quick] [--json]
        [--rounds N] [--postgres] [--dlt]

For each format the same generated records are loaded twice, each in its own
process (so memory peaks are separate):

* **raccordo**: the real pipeline (`Hub.sync`, as `raccordo sync`) into a fresh SQLite
  registry;
* **floor**: a tight hand-written loop doing only what cannot be avoided —
  parse, validate + pseudonymise (v2, ristretto255, once per distinct identifier) the
  codice fiscale, SQLite `executemany` of the same fields — with none of Raccordo's
  safety (no XSD, no mapping, no validation, no accounting, no quarantine).

It prints records/s for both, the ratio raccordo/floor, the peak RSS and the registry's
bytes per record; with ``--json`` the last line is one JSON object
``{"csv": {"records", "floor_rps", "raccordo_rps", "ratio_cpu", "ratio_wall",
"peak_rss_mib", "bytes_per_record", "reread_same_ratio_cpu", "reread_one_ratio_cpu",
"reread_one_peak_rss_mib"}, "xml": {...}}``.
With ``--rounds N`` the loops run N times one after the other and the round of the median
raccordo/floor CPU ratio is reported (each round's ratio printed): on a shared machine the
speed drifts between one loop and the next.
Figures and how to read them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.demo.people import NAMES_F, NAMES_M, SURNAMES, codice_fiscale  # noqa: E402

HEADER = (
    "ID_CARTELLA;TIPO_DOCUMENTO;CODICE_FISCALE;COGNOME;NOME;ANNO_NASCITA;SESSO;"
    "COMUNE_RESIDENZA_ISTAT;ID_NUCLEO;AREA;DATA_PRESA_IN_CARICO;DATA_CHIUSURA;"
    "COD_INTERVENTO;DESCRIZIONE_INTERVENTO;DATA_INIZIO;DATA_FINE;IMPORTO;INVALIDITA;"
    "NON_AUTOSUFFICIENTE;DATA_VALUTAZIONE;NOTE"
)
NS = "http://inps.it/Casellario"


def people(n: int, rng: random.Random) -> list[tuple[str, str, str, int, str]]:
    out: list[tuple[str, str, str, int, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        sex = rng.choice("FM")
        name = rng.choice(NAMES_F if sex == "F" else NAMES_M)
        surname = rng.choice(SURNAMES)
        birth = dt.date(rng.randint(1925, 2020), rng.randint(1, 12), rng.randint(1, 28))
        cf = codice_fiscale(surname, name, birth, sex, rng.choice(("B019", "F952", "A429")))
        if cf not in seen:
            seen.add(cf)
            out.append((cf, surname, name, birth.year, sex))
    return out


def write_csv(path: Path, n: int) -> None:
    rng = random.Random(1)
    pool = people(max(1000, n // 3), rng)
    with path.open("w", encoding="cp1252", newline="") as f:
        f.write(HEADER + "\r\n")
        w = csv.writer(f, delimiter=";", lineterminator="\r\n")
        for i in range(n):
            cf, surname, name, year, sex = rng.choice(pool)
            d = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1000))
            w.writerow(
                [
                    i,
                    "CF",
                    cf,
                    surname,
                    name,
                    year,
                    sex,
                    "003024",
                    f"N{i // 3}",
                    "ANZIANI",
                    d.strftime("%d/%m/%Y"),
                    "",
                    "SAD",
                    "Assistenza domiciliare",
                    d.strftime("%d/%m/%Y"),
                    "",
                    "1.234,56",
                    "N",
                    "S",
                    d.strftime("%d/%m/%Y"),
                    "",
                ]
            )


def write_xml(path: Path, n: int) -> None:
    rng = random.Random(2)
    pool = people(max(1000, n // 3), rng)
    with path.open("w", encoding="utf-8") as f:
        f.write(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Flusso xmlns="{NS}">\n'
            '<IdentificazioneFlusso Nome="B019.PS.20240101.0000001"><Ente Codice="CISS" '
            'Denominazione="CISS" CFOperatore="RSSMRA80A01H501U" Indirizzo="B019"/>'
            "</IdentificazioneFlusso>\n"
        )
        for i in range(n):
            cf, surname, name, year, sex = rng.choice(pool)
            d = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1000))
            f.write(
                f'<Beneficiario CodiceFiscale="{cf}"><Anagrafica Cognome="{surname}" '
                f'Nome="{name}" AnnoNascita="{year}" LuogoNascita="B019" '
                f'Genere="{"2" if sex == "F" else "1"}" CodiceCittadinanza="380"/>'
                '<Indirizzo CodiceComune="003024" CodiceNazione="380" CodiceRegione="01"/>'
                '<PrestazioniSociali TipoOperazione="I" PresenzaProvaMezzi="1" '
                'CodicePrestazione="A1.09" DenominazionePrestazione="Telesoccorso e '
                f'teleassistenza" ProtocolloDomanda="P{i}" DataInizioPrestazione="{d}" '
                'PresaCarico="1" AreaUtenza="2" ImportoMensile="150.00"/></Beneficiario>\n'
            )
        f.write("</Flusso>\n")


CONFIG = """
[organisations.CISS]
name = "Consorzio"
[connectors.bench]
type = "{type}"
org = "CISS"
{mapping}
[connectors.bench.config]
{settings}
"""


#: The child's registry, if not the workspace's SQLite file (``--postgres``).
PG_URL_ENV = "RACCORDO_BENCH_REGISTRY_URL"


def run_raccordo(kind: str, source: Path, work: Path) -> dict[str, Any]:
    from hub.config import load_config
    from hub.service import Hub
    from hub.workspace import init_workspace

    if kind == "csv":
        extra = CONFIG.format(
            type="csv_export",
            mapping='mapping = "cartella-esempio.toml"',
            settings=f'path = "{source}"\nencoding = "cp1252"\n'
            'delimiter = ";"\nsource_key = ["ID_CARTELLA"]\n'
            'personal_columns = ["COGNOME", "NOME", "NOTE"]\n'
            "[connectors.bench.config.identifier_columns.CODICE_FISCALE]\n"
            'type = "CF"\n'
            "[connectors.bench.config.identifier_columns.ID_NUCLEO]\n"
            'type = "LOCAL"',
        )
    else:
        extra = CONFIG.format(
            type="siuss_files",
            mapping="",
            settings=f'inbox = "{source.parent}"\npattern = "{source.name}"\nflows = ["ps"]',
        )
    cfg_path = init_workspace(work, district="BENCH", district_name="Bench", extra=extra)
    url = os.environ.get(PG_URL_ENV)
    if url:
        text = cfg_path.read_text()
        cfg_path.write_text(
            text.replace('registry_url = "sqlite:///registry.sqlite"', f'registry_url = "{url}"')
        )
    cfg = load_config(cfg_path)
    hub = Hub.open(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    (run,) = hub.sync("bench")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    stage_cpu = {k: round(v, 2) for k, v in hub.pipeline.stage_cpu.items()}
    if url:
        with hub.registry.engine.connect() as conn:
            size = int(
                conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
            )
    hub.close()
    assert run.balanced and run.read > 0
    rows = {}
    if not url:
        db = Path(str(hub.registry.engine.url.database))
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
        with sqlite3.connect(db) as conn:
            rows = table_rows(conn)
    return {
        "records": run.read,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "loaded": run.loaded,
        "bytes_per_record": size / run.read,
        "stage_cpu": stage_cpu,
        "rows": rows,
    }


#: What raccordo stores for one source record, in the floor's column order (the same
#: fields: pseudonyms, codes, dates, amounts and flags the mapping writes).
CSV_COLUMNS = [
    "subject",
    "household",
    "birth_year",
    "sex",
    "residence_comune_istat",
    "area",
    "opened_on",
    "closed_on",
    "service_code",
    "started_on",
    "ended_on",
    "amount",
    "comune_istat",
    "assessed_on",
    "disability",
    "non_self_sufficient",
]
XML_COLUMNS = [
    "subject",
    "birth_year",
    "sex",
    "residence_comune_istat",
    "citizenship",
    "service_code",
    "area",
    "started_on",
    "ended_on",
    "amount",
    "amount_co_paid",
    "comune_istat",
    "opened_on",
    "closed_on",
]
#: The rows the real mappings (cartella-esempio, siuss_ps) write per record.
REGISTRY_ROWS = {
    "csv": {
        "subject": ["subject", "household", "birth_year", "sex", "residence_comune_istat"],
        "case_episode": ["subject", "area", "opened_on", "closed_on"],
        "intervention": (
            ["subject", "service_code", "area", "started_on", "ended_on", "amount", "comune_istat"]
        ),
        "assessment": ["subject", "assessed_on", "disability", "non_self_sufficient"],
    },
    "xml": {
        "subject": ["subject", "birth_year", "sex", "residence_comune_istat", "citizenship"],
        "intervention": (
            [
                "subject",
                "service_code",
                "area",
                "started_on",
                "ended_on",
                "amount",
                "amount_co_paid",
                "comune_istat",
            ]
        ),
        "case_episode": ["subject", "area", "opened_on", "closed_on"],
    },
}
#: The keys the real mappings declare for the keyed rows (``source key``: the record's own,
#: ID_CARTELLA), so that the reference loops write as many rows as a sync does.
ROW_KEYS = {
    "csv": {
        "subject": ["subject"],
        "case_episode": ["source key", "opened_on"],
        "assessment": ["subject", "assessed_on"],
    },
    "xml": {"subject": ["subject"], "case_episode": ["subject", "service_code", "started_on"]},
}
AREAS = {"ANZIANI": "ELD", "2": "ELD"}
SERVICES = {"SAD": "A2.14"}


def _iso(d: str) -> str | None:
    return f"{d[6:10]}-{d[3:5]}-{d[0:2]}" if d else None


def parse_records(kind: str, source: Path, pseudo: Any) -> Any:
    """(source key, field tuple) per record: parse + validate/pseudonymise the identifiers,
    the field values converted as the mapping would (dates, codes, amounts, flags)."""
    if kind == "csv":
        with source.open(encoding="cp1252", newline="") as f:
            rows = csv.reader(f, delimiter=";")
            next(rows)
            for r in rows:
                opened = _iso(r[10])
                yield (
                    r[0],
                    (
                        pseudo("CF", r[2]),
                        pseudo("LOCAL", r[8]),
                        int(r[5]),
                        r[6],
                        r[7],
                        AREAS[r[9]],
                        opened,
                        _iso(r[11]),
                        SERVICES[r[12]],
                        _iso(r[14]),
                        _iso(r[15]),
                        r[16].replace(".", "").replace(",", "."),
                        r[7],
                        _iso(r[19]),
                        r[17] == "S",
                        r[18] == "S",
                    ),
                )
        return
    for el, person in _ps_elements(source):
        start, end = el.get("DataInizioPrestazione"), el.get("DataFinePrestazione")
        yield (
            el.get("ProtocolloDomanda"),
            (
                pseudo("CF", el.getparent().get("CodiceFiscale")),
                int(person["year"] or 0),
                person["sex"],
                person["comune"],
                person["citizenship"],
                el.get("CodicePrestazione"),
                AREAS[el.get("AreaUtenza")],
                start,
                end,
                el.get("ImportoMensile"),
                el.get("QuotaUtente"),
                person["comune"],
                start if el.get("PresaCarico") == "1" else None,
                end,
            ),
        )


def _ps_elements(source: Path) -> Any:
    """Each ``PrestazioniSociali`` element of a PS flow with its beneficiary's attributes
    (birth year, sex, citizenship, comune); each beneficiary is dropped once parsed, so
    memory stays flat."""
    from lxml import etree

    person: dict[str, str | None] = {}
    for _ev, el in etree.iterparse(
        str(source), events=("end",), resolve_entities=False, no_network=True, load_dtd=False
    ):
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Anagrafica":
            person["year"] = el.get("AnnoNascita")
            person["sex"] = "F" if el.get("Genere") == "2" else "M"
            person["citizenship"] = el.get("CodiceCittadinanza")
        elif tag == "Indirizzo":
            person["comune"] = el.get("CodiceComune")
        elif tag == "PrestazioniSociali":
            yield el, person
        elif tag == "Beneficiario":
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]


def _registry_statements(kind: str) -> tuple[dict[str, str], str]:
    """The upserts the *registry* and *columnar* loops write the registry's tables with:
    per row kind, and for ``source_records``."""
    statements = {}
    for k, cols in REGISTRY_ROWS[kind].items():
        # Interventions have no mapping key: the registry keys them by (source record,
        # position); keyed rows of the tables a source record owns by a partial index.
        if k == "intervention":
            names = ["org", "source_record", "position", "run_id", *cols]
            conflict, where = ["source_record", "position"], ""
        else:
            names = ["org", "key_hash", "source_record", "run_id", *cols]
            conflict = ["org", "key_hash"]
            where = " where key_hash is not null" if k != "subject" else ""
        data = ", ".join(f"{n} IS NOT excluded.{n}" for n in cols)
        table = {"case_episode": "case_episodes"}.get(k, k + "s")
        statements[k] = (
            f"insert into {table} ({', '.join(names)}) values ({', '.join('?' * len(names))}) "
            f"on conflict ({', '.join(conflict)}){where} do update set "
            + ", ".join(f"{n} = excluded.{n}" for n in names if n not in conflict)
            + f" where {data.replace(', ', ' OR ')}"
        )
    # Storage v2: persons are ids of ``pseudonyms``; source records have integer ids (a fresh
    # registry: numbered here, as the upsert would); keys and hashes are 16 bytes.
    sr_sql = (
        "insert into source_records (id, stream_id, org, key, record_hash, unit, run_id) "
        "values (?, ?, ?, ?, ?, ?, ?) on conflict (stream_id, key) do update set "
        "record_hash = excluded.record_hash, run_id = excluded.run_id"
    )
    return statements, sr_sql


def _sync_page_cache() -> int:
    """The page cache of a sync's load transaction (``[hub] sqlite_cache_mib``, its default),
    as ``PRAGMA cache_size`` takes it (negative: KiB). Until 2026-12-03 the reference loops
    used 1 GiB, more than a sync has since the default went to 192 MiB."""
    from hub.config import HubSettings

    return -int(HubSettings.model_fields["sqlite_cache_mib"].default) * 1024


def run_floor(kind: str, source: Path, work: Path, mode: str = "floor") -> dict[str, float]:
    """Hand-written loops, none of Raccordo's machinery (no XSD, mapping engine,
    pydantic, accounting or quarantine):

    * ``floor``: parse + validate/pseudonymise (v2) the identifiers + one plain ``executemany``
      of the same fields into one table without indexes (what the issue asks);
    * ``idempotent``: the floor plus what any idempotent load needs at the least:
      a keyed hash of the source key, a content hash, one unique index and an
      upsert that leaves unchanged rows alone (one row per source record), with
      the page cache and commit interval of a sync's load transaction;
    * ``registry``: the floor writing the registry's own tables (created by its
      migrations, with their indexes) the rows the real mapping writes: keyed-hash
      keys, content hashes, provenance, ``source_records``; upserts, the load's
      page cache and commit interval. This is what Raccordo's writes cost alone.
    """
    from hub.pseudonyms import IdentifierType, group, parse_identifier
    from hub.pseudonyms.pseudonymiser import hash_input, pseudonym_text

    key = b"k" * 32
    work.mkdir(parents=True, exist_ok=True)
    columns = CSV_COLUMNS if kind == "csv" else XML_COLUMNS
    path = work / f"{mode}.sqlite"
    if mode == "registry":
        from hub.registry import Registry

        Registry.open(f"sqlite:///{path}").close()
        with sqlite3.connect(path) as setup:
            setup.execute("insert into streams (id, connector, stream) values (1, 'bench', 'r')")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if mode == "floor":
        db.execute(f"create table r ({', '.join(columns)})")
    elif mode == "idempotent":
        db.execute(
            f"create table r ({', '.join(columns)}, source_key_hash text not null unique, "
            "content_hash text not null)"
        )
    if mode != "floor":
        db.execute(f"PRAGMA cache_size={_sync_page_cache()}")
    commit_every = 1000 if mode == "floor" else 200_000

    def keyed(*parts: str) -> str:
        mac = hmac.new(key, "|".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    # The pipeline's pseudonym function (v2: k · H("raccordo/v2|TYPE|namespace|value") on
    # ristretto255), each distinct identifier validated and pseudonymised once, as any
    # hand-written loop would memoise a function this costly (and as the pipeline does).
    scalar = group.scalar_from_wide(b"k" * 64)
    memo: dict[tuple[str, str], str] = {}

    def pseudo(kind_: str, value: str) -> str:
        p = memo.get((kind_, value))
        if p is None:
            ident = parse_identifier(value, IdentifierType[kind_], namespace="CISS")
            raw = group.multiply(scalar, group.hash_to_group(hash_input(ident, "BENCH")))
            p = memo[(kind_, value)] = pseudonym_text(1, raw)
        return p

    def content(values: tuple[object, ...]) -> str:
        return hashlib.sha256(repr(values).encode()).hexdigest()

    layouts = {k: [columns.index(c) for c in cols] for k, cols in REGISTRY_ROWS[kind].items()}
    person_at = {
        k: [i for i, c in enumerate(cols) if c in ("subject", "household")]
        for k, cols in REGISTRY_ROWS[kind].items()
    }
    statements, sr_sql = _registry_statements(kind)
    persons: dict[str, int] = {}
    new_persons: list[tuple[int, int, bytes]] = []

    def person(text: str | None) -> int | None:
        if text is None:
            return None
        pid = persons.get(text)
        if pid is None:
            pid = persons[text] = len(persons) + 1
            new_persons.append((pid, 1, base64.urlsafe_b64decode(text.split(".")[2] + "=")))
        return pid

    def k16(*parts: str) -> bytes:
        return hashlib.blake2b(keyed(*parts).encode(), digest_size=16).digest()

    plain = f"insert into r values ({', '.join('?' * len(columns))})"
    upsert = (
        f"insert into r values ({', '.join('?' * (len(columns) + 2))}) on conflict "
        "(source_key_hash) do update set "
        + ", ".join(f"{c} = excluded.{c}" for c in [*columns, "content_hash"])
        + " where content_hash <> excluded.content_hash"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    batch: list[tuple[object, ...]] = []
    by_kind: dict[str, dict[object, tuple[object, ...]]] = {k: {} for k in layouts}
    sources: list[tuple[object, ...]] = []

    writes_cpu = 0.0

    def flush(commit: bool) -> None:
        nonlocal writes_cpu
        clock = time.process_time()
        _write(commit)
        writes_cpu += time.process_time() - clock

    def _write(commit: bool) -> None:
        if mode == "floor":
            db.executemany(plain, batch)
        elif mode == "idempotent":
            db.executemany(upsert, batch)
        else:
            db.executemany(
                "insert into pseudonyms (id, epoch, value) values (?, ?, ?)", new_persons
            )
            new_persons.clear()
            db.executemany(sr_sql, sources)
            sources.clear()
            for k, rows in by_kind.items():
                db.executemany(statements[k], list(rows.values()))
                rows.clear()
        batch.clear()
        if commit:
            db.commit()

    for source_key, values in parse_records(kind, source, pseudo):
        if mode == "floor":
            batch.append(values)
        elif mode == "idempotent":
            batch.append((*values, keyed("bench", source_key), content(values)))
        else:
            skh = keyed("bench", "records", source_key)
            sid = n + 1
            for k, idx in layouts.items():
                row = [values[i] for i in idx]
                if k == "case_episode" and row[2] is None:
                    continue  # no presa in carico on this record
                if k == "assessment" and row[1] is None:
                    continue
                kh = (
                    None
                    if k == "intervention"
                    else k16(
                        k,
                        *(
                            source_key if c == "source key" else str(values[columns.index(c)])
                            for c in ROW_KEYS[kind][k]
                        ),
                    )
                )
                for i in person_at[k]:
                    row[i] = person(row[i])
                if kh is None:
                    by_kind[k][sid] = ("CISS", sid, 0, 1, *row)
                else:
                    by_kind[k][kh] = ("CISS", kh, sid, 1, *row)
            record_hash = hashlib.blake2b(repr(values).encode(), key=key, digest_size=16).digest()
            sources.append((sid, 1, "CISS", k16(skh), record_hash, None, 1))
        n += 1
        if n % 1000 == 0:
            flush(n % commit_every == 0)
    flush(True)
    return {
        "records": n,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        # The executemany calls and commits alone (SQLite's work and the binding of values).
        "writes_cpu_seconds": writes_cpu,
    }


#: The CSV's fields a real sync declares (all but the personal ones), for the columnar
#: loop's record fingerprints.
CSV_DECLARED = [c for c in HEADER.split(";") if c not in ("COGNOME", "NOME", "NOTE")]


class _Columnar:
    """What both columnar loops share: the registry (created by its migrations) they write
    with the *registry* loop's statements, the keyed hashes and each distinct identifier
    validated and pseudonymised once (the floor's function), as an id of ``pseudonyms``."""

    def __init__(self, kind: str, work: Path) -> None:
        from hub.pseudonyms import group
        from hub.registry import Registry

        work.mkdir(parents=True, exist_ok=True)
        path = work / "columnar.sqlite"
        Registry.open(f"sqlite:///{path}").close()
        self.db = db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size={_sync_page_cache()}")
        db.execute("insert into streams (id, connector, stream) values (1, 'bench', 'r')")
        self.statements, self.sr_sql = _registry_statements(kind)
        self._keyed = hashlib.blake2b(key=b"k" * 32, digest_size=16).copy
        self._scalar = group.scalar_from_wide(b"k" * 64)
        #: (type, value) → the person's id in ``pseudonyms`` and its person key.
        self.persons: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._person_mac = hmac.new(b"p" * 32, digestmod=hashlib.sha256).copy
        #: CPU spent on what a pipeline must do beyond the idealised loop (see run_columnar).
        self.duty_cpu = 0.0
        #: CPU of the group operations and of SQLite's writes (``executemany``, commits).
        self.group_cpu = self.writes_cpu = 0.0
        #: The last batch's part digests (64 records each), as a file connector makes them.
        self.part_digests: list[bytes] = []

    def duty(self, since: float) -> float:
        return self._add("duty_cpu", since)

    def _add(self, what: str, since: float) -> float:
        now = time.process_time()
        setattr(self, what, getattr(self, what) + now - since)
        return now

    def _in_chunks(self, sql: str, values: list[Any]) -> list[tuple[Any, ...]]:
        """``sql`` (``{}``: its placeholders) over ``values``, 900 at a time."""
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(values), 900):
            chunk = values[i : i + 900]
            out += self.db.execute(sql.format(", ".join("?" * len(chunk))), chunk).fetchall()
        return out

    def hashes(self, *columns: list[Any]) -> list[bytes]:
        """One keyed hash per row of ``columns`` (their values joined)."""
        keyed, out = self._keyed, []
        for parts in zip(*columns, strict=True):
            h = keyed()
            h.update("\x1f".join(map(str, parts)).encode())
            out.append(h.digest())
        return out

    def person_column(self, values: list[str], kind_: str) -> tuple[list[int], list[bytes]]:
        """Each value's person id and person key (an HMAC of what its pseudonym is computed
        from, for row keys that do not change when the keys rotate); the new ones
        pseudonymised, looked up among the stored pseudonyms (a registry that is not empty
        may hold them) and the others written to ``pseudonyms``."""
        from hub.pseudonyms import IdentifierType, group, parse_identifier
        from hub.pseudonyms.pseudonymiser import hash_input

        persons, fresh = self.persons, []
        mac = self._person_mac
        for v in dict.fromkeys(values):
            if (kind_, v) not in persons:
                message = hash_input(parse_identifier(v, IdentifierType[kind_], namespace="CISS"),
                                     "BENCH")  # fmt: skip
                clock = time.process_time()
                raw = group.multiply(self._scalar, group.hash_to_group(message))
                clock = self._add("group_cpu", clock)
                h = mac()
                h.update(message)
                fresh.append((v, raw, h.digest()[:16]))
                self.duty(clock)
        clock = time.process_time()
        stored = dict(
            (bytes(value), pid)
            for pid, value in self._in_chunks(
                "select id, value from pseudonyms where value in ({})", [r for _, r, _ in fresh]
            )
        )
        clock = self.duty(clock)
        new = []
        for v, raw, person_key in fresh:
            pid = stored.get(raw)
            if pid is None:
                pid = len(persons) + 1
                new.append((pid, 1, raw))
            persons[(kind_, v)] = (pid, person_key)
        clock = time.process_time()
        self.db.executemany("insert into pseudonyms (id, epoch, value) values (?, ?, ?)", new)
        self._add("writes_cpu", clock)
        got = list(map(persons.__getitem__, zip([kind_] * len(values), values, strict=True)))
        return [g[0] for g in got], [g[1] for g in got]

    def commit(self) -> None:
        clock = time.process_time()
        self.db.commit()
        self._add("writes_cpu", clock)

    def write(self, kind_: str, rows: Any) -> None:
        rows = list(rows)  # built here: the write's CPU is SQLite's alone
        clock = time.process_time()
        self.db.executemany(self.statements[kind_], rows)
        self._add("writes_cpu", clock)

    def source_records(self, keys: list[str], contents: list[str]) -> range:
        """The batch's ``source_records``: their keyed key and record hash (of the
        mapping version and the record's fingerprint), written after what a pipeline
        must check first: the records loaded before (none here, but it must ask), a key
        twice in the batch (none), the parts' digests (64 records each, for re-reads);
        their ids numbered after the stream's last."""
        m = len(keys)
        fingerprints = self.hashes(contents)
        skeys = self.hashes(keys)
        clock = time.process_time()
        record_hashes = self.hashes(["mapping-1"] * m, fingerprints)
        before = self._in_chunks(
            "select key, record_hash, id from source_records where stream_id = 1 and key in ({})",
            skeys,
        )
        if before or len(set(skeys)) != m:
            raise SystemExit("the columnar loop loads a fresh registry from distinct records")
        keyed = self._keyed
        self.part_digests = []
        for i in range(0, m, 64):
            h = keyed()
            for text in contents[i : i + 64]:
                h.update(text.encode())
            self.part_digests.append(h.digest())
        (last,) = self.db.execute("select coalesce(max(id), 0) from source_records").fetchone()
        self.duty(clock)
        sids = range(last + 1, last + 1 + m)
        run = [1] * m
        rows = list(
            zip(sids, run, ["CISS"] * m, skeys, record_hashes, [None] * m, run, strict=True)
        )
        clock = time.process_time()
        self.db.executemany(self.sr_sql, rows)
        self._add("writes_cpu", clock)
        return sids


def run_columnar(kind: str, source: Path, work: Path) -> dict[str, float]:
    """Reference: the *registry* loop's writes behind an ideal columnar front end.

    What a pipeline whose per-record work is all vectorised could reach, with none of
    Raccordo's accounting, quarantine or id look-ups: per record one keyed hash of its
    declared fields (the fingerprint, also its record hash) and one of its source key; each
    distinct identifier validated and pseudonymised once (the floor's function); the mapping
    as column operations; the row keys the real mapping declares, one keyed hash each; then
    the rows the real mapping writes, into the registry's own tables (created by its
    migrations), by the same statements as the *registry* loop.

    CSV: pyarrow's streaming CSV reader (Arrow batches of text columns), code tables as
    dictionary look-ups, dates checked and made ISO, decimal commas, integers, flags; keys:
    case episode by case file and opening date, assessment by person and date, subject by
    person. SIUSS XML: the floor's own parse (lxml's ``iterparse``, the attributes read per
    element, which no reader of lxml's elements avoids) gathered into columns of 10,000
    records, *after* the pass that checks the whole flow against the official schema (all
    in libxml2, as the connector's ``conforms``: a SIUSS reader that loads unchecked flows
    is not one), timed apart as ``schema_cpu_seconds``; keys: case episode by person,
    service and start, subject by person.
    """
    col = _Columnar(kind, work)
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "csv":
        n, refused = _columnar_csv(source, col)
        schema_cpu = 0.0
    else:
        from connectors.siuss.flows import schema_for
        from hub.inputs.xml import conforms

        c1 = time.process_time()
        if not conforms(source, schema_for("Beneficiario"), root="Flusso"):
            raise SystemExit("the generated flow does not follow the official schema")
        schema_cpu = time.process_time() - c1
        n, refused = _columnar_xml(source, col), 0
    return {
        "records": n,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "schema_cpu_seconds": schema_cpu,
        "duty_cpu_seconds": col.duty_cpu,
        "group_cpu_seconds": col.group_cpu,
        "writes_cpu_seconds": col.writes_cpu,
        "refused": refused,
        "rows": table_rows(col.db),
    }


#: The tables a sync of the benchmark's records writes (what the columnar loop must match).
WRITTEN_TABLES = ("pseudonyms", "source_records", "subjects", "case_episodes", "interventions",
                  "assessments")  # fmt: skip


def table_rows(db: sqlite3.Connection) -> dict[str, int]:
    return {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in WRITTEN_TABLES}


def _plausible_years(years: Any) -> Any:
    """The common schema's birth-year rule over a column (a mask)."""
    import pyarrow.compute as pc

    return pc.and_(pc.greater_equal(years, 1900), pc.less_equal(years, dt.date.today().year))


def _columnar_csv(source: Path, col: _Columnar) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    names = HEADER.split(";")
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(encoding="cp1252", block_size=1 << 20),
        parse_options=pacsv.ParseOptions(delimiter=";"),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        ),
    )
    date_ok = r"^(\d\d/\d\d/\d{4})?$"
    null_text = pa.scalar(None, pa.string())

    def iso(column: pa.Array) -> pa.Array:
        text = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(column, 6, 10),
            pc.utf8_slice_codeunits(column, 3, 5),
            pc.utf8_slice_codeunits(column, 0, 2),
            "-",
        )
        return pc.if_else(pc.equal(column, ""), null_text, text)

    n = refused = 0
    for batch in reader:
        cols = dict(zip(batch.schema.names, batch.columns, strict=True))
        text = {c: cols[c].to_pylist() for c in CSV_DECLARED}
        m = len(text["ID_CARTELLA"])
        contents = list(map("\x1f".join, zip(*(text[c] for c in CSV_DECLARED), strict=True)))
        subject, person = col.person_column(text["CODICE_FISCALE"], "CF")
        household, _ = col.person_column(text["ID_NUCLEO"], "LOCAL")
        dates = ("DATA_PRESA_IN_CARICO", "DATA_CHIUSURA", "DATA_INIZIO", "DATA_FINE",
                 "DATA_VALUTAZIONE")  # fmt: skip
        ok = pc.and_(
            pc.and_(*(pc.match_substring_regex(cols[c], date_ok) for c in dates[:2])),
            pc.and_(*(pc.match_substring_regex(cols[c], date_ok) for c in dates[2:4])),
        )
        ok = pc.and_(ok, pc.match_substring_regex(cols[dates[4]], date_ok))
        clock = time.process_time()
        # The common schema's other rules on these fields (the pipeline's validation).
        ok = pc.and_(ok, _plausible_years(pc.cast(cols["ANNO_NASCITA"], pa.int32())))
        ok = pc.and_(ok, pc.is_in(cols["SESSO"], value_set=pa.array(["M", "F"])))
        ok = pc.and_(ok, pc.match_substring_regex(cols["COMUNE_RESIDENZA_ISTAT"], r"^\d{6}$"))
        ok = pc.and_(ok, pc.match_substring_regex(cols["IMPORTO"], r"^[\d.]*(,\d{1,2})?$"))
        clock = col.duty(clock)
        refused += m - pc.sum(ok.cast(pa.int64())).as_py()  # would be quarantined
        iso_of = {c: iso(cols[c]).to_pylist() for c in dates}
        area = list(map(AREAS.get, text["AREA"]))
        service = list(map(SERVICES.get, text["COD_INTERVENTO"]))
        amount = pc.replace_substring(pc.replace_substring(cols["IMPORTO"], ".", ""), ",", ".")
        year = pc.cast(cols["ANNO_NASCITA"], pa.int32()).to_pylist()
        disability = pc.equal(cols["INVALIDITA"], "S").to_pylist()
        nss = pc.equal(cols["NON_AUTOSUFFICIENTE"], "S").to_pylist()
        comune = text["COMUNE_RESIDENZA_ISTAT"]
        sids = col.source_records(text["ID_CARTELLA"], contents)
        org, run = ["CISS"] * m, [1] * m
        col.write(
            "subject",
            zip(org, col.hashes(["subject"] * m, person), sids, run, subject,
                household, year, text["SESSO"], comune, strict=True),
        )  # fmt: skip
        opened = iso_of["DATA_PRESA_IN_CARICO"]
        col.write(
            "case_episode",
            (
                row
                for row in zip(org, col.hashes(["case_episode"] * m, text["ID_CARTELLA"], opened),
                               sids, run, subject, area, opened, iso_of["DATA_CHIUSURA"],
                               strict=True)
                if row[6] is not None
            ),
        )  # fmt: skip
        col.write(
            "intervention",
            zip(org, sids, [0] * m, run, subject, service, area, iso_of["DATA_INIZIO"],
                iso_of["DATA_FINE"], amount.to_pylist(), comune, strict=True),
        )  # fmt: skip
        assessed = iso_of["DATA_VALUTAZIONE"]
        col.write(
            "assessment",
            (
                row
                for row in zip(org, col.hashes(["assessment"] * m, person, assessed), sids, run,
                               subject, assessed, disability, nss, strict=True)
                if row[5] is not None
            ),
        )  # fmt: skip
        n += m
    col.commit()
    return n, refused


#: The attributes of a SIUSS PS record the XML columnar loop reads, in its columns' order.
_XML_FIELDS = ("key", "cf", "year", "sex", "comune", "citizenship", "service", "area",
               "start", "end", "amount", "co_paid", "taken")  # fmt: skip


def _xml_batches(source: Path, size: int = 10_000) -> Any:
    """The floor's parse of a PS flow, the attributes gathered into columns of ``size``."""
    cols: dict[str, list[Any]] = {f: [] for f in _XML_FIELDS}
    add = [cols[f].append for f in _XML_FIELDS]
    for el, person in _ps_elements(source):
        values = (
            el.get("ProtocolloDomanda"), el.getparent().get("CodiceFiscale"),
            int(person["year"] or 0), person["sex"], person["comune"], person["citizenship"],
            el.get("CodicePrestazione"), AREAS[el.get("AreaUtenza")],
            el.get("DataInizioPrestazione"), el.get("DataFinePrestazione"),
            el.get("ImportoMensile"), el.get("QuotaUtente"), el.get("PresaCarico") == "1",
        )  # fmt: skip
        for append, v in zip(add, values, strict=True):
            append(v)
        if len(cols["key"]) == size:
            yield cols
            cols = {f: [] for f in _XML_FIELDS}
            add = [cols[f].append for f in _XML_FIELDS]
    if cols["key"]:
        yield cols


def _columnar_xml(source: Path, col: _Columnar) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    n = 0
    for c in _xml_batches(source):
        m = len(c["key"])
        contents = list(map("\x1f".join, zip(*(map(str, c[f]) for f in _XML_FIELDS),
                                               strict=True)))  # fmt: skip
        subject, person = col.person_column(c["cf"], "CF")
        clock = time.process_time()
        # The common schema's rules the official one leaves open (the pipeline's validation).
        ok = _plausible_years(pa.array(c["year"], pa.int32()))
        ok = pc.and_(ok, pc.match_substring_regex(pa.array(c["amount"], pa.string()),
                                                  r"^\d{1,7}(\.\d{1,2})?$"))  # fmt: skip
        if not pc.all(ok).as_py():
            raise SystemExit("the generated flow holds records the common schema refuses")
        col.duty(clock)
        sids = col.source_records(c["key"], contents)
        org, run = ["CISS"] * m, [1] * m
        col.write(
            "subject",
            zip(org, col.hashes(["subject"] * m, person), sids, run, subject, c["year"],
                c["sex"], c["comune"], c["citizenship"], strict=True),
        )  # fmt: skip
        col.write(
            "intervention",
            zip(org, sids, [0] * m, run, subject, c["service"], c["area"], c["start"], c["end"],
                c["amount"], c["co_paid"], c["comune"], strict=True),
        )  # fmt: skip
        opened = [s if t else None for s, t in zip(c["start"], c["taken"], strict=True)]
        col.write(
            "case_episode",
            (
                row
                for row in zip(org, col.hashes(["case_episode"] * m, person, c["service"],
                                               c["start"]),
                               sids, run, subject, c["area"], opened, c["end"], strict=True)
                if row[6] is not None
            ),
        )  # fmt: skip
        n += m
    col.commit()
    return n


def change_one_record(kind: str, source: Path) -> None:
    """Change one value of one record of ``source`` in place: the amount of the first record
    after the middle of the file, digit by digit, to another of the same length (so nothing
    else in the file moves). In the middle: a re-read pays for the parts it reads and for
    everything before the change it cannot skip.

    Only one block of the file is read: reading the whole file here (about 420 MB of XML at
    1,000,000 records), as this did before 2026-12-02, put two copies of it in the re-read's
    process and made its peak RSS look like the pipeline's.
    """
    field = b";" if kind == "csv" else b'ImportoMensile="'
    with source.open("r+b") as f:
        middle = source.stat().st_size // 2
        f.seek(middle)
        block = f.read(1 << 20)
        start = 0
        while True:  # the first such record whose amount has digits
            if kind == "csv":
                start = block.index(b"\r\n", start) + 2  # the next record's first byte
                at = start
                for _ in range(16):  # the amount is the 17th column
                    at = block.index(field, at) + 1
                end = block.index(b";", at)
            else:
                at = block.index(field, start) + len(field)
                end = start = block.index(b'"', at)
            old = block[at:end]
            digits = bytes(b for b in old if chr(b).isdigit())
            if digits:
                break
        to = b"1" if digits and set(digits) == {ord("9")} else b"9"
        new = bytes(to[0] if chr(b).isdigit() else b for b in old)
        assert len(new) == len(old) and new != old
        f.seek(middle + at)
        f.write(new)


def run_reread(kind: str, source: Path, work: Path, change: bool) -> dict[str, float]:
    """``raccordo sync`` again on the workspace of a full run (a new process, as a scheduled
    sync is), with the source unchanged or with one record changed."""
    from hub.config import load_config
    from hub.service import Hub

    if change:
        change_one_record(kind, source)
    hub = Hub.open(load_config(work / "raccordo.toml"))
    t0, c0 = time.perf_counter(), time.process_time()
    (run,) = hub.sync("bench")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    hub.close()
    assert run.balanced
    return {
        "records": run.read,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "loaded": run.loaded,
        "unchanged": run.unchanged,
    }


def child(mode: str, kind: str, source: str, work: str) -> None:
    if mode in ("raccordo", "raccordo-pg"):
        result = run_raccordo(kind, Path(source), Path(work))
    elif mode == "columnar":
        result = run_columnar(kind, Path(source), Path(work))
    elif mode in ("reread-same", "reread-one"):
        result = run_reread(kind, Path(source), Path(work), change=mode == "reread-one")
    else:
        result = run_floor(kind, Path(source), Path(work), mode)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


#: The loops run, in this order; ratios are against the first.
MODES = ("floor", "idempotent", "registry", "columnar", "raccordo")
#: Goals of issue 3: share of the floor's records/s.
GOALS = {"csv": 0.60, "xml": 0.50}


#: Where the dlt peer's venv is kept between runs (it is not a project dependency).
DLT_VENV = Path(tempfile.gettempdir()) / "raccordo-bench-dlt-venv"


def run_dlt_peer(source: Path, work: Path) -> dict[str, float]:
    """Load ``source`` with dlt, in its own venv (created on first use)."""
    python = DLT_VENV / "bin" / "python"
    if not python.exists():
        print(f"  (creating the dlt venv in {DLT_VENV}: pip install dlt[sqlalchemy] pyarrow)")
        subprocess.run([sys.executable, "-m", "venv", str(DLT_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "dlt[sqlalchemy]>=1.0", "pyarrow"],
            check=True,
        )
    out = subprocess.run(
        [str(python), str(Path(__file__).with_name("dlt_peer.py")), str(source), str(work)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _round(
    kind: str, src: Path, tmp: Path, modes: tuple[str, ...], pg: Any, number: int | None
) -> dict[str, Any]:
    """One run of each loop of ``modes`` on ``src``, each in its own process (``number``: the
    round's, when there are several); their results by mode."""
    if number is not None:
        print(f"  round {number}")
    results: dict[str, Any] = {}
    for mode in modes:
        work = tmp / kind / mode
        shutil.rmtree(work, ignore_errors=True)
        env = dict(os.environ)
        if mode == "raccordo-pg":
            assert pg is not None
            env[PG_URL_ENV] = pg.url(pg.create_database(f"bench_{kind}_{number or 1}"))
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                kind,
                str(src),
                str(work),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            raise SystemExit(f"the {mode} loop failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results[mode] = r
        rate = r["records"] / r["seconds"]
        floor_rate = results["floor"]["records"] / results["floor"]["seconds"]
        ratios = (
            ""
            if mode == "floor"
            else f"  {rate / floor_rate:4.0%} of the floor "
            f"(by CPU {results['floor']['cpu_seconds'] / r['cpu_seconds']:4.0%})"
        )
        print(
            f"  {mode:10s} {rate:>9,.0f} records/s ({r['seconds']:.1f} s, "
            f"{r['cpu_seconds']:.1f} s CPU, peak RSS {r['peak_rss_mib']:.0f} MiB)"
            f"{ratios}"
        )
        if mode == "registry":
            # What no pipeline writing these rows into these tables can beat: the
            # floor's own work (parse, pseudonyms) plus the registry's writes alone.
            fl_ = results["floor"]
            bound = fl_["cpu_seconds"] - fl_["writes_cpu_seconds"] + r["writes_cpu_seconds"]
            results["bound"] = {"cpu_seconds": bound}
            print(
                f"             its writes {r['writes_cpu_seconds']:.1f} s CPU (the floor's "
                f"{fl_['writes_cpu_seconds']:.1f} s): the floor's own work plus these "
                f"writes is {bound:.1f} s CPU, {fl_['cpu_seconds'] / bound:.0%} of the "
                "floor at most, before fingerprints, keys, mapping, validation and "
                "accounting"
            )
        if mode == "columnar":
            # What a pipeline must do beyond the idealised loop, and the schema check (work
            # the floor does not do, and no SIUSS reader may skip), each apart.
            fl_ = results["floor"]
            rest = r["cpu_seconds"] - r["schema_cpu_seconds"] - r["duty_cpu_seconds"]
            schema = (
                f", the official schema's check {r['schema_cpu_seconds']:.1f} s"
                if r["schema_cpu_seconds"]
                else ""
            )
            print(
                f"             of which a pipeline's duties {r['duty_cpu_seconds']:.1f} s CPU"
                f"{schema}; without them {rest:.1f} s, {fl_['cpu_seconds'] / rest:.0%} of "
                "the floor"
            )
        if r.get("stage_cpu"):
            print(
                "             CPU by stage: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in r["stage_cpu"].items())
            )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("csv", "xml"))
    ap.add_argument(
        "--quick", action="store_true", help="only the floor and raccordo, no reference loops"
    )
    ap.add_argument(
        "--json", action="store_true", help="end with one JSON line of the figures (see above)"
    )
    ap.add_argument(
        "--postgres",
        action="store_true",
        help="also load into a throw-away PostgreSQL server (printed beside, not a goal)",
    )
    ap.add_argument(
        "--dlt",
        action="store_true",
        help="also load the CSV with dlt (a peer, in a venv the benchmark creates)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the loops this many times, one after the other, and report the round of "
        "the median raccordo/floor CPU ratio (a shared machine's speed drifts between loops)",
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    print(
        f"Ingestion benchmark, {args.records:,} records per format "
        f"(Python {sys.version.split()[0]})"
    )
    summary: dict[str, dict[str, object]] = {}
    pg = None
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.support.postgres import PostgresServer

        pg = PostgresServer()
    with tempfile.TemporaryDirectory(prefix="raccordo-bench-") as tmp:
        for kind in (args.only,) if args.only else ("csv", "xml"):
            src = Path(tmp) / kind / f"source.{kind}"
            src.parent.mkdir()
            t0 = time.perf_counter()
            (write_csv if kind == "csv" else write_xml)(src, args.records)
            print(
                f"\n{kind.upper()}: generated {src.stat().st_size / 2**20:.0f} MiB in "
                f"{time.perf_counter() - t0:.0f} s"
            )
            modes: tuple[str, ...] = ("floor", "raccordo") if args.quick else MODES
            if pg is not None:
                modes += ("raccordo-pg",)
            rounds = [
                _round(kind, src, Path(tmp), modes, pg, n if args.rounds > 1 else None)
                for n in range(1, max(1, args.rounds) + 1)
            ]
            # The last round's raccordo workspace is the one the re-reads read again.
            last = rounds[-1]["raccordo"]
            if len(rounds) > 1:
                ratios_ = [r["floor"]["cpu_seconds"] / r["raccordo"]["cpu_seconds"] for r in rounds]
                median = sorted(range(len(rounds)), key=ratios_.__getitem__)[(len(rounds) - 1) // 2]
                results = rounds[median]
                print(
                    "  raccordo/floor by CPU, round by round: "
                    + ", ".join(f"{x:.0%}" for x in ratios_)
                    + f"; the figures reported are round {median + 1}'s ({ratios_[median]:.0%})"
                )
            else:
                results = rounds[0]
            fl, rc = results["floor"], results["raccordo"]
            # Re-reading: the same source again, then with one record changed (goals ≤ 2% and
            # ≤ 10% of the full sync), each a new process on the last round's workspace, and
            # compared with that round's full sync (the nearest in time).
            reread: dict[str, dict[str, float]] = {}
            for mode, what, goal in (
                ("reread-same", "nothing changed", "≤ 2%"),
                ("reread-one", "one record changed", "≤ 10%"),
            ):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, kind, str(src),
                     str(Path(tmp) / kind / "raccordo")],
                    capture_output=True, text=True,
                )  # fmt: skip
                if out.returncode != 0:
                    raise SystemExit(f"the {mode} loop failed:\n{out.stderr[-3000:]}")
                r = reread[mode] = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"  re-read, {what}: read {r['records']:,.0f}, loaded {r['loaded']:,.0f} "
                    f"in {r['seconds']:.1f} s ({r['cpu_seconds']:.1f} s CPU, peak RSS "
                    f"{r['peak_rss_mib']:.0f} MiB) = "
                    f"{r['cpu_seconds'] / last['cpu_seconds']:.1%} of the full sync by CPU, "
                    f"{r['seconds'] / last['seconds']:.1%} by the clock (goal {goal})"
                )
            summary[kind] = {
                "records": rc["records"],
                "floor_rps": round(fl["records"] / fl["seconds"]),
                "raccordo_rps": round(rc["records"] / rc["seconds"]),
                "ratio_cpu": round(fl["cpu_seconds"] / rc["cpu_seconds"], 4),
                "ratio_wall": round(fl["seconds"] / rc["seconds"], 4),
                "peak_rss_mib": round(rc["peak_rss_mib"], 1),
                "bytes_per_record": round(rc["bytes_per_record"]),
                "reread_same_ratio_cpu": round(
                    reread["reread-same"]["cpu_seconds"] / last["cpu_seconds"], 4
                ),
                "reread_one_ratio_cpu": round(
                    reread["reread-one"]["cpu_seconds"] / last["cpu_seconds"], 4
                ),
                "reread_one_peak_rss_mib": round(reread["reread-one"]["peak_rss_mib"], 1),
            }
            if "bound" in results:
                summary[kind]["registry_writes_bound_ratio_cpu"] = round(
                    fl["cpu_seconds"] / results["bound"]["cpu_seconds"], 4
                )
            if "columnar" in results:
                summary[kind]["columnar_ratio_cpu"] = round(
                    fl["cpu_seconds"] / results["columnar"]["cpu_seconds"], 4
                )
            if "raccordo-pg" in results:
                p_ = results["raccordo-pg"]
                summary[kind]["postgres"] = {
                    "raccordo_rps": round(p_["records"] / p_["seconds"]),
                    "ratio_cpu": round(fl["cpu_seconds"] / p_["cpu_seconds"], 4),
                    "ratio_wall": round(fl["seconds"] / p_["seconds"], 4),
                    "bytes_per_record": round(p_["bytes_per_record"]),
                }
            if args.dlt and kind == "csv":
                d = run_dlt_peer(src, Path(tmp) / kind / "dlt")
                print(
                    f"  dlt (peer) {d['records'] / d['seconds']:>9,.0f} records/s "
                    f"({d['seconds']:.1f} s, {d['cpu_seconds']:.1f} s CPU, peak RSS "
                    f"{d['peak_rss_mib']:.0f} MiB)  "
                    f"{fl['seconds'] / d['seconds']:4.0%} of the floor "
                    f"(by CPU {fl['cpu_seconds'] / d['cpu_seconds']:4.0%}); one wide table, "
                    "no validation, no pseudonyms"
                )
                summary[kind]["dlt"] = {
                    "rps": round(d["records"] / d["seconds"]),
                    "ratio_cpu": round(fl["cpu_seconds"] / d["cpu_seconds"], 4),
                    "ratio_wall": round(fl["seconds"] / d["seconds"], 4),
                }
            print(
                f"  registry: {rc['bytes_per_record']:,.0f} bytes per record on disk\n"
                f"  goal: raccordo at {GOALS[kind]:.0%} of the floor or more"
            )
    if pg is not None:
        pg.stop()
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
