"""Synthetic people with valid, fictitious identifiers for the demo district.

Codici fiscali are *computed* from invented names and dates with the
official algorithm (never copied from anywhere), so they are valid but
belong to nobody. Omocodic variants and STP codes are made on purpose: the
hub must treat an omocodic variant as a different person.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from hub.pseudonyms.identifiers import cf_check_character

SURNAMES = (
    "Ardizzone",
    "Baldacci",
    "Bertolotti",
    "Brambilla",
    "Cappellini",
    "Carnevali",
    "Cerruti",
    "Colombaro",
    "Dellavalle",
    "Fassone",
    "Ferrandi",
    "Gallarate",
    "Garavaglia",
    "Giordanino",
    "Lavarini",
    "Maffioli",
    "Malvestiti",
    "Mellano",
    "Morandotti",
    "Nebbiolo",
    "Oddenino",
    "Pagliarani",
    "Pellegrinelli",
    "Piovera",
    "Quaglino",
    "Rabellotti",
    "Ravizzotti",
    "Sacchetto",
    "Scagliotti",
    "Sormani",
    "Tarabbia",
    "Tornielli",
    "Uboldi",
    "Vallarino",
    "Vercellotti",
    "Zanellato",
    "Zoppetti",
    "Bonfantino",
    "Crosetti",
    "Guenzani",
)
NAMES_M = (
    "Alberto",
    "Battista",
    "Carlo",
    "Dario",
    "Edoardo",
    "Fulvio",
    "Gianni",
    "Ivano",
    "Lorenzo",
    "Marcello",
    "Nereo",
    "Ottavio",
    "Piero",
    "Renato",
    "Silvano",
    "Tiziano",
    "Ugo",
    "Valerio",
)
NAMES_F = (
    "Adele",
    "Bruna",
    "Clelia",
    "Dora",
    "Elvira",
    "Fiorella",
    "Gemma",
    "Ida",
    "Lidia",
    "Marisa",
    "Norma",
    "Oriana",
    "Piera",
    "Rina",
    "Silvana",
    "Tecla",
    "Vanda",
    "Zelia",
)
#: Every name the demo may write into a source file (the leak scanner looks for them).
ALL_NAMES = SURNAMES + NAMES_M + NAMES_F

_MONTHS = "ABCDEHLMPRST"
_OMOCODIA = "LMNPQRSTUV"
_DIGIT_POSITIONS = (14, 13, 12, 10, 9, 7, 6)  # replaced right to left


def _consonants(s: str) -> str:
    return "".join(c for c in s.upper() if c.isalpha() and c not in "AEIOU")


def _vowels(s: str) -> str:
    return "".join(c for c in s.upper() if c in "AEIOU")


def _surname_code(surname: str) -> str:
    return (_consonants(surname) + _vowels(surname) + "XXX")[:3]


def _name_code(name: str) -> str:
    cons = _consonants(name)
    if len(cons) >= 4:
        return cons[0] + cons[2] + cons[3]
    return (cons + _vowels(name) + "XXX")[:3]


def codice_fiscale(surname: str, name: str, birth: dt.date, sex: str, belfiore: str) -> str:
    day = birth.day + (40 if sex == "F" else 0)
    first15 = (
        f"{_surname_code(surname)}{_name_code(name)}{birth.year % 100:02d}"
        f"{_MONTHS[birth.month - 1]}{day:02d}{belfiore.upper()}"
    )
    return first15 + cf_check_character(first15)


def omocodic_variant(cf: str, level: int = 1) -> str:
    """The CF with its last ``level`` digits replaced by omocodia letters: a different person."""
    chars = list(cf[:15])
    for pos in _DIGIT_POSITIONS[:level]:
        chars[pos] = _OMOCODIA[int(chars[pos])]
    first15 = "".join(chars)
    return first15 + cf_check_character(first15)


def with_wrong_check_character(cf: str) -> str:
    right = cf[15]
    wrong = "A" if right != "A" else "B"
    return cf[:15] + wrong


def stp_code(rng: random.Random) -> str:
    """STP code: 'STP' + region (010 Piemonte) + ASL (3 digits) + 7-digit progressive."""
    return f"STP010{rng.choice(('206', '207', '213'))}{rng.randrange(10**7):07d}"


@dataclass(frozen=True)
class Person:
    surname: str
    name: str
    sex: str
    birth: dt.date
    belfiore: str
    identifier: str
    id_type: str  # CF | STP

    @property
    def birth_year(self) -> int:
        return self.birth.year


class PeopleFactory:
    """Makes distinct people; never the same codice fiscale twice."""

    def __init__(self, rng: random.Random, birthplaces: tuple[str, ...]) -> None:
        self.rng = rng
        self.birthplaces = birthplaces
        self.used: set[str] = set()

    def person(self, birth_year: int, *, stp: bool = False) -> Person:
        rng = self.rng
        for _ in range(1000):
            sex = rng.choice("FM")
            name = rng.choice(NAMES_F if sex == "F" else NAMES_M)
            surname = rng.choice(SURNAMES)
            birth = dt.date(birth_year, rng.randint(1, 12), rng.randint(1, 28))
            place = rng.choice(self.birthplaces)
            if stp:
                ident, kind = stp_code(rng), "STP"
            else:
                ident, kind = codice_fiscale(surname, name, birth, sex, place), "CF"
            if ident not in self.used:
                self.used.add(ident)
                return Person(surname, name, sex, birth, place, ident, kind)
        raise RuntimeError("could not make a new distinct person")  # pragma: no cover

    def omocodic_twin(self, other: Person) -> Person:
        """Someone else whose CF is an omocodic variant of ``other``'s."""
        for level in range(1, 8):
            cf = omocodic_variant(other.identifier, level)
            if cf not in self.used:
                self.used.add(cf)
                # Same name codes, birth date and place: that is how omocodia happens.
                return Person(
                    other.surname, other.name, other.sex, other.birth, other.belfiore, cf, "CF"
                )
        raise RuntimeError("no omocodic variant left")  # pragma: no cover
