"""The mapping file format, as pydantic models (its JSON Schema is published in docs/)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

CLOSED = ConfigDict(extra="forbid", frozen=True)
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=120)]


class _Base(BaseModel):
    model_config = CLOSED
    #: A missing or empty source gives ``None`` (or ``default``) instead of a problem.
    optional: bool = False


class FieldT(_Base):
    """Copy a source field (text, stripped)."""

    type: Literal["field"]
    source: FieldName
    default: str | None = None
    upper: bool = False


class ConstT(BaseModel):
    """A constant value."""

    model_config = CLOSED
    type: Literal["const"]
    value: str | int | bool


class CodeT(_Base):
    """Look a source code up in a code table."""

    type: Literal["code"]
    source: FieldName
    table: FieldName


class DateT(_Base):
    """Parse a date with the first matching ``strptime`` format."""

    type: Literal["date"]
    source: FieldName
    formats: Annotated[list[str], Field(min_length=1)] = ["%Y-%m-%d"]


class IntT(_Base):
    type: Literal["int"]
    source: FieldName
    default: int | None = None


class DecimalT(_Base):
    """A decimal amount; ``decimal_comma`` reads Italian "1.234,56"."""

    type: Literal["decimal"]
    source: FieldName
    decimal_comma: bool = False


class BoolT(_Base):
    """A boolean from explicit lists of true and false codes (anything else is a problem)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    type: Literal["bool"]
    source: FieldName
    true: list[str] = Field(default_factory=lambda: ["1", "S", "SI", "Y", "TRUE"])
    false: list[str] = Field(default_factory=lambda: ["0", "N", "NO", "FALSE"])


class SplitT(_Base):
    """Split a field into a list, each item optionally through a code table."""

    type: Literal["split"]
    source: FieldName
    sep: Annotated[str, StringConstraints(min_length=1, max_length=5)] = "|"
    table: FieldName | None = None


class FirstOfT(_Base):
    """The first non-empty of several source fields (as text)."""

    type: Literal["first_of"]
    sources: Annotated[list[FieldName], Field(min_length=1)]


Transform = Annotated[
    FieldT | ConstT | CodeT | DateT | IntT | DecimalT | BoolT | SplitT | FirstOfT,
    Field(discriminator="type"),
]


class CodeTable(BaseModel):
    model_config = CLOSED
    values: dict[str, str]
    #: What to do with a code not in ``values``: quarantine the record, or use ``default``.
    unmapped: Literal["quarantine", "default"] | None = None
    default: str | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> CodeTable:
        if self.default is not None and self.unmapped == "quarantine":
            raise ValueError('give either unmapped = "quarantine" or a default, not both')
        if self.default is None and self.unmapped != "quarantine":
            raise ValueError(
                'say what to do with unknown codes: unmapped = "quarantine" or default = "..."'
            )
        return self


class When(BaseModel):
    """Produce the record only when a source field matches."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    field: FieldName
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    not_empty: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> When:
        given = [x for x in (self.equals, self.in_, self.not_empty) if x is not None]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of equals, in, not_empty")
        return self


class RecordSpec(BaseModel):
    model_config = CLOSED
    model: Literal["subject", "assessment", "case_episode", "intervention", "need_signal"]
    #: Source fields forming this output's natural key (default: the source record's key).
    key: list[FieldName] | None = None
    when: When | None = None
    fields: dict[FieldName, Transform]


class MappingFile(BaseModel):
    model_config = CLOSED
    version: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,60}$")]
    description: str = ""
    codes: dict[FieldName, CodeTable] = Field(default_factory=dict)
    records: Annotated[list[RecordSpec], Field(min_length=1)]
