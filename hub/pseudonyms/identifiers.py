"""Typed personal identifiers: normalisation and validation.

Identifiers are validated, never "fixed": a wrong code sends its record to
quarantine with a reason a person understands. Messages never contain the
clear value. Omocodic variants of a codice fiscale are valid and are
*different* people: they are never mapped to one form.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class IdentifierType(enum.StrEnum):
    CF = "CF"  #: codice fiscale, 16 characters
    CF_PROVV = "CF_PROVV"  #: provisional (numeric) codice fiscale, 11 digits
    STP = "STP"  #: Straniero Temporaneamente Presente
    ENI = "ENI"  #: Europeo Non Iscritto
    LOCAL = "LOCAL"  #: an ente's own id, scoped to that ente
    NONE = "NONE"  #: no identifier (anonymous contact)


class InvalidIdentifier(ValueError):
    """An identifier failed validation. ``message`` is for people, ``rule`` for machines."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


@dataclass(frozen=True, repr=False)
class Identifier:
    type: IdentifierType
    value: str
    namespace: str | None = None

    def __repr__(self) -> str:
        ns = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"Identifier({self.type.value}, ***{ns})"

    __str__ = __repr__


# --- codice fiscale -------------------------------------------------------------------
_OMOCODIA = "LMNPQRSTUV"  # letters standing for 0-9 in omocodic codes
_DIGIT_POS = (6, 7, 9, 10, 12, 13, 14)
_MONTHS = "ABCDEHLMPRST"
_CF_SHAPE = re.compile(
    r"^[A-Z]{6}[0-9LMNP-V]{2}[ABCDEHLMPRST][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]$"
)
_ODD = dict(
    zip(
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        (
            1,
            0,
            5,
            7,
            9,
            13,
            15,
            17,
            19,
            21,
            1,
            0,
            5,
            7,
            9,
            13,
            15,
            17,
            19,
            21,
            2,
            4,
            18,
            20,
            11,
            3,
            6,
            8,
            12,
            14,
            16,
            10,
            22,
            25,
            24,
            23,
        ),
        strict=True,
    )
)
_EVEN = {**{str(d): d for d in range(10)}, **{chr(65 + i): i for i in range(26)}}


def cf_check_character(first15: str) -> str:
    """The 16th character of a codice fiscale, from the first 15 (official tables)."""
    s = first15.upper()
    if len(s) != 15 or any(c not in _EVEN for c in s):
        raise ValueError("need the first 15 characters of a codice fiscale (letters and digits)")
    total = sum(_ODD[c] if i % 2 == 0 else _EVEN[c] for i, c in enumerate(s))
    return chr(65 + total % 26)


def _decode_digit(c: str) -> str:
    return c if c.isdigit() else str(_OMOCODIA.index(c))


def _validate_cf(cf: str) -> None:
    if len(cf) != 16:
        raise InvalidIdentifier(
            f"codice fiscale: it has {len(cf)} characters instead of 16",
            rule="cf_length",
        )
    if not _CF_SHAPE.match(cf):
        raise InvalidIdentifier(
            "codice fiscale: letters and digits are not in the expected places "
            "(6 letters, 2 digits, month letter, 2 digits, 4-character place code, check letter)",
            rule="cf_format",
        )
    day = int(_decode_digit(cf[9]) + _decode_digit(cf[10]))
    if not (1 <= day <= 31 or 41 <= day <= 71):
        raise InvalidIdentifier(
            "codice fiscale: the day of birth (characters 10-11) is impossible",
            rule="cf_date",
        )
    if cf_check_character(cf[:15]) != cf[15]:
        raise InvalidIdentifier(
            "codice fiscale: the check character (16th) does not match the other 15 characters; "
            "the code was probably mistyped: check it against the person's tessera sanitaria",
            rule="cf_check_char",
        )


