"""Compiling a checked mapping file into plain callables, and applying it.

Each transform becomes a closure built once; applying a mapping to a record
only calls them. Problems are collected, never raised to the caller, so the
pipeline can quarantine the record with the field, the rule and a message.
Messages name fields, formats and code-table codes but never echo a source
value: a value could be anything, and this module does not know which fields
were identifiers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from hub.mappings.model import (
    BoolT,
    CodeT,
    CodeTable,
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
from hub.mappings.targets import plain, targets

if TYPE_CHECKING:
    from hub.mappings.columns import ColumnMapping


@dataclass(frozen=True)
class MappedRecord:
    """One common-schema record made from a source record (``org`` is added by the pipeline)."""

    model: str
    #: Values of the record's ``key`` source fields, or ``None``: use the source record's key.
    key: tuple[str, ...] | None
    data: dict[str, Any]


@dataclass(frozen=True)
class MappingProblem:
    """Why a source record cannot be mapped; never holds a source value."""

    #: Target field, e.g. ``case_episode.opened_on`` (``case_episode.key`` for a key field).
    field: str
    #: Source field(s) the value came from.
    source: str
    #: ``missing``, ``missing_key``, ``unmapped_code``, ``date_format``, ``int_format``,
    #: ``decimal_format`` or ``bool_value``.
    rule: str
    message: str


@dataclass
class MappingResult:
    #: Records produced without problems (an output with a problem is left out).
    outputs: list[MappedRecord] = field(default_factory=list)
    problems: list[MappingProblem] = field(default_factory=list)
    #: (table, code) of each code not found in a table, once per record.
    unmapped: list[tuple[str, str]] = field(default_factory=list)


class _Problem(Exception):
    def __init__(self, rule: str, message: str, source: str) -> None:
        super().__init__(message)
        self.rule, self.message, self.source = rule, message, source


#: Reads one target value from a record; appends unknown codes to the list it is given.
Getter = Callable[[Mapping[str, Any], list[tuple[str, str]]], Any]
Condition = Callable[[Mapping[str, Any]], bool]


def _is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _text(record: Mapping[str, Any], name: str) -> str | None:
    """The stripped text of a field, or ``None`` when missing or empty."""
    v = record.get(name)
    if v is None:
        return None
    s = (v if isinstance(v, str) else str(v)).strip()
    return s or None


def _on_missing(src: str, optional: bool, default: Any) -> Callable[[], Any]:
    if default is not None:
        return lambda: default
    if optional:
        return lambda: None

    def fail() -> Any:
        raise _Problem("missing", f"required value missing: {src} is empty", src)

    return fail


# -- codes --------------------------------------------------------------------

_ID_LIKE = re.compile(r"[A-Za-z0-9]{11,}")


def shown_code(code: str) -> str | None:
    """The code as it may be shown, or ``None`` if it could be personal.

    Code-table codes are not personal, but an unknown "code" may be anything a
    source put in that column; a long alphanumeric run with digits looks like
    a codice fiscale, STP/ENI or case number and is never shown.
    """
    if len(code) > 40 or not code.isprintable():
        return None
    for run in _ID_LIKE.findall(code):
        if any(c.isdigit() for c in run):
            return None
    return code


def _code_label(code: str) -> str:
    shown = shown_code(code)
    return shown if shown is not None else f"(not shown: {len(code)} characters)"


Lookup = Callable[[str, list[tuple[str, str]]], Any]


def _lookup(table_name: str, table: CodeTable, upper: bool, src: str) -> Lookup:
    """Map one stripped, non-empty code through a table."""
    values = dict(table.values)
    default = table.default

    def lookup(code: str, unmapped: list[tuple[str, str]]) -> Any:
        if upper:
            code = code.upper()
        hit = values.get(code)
        if hit is not None:
            return hit
        label = _code_label(code)
        unmapped.append((table_name, label))
        if default is not None:
            return default
        shown = shown_code(code)
        what = f"code {shown!r}" if shown is not None else f"a code {label}"
        raise _Problem("unmapped_code", f"{src}: {what} is not in code table {table_name!r}", src)

    return lookup


# -- dates and numbers -------------------------------------------------------

_EXCEL_EPOCH = dt.date(1899, 12, 30)
_HUMAN = {
    "d": "dd",
    "m": "mm",
    "Y": "yyyy",
    "y": "yy",
    "H": "HH",
    "I": "hh",
    "M": "MM",
    "S": "SS",
    "f": "ffffff",
    "b": "Mon",
    "B": "Month",
    "j": "ddd",
    "p": "AM/PM",
    "z": "+HHMM",
    "%": "%",
}


def human_format(f: str) -> str:
    """``%d/%m/%Y`` → ``dd/mm/yyyy``, for messages."""
    return re.sub(r"%(.)", lambda m: _HUMAN.get(m.group(1), m.group(0)), f)


@lru_cache(maxsize=100_000)
def _parse_date(value: str, fmt: str) -> dt.date | None:
    """``strptime`` is slow and exports repeat the same dates: remember them."""
    try:
        return dt.datetime.strptime(value, fmt).date()
    except ValueError:
        return None


_INT = re.compile(r"[+-]?[0-9]+")
_DEC_DOT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Italian: dots group thousands (in threes, or not at all), a comma before the decimals.
_DEC_COMMA = re.compile(r"[+-]?(?:[0-9]{1,3}(?:\.[0-9]{3})+|[0-9]+)(?:,[0-9]+)?")
_NUMBER_NOISE = str.maketrans("", "", "€ \u00a0\u202f")


# -- compiling ---------------------------------------------------------------


def _compile_transform(spec: MappingFile, model: str, target: str, t: Any) -> Getter:
    """One closure per transform type; the branches are kept together on purpose."""
    if isinstance(t, ConstT):
        tgt = targets(model).get(target)
        value = plain(tgt.lax.validate_python(t.value)) if tgt is not None else t.value
        return lambda r, u: value

    if isinstance(t, FieldT):
        src, upper, strip = t.source, t.upper, t.strip
        missing = _on_missing(src, t.optional, t.default)

        def get_field(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            v = r.get(src)
            if v is None:
                return missing()
            if isinstance(v, str):
                s = v.strip()
                if not s:
                    return missing()
                if strip:
                    v = s
                if upper:
                    v = v.upper()
            return v

        return get_field

    if isinstance(t, FirstOfT):
        srcs, upper, strip = tuple(t.sources), t.upper, t.strip
        missing = _on_missing(", ".join(srcs), t.optional, t.default)

        def get_first(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            for s in srcs:
                v = r.get(s)
                if _is_empty(v):
                    continue
                if isinstance(v, str):
                    if strip:
                        v = v.strip()
                    if upper:
                        v = v.upper()
                return v
            return missing()

        return get_first

    if isinstance(t, CodeT):
        src, table_name = t.source, t.table
        table = spec.codes[table_name]
        lookup = _lookup(table_name, table, t.upper, src)
        missing = _on_missing(src, t.optional, t.default)
        # A required code that is missing takes the table's default, and is counted.
        table_default = table.default if t.default is None and not t.optional else None

        def get_code(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            v = r.get(src)  # _text, inlined: this runs for every code of every record
            s = None if v is None else (v if isinstance(v, str) else str(v)).strip() or None
            if s is None:
                if table_default is not None:
                    u.append((table_name, "(empty)"))
                    return table_default
                return missing()
            return lookup(s, u)

        return get_code

    if isinstance(t, DateT):
        src, formats, excel = t.source, tuple(t.formats), t.excel_serial
        missing = _on_missing(src, t.optional, t.default)
        shown = " or ".join(human_format(f) for f in formats)
        if excel:
            shown += " or an Excel day number"

        def get_date(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            v = r.get(src)
            if v is None:
                return missing()
            if isinstance(v, str):
                s = v.strip()
            elif isinstance(v, dt.datetime):
                return v.date()
            elif isinstance(v, dt.date):
                return v
            else:
                s = str(v).strip()
            if not s:
                return missing()
            for f in formats:
                d = _parse_date(s, f)
                if d is not None:
                    return d
            if excel and s.isdigit() and len(s) <= 7:
                n = int(s)
                if 1 <= n <= 2_958_465:  # 1900-01-01 .. 9999-12-31
                    return _EXCEL_EPOCH + dt.timedelta(days=n)
            raise _Problem("date_format", f"{src} does not match {shown}", src)

        return get_date

    if isinstance(t, IntT):
        src = t.source
        missing = _on_missing(src, t.optional, t.default)

        def get_int(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            v = r.get(src)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            s = _text(r, src)
            if s is None:
                return missing()
            if _INT.fullmatch(s):
                return int(s)
            raise _Problem("int_format", f"{src} is not a whole number", src)

        return get_int

    if isinstance(t, DecimalT):
        src, comma = t.source, t.decimal_comma
        missing = _on_missing(src, t.optional, t.default)
        pattern = _DEC_COMMA if comma else _DEC_DOT
        form = "1.234,56" if comma else "1234.56"

        def get_decimal(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            v = r.get(src)
            if isinstance(v, Decimal):
                return v
            if isinstance(v, int) and not isinstance(v, bool):
                return Decimal(v)
            if isinstance(v, float):
                return Decimal(repr(v))
            s = _text(r, src)
            if s is None:
                return missing()
            s = s.translate(_NUMBER_NOISE)
            if not pattern.fullmatch(s):
                raise _Problem("decimal_format", f"{src} is not a number like {form}", src)
            if comma:
                s = s.replace(".", "").replace(",", ".")
            try:
                return Decimal(s)
            except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
                raise _Problem(
                    "decimal_format", f"{src} is not a number like {form}", src
                ) from None

        return get_decimal

    if isinstance(t, BoolT):
        src = t.source
        trues = frozenset(x.strip().upper() for x in t.true)
        falses = frozenset(x.strip().upper() for x in t.false)
        allowed = ", ".join([*t.true, *t.false])
        missing = _on_missing(src, t.optional, t.default)

        def get_bool(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            v = r.get(src)
            if isinstance(v, bool):
                return v
            s = _text(r, src)
            if s is None:
                return missing()
            s = s.upper()
            if s in trues:
                return True
            if s in falses:
                return False
            raise _Problem("bool_value", f"{src} is not one of {allowed}", src)

        return get_bool

    if isinstance(t, SplitT):
        src, sep, upper, unique = t.source, t.sep, t.upper, t.unique
        item_lookup = _lookup(t.table, spec.codes[t.table], False, src) if t.table else None
        missing = _on_missing(src, t.optional, tuple(t.default) if t.default is not None else None)

        def get_split(r: Mapping[str, Any], u: list[tuple[str, str]]) -> Any:
            s = _text(r, src)
            items = [x.strip() for x in s.split(sep)] if s is not None else []
            items = [x.upper() if upper else x for x in items if x]
            if not items:
                return missing()
            out = [item_lookup(x, u) for x in items] if item_lookup is not None else items
            if unique:
                out = list(dict.fromkeys(out))
            return tuple(out)

        return get_split

    raise TypeError(f"unknown transform {type(t).__name__}")  # pragma: no cover


def _compile_when(w: When | None) -> Condition | None:
    if w is None:
        return None
    name = w.field
    if w.equals is not None:
        want = w.equals.strip()
        return lambda r: _text(r, name) == want
    if w.in_ is not None:
        allowed = frozenset(x.strip() for x in w.in_)
        return lambda r: _text(r, name) in allowed
    if w.not_empty:
        return lambda r: _text(r, name) is not None
    return lambda r: _text(r, name) is None


def _key_part(v: Any) -> str:
    if isinstance(v, dt.date):
        return v.isoformat()
    return (v if isinstance(v, str) else str(v)).strip()


@dataclass(frozen=True)
class _CompiledRecord:
    model: str
    key: tuple[str, ...] | None
    when: Condition | None
    getters: tuple[tuple[str, Getter], ...]


class CompiledMapping:
    """A checked mapping, ready to apply to pseudonymised records."""

    def __init__(self, spec: MappingFile) -> None:
        self.spec = spec
        self.name: str = spec.name
        self.version: str = spec.version
        self._records = tuple(self._compile_record(r) for r in spec.records)

    def __repr__(self) -> str:
        return f"CompiledMapping({self.name!r}, version={self.version!r})"

    @cached_property
    def columns(self) -> ColumnMapping | None:
        """The same mapping as column operations over a batch (the fast path,
        :mod:`hub.mappings.columns`), or ``None`` when it must run per record."""
        from hub.mappings.columns import ColumnMapping

        return ColumnMapping.compile(self.spec)

    @property
    def source_fields(self) -> frozenset[str]:
        """Every source field the mapping reads (to check it against a stream's fields)."""
        return frozenset(source_fields(self.spec))

    def _compile_record(self, r: RecordSpec) -> _CompiledRecord:
        getters = tuple(
            (target, _compile_transform(self.spec, r.model, target, t))
            for target, t in r.fields.items()
        )
        return _CompiledRecord(
            r.model, tuple(r.key) if r.key else None, _compile_when(r.when), getters
        )

    def apply(self, record: Mapping[str, Any]) -> MappingResult:
        """Map one pseudonymised record into zero or more common-schema records."""
        res = MappingResult()
        unmapped: list[tuple[str, str]] = []
        for rec in self._records:
            if rec.when is not None and not rec.when(record):
                continue
            model = rec.model
            data: dict[str, Any] = {}
            ok = True
            for target, get in rec.getters:
                try:
                    value = get(record, unmapped)
                except _Problem as p:
                    res.problems.append(
                        MappingProblem(f"{model}.{target}", p.source, p.rule, p.message)
                    )
                    ok = False
                    continue
                if value is not None:
                    data[target] = value
            key: tuple[str, ...] | None = None
            if rec.key is not None:
                parts = []
                for k in rec.key:
                    v = record.get(k)
                    if _is_empty(v):
                        res.problems.append(
                            MappingProblem(
                                f"{model}.key",
                                k,
                                "missing_key",
                                f"key field {k} is empty: the {model} cannot be identified",
                            )
                        )
                        ok = False
                        break
                    parts.append(_key_part(v))
                key = tuple(parts)
            if ok:
                res.outputs.append(MappedRecord(model, key, data))
        if unmapped:
            res.unmapped = list(dict.fromkeys(unmapped))  # one count per record and code
        return res


def source_fields(spec: MappingFile) -> dict[str, list[str]]:
    """Source field → where the mapping file reads it (``records[0].fields.area``)."""
    found: dict[str, list[str]] = {}
    for i, r in enumerate(spec.records):
        where = f"records[{i}]"
        if r.when is not None:
            found.setdefault(r.when.field, []).append(f"{where}.when.field")
        for k in r.key or ():
            found.setdefault(k, []).append(f"{where}.key")
        for target, t in r.fields.items():
            for s in getattr(t, "sources", None) or [getattr(t, "source", None)]:
                if s is not None:
                    found.setdefault(s, []).append(f"{where}.fields.{target}")
    return found
