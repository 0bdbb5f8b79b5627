"""Ingestion speed: SIUSS XML → registry and CSV → registry, against a floor.

    .venv/bin/python bench/ingest.py [--records 1000000] [--only csv|xml]

For each format the same generated records are loaded twice, each in its own
process (so memory peaks are separate):

* **raccordo**: the real pipeline (`Pipeline.sync`) into a fresh SQLite registry;
* **floor**: a tight hand-written loop doing only what cannot be avoided —
  parse, validate + HMAC the codice fiscale, SQLite `executemany` of the same
  fields — with none of Raccordo's safety (no XSD, no mapping, no validation,
  no accounting, no quarantine).

It prints records/s for both, the ratio raccordo/floor, and the peak RSS.
Figures and how to read them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import hmac
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    out, seen = [], set()
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


def run_raccordo(kind: str, source: Path, work: Path) -> dict[str, float]:
    from hub.config import load_config
    from hub.pipeline import Pipeline, open_keyring
    from hub.registry import Registry
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
    init_workspace(work, district="BENCH", district_name="Bench", extra=extra)
    cfg = load_config(work / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    pipeline = Pipeline(cfg, reg, open_keyring(cfg))
    t0, c0 = time.perf_counter(), time.process_time()
    (run,) = pipeline.sync("bench")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert run.balanced and run.read > 0
    return {"records": run.read, "seconds": elapsed, "cpu_seconds": cpu, "loaded": run.loaded}


def run_floor(kind: str, source: Path, work: Path) -> dict[str, float]:
    """Parse + validate/HMAC the CF + executemany, nothing else."""
    from lxml import etree

    from hub.pseudonyms import parse_identifier

    key = b"k" * 32
    work.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(work / "floor.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "create table r (subject text, birth_year int, comune text, code text, "
        "started text, amount text)"
    )

    def pseudo(cf: str) -> str:
        ident = parse_identifier(cf)
        return hmac.new(key, f"v1|CF||{ident.value}".encode(), hashlib.sha256).hexdigest()

    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    batch: list[tuple[object, ...]] = []

    def flush() -> None:
        db.executemany("insert into r values (?,?,?,?,?,?)", batch)
        db.commit()
        batch.clear()

    if kind == "csv":
        with source.open(encoding="cp1252", newline="") as f:
            rows = csv.reader(f, delimiter=";")
            next(rows)
            for r in rows:
                batch.append((pseudo(r[2]), int(r[5]), r[7], r[12], r[14], r[16]))
                n += 1
                if len(batch) >= 1000:
                    flush()
    else:
        person: dict[str, str] = {}
        for _ev, el in etree.iterparse(
            str(source), events=("end",), resolve_entities=False, no_network=True, load_dtd=False
        ):
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "Anagrafica":
                person["year"] = el.get("AnnoNascita")
            elif tag == "Indirizzo":
                person["comune"] = el.get("CodiceComune")
            elif tag == "PrestazioniSociali":
                cf = el.getparent().get("CodiceFiscale")
                batch.append(
                    (
                        pseudo(cf),
                        int(person["year"]),
                        person["comune"],
                        el.get("CodicePrestazione"),
                        el.get("DataInizioPrestazione"),
                        el.get("ImportoMensile"),
                    )
                )
                n += 1
                if len(batch) >= 1000:
                    flush()
            elif tag == "Beneficiario":
                el.clear()
                while el.getprevious() is not None:
                    del el.getparent()[0]
    flush()
    return {
        "records": n,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def child(mode: str, kind: str, source: str, work: str) -> None:
    fn = run_raccordo if mode == "raccordo" else run_floor
    result = fn(kind, Path(source), Path(work))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("csv", "xml"))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    print(
        f"Ingestion benchmark, {args.records:,} records per format "
        f"(Python {sys.version.split()[0]})"
    )
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
            results = {}
            for mode in ("floor", "raccordo"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        kind,
                        str(src),
                        str(Path(tmp) / kind / mode),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode] = r
                print(
                    f"  {mode:9s} {r['records'] / r['seconds']:>10,.0f} records/s "
                    f"({r['seconds']:.1f} s, {r['cpu_seconds']:.1f} s CPU)  "
                    f"peak RSS {r['peak_rss_mib']:.0f} MiB"
                )
            ratio = (results["raccordo"]["records"] / results["raccordo"]["seconds"]) / (
                results["floor"]["records"] / results["floor"]["seconds"]
            )
            # On a busy machine wall-clock rates vary with the load; CPU seconds much less.
            cpu_ratio = results["floor"]["cpu_seconds"] / results["raccordo"]["cpu_seconds"]
            print(f"  ratio raccordo/floor: {ratio:.0%} (by CPU time: {cpu_ratio:.0%})")


if __name__ == "__main__":
    main()
