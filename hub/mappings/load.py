"""Reading and checking mapping files.

A mapping file is checked completely when it is loaded, so that a mistake
fails ``raccordo mappings validate`` (or the start of a sync) with its
location, instead of quarantining every record of a run: syntax, the file
format, and then against the common schema — target fields exist, required
ones are produced, code tables exist, transforms give the type a field takes,
and constants, defaults and code-table values are valid for their fields.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from collections.abc import Collection, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.errors import MappingFileError
from hub.mappings.engine import CompiledMapping, source_fields
from hub.mappings.model import (
    TRANSFORM_TYPES,
    BoolT,
    CodeT,
    ConstT,
    DateT,
    DecimalT,
    IntT,
    MappingFile,
    SplitT,
)
from hub.mappings.targets import Target, describe, targets

#: Larger files are refused unread: a mapping is a few kilobytes.
MAX_BYTES = 1_000_000
HINT = "see docs/mappings.md for the format"

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
#: Python type a transform gives, where it does not depend on the source.
_GIVES: dict[type, type] = {
    IntT: int,
    DateT: dt.date,
    DecimalT: Decimal,
    BoolT: bool,
    SplitT: tuple,
    CodeT: str,
}


def location(parts: Iterable[str | int]) -> str:
    """``("records", 2, "fields", "a.b")`` → ``records[2].fields."a.b"`` (TOML-like)."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + (p if _BARE.match(p) else json.dumps(p))
    return out


def _pydantic_errors(e: ValidationError) -> list[str]:
    errors = []
    for err in e.errors():
        loc = list(err["loc"])
        # The tag of the transform union adds a step that is not in the file.
        if (
            len(loc) > 4
            and loc[0] == "records"
            and loc[2] == "fields"
            and loc[4] in TRANSFORM_TYPES
        ):
            del loc[4]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "union_tag_not_found":
            msg = f"a transform needs a type: one of {', '.join(sorted(TRANSFORM_TYPES))}"
        errors.append(f"{location(loc) or '(top level)'}: {msg}")
    return errors


def parse_mapping(text: str, *, where: str = "<mapping>") -> MappingFile:
    """Parse and check the text of a mapping file; ``where`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MappingFileError(
            "not valid TOML",
            where=where,
            errors=[str(e)],
            hint="fix the syntax at the line and column shown",
        ) from None
    try:
        spec = MappingFile.model_validate(data)
    except ValidationError as e:
        raise MappingFileError(
            "invalid mapping file", where=where, errors=_pydantic_errors(e), hint=HINT
        ) from None
    errors = check_mapping(spec)
    if errors:
        raise MappingFileError("invalid mapping file", where=where, errors=errors, hint=HINT)
    return spec


def load_mapping(path: Path) -> MappingFile:
    """Read and check a mapping file; every problem is reported with its location."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise MappingFileError(
                f"file too large for a mapping ({size} bytes, at most {MAX_BYTES})", where=where
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MappingFileError(
            "mapping file not found", where=where, hint="check the path and the file name"
        ) from None
    except OSError as e:
        raise MappingFileError(f"cannot read the file: {e.strerror}", where=where) from None
    try:
        text = raw.decode("utf-8-sig")  # editors on Windows may add a BOM
    except UnicodeDecodeError as e:
        raise MappingFileError(
            f"not UTF-8 text (byte {e.start})", where=where, hint="save the file as UTF-8"
        ) from None
    return parse_mapping(text, where=where)


def compile_mapping(spec: MappingFile) -> CompiledMapping:
    """Compile a mapping file once into plain callables (checking it first)."""
    errors = check_mapping(spec)
    if errors:
        raise MappingFileError("invalid mapping file", where=spec.name, errors=errors, hint=HINT)
    return CompiledMapping(spec)


