"""The built-in synthetic test connector.

Generates deterministic case records (valid, repeated and deliberately bad
ones) without any real source. Used by the tests, the benchmarks and to try
a pipeline end to end. Names and codici fiscali are invented; comuni and
Belfiore codes are real ones of the province of Novara.

Record ``i`` depends only on the seed and ``i`` (not on ``count``), so a
small run is a prefix of a big one and tests can recompute any record.
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

#: Real comuni of the province of Novara (ISTAT code), as in hub/data/comuni_novara.csv.
COMUNI = ("003024", "003008", "003106", "003108", "003076", "003149", "003068", "003032")
#: Belfiore codes of the same comuni (birthplaces inside the CF).
BELFIORE = ("B019", "A429", "F952", "G019", "E120", "L356", "D872", "B473")
AREAS = ("MIN", "FAM", "DIS", "ANZ", "POV", "IMM", "DIP", "MUL")
SERVICES = ("A1.16", "A2.16", "A1.09", "A1.02", "A2.06", "B2.01", "C1.02")
MONTHS = "ABCDEHLMPRST"
#: Kinds of deliberately bad records, in rotation; named after the rule that refuses them.
BAD_KINDS = ("cf_check_char", "unmapped_code", "bad_date")
#: Share of records about a person already met in an earlier record.
REPEAT_RATIO = 0.3
#: Birth years: before the first case (2019) and unambiguous in a two-digit CF year.
BIRTH_YEARS = (1930, 2018)


class SyntheticConfig(ConnectorConfig):
    count: Annotated[int, Field(ge=0, le=10_000_000)] = 1000
    bad_ratio: Annotated[float, Field(ge=0, le=1)] = 0.03
    seed: int = 1
    checkpoint_every: Annotated[int, Field(ge=1)] = 500
    #: Prefix of the LOCAL household ids (in no other identifier).
    org_code: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}$")] = "SYN"


def _rng(seed: int, kind: str, n: int) -> random.Random:
    """An independent generator per (seed, kind, number): string seeds are
    hashed (SHA-512) by ``random``, so no two kinds or seeds share a stream."""
    return random.Random(f"{seed}:{kind}:{n}")


def is_bad(i: int, bad_ratio: float, seed: int) -> bool:
    """Whether record ``i`` is deliberately bad (an independent draw per record)."""
    return _rng(seed, "bad", i).random() < bad_ratio


def expected_bad(count: int, bad_ratio: float, seed: int) -> int:
    """How many of the first ``count`` records are deliberately bad."""
    return sum(is_bad(i, bad_ratio, seed) for i in range(count))


def bad_kind(i: int) -> str:
    """Which defect bad record ``i`` has (see :data:`BAD_KINDS`)."""
    return BAD_KINDS[i % len(BAD_KINDS)]


def _consonants_vowels(s: str) -> tuple[list[str], list[str]]:
    letters = [c for c in s.upper() if c.isalpha()]
    return [c for c in letters if c not in "AEIOU"], [c for c in letters if c in "AEIOU"]


def _surname_code(surname: str) -> str:
    cons, vows = _consonants_vowels(surname)
    return "".join([*cons, *vows, "X", "X", "X"])[:3]


def _name_code(name: str) -> str:
    cons, vows = _consonants_vowels(name)
    if len(cons) >= 4:  # the given name skips its second consonant
        return cons[0] + cons[2] + cons[3]
    return "".join([*cons, *vows, "X", "X", "X"])[:3]


def _person(seed: int, p: int, org_code: str) -> dict[str, str]:
    """Person number ``p`` of this seed: same inputs, same person."""
    # Imported here: the CF helper lives with the identifier rules, which the
    # connector only uses to *produce* valid test codes.
    from hub.pseudonyms.identifiers import cf_check_character

    r = _rng(seed, "person", p)
    sex = r.choice("FM")
    name = r.choice(NAMES_F if sex == "F" else NAMES_M)
    surname = r.choice(SURNAMES)
    year = r.randint(*BIRTH_YEARS)
    month, day = r.randint(1, 12), r.randint(1, 28)
    place = r.choice(BELFIORE)
    first15 = (
        f"{_surname_code(surname)}{_name_code(name)}{year % 100:02d}"
        f"{MONTHS[month - 1]}{day + (40 if sex == 'F' else 0):02d}{place}"
    )
    household = p // 3  # three consecutive people share a household and its comune
    return {
        "cf": first15 + cf_check_character(first15),
        "cognome": surname,
        "nome": name,
        "household_id": f"{org_code}-N{household:07d}",
        "comune": _rng(seed, "household", household).choice(COMUNI),
    }


def _it(d: dt.date) -> str:
    return d.strftime("%d/%m/%Y")


def _it_decimal(cents: int) -> str:
    """1234567 -> "12.345,67" (Italian thousands and decimal separators)."""
    return f"{cents // 100:,}".replace(",", ".") + f",{cents % 100:02d}"


def make_record(i: int, *, seed: int, bad_ratio: float, org_code: str = "SYN") -> dict[str, str]:
    """Record ``i``: independent of how many records are generated."""
    r = _rng(seed, "record", i)
    # Some records concern a person seen in an earlier record.
    p = r.randrange(i) if i and r.random() < REPEAT_RATIO else i
    who = _person(seed, p, org_code)
    opened = dt.date(2019, 1, 1) + dt.timedelta(days=r.randint(0, 1400))
    closed = opened + dt.timedelta(days=r.randint(10, 400)) if r.random() < 0.6 else None
    assessed = opened - dt.timedelta(days=r.randint(1, 900)) if r.random() < 0.3 else None
    cents = r.randint(1000, 300_000)
    with_amount = r.random() < 0.5
    rec = {
        "case_id": f"C{i:08d}",
        **who,
        "area": r.choice(AREAS),
        "service": r.choice(SERVICES),
        "opened": _it(opened),
        "closed": _it(closed) if closed else "",
        "amount": _it_decimal(cents) if with_amount else "",
        "disability": r.choice("SN") if assessed else "",
        "non_self_sufficient": r.choice(("S", "N", "")) if assessed else "",
        "assessed": _it(assessed) if assessed else "",
    }
    if is_bad(i, bad_ratio, seed):
        kind = bad_kind(i)
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
        message = f"generates {self.config.count:,} records (seed {self.config.seed})"
        if os.environ.get(CRASH_ENV):
            message += f"; test hook {CRASH_ENV} is set: the process will kill itself"
        return CheckResult(True, message)

    def streams(self) -> tuple[Stream, ...]:
        return (STREAM,)

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        """Records from ``state["next"]`` on, a checkpoint every ``checkpoint_every``.

        Test hook: with ``RACCORDO_SYNTHETIC_CRASH_AT=N`` the process SIGKILLs
        itself when about to yield record N (proves a killed sync loses nothing).
        """
        self.stream(stream)
        c = self.config
        crash_at = int(os.environ[CRASH_ENV]) if os.environ.get(CRASH_ENV) else None
        start = int(state.get("next", 0))
        for i in range(start, c.count):
            if crash_at is not None and i == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield RawRecord(
                "cases",
                make_record(i, seed=c.seed, bad_ratio=c.bad_ratio, org_code=c.org_code),
                location=f"synthetic record {i}",
            )
            if (i + 1) % c.checkpoint_every == 0:
                yield StateCheckpoint({"next": i + 1})
        yield StateCheckpoint({"next": max(start, c.count)})


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(SyntheticConnector)
