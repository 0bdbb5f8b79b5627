"""Tabular sources (CSV and spreadsheet exports, database tables): which column plays which
privacy role, declared in ``raccordo.toml``, and the :class:`FieldSpec` of each column."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from hub.connector import FieldRole, FieldSpec
from hub.pseudonyms import IdentifierType


class IdentifierColumn(BaseModel):
    """A column holding a personal identifier (pseudonymised by the pipeline, never stored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The identifier type, or "auto" to detect it from the value's layout.
    type: Literal["auto", "CF", "CF_PROVV", "STP", "ENI", "LOCAL"] = "auto"
    #: A column holding the type of each row's identifier (CF, STP, ENI, CFP...).
    type_column: str | None = None
    #: An empty value is allowed (anonymous contacts, no household).
    optional: bool = False
    #: Derive birth year and sex from a CF as <column>__birth_year / <column>__sex.
    derive_birth_year_and_sex: bool = False


def column_fields(
    columns: Iterable[str],
    identifier_columns: Mapping[str, IdentifierColumn],
    personal_columns: Iterable[str],
) -> tuple[FieldSpec, ...]:
    """One :class:`FieldSpec` per column (in order, each once): identifiers as declared,
    personal columns (names, notes: dropped by the pipeline), the rest data."""
    personal = set(personal_columns)
    fields = []
    for col in dict.fromkeys(columns):
        spec = identifier_columns.get(col)
        if spec is not None:
            fields.append(
                FieldSpec(
                    col,
                    FieldRole.IDENTIFIER,
                    identifier_type=None if spec.type == "auto" else IdentifierType(spec.type),
                    type_field=spec.type_column,
                    optional=spec.optional,
                    derive_birth_year_and_sex=spec.derive_birth_year_and_sex,
                )
            )
        elif col in personal:
            fields.append(FieldSpec(col, FieldRole.PERSONAL))
        else:
            fields.append(FieldSpec(col))
    return tuple(fields)
