"""The demo district's Third Sector: three fictional ETS, their entries, demo accounts.

Entries go through the same intake as the web form (pseudonymised at submit).
Some people are also in charge of the CISS (their codice fiscale is taken from
the demo CSV export), so the restituzione page and the overlap indicators have
something to show; others are known only to the Third Sector; some contacts
are anonymous. Entry ids are derived from the seed, so re-running the demo
adds nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from hub.demo.people import PeopleFactory
from hub.pseudonyms import Pseudonymiser
from hub.registry import tables as t
from hub.schema.models import Need, ServiceGiven
from hub.web import accounts, intake
from hub.web.comuni import Comune


@dataclass(frozen=True)
class DemoETS:
    code: str
    name: str
    entries: int
    needs: tuple[Need, ...]
    services: tuple[ServiceGiven, ...]


ETS = (
    DemoETS(
        "ETS-CARITAS",
        "Centro d'ascolto parrocchiale (fittizio)",
        260,
        (Need.ECONOMIC, Need.FOOD, Need.HOUSING, Need.LONELINESS, Need.WORK),
        (ServiceGiven.LISTENING, ServiceGiven.FOOD_PARCEL, ServiceGiven.CLOTHING),
    ),
    DemoETS(
        "ETS-BANCO",
        "Banco alimentare di zona (fittizio)",
        220,
        (Need.FOOD, Need.ECONOMIC),
        (ServiceGiven.FOOD_PARCEL, ServiceGiven.GOODS),
    ),
    DemoETS(
        "ETS-ACCOGLIE",
        "Cooperativa Accoglienza (fittizia)",
        120,
        (Need.LEGAL, Need.HOUSING, Need.WORK, Need.FAMILY, Need.HEALTH),
        (ServiceGiven.LEGAL_HELP, ServiceGiven.JOB_ORIENTATION, ServiceGiven.HOUSING_SUPPORT),
    ),
)

#: Demo accounts (printed by `raccordo demo`); passwords are for the demo only.
DEMO_PASSWORD = "demo-raccordo"  # noqa: S105
DEMO_USERS = (
    ("admin", "admin", None),
    ("analista", "analyst", None),
    ("caritas", "ets", "ETS-CARITAS"),
    ("banco", "ets", "ETS-BANCO"),
    ("accoglie", "ets", "ETS-ACCOGLIE"),
)


def ensure_accounts(engine: sa.Engine) -> list[tuple[str, str, str | None]]:
    """Create the demo accounts that do not exist yet; return all of them."""
    with engine.connect() as conn:
        existing = set(conn.execute(sa.select(t.web_users.c.username)).scalars())
    for username, role, org in DEMO_USERS:
        if username not in existing:
            accounts.create_user(engine, username, DEMO_PASSWORD, role, org)
    return list(DEMO_USERS)


def public_cfs(csv_path: Path, limit: int, rng: random.Random) -> list[str]:
    """Valid codici fiscali of people in charge of the CISS (from the demo export)."""
    with csv_path.open(encoding="cp1252", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    cfs = sorted(
        {
            r["CODICE_FISCALE"].strip()
            for r in rows
            if (r.get("TIPO_DOCUMENTO") or "").strip().upper() in ("CF", "CODICE FISCALE")
            and len(r["CODICE_FISCALE"].strip()) == 16
        }
    )
    rng.shuffle(cfs)
    return cfs[:limit]


def seed_entries(
    engine: sa.Engine,
    pseudonymiser: Pseudonymiser,
    comuni: dict[str, Comune],
    csv_path: Path,
    *,
    seed: int = 2026,
    year: int = 2022,
) -> int:
    """Enter the demo ETS entries through the intake; returns how many were new."""
    rng = random.Random(seed)
    known = public_cfs(csv_path, 180, rng)
    factory = PeopleFactory(rng, tuple(c for c in ("F952", "B016", "L746")))
    codes = sorted(comuni)
    weights = [max(1, (comuni[c].population or 1000) // 1000) for c in codes]
    created = 0
    for ets in ETS:
        people: list[str] = []
        for i in range(ets.entries):
            roll = rng.random()
            if roll < 0.12:
                kind, ident = intake.IdentifierKind.NONE, ""
            elif roll < 0.45 and known:
                kind, ident = intake.IdentifierKind.CF, rng.choice(known)
            elif people and roll < 0.6:
                kind, ident = intake.IdentifierKind.CF, rng.choice(people)
            else:
                p = factory.person(rng.randint(1940, 2004))
                people.append(p.identifier)
                kind, ident = intake.IdentifierKind.CF, p.identifier
            entry = intake.EntryInput(
                entry_id=uuid.uuid5(uuid.NAMESPACE_URL, f"raccordo-demo:{ets.code}:{seed}:{i}"),
                identifier_kind=kind,
                identifier=ident,
                comune_istat=rng.choices(codes, weights)[0],
                needs=sorted(set(rng.sample(ets.needs, rng.randint(1, 2)))),
                services_given=sorted(set(rng.sample(ets.services, rng.randint(1, 2)))),
                on=dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(364)),
                referred_by_social_services=rng.random() < 0.2,
                birth_year=rng.randint(1940, 2004) if kind is intake.IdentifierKind.NONE else None,
                sex=rng.choice("FM") if kind is intake.IdentifierKind.NONE else None,
            )
            prepared = intake.prepare(
                entry,
                org=ets.code,
                pseudonymiser=pseudonymiser,
                comuni=comuni,
                today=dt.date(year, 12, 31),
            )
            _, new = intake.store(engine, prepared, org=ets.code, user_id=None)
            created += new
    return created
