"""The built-in synthetic test connector.

Generates deterministic case records (valid, repeated and deliberately bad
ones) without any real source. Used by the tests, the benchmarks and to try
a pipeline end to end. Names and codici fiscali are invented.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
from collections.abc import Callable, Iterator
from typing import Annotated

from pydantic import Field

from hub import hookimpl
from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    FieldRole,
    FieldSpec,
    JSONState,
    RawRecord,
    ReadItem,
    StateCheckpoint,
    Stream,
)
from hub.pseudonyms import IdentifierType

RACCORDO_HOOK_API = 1
#: Test hook: kill the process (SIGKILL) when about to yield record N.
CRASH_ENV = "RACCORDO_SYNTHETIC_CRASH_AT"

SURNAMES = (
    "Brusaferri",
    "Cavigioli",
    "Dellarole",
    "Gambarana",
    "Lucchini",
    "Morandi",
    "Perazzoli",
    "Ronchetti",
    "Sguazzini",
    "Tadini",
    "Vandoni",
    "Zanzottera",
)
NAMES_M = ("Aldo", "Bruno", "Cesare", "Dino", "Elio", "Franco", "Guido", "Luigi")
NAMES_F = ("Anna", "Bice", "Carla", "Delia", "Enza", "Flora", "Gina", "Lia")
#: Every name the connector can emit (the leak scanner looks for them).
SYNTHETIC_NAMES = SURNAMES + NAMES_M + NAMES_F

COMUNI = ("003024", "003008", "003106", "003108", "003076", "003149", "003068", "003032")
BELFIORE = ("B019", "A429", "F952", "G019", "E120", "L356", "D872", "B473")
AREAS = ("MIN", "FAM", "DIS", "ANZ", "POV", "IMM", "DIP", "MUL")
SERVICES = ("A1.16", "A2.16", "A1.09", "A1.02", "A2.06", "B2.01", "C1.02")
MONTHS = "ABCDEHLMPRST"
BAD_KINDS = ("cf_check_char", "unmapped_code", "bad_date")


class SyntheticConfig(ConnectorConfig):
    count: Annotated[int, Field(ge=0, le=10_000_000)] = 1000
    bad_ratio: Annotated[float, Field(ge=0, le=1)] = 0.03
    seed: int = 1
    checkpoint_every: Annotated[int, Field(ge=1)] = 500
    org_code: str = "SYN"


def _rng(seed: int, i: int) -> random.Random:
    return random.Random(seed * 1_000_003 + i)


def is_bad(i: int, bad_ratio: float, seed: int) -> bool:
    return _rng(seed, -i - 1).random() < bad_ratio


def expected_bad(count: int, bad_ratio: float, seed: int) -> int:
    """How many of the first ``count`` records are deliberately bad."""
    return sum(is_bad(i, bad_ratio, seed) for i in range(count))


def _consonant_code(s: str) -> str:
    cons = [c for c in s.upper() if c not in "AEIOU"]
    vows = [c for c in s.upper() if c in "AEIOU"]
    return "".join(cons + vows + ["X", "X", "X"])[:3]


def _person(seed: int, p: int) -> dict[str, str]:
    """Person number ``p`` of this seed: same inputs, same person."""
    from hub.pseudonyms.identifiers import cf_check_character

    r = _rng(seed, 10_000_000 + p)
    sex = r.choice("FM")
    name = r.choice(NAMES_F if sex == "F" else NAMES_M)
    surname = r.choice(SURNAMES)
    year = r.randint(1925, 2022)
    month, day = r.randint(1, 12), r.randint(1, 28)
    place = r.choice(BELFIORE)
    first15 = (
        f"{_consonant_code(surname)}{_consonant_code(name)}{year % 100:02d}"
        f"{MONTHS[month - 1]}{day + (40 if sex == 'F' else 0):02d}{place}"
    )
    return {
        "cf": first15 + cf_check_character(first15),
        "cognome": surname,
        "nome": name,
        "household_id": f"H{p // 3:07d}",
        "comune": r.choice(COMUNI),
    }


def _it(d: dt.date) -> str:
    return d.strftime("%d/%m/%Y")


def make_record(i: int, *, seed: int, bad_ratio: float) -> dict[str, str]:
    """Record ``i``: independent of how many records are generated."""
    r = _rng(seed, i)
    # About 30% of records concern a person seen in an earlier record.
    p = r.randrange(max(i, 1)) if i and r.random() < 0.3 else i
    who = _person(seed, p)
    opened = dt.date(2019, 1, 1) + dt.timedelta(days=r.randint(0, 1400))
    closed = opened + dt.timedelta(days=r.randint(10, 400)) if r.random() < 0.6 else None
    assessed = opened - dt.timedelta(days=r.randint(1, 900)) if r.random() < 0.3 else None
    cents = r.randint(1000, 300_000)
    rec = {
        "case_id": f"C{i:08d}",
        **who,
        "area": r.choice(AREAS),
        "service": r.choice(SERVICES),
        "opened": _it(opened),
        "closed": _it(closed) if closed else "",
        "amount": f"{cents // 100:,}".replace(",", ".") + f",{cents % 100:02d}"
        if r.random() < 0.5
        else "",
        "disability": r.choice("SN") if assessed else "",
        "non_self_sufficient": r.choice(("S", "N", "")) if assessed else "",
        "assessed": _it(assessed) if assessed else "",
    }
    if is_bad(i, bad_ratio, seed):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        if kind == "cf_check_char":
            right = rec["cf"][15]
            rec["cf"] = rec["cf"][:15] + ("A" if right != "A" else "B")
        elif kind == "unmapped_code":
            rec["area"] = "XXX"
        else:
            rec["opened"] = "31/02/2021"
    return rec


STREAM = Stream(
    name="cases",
    source_key=("case_id",),
    description="One row per presa in carico with its intervention and, sometimes, an assessment",
    fields=(
        FieldSpec("case_id", description="Case number"),
        FieldSpec(
            "cf",
            FieldRole.IDENTIFIER,
            "Codice fiscale",
            IdentifierType.CF,
            derive_birth_year_and_sex=True,
        ),
        FieldSpec("cognome", FieldRole.PERSONAL, "Surname"),
        FieldSpec("nome", FieldRole.PERSONAL, "Given name"),
        FieldSpec("household_id", FieldRole.IDENTIFIER, "Household id", IdentifierType.LOCAL),
        FieldSpec("comune", description="ISTAT code of the comune of residence"),
        FieldSpec("area", description="Local area code"),
        FieldSpec("service", description="SIUSS prestazione code"),
        FieldSpec("opened", description="dd/mm/yyyy"),
        FieldSpec("closed", description="dd/mm/yyyy or empty"),
        FieldSpec("amount", description="Italian decimal or empty"),
        FieldSpec("disability", description="S/N/empty"),
        FieldSpec("non_self_sufficient", description="S/N/empty"),
        FieldSpec("assessed", description="date of the assessment, dd/mm/yyyy or empty"),
    ),
)


class SyntheticConnector(Connector):
    name = "synthetic"
    summary = "Deterministic synthetic case records with a share of bad ones (for tests and demos)"
    config_class = SyntheticConfig
    default_mapping = "synthetic.toml"
    config: SyntheticConfig

    def check(self) -> CheckResult:
        return CheckResult(
            True, f"generates {self.config.count:,} records (seed {self.config.seed})"
        )

    def streams(self) -> tuple[Stream, ...]:
        return (STREAM,)

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        c = self.config
        crash_at = int(os.environ[CRASH_ENV]) if os.environ.get(CRASH_ENV) else None
        start = int(state.get("next", 0))
        for i in range(start, c.count):
            if crash_at is not None and i == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield RawRecord(
                "cases",
                make_record(i, seed=c.seed, bad_ratio=c.bad_ratio),
                location=f"synthetic record {i}",
            )
            if (i + 1) % c.checkpoint_every == 0:
                yield StateCheckpoint({"next": i + 1})
        yield StateCheckpoint({"next": max(start, c.count)})


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(SyntheticConnector)