def check_mapping(spec: MappingFile) -> list[str]:
    """Check a well-formed mapping file against the common schema; errors with locations."""
    errors: list[str] = []
    #: Code-table errors, once per (place, message) with every field using the table.
    table_errors: dict[tuple[str, str], list[str]] = {}
    for i, r in enumerate(spec.records):
        fields = targets(r.model)
        for name, t in r.fields.items():
            loc = location(("records", i, "fields", name))
            target = fields.get(name)
            if target is None:
                errors.append(
                    f"{loc}: {r.model} has no field {name!r} (fields: {', '.join(sorted(fields))})"
                )
                continue
            table_name = getattr(t, "table", None)
            if table_name is not None and table_name not in spec.codes:
                known = ", ".join(sorted(spec.codes)) or "none"
                errors.append(f"{loc}.table: no code table {table_name!r} in [codes] ({known})")
                continue
            errors.extend(_check_target(spec, loc, target, t, table_errors))
        for name in sorted(n for n, f in fields.items() if f.required and n not in r.fields):
            errors.append(
                f"{location(('records', i, 'fields'))}: {r.model} needs a value for {name!r}"
            )
    for (where, msg), users in table_errors.items():
        errors.append(f"{where}: {msg} (for {', '.join(users)})")
    return errors


def _check_target(
    spec: MappingFile,
    loc: str,
    target: Target,
    t: Any,
    table_errors: dict[tuple[str, str], list[str]],
) -> list[str]:
    """Types, constants, defaults and code-table values against what the field takes."""
    errors: list[str] = []
    if isinstance(t, ConstT):
        try:
            target.lax.validate_python(t.value)
        except ValidationError as e:
            errors.append(f"{loc}.value: not valid for {target.label}: {_first(e)}")
        return errors
    gives = _GIVES.get(type(t))
    if gives is not None and target.accepts is not None and gives not in target.accepts:
        return [
            f"{loc}.type: {target.label} takes {describe(target.accepts)}, "
            f"but a {t.type!r} transform gives {describe({gives})}"
        ]
    default = getattr(t, "default", None)
    if default is not None:
        value = tuple(default) if isinstance(t, SplitT) else default
        try:
            target.strict.validate_python(value)
        except ValidationError as e:
            errors.append(f"{loc}.default: not valid for {target.label}: {_first(e)}")
    table_name = getattr(t, "table", None)
    if table_name is not None:
        adapter = target.item if isinstance(t, SplitT) else target.strict
        if adapter is not None:
            table = spec.codes[table_name]
            entries: list[tuple[tuple[str, ...], str]] = [
                (("values", code), v) for code, v in table.values.items()
            ]
            if table.default is not None:
                entries.append((("default",), table.default))
            for where, v in entries:
                try:
                    adapter.validate_python(v)
                except ValidationError as e:
                    place = location(("codes", table_name, *where))
                    users = table_errors.setdefault((place, _first(e)), [])
                    if target.label not in users:
                        users.append(target.label)
    return errors


def _first(e: ValidationError) -> str:
    return str(e.errors()[0]["msg"])


def unknown_sources(spec: MappingFile, available: Collection[str]) -> list[str]:
    """Source fields the mapping reads that a stream does not yield, with where they are read.

    ``available`` is what reaches the mapping: the stream's non-personal fields
    plus ``<cf>__birth_year`` / ``<cf>__sex`` for CF fields that derive them.
    """
    return [
        f"{w}: no source field {name!r}"
        for name, wheres in sorted(source_fields(spec).items())
        if name not in available
        for w in wheres
    ]


def mapping_json_schema() -> dict[str, Any]:
    """JSON Schema of mapping files (published as docs/schema/mapping.schema.json)."""
    schema = MappingFile.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "Raccordo mapping file",
        "description": "Declarative mapping of source records to the common schema "
        "(see docs/mappings.md).",
    }


def mapping_json_schema_text() -> str:
    """The schema as written to docs/schema/mapping.schema.json (stable key order)."""
    return json.dumps(mapping_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
