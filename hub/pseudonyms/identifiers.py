"""INTERFACE STUB — to be implemented (see helper brief)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class IdentifierType(enum.StrEnum):
    CF = "CF"
    CF_PROVV = "CF_PROVV"
    STP = "STP"
    ENI = "ENI"
    LOCAL = "LOCAL"
    NONE = "NONE"


class InvalidIdentifier(ValueError):
    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


@dataclass(frozen=True, repr=False)
class Identifier:
    type: IdentifierType
    value: str
    namespace: str | None = None


def parse_identifier(
    raw: str | None, expected: IdentifierType | None = None, *, namespace: str | None = None
) -> Identifier:
    raise NotImplementedError


def cf_birth_year_and_sex(cf: str, *, reference_year: int) -> tuple[int, str]:
    raise NotImplementedError
