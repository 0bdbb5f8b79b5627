"""Third Sector contact sheets for the demo district, loaded through the real pipeline.

Until the ``ets_form`` connector feeds need signals into the demo, tests add two
Third Sector entities whose contact sheets (CSV, ``mappings/ets-export.toml``)
are read by the ``csv_export`` connector: some contacts are people the consortia
follow (same codice fiscale, hence the same district pseudonym), some are new
people, some are anonymous.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

from hub.demo.district import CONSORTIA, load_comuni
from hub.demo.people import PeopleFactory
from hub.pseudonyms.identifiers import IdentifierType, InvalidIdentifier, parse_identifier

ETS = {
    "CARITAS-NO": ("Caritas del distretto (fittizia)", 900),
    "BANCO-ALIM": ("Banco alimentare del distretto (fittizio)", 500),
}
NEEDS = ["ECON", "CASA", "LAVORO", "ALIM", "SALUTE", "SOLIT", "FAMIGLIA", "LEGALE", "ALTRO"]
SERVICES = ["PACCO", "VESTIARIO", "ASCOLTO", "ABITARE", "ORIENT-LAV", "LEGALE", "BENI"]
HEADER = [
    "ID_SCHEDA",
    "TIPO_DOCUMENTO",
    "CODICE_FISCALE",
    "COGNOME",
    "NOME",
    "ANNO_NASCITA",
    "SESSO",
    "COMUNE_ISTAT",
    "DATA",
    "BISOGNI",
    "SERVIZI",
    "INVIATO_DAI_SERVIZI",
    "NOTE",
]

CONFIG = """
[organisations.{org}]
name = "{name}"
kind = "ets"

[connectors.{conn}]
type = "csv_export"
org = "{org}"
mapping = "ets-export.toml"
description = "Contact sheet of a Third Sector entity"
[connectors.{conn}.config]
path = "sources/{file}"
encoding = "utf-8"
delimiter = ";"
source_key = ["ID_SCHEDA"]
personal_columns = ["COGNOME", "NOME", "NOTE"]
[connectors.{conn}.config.identifier_columns.CODICE_FISCALE]
type_column = "TIPO_DOCUMENTO"
optional = true
"""


def write_ets_sources(
    workspace: Path, known_identifiers: set[str], *, seed: int = 7
) -> tuple[list[str], set[str]]:
    """Write the sheets and append the ETS to ``raccordo.toml``; returns the connector names
    and the clear identifiers and names planted (for the leak scanner)."""
    rng = random.Random(seed)
    comuni = load_comuni()
    # The entities work in the district's larger comuni.
    district_comuni = sorted(
        (comuni[n] for c in CONSORTIA for n in c.comuni if n in comuni),
        key=lambda c: -c.population,
    )[:8]
    weights = [c.population for c in district_comuni]
    factory = PeopleFactory(rng, tuple(c.belfiore for c in district_comuni))
    known = sorted(i for i in known_identifiers if _valid_cf(i))
    planted: set[str] = set()
    connectors = []
    cfg = workspace / "raccordo.toml"
    text = cfg.read_text(encoding="utf-8")
    for n, (org, (name, contacts)) in enumerate(sorted(ETS.items())):
        conn = f"ets_{n}"
        file = f"ets-{org.lower()}.csv"
        with (workspace / "sources" / file).open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter=";", lineterminator="\n")
            w.writerow(HEADER)
            regulars: list[tuple[str, str, int, str, str, str]] = []
            for i in range(contacts):
                on = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randint(0, 729))
                comune = rng.choices(district_comuni, weights)[0]
                roll = rng.random()
                if regulars and roll < 0.2:
                    ident, typ, by, sex, surname, first = rng.choice(regulars)
                elif roll < 0.45 and known:
                    ident, typ, by, sex, surname, first = (
                        known[rng.randrange(len(known))],
                        "CF",
                        0,
                        "",
                        "",
                        "",
                    )
                elif roll < 0.85:
                    p = factory.person(rng.randint(1940, 2004))
                    ident, typ, by, sex = p.identifier, p.id_type, p.birth_year, p.sex
                    surname, first = p.surname, p.name
                    planted.update({p.identifier, p.surname, p.name})
                    regulars.append((ident, typ, by, sex, surname, first))
                else:
                    ident, typ, by, sex, surname, first = "", "", 0, "", "", ""
                needs = "|".join(rng.sample(NEEDS, rng.choice([1, 1, 2, 3])))
                services = "|".join(rng.sample(SERVICES, rng.choice([0, 1, 1, 2])))
                w.writerow(
                    [
                        f"{org}-{i:05d}",
                        typ,
                        ident,
                        surname,
                        first,
                        by or "",
                        sex,
                        comune.istat,
                        on.strftime("%d/%m/%Y"),
                        needs,
                        services,
                        rng.choice("SNN"),
                        "",
                    ]
                )
        text += CONFIG.format(org=org, name=name, conn=conn, file=file)
        connectors.append(conn)
    cfg.write_text(text, encoding="utf-8")
    return connectors, planted


def _valid_cf(value: str) -> bool:
    try:
        return parse_identifier(value, IdentifierType.CF).type is IdentifierType.CF
    except InvalidIdentifier:
        return False
