"""Loading, checking and compiling mapping files."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.errors import MappingFileError
from hub.mappings.model import (
    BoolT,
    CodeT,
    ConstT,
    DateT,
    DecimalT,
    FieldT,
    FirstOfT,
    IntT,
    MappingFile,
    RecordSpec,
    SplitT,
    When,
)
from hub.schema import model_for


@dataclass(frozen=True)
class MappedRecord:
    model: str
    key: tuple[str, ...] | None
    data: dict[str, Any]


@dataclass(frozen=True)
class MappingProblem:
    field: str  # target, e.g. "case_episode.opened_on"
    source: str
    rule: str
    message: str


@dataclass
class MappingResult:
    outputs: list[MappedRecord] = field(default_factory=list)
    problems: list[MappingProblem] = field(default_factory=list)
    unmapped: list[tuple[str, str]] = field(default_factory=list)


class _Problem(Exception):
    def __init__(self, rule: str, message: str, source: str) -> None:
        super().__init__(message)
        self.rule, self.message, self.source = rule, message, source


_MISSING = object()
Getter = Callable[[Mapping[str, Any], MappingResult], Any]


def _text(record: Mapping[str, Any], name: str) -> str | None:
    v = record.get(name)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


class CompiledMapping:
    """A mapping ready to apply to pseudonymised records."""

    def __init__(self, spec: MappingFile) -> None:
        self.spec = spec
        self.name = spec.name
        self.version = spec.version
        self._records = [self._compile_record(r) for r in spec.records]

    def __repr__(self) -> str:
        return f"CompiledMapping({self.name!r}, version={self.version!r})"

    # -- compile ------------------------------------------------------------------
    def _compile_record(
        self, spec: RecordSpec
    ) -> tuple[
        str, tuple[str, ...] | None, Callable[[Mapping[str, Any]], bool], list[tuple[str, Getter]]
    ]:
        getters = [(target, self._compile(target, t)) for target, t in spec.fields.items()]
        key = tuple(spec.key) if spec.key else None
        return spec.model, key, _compile_when(spec.when), getters

    def _compile(self, target: str, t: Any) -> Getter:
        def missing(src: str, default: Any = None) -> Any:
            if t.optional or default is not None:
                return default
            raise _Problem("missing", f"required value is missing (source field {src})", src)

        if isinstance(t, ConstT):
            value = t.value
            return lambda r, res: value
        if isinstance(t, FieldT):
            src, upper, default = t.source, t.upper, t.default

            def get_field(r: Mapping[str, Any], res: MappingResult) -> Any:
                v = _text(r, src)
                if v is None:
                    return missing(src, default)
                return v.upper() if upper else v

            return get_field
        if isinstance(t, FirstOfT):
            srcs = t.sources

            def get_first(r: Mapping[str, Any], res: MappingResult) -> Any:
                for s in srcs:
                    v = _text(r, s)
                    if v is not None:
                        return v
                return missing("/".join(srcs))

            return get_first
        if isinstance(t, CodeT):
            return self._code_getter(t.source, t.table, t.optional)
        if isinstance(t, DateT):
            src, formats = t.source, tuple(t.formats)

            def get_date(r: Mapping[str, Any], res: MappingResult) -> Any:
                v = _text(r, src)
                if v is None:
                    return missing(src)
                for f in formats:
                    d = _parse_date(v, f)
                    if d is not None:
                        return d
                shown = " or ".join(_human_format(f) for f in formats)
                raise _Problem("date_format", f"{src}: not a valid date in the form {shown}", src)

            return get_date
        if isinstance(t, IntT):
            src, idefault = t.source, t.default

            def get_int(r: Mapping[str, Any], res: MappingResult) -> Any:
                v = r.get(src)
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
                s = _text(r, src)
                if s is None:
                    return missing(src, idefault)
                try:
                    return int(s)
                except ValueError:
                    raise _Problem("int_format", f"{src}: not a whole number", src) from None

            return get_int
        if isinstance(t, DecimalT):
            src, comma = t.source, t.decimal_comma

            def get_decimal(r: Mapping[str, Any], res: MappingResult) -> Any:
                s = _text(r, src)
                if s is None:
                    return missing(src)
                if comma:
                    s = s.replace(".", "").replace(",", ".")
                try:
                    d = Decimal(s)
                except InvalidOperation:
                    raise _Problem(
                        "decimal_format",
                        f"{src}: not a number" + (" in the form 1.234,56" if comma else ""),
                        src,
                    ) from None
                if not d.is_finite():
                    raise _Problem("decimal_format", f"{src}: not a finite number", src)
                return d

            return get_decimal
        if isinstance(t, BoolT):
            src = t.source
            trues = {x.upper() for x in t.true}
            falses = {x.upper() for x in t.false}

            def get_bool(r: Mapping[str, Any], res: MappingResult) -> Any:
                v = r.get(src)
                if isinstance(v, bool):
                    return v
                s = _text(r, src)
                if s is None:
                    return missing(src)
                if s.upper() in trues:
                    return True
                if s.upper() in falses:
                    return False
                raise _Problem(
                    "bool_value", f"{src}: expected one of {', '.join(sorted(trues | falses))}", src
                )

            return get_bool
        if isinstance(t, SplitT):
            src, sep = t.source, t.sep
            code = self._code_getter("_item", t.table, False) if t.table else None

            def get_split(r: Mapping[str, Any], res: MappingResult) -> Any:
                s = _text(r, src)
                if s is None:
                    return missing(src, ())
                items = [x.strip() for x in s.split(sep) if x.strip()]
                if code is None:
                    return tuple(items)
                return tuple(code({"_item": x}, res) for x in items)

            return get_split
        raise TypeError(f"unknown transform {type(t).__name__}")  # pragma: no cover

    def _code_getter(self, src: str, table_name: str, optional: bool) -> Getter:
        table = self.spec.codes[table_name]
        values = table.values
        default = table.default

        def get_code(r: Mapping[str, Any], res: MappingResult) -> Any:
            s = _text(r, src)
            if s is None:
                if optional:
                    return None
                if default is not None:  # a missing code takes the table's default too
                    res.unmapped.append((table_name, "(empty)"))
                    return default
                raise _Problem("missing", f"required code is missing (source field {src})", src)
            if s in values:
                return values[s]
            res.unmapped.append((table_name, s))
            if default is not None:
                return default
            raise _Problem("unmapped_code", f"code {s!r} is not in code table {table_name!r}", src)

        return get_code

    # -- apply --------------------------------------------------------------------
    def apply(self, record: Mapping[str, Any]) -> MappingResult:
        res = MappingResult()
        for model, key_fields, when, getters in self._records:
            if not when(record):
                continue
            data: dict[str, Any] = {}
            for target, get in getters:
                try:
                    value = get(record, res)
                except _Problem as p:
                    res.problems.append(
                        MappingProblem(f"{model}.{target}", p.source, p.rule, p.message)
                    )
                    continue
                if value is not None:
                    data[target] = value
            key = None
            if key_fields:
                key = tuple(str(record.get(k) or "") for k in key_fields)
            res.outputs.append(MappedRecord(model, key, data))
        res.unmapped = list(dict.fromkeys(res.unmapped))  # one count per record and code
        return res


@lru_cache(maxsize=100_000)
def _parse_date(value: str, fmt: str) -> dt.date | None:
    """``strptime`` is slow and exports repeat the same dates: remember them."""
    try:
        return dt.datetime.strptime(value, fmt).date()
    except ValueError:
        return None


def _compile_when(w: When | None) -> Callable[[Mapping[str, Any]], bool]:
    if w is None:
        return lambda r: True
    name = w.field
    if w.equals is not None:
        want = w.equals
        return lambda r: (_text(r, name) or "") == want
    if w.in_ is not None:
        allowed = frozenset(w.in_)
        return lambda r: (_text(r, name) or "") in allowed
    return lambda r: _text(r, name) is not None


def _human_format(f: str) -> str:
    return (
        f.replace("%d", "dd")
        .replace("%m", "mm")
        .replace("%Y", "yyyy")
        .replace("%y", "yy")
        .replace("%H", "HH")
        .replace("%M", "MM")
    )


def load_mapping(path: Path) -> MappingFile:
    """Read and check a mapping file; every problem is reported with its location."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingFileError("mapping file not found", where=where) from None
    except tomllib.TOMLDecodeError as e:
        raise MappingFileError(
            "not valid TOML",
            where=where,
            errors=[str(e)],
            hint="fix the syntax at the line and column shown",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise MappingFileError(f"cannot read the file: {e}", where=where) from None
    try:
        spec = MappingFile.model_validate(data)
    except ValidationError as e:
        errors = [f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise MappingFileError(
            "invalid mapping file",
            where=where,
            errors=errors,
            hint="see docs/mappings.md for the format",
        ) from None
    errors = _check_semantics(spec)
    if errors:
        raise MappingFileError(
            "invalid mapping file",
            where=where,
            errors=errors,
            hint="see docs/mappings.md for the format",
        )
    return spec


def _check_semantics(spec: MappingFile) -> list[str]:
    errors = []
    for i, r in enumerate(spec.records):
        model = model_for(r.model)
        known = {n for n in model.model_fields if n != "org"}
        required = {n for n, f in model.model_fields.items() if f.is_required() and n != "org"}
        for target, t in r.fields.items():
            loc = f"records.{i}.fields.{target}"
            if target not in known:
                errors.append(
                    f"{loc}: {r.model} has no field {target!r} (fields: {', '.join(sorted(known))})"
                )
            tables = [getattr(t, "table", None)]
            for table in tables:
                if table is not None and table not in spec.codes:
                    errors.append(f"{loc}.table: no code table {table!r} in [codes]")
        for missing in sorted(required - set(r.fields)):
            errors.append(f"records.{i}.fields: {r.model} needs a value for {missing!r}")
    return errors


def compile_mapping(spec: MappingFile) -> CompiledMapping:
    return CompiledMapping(spec)


def mapping_json_schema() -> dict[str, Any]:
    schema = MappingFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Raccordo mapping file"
    return schema