def cf_birth_year_and_sex(cf: str, *, reference_year: int) -> tuple[int, str]:
    """Birth year and sex encoded in a (valid) codice fiscale.

    The century is chosen so that the year is not after ``reference_year``.
    """
    yy = int(_decode_digit(cf[6]) + _decode_digit(cf[7]))
    day = int(_decode_digit(cf[9]) + _decode_digit(cf[10]))
    year = (reference_year // 100) * 100 + yy
    if year > reference_year:
        year -= 100
    return year, ("F" if day > 40 else "M")


# --- other identifiers ----------------------------------------------------------------
def _validate_cf_provv(code: str) -> None:
    if not re.fullmatch(r"[0-9]{11}", code):
        raise InvalidIdentifier(
            "provisional codice fiscale: it must be exactly 11 digits", rule="cf_provv_format"
        )
    digits = [int(c) for c in code]
    total = 0
    for i, d in enumerate(digits[:10]):
        if i % 2 == 0:
            total += d
        else:
            dd = d * 2
            total += dd - 9 if dd > 9 else dd
    if (10 - total % 10) % 10 != digits[10]:
        raise InvalidIdentifier(
            "provisional codice fiscale: the check digit (11th) does not match the other 10 "
            "digits; the code was probably mistyped",
            rule="cf_provv_check_digit",
        )


def _validate_stp_eni(code: str, kind: IdentifierType) -> None:
    if not re.fullmatch(rf"{kind.value}[0-9]{{13}}", code):
        raise InvalidIdentifier(
            f"{kind.value} code: it must be '{kind.value}' followed by 13 digits "
            "(3 for the region, 3 for the ASL, 7 for the progressive number)",
            rule=f"{kind.value.lower()}_format",
        )


_LOCAL = re.compile(r"^[A-Z0-9._/-]{1,64}$")


def detect_type(code: str) -> IdentifierType:
    """Guess the type from the layout of a normalised code."""
    if code.startswith("STP"):
        return IdentifierType.STP
    if code.startswith("ENI"):
        return IdentifierType.ENI
    if code.isdigit() and len(code) == 11:
        return IdentifierType.CF_PROVV
    if len(code) == 16 or (code[:6].isalpha() and 12 <= len(code) <= 20):
        return IdentifierType.CF  # a codice fiscale, perhaps mistyped: explained as one
    raise InvalidIdentifier(
        "identifier: not a codice fiscale (16 characters), a provisional codice fiscale "
        f"(11 digits), nor an STP/ENI code; it has {len(code)} characters",
        rule="unknown_type",
    )


def normalise(raw: str) -> str:
    return "".join(raw.split()).upper()


def parse_identifier(
    raw: str | None, expected: IdentifierType | None = None, *, namespace: str | None = None
) -> Identifier:
    """Normalise and validate; raises :class:`InvalidIdentifier` with a readable reason."""
    code = normalise(raw or "")
    if not code:
        if expected in (None, IdentifierType.NONE):
            return Identifier(IdentifierType.NONE, "")
        raise InvalidIdentifier(f"{expected.value}: the identifier is empty", rule="empty")
    if expected is IdentifierType.NONE:
        raise InvalidIdentifier(
            "identifier given where none was expected (type says none)", rule="unexpected_value"
        )
    kind = expected or detect_type(code)
    if kind is IdentifierType.CF:
        _validate_cf(code)
    elif kind is IdentifierType.CF_PROVV:
        _validate_cf_provv(code)
    elif kind in (IdentifierType.STP, IdentifierType.ENI):
        _validate_stp_eni(code, kind)
    elif kind is IdentifierType.LOCAL:
        if not namespace:
            raise InvalidIdentifier(
                "local identifier: the issuing ente is unknown, so it cannot be scoped to it",
                rule="local_namespace",
            )
        if not _LOCAL.match(code):
            raise InvalidIdentifier(
                "local identifier: only letters, digits and . _ / - are allowed, at most 64",
                rule="local_format",
            )
        return Identifier(kind, code, namespace.upper())
    return Identifier(kind, code)
