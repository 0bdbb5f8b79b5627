"""The mapping file format, as pydantic models.

The models are strict and closed: a misspelt option is an error with its
location, never a silently ignored setting. Transforms are a closed union
tagged by ``type``; there is no expression language, so nothing in a mapping
file is ever executed. Their JSON Schema is published in
``docs/schema/mapping.schema.json``.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

CLOSED = ConfigDict(extra="forbid", frozen=True, strict=True)
#: A source field (after pseudonymisation) or a target field name.
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=120)]
#: The models a mapping can produce; kept equal to ``hub.schema.MODELS`` by a test.
ModelName = Literal["subject", "assessment", "case_episode", "intervention", "need_signal"]

#: ``strptime`` directives a date format may use (a date needs a year; times are ignored).
DATE_DIRECTIVES = frozenset("dmYybBjHMSfpIz%")
_DIRECTIVE = re.compile(r"%(.)")


class _Transform(BaseModel):
    model_config = CLOSED
    #: A missing or empty source gives ``None`` (or ``default``) instead of a problem.
    optional: bool = False


class FieldT(_Transform):
    """Copy a source field: text is stripped, other values (a derived birth year) kept as is."""

    type: Literal["field"]
    source: FieldName
    default: str | None = None
    upper: bool = False
    strip: bool = True


class ConstT(BaseModel):
    """The same value for every record."""

    model_config = CLOSED
    type: Literal["const"]
    value: Annotated[
        Any,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {"type": "integer"},
                    {"type": "boolean"},
                    {"type": "string", "format": "date"},
                    {"type": "array", "items": {"type": "string"}},
                ]
            }
        ),
    ]

    @field_validator("value", mode="plain")
    @classmethod
    def _plain_value(cls, v: Any) -> Any:
        if isinstance(v, str | int | bool | dt.date) and not isinstance(v, dt.datetime):
            return v
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return tuple(v)
        raise ValueError(
            "a constant is a text, a whole number, true/false, a date or a list of texts"
        )


class CodeT(_Transform):
    """Look a source code up in a code table (``upper`` compares in upper case)."""

    type: Literal["code"]
    source: FieldName
    table: FieldName
    #: Value used when the source is missing or empty (an unknown code follows the table's rule).
    default: str | None = None
    upper: bool = False


class DateT(_Transform):
    """A date: the first ``strptime`` format that fits (times are dropped)."""

    type: Literal["date"]
    source: FieldName
    formats: Annotated[list[str], Field(min_length=1, max_length=10)] = Field(
        default_factory=lambda: ["%Y-%m-%d"]
    )
    #: Also read Excel serial day numbers ("44561" is 31/12/2021).
    excel_serial: bool = False
    default: dt.date | None = None

    @field_validator("formats")
    @classmethod
    def _known_directives(cls, formats: list[str]) -> list[str]:
        problems = []
        for f in formats:
            used = _DIRECTIVE.findall(f)
            bad = sorted({d for d in used if d not in DATE_DIRECTIVES})
            if bad:
                problems.append(
                    f"format {f!r} uses {', '.join('%' + d for d in bad)} "
                    f"(allowed: {' '.join('%' + d for d in sorted(DATE_DIRECTIVES))})"
                )
            elif "%" in _DIRECTIVE.sub("", f):
                problems.append(f"format {f!r} ends with a lone %")
            elif not {"Y", "y"} & set(used):
                problems.append(f"format {f!r} has no year (%Y or %y)")
        if problems:
            raise ValueError("; ".join(problems))
        return formats


class IntT(_Transform):
    """A whole number: digits with an optional sign, or an integer value as is."""

    type: Literal["int"]
    source: FieldName
    default: int | None = None


class DecimalT(_Transform):
    """A decimal amount; ``decimal_comma`` reads Italian "1.234,56" (dots group thousands)."""

    type: Literal["decimal"]
    source: FieldName
    decimal_comma: bool = False
    default: Annotated[Decimal, Field(strict=False)] | None = None


class BoolT(_Transform):
    """True/false from explicit lists of codes (ignoring case); anything else is a problem."""

    type: Literal["bool"]
    source: FieldName
    true: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["1", "S", "SI", "Y", "YES", "TRUE"]
    )
    false: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["0", "N", "NO", "FALSE"]
    )
    default: bool | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> BoolT:
        both = {t.strip().upper() for t in self.true} & {f.strip().upper() for f in self.false}
        if both:
            raise ValueError(f"{', '.join(sorted(both))} is in both true and false")
        return self


class SplitT(_Transform):
    """Split a field into a list, each item optionally through a code table."""

    type: Literal["split"]
    source: FieldName
    sep: Annotated[str, StringConstraints(min_length=1, max_length=5)] = "|"
    table: FieldName | None = None
    upper: bool = False
    #: Drop repeated items (after the code table), keeping the first.
    unique: bool = True
    default: list[str] | None = None


class FirstOfT(_Transform):
    """The first non-empty of several source fields."""

    type: Literal["first_of"]
    sources: Annotated[list[FieldName], Field(min_length=1)]
    default: str | None = None
    upper: bool = False
    strip: bool = True


Transform = Annotated[
    FieldT | ConstT | CodeT | DateT | IntT | DecimalT | BoolT | SplitT | FirstOfT,
    Field(discriminator="type"),
]
TRANSFORM_TYPES = frozenset(
    ("field", "const", "code", "date", "int", "decimal", "bool", "split", "first_of")
)


class CodeTable(BaseModel):
    """Source codes → target values; says what happens to a code it does not know."""

    model_config = ConfigDict(
        **CLOSED,
        json_schema_extra={"oneOf": [{"required": ["unmapped"]}, {"required": ["default"]}]},
    )
    values: Annotated[dict[str, str], Field(min_length=1)]
    #: ``"quarantine"``: a record with an unknown code goes to quarantine.
    unmapped: Literal["quarantine"] | None = None
    #: Or: an unknown code becomes this value (and is still counted as unmapped).
    default: str | None = None

    @field_validator("values")
    @classmethod
    def _clean_codes(cls, values: dict[str, str]) -> dict[str, str]:
        for code in values:
            if not code.strip() or code != code.strip():
                raise ValueError(
                    f"code {code!r} is empty or has spaces around it; source values are stripped "
                    "before lookup, so it would never match"
                )
        return values

    @model_validator(mode="after")
    def _one_policy(self) -> CodeTable:
        if (self.unmapped is None) == (self.default is None):
            raise ValueError(
                'say what to do with unknown codes: either unmapped = "quarantine" '
                'or default = "...", not both'
            )
        return self


class When(BaseModel):
    """Produce the record only when a source field matches (exactly one test)."""

    model_config = ConfigDict(
        **CLOSED,
        populate_by_name=True,
        json_schema_extra={
            "oneOf": [{"required": ["equals"]}, {"required": ["in"]}, {"required": ["not_empty"]}]
        },
    )
    field: FieldName
    equals: str | None = None
    in_: Annotated[list[str], Field(min_length=1)] | None = Field(default=None, alias="in")
    #: ``true``: the field has a value; ``false``: it is missing or empty.
    not_empty: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> When:
        given = [x for x in (self.equals, self.in_, self.not_empty) if x is not None]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of equals, in, not_empty")
        return self


class RecordSpec(BaseModel):
    """One output record type: which model, when, its key, and how each field is made."""

    model_config = CLOSED
    model: ModelName
    #: Source fields forming this output's natural key (default: the source record's key).
    key: Annotated[list[FieldName], Field(min_length=1)] | None = None
    when: When | None = None
    fields: Annotated[dict[FieldName, Transform], Field(min_length=1)]


class MappingFile(BaseModel):
    """A whole mapping file."""

    model_config = CLOSED
    version: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,60}$")]
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    codes: dict[FieldName, CodeTable] = Field(default_factory=dict)
    records: Annotated[list[RecordSpec], Field(min_length=1)]
