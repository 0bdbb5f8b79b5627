"""The mapping compiled into column operations: the fast path of ``transform``.

A batch's records become Arrow columns, one per source field the mapping reads. Each
transform of the mapping is then a few vectorised operations over a column (strip, code
table look-up, date parsing, numbers, booleans, conditions, keys), and each common-schema
field is validated once per *distinct* value, by the very validator the model uses
(:func:`hub.mappings.targets.targets`), plus the models' cross-field rules
(:data:`CROSS_FIELD_RULES`).

The fast path decides only the *ordinary* records. A record for which any step is not
certain — a value missing where one is required, a code not in its table (even one with a
default: it is counted), a date or number in a form other than the plain one, text outside
printable ASCII, a value the schema refuses — is left to the row path
(:meth:`hub.mappings.CompiledMapping.apply` and the model), which gives the exact problem,
rule and message. So quarantine reasons are written by one code path only, and a record
either path loads has the same rows (``tests/unit/test_mapping_columns.py`` compares the two
paths on random records). A mapping using a transform this module does not compile
(``split``) or a batch with values that are not text or whole numbers (a connector giving
dates or decimals) takes the row path as a whole: :meth:`ColumnMapping.compile` or
:meth:`ColumnMapping.apply` return ``None``.
"""

from __future__ import annotations

import operator
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache, cached_property
from typing import Annotated, Any, Union, get_args, get_origin

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import StringConstraints, ValidationError

from hub.mappings.engine import source_fields
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
    When,
)
from hub.mappings.targets import plain, targets
from hub.schema import MODELS

#: Text the fast path decides (Python's ``str.strip`` and Arrow's trim agree on it).
_PRINTABLE = r"^[\x20-\x7e]*$"
_INT = r"^-?[0-9]{1,18}$"
# The patterns of hub.mappings.engine, for RE2 (same language: anchored, no look-around).
_DEC_DOT = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
_DEC_COMMA = r"^[+-]?(?:[0-9]{1,3}(?:\.[0-9]{3})+|[0-9]+)(?:,[0-9]+)?$"

#: Cross-field rules of the models (their ``model_validator``\\ s), as the fast path checks
#: them: ``(later, earlier)`` date pairs, and groups of fields of which one must be given.
#: A model whose validators are not described here takes the row path
#: (:func:`_model_supported`); a test keeps this in step with ``hub.schema.models``.
CROSS_FIELD_RULES: dict[str, dict[str, Any]] = {
    "case_episode": {"ordered": [("closed_on", "opened_on")]},
    "intervention": {"ordered": [("ended_on", "started_on")]},
    "assessment": {
        "ordered": [("valid_until", "assessed_on")],
        "one_of": [("disability", "non_self_sufficient")],
    },
}

#: Distinct values remembered per field once validated (codes, dates, amounts repeat).
CHECKED_VALUES = 20_000

#: What the fast path leaves to the row path (``None``), or the outputs of one record:
#: ``(model, key parts or None, the row's values as the model validated them)``.
RowOutputs = list[tuple[str, tuple[str, ...] | None, dict[str, Any]]] | None


@dataclass
class SpecOutputs:
    """What one ``[[records]]`` spec gives over a batch: a row per record (refused or not),
    its key parts (``None``: the spec has no ``key``) and where its ``when`` holds
    (``None``: it has none, every record gives the row)."""

    model: str
    #: The key's parts as columns (one list of texts per part; ``None``: no ``key``).
    key_columns: list[list[str]] | None
    #: The model's fields the rows hold, and each one's values over the batch (a row per
    #: record: its values at the record's index, in ``names`` order).
    names: tuple[str, ...]
    columns: list[list[Any]]
    active: list[bool] | None
    #: How many records the batch has.
    size: int
    #: The rows' fields as columns, as the rows hold them (text, whole numbers, dates; a
    #: ``decimal`` as its plain text), for checks over the batch such as
    #: :func:`hub.quality.may_warn`; a field the spec never gives is absent (``None`` in
    #: every row), one whose model default fills empty values is ``None`` (not known).
    fields: dict[str, pa.Array | None] = field(default_factory=dict)
    #: ``active`` as a column (``None``: the spec has no ``when``).
    active_mask: pa.Array | None = None

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts, one per record (what :meth:`ColumnMapping.apply` gives; the
        pipeline's fast path keeps the columns)."""
        if not self.columns:  # refused whole (the row path says why): no field
            return [{} for _ in range(self.size)]
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in zip(*self.columns, strict=True)]

    @property
    def keys(self) -> list[tuple[str, ...]] | None:
        """Each record's key parts (``None``: the spec has no ``key``)."""
        if self.key_columns is None:
            return None
        return list(zip(*self.key_columns, strict=True))


@dataclass
class ColumnOutputs:
    """The fast path's result for a batch: per record whether the row path decides it
    (``refused``), and each spec's outputs in the mapping's order."""

    refused: list[bool]
    specs: list[SpecOutputs]


@dataclass
class _Col:
    """One source field over the batch."""

    #: Stripped text (whole numbers as text), null where missing.
    text: pa.Array
    #: Missing or blank.
    empty: pa.Array
    #: The values as given, when they are whole numbers (an int64 column), else None.
    ints: pa.Array | None
    #: ``text`` as Python strings, once a key needs them.
    texts: list[str] | None = None


@dataclass
class _Out:
    """A getter's values over the batch; ``kind`` says how to bring them back to Python."""

    values: pa.Array | None  # None: ``const``
    kind: str  # "str" | "int" | "date" | "bool" | "decimal" | "const"
    bad: pa.Array
    const: Any = None


_Getter = Callable[[dict[str, _Col], int], _Out]


def _or(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.or_(a, b)


def _missing(out: _Out, empty: pa.Array, optional: bool, default: Any) -> _Out:
    """Where the source is empty: the default, nothing (optional), or the row path."""
    if default is not None and out.values is not None:
        try:
            scalar = pa.scalar(
                str(default) if out.kind == "decimal" else default, type=out.values.type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return _Out(out.values, out.kind, _or(out.bad, empty))
        return _Out(pc.if_else(empty, scalar, out.values), out.kind, out.bad)
    if optional:
        null = pa.scalar(None, type=out.values.type if out.values is not None else pa.null())
        return _Out(pc.if_else(empty, null, out.values), out.kind, out.bad)
    return _Out(out.values, out.kind, _or(out.bad, empty))


def _date_regex(fmt: str, *, loose: bool) -> str | None:
    """A regex for the strings ``strptime(fmt)`` surely reads (``loose``: may read), when
    the format holds only ``%d``, ``%m``, ``%Y`` and separators; else ``None``."""
    parts = {
        "d": "(?:[0-9]{1,2}| [0-9])" if loose else "[0-9]{2}",
        "m": "[0-9]{1,2}" if loose else "[0-9]{2}",
        "Y": "[0-9]{4}",
    }
    out = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            d = fmt[i + 1 : i + 2]
            if d not in parts:
                return None
            out.append(parts[d])
            i += 2
            continue
        if c not in "/-.":
            return None
        out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "$"


def _compile_getter(spec: MappingFile, model: str, target: str, t: Any) -> _Getter | None:
    default: Any
    if isinstance(t, ConstT):
        tgt = targets(model).get(target)
        value = plain(tgt.lax.validate_python(t.value)) if tgt is not None else t.value

        def get_const(cols: dict[str, _Col], n: int) -> _Out:
            return _Out(None, "const", pa.array([False] * n), value)

        return get_const

    if isinstance(t, FieldT):
        src, upper, strip, optional, default = t.source, t.upper, t.strip, t.optional, t.default

        def get_field(cols: dict[str, _Col], n: int) -> _Out:
            c = cols[src]
            none = pa.array([False] * n)
            if c.ints is not None:  # a derived birth year: kept as is
                return _missing(_Out(c.ints, "int", none), c.empty, optional, default)
            if not strip:  # the text as given, spaces included: the row path
                return _Out(c.text, "str", pa.array([True] * n))
            values = pc.ascii_upper(c.text) if upper else c.text
            return _missing(_Out(values, "str", none), c.empty, optional, default)

        return get_field

    if isinstance(t, FirstOfT):
        srcs, upper, strip, optional, default = (
            tuple(t.sources),
            t.upper,
            t.strip,
            t.optional,
            t.default,
        )
        if not strip:
            return None

        def get_first(cols: dict[str, _Col], n: int) -> _Out:
            chosen: pa.Array | None = None
            all_empty: pa.Array | None = None
            for s in srcs:
                c = cols[s]
                if c.ints is not None:
                    return _Out(c.text, "str", pa.array([True] * n))
                v = pc.if_else(c.empty, pa.scalar(None, pa.string()), c.text)
                chosen = v if chosen is None else pc.coalesce(chosen, v)
                all_empty = c.empty if all_empty is None else pc.and_(all_empty, c.empty)
            assert chosen is not None and all_empty is not None
            values = pc.ascii_upper(chosen) if upper else chosen
            return _missing(
                _Out(values, "str", pa.array([False] * n)), all_empty, optional, default
            )

        return get_first

    if isinstance(t, CodeT):
        src, table_name, upper, optional, default = (
            t.source,
            t.table,
            t.upper,
            t.optional,
            t.default,
        )
        table = spec.codes[table_name]
        keys = pa.array(list(table.values), pa.string())
        mapped_values = pa.array(list(table.values.values()), pa.string())
        # A required code that is missing takes the table's default, and is counted:
        # the row path does the counting.
        table_default = table.default is not None and default is None and not optional

        def get_code(cols: dict[str, _Col], n: int) -> _Out:
            c = cols[src]
            code = pc.ascii_upper(c.text) if upper else c.text
            idx = pc.index_in(code, value_set=keys)
            values = pc.take(mapped_values, idx)
            bad = pc.and_(pc.invert(c.empty), pc.is_null(idx))
            out = _Out(values, "str", bad)
            if table_default:
                return _Out(values, "str", _or(bad, c.empty))
            return _missing(out, c.empty, optional, default)

        return get_code

    if isinstance(t, DateT):
        src, optional, default = t.source, t.optional, t.default
        # Formats are tried in order; a later one is used only where no earlier one might
        # read the text (its loose pattern), and only up to the first format not compiled.
        plans: list[tuple[str, str, str]] = []
        for f in t.formats:
            strict, loose = _date_regex(f, loose=False), _date_regex(f, loose=True)
            if strict is None or loose is None:
                break
            plans.append((f, strict, loose))

        def get_date(cols: dict[str, _Col], n: int) -> _Out:
            c = cols[src]
            # Each distinct text read once (dates repeat: a few thousand days in a batch),
            # then spread to the records that hold it.
            encoded = pc.dictionary_encode(c.text)
            text = encoded.dictionary
            m = len(text)
            result = pa.nulls(m, pa.date32())
            done = pa.array([False] * m, pa.bool_())
            earlier = pa.array([False] * m, pa.bool_())
            for fmt, strict, loose in plans:
                eligible = pc.and_(
                    pc.fill_null(pc.match_substring_regex(text, strict), False),
                    pc.invert(_or(earlier, done)),
                )
                ts = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
                # Arrow rolls 31/02 over to 02/03 and reads year 0: Python does neither.
                same = pc.fill_null(pc.equal(pc.strftime(ts, format=fmt), text), False)
                ok = pc.and_(
                    pc.and_(eligible, same), pc.fill_null(pc.greater_equal(pc.year(ts), 1), False)
                )
                day = pc.cast(pc.if_else(ok, ts, pa.scalar(None, ts.type)), pa.date32())
                result = pc.if_else(ok, day, result)
                done = _or(done, ok)
                earlier = _or(earlier, pc.fill_null(pc.match_substring_regex(text, loose), False))
            result = pc.take(result, encoded.indices)
            done = pc.fill_null(pc.take(done, encoded.indices), False)
            bad = pc.and_(pc.invert(c.empty), pc.invert(done))
            return _missing(_Out(result, "date", bad), c.empty, optional, default)

        return get_date

    if isinstance(t, IntT):
        src, optional, default = t.source, t.optional, t.default

        def get_int(cols: dict[str, _Col], n: int) -> _Out:
            c = cols[src]
            if c.ints is not None:
                return _missing(
                    _Out(c.ints, "int", pa.array([False] * n)), c.empty, optional, default
                )
            ok = pc.fill_null(pc.match_substring_regex(c.text, _INT), False)
            values = pc.cast(pc.if_else(ok, c.text, pa.scalar(None, pa.string())), pa.int64())
            bad = pc.and_(pc.invert(c.empty), pc.invert(ok))
            return _missing(_Out(values, "int", bad), c.empty, optional, default)

        return get_int

    if isinstance(t, DecimalT):
        src, comma, optional, default = t.source, t.decimal_comma, t.optional, t.default
        pattern = _DEC_COMMA if comma else _DEC_DOT

        def get_decimal(cols: dict[str, _Col], n: int) -> _Out:
            c = cols[src]
            s = pc.replace_substring(c.text, " ", "")
            ok = pc.fill_null(pc.match_substring_regex(s, pattern), False)
            if comma:
                s = pc.replace_substring(pc.replace_substring(s, ".", ""), ",", ".")
            values = pc.if_else(ok, s, pa.scalar(None, pa.string()))
            bad = pc.and_(pc.invert(c.empty), pc.invert(ok))
            return _missing(_Out(values, "decimal", bad), c.empty, optional, default)

        return get_decimal

    if isinstance(t, BoolT):
        src, optional, default = t.source, t.optional, t.default
        trues = pa.array(sorted({x.strip().upper() for x in t.true}), pa.string())
        falses = pa.array(sorted({x.strip().upper() for x in t.false}), pa.string())

        def get_bool(cols: dict[str, _Col], n: int) -> _Out:
            c = cols[src]
            u = pc.ascii_upper(c.text)
            is_true = pc.fill_null(pc.is_in(u, value_set=trues), False)
            is_false = pc.fill_null(pc.is_in(u, value_set=falses), False)
            values = pc.if_else(
                is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_()))
            )
            bad = pc.and_(pc.invert(c.empty), pc.invert(_or(is_true, is_false)))
            return _missing(_Out(values, "bool", bad), c.empty, optional, default)

        return get_bool

    return None  # split: the row path


def _compile_when(w: When | None) -> Callable[[dict[str, _Col], int], pa.Array] | None:
    if w is None:
        return None
    name = w.field

    def value(cols: dict[str, _Col]) -> pa.Array:
        c = cols[name]
        return pc.if_else(c.empty, pa.scalar(None, pa.string()), c.text)

    if w.equals is not None:
        want = w.equals.strip()
        return lambda cols, n: pc.fill_null(pc.equal(value(cols), want), False)
    if w.in_ is not None:
        allowed = pa.array(sorted({x.strip() for x in w.in_}), pa.string())
        return lambda cols, n: pc.fill_null(pc.is_in(value(cols), value_set=allowed), False)
    if w.not_empty:
        return lambda cols, n: pc.invert(cols[name].empty)
    return lambda cols, n: cols[name].empty


def _model_supported(model: str) -> bool:
    """Whether every cross-field rule of the model is one the fast path knows."""
    decorators = MODELS[model].__pydantic_decorators__
    validators = set(decorators.model_validators) | set(decorators.field_validators)
    if not validators:
        return True
    return model in CROSS_FIELD_RULES and validators == {"_ordered"}


@dataclass(frozen=True)
class _Record:
    model: str
    key: tuple[str, ...] | None
    when: Callable[[dict[str, _Col], int], pa.Array] | None
    getters: tuple[tuple[str, _Getter], ...]


class ColumnMapping:
    """A mapping's fast path: columns in, each ordinary record's validated outputs out."""

    def __init__(self, records: tuple[_Record, ...], sources: frozenset[str]) -> None:
        self._records = records
        self._sources = tuple(sorted(sources))
        #: Per (model, field): (type, value) → (accepted, the value as validated).
        self._checked: dict[tuple[str, str], dict[tuple[type, Any], tuple[bool, Any]]] = {}
        self._defaults = {
            r.model: {
                name: info.get_default(call_default_factory=True)
                for name, info in MODELS[r.model].model_fields.items()
                if name != "org" and not info.is_required()
            }
            for r in records
        }

    @classmethod
    def compile(cls, spec: MappingFile) -> ColumnMapping | None:
        """The fast path of ``spec``, or ``None`` when a transform or model needs the row path."""
        compiled = []
        sources: set[str] = set()
        for r in spec.records:
            c = cls._compile_record(spec, r)
            if c is None:
                return None
            compiled.append(c)
        sources.update(source_fields(spec))
        return cls(tuple(compiled), frozenset(sources))

    @staticmethod
    def _compile_record(spec: MappingFile, r: RecordSpec) -> _Record | None:
        if not _model_supported(r.model):
            return None
        known = targets(r.model)
        getters = []
        for target, t in r.fields.items():
            if target not in known:
                return None
            g = _compile_getter(spec, r.model, target, t)
            if g is None:
                return None
            getters.append((target, g))
        return _Record(
            r.model, tuple(r.key) if r.key else None, _compile_when(r.when), tuple(getters)
        )

    # -- applying -------------------------------------------------------------------
    def apply(self, datas: Sequence[Mapping[str, Any]]) -> list[RowOutputs] | None:
        """Per record: its outputs, or ``None`` (the row path decides it). ``None`` for the
        whole batch when its values are not all text or whole numbers."""
        batch = self.apply_columns(datas)
        if batch is None:
            return None
        outputs: list[RowOutputs] = []
        keys = [s.keys for s in batch.specs]
        for i, refused in enumerate(batch.refused):
            if refused:
                outputs.append(None)
                continue
            outputs.append(
                [
                    (s.model, None if k is None else k[i], s.rows[i])
                    for s, k in zip(batch.specs, keys, strict=True)
                    if s.active is None or s.active[i]
                ]
            )
        return outputs

    def apply_columns(self, datas: Sequence[Mapping[str, Any]]) -> ColumnOutputs | None:
        """The batch's outputs spec by spec, and which records the row path decides
        (``refused``); ``None`` when its values are not all text or whole numbers."""
        return self.apply_to_columns(len(datas), lambda name: _values_of(datas, name))

    def apply_to_columns(self, n: int, values: Callable[[str], list[Any]]) -> ColumnOutputs | None:
        """:meth:`apply_columns` of ``n`` records given as columns: ``values(name)`` is
        field ``name`` over them (``None`` where a record lacks it)."""
        if n == 0:
            return ColumnOutputs([], [])
        cols: dict[str, _Col] = {}
        uncertain = pa.array([False] * n)
        for name in self._sources:
            col = _source_column(values(name))
            if col is None:
                return None
            cols[name], odd = col
            uncertain = _or(uncertain, odd)
        specs: list[SpecOutputs] = []
        for rec in self._records:
            active = rec.when(cols, n) if rec.when is not None else None
            bad, names, columns, keys, fields = self._outputs(rec, cols, n)
            if active is not None:
                bad = pc.and_(bad, active)
            uncertain = _or(uncertain, bad)
            specs.append(
                SpecOutputs(
                    rec.model,
                    keys,
                    names,
                    columns,
                    None if active is None else active.to_pylist(),
                    n,
                    fields,
                    active,
                )
            )
        return ColumnOutputs(uncertain.to_pylist(), specs)

    def _outputs(
        self, rec: _Record, cols: dict[str, _Col], n: int
    ) -> tuple[
        pa.Array,
        tuple[str, ...],
        list[list[Any]],
        list[list[str]] | None,
        dict[str, pa.Array | None],
    ]:
        """The rows one record spec gives (all of them, refused or not) as the model's field
        names and a column of values for each, where it refused (a step of the mapping, a
        value the model refuses or a cross-field rule), its key's columns, and the rows'
        fields as Arrow columns (:attr:`SpecOutputs.fields`)."""
        bad = pa.array([False] * n)
        outs: dict[str, _Out] = {}
        for target, get in rec.getters:
            o = get(cols, n)
            bad = _or(bad, o.bad)
            outs[target] = o
        keys = []
        for k in rec.key or ():
            c = cols[k]
            bad = _or(bad, c.empty)
            if c.texts is None:  # converted once per batch, whatever the specs keyed by it
                c.texts = c.text.to_pylist()
            keys.append(c.texts)
        model_targets = targets(rec.model)
        defaults = self._defaults[rec.model]
        names = list(model_targets)
        columns: list[list[Any]] = []
        fields: dict[str, pa.Array | None] = {}
        for name in names:
            o_ = outs.get(name)
            if o_ is None:
                if name not in defaults:  # required and not mapped: the row path says so
                    return pa.array([True] * n), (), [], None, {}
                columns.append([defaults[name]] * n)
                if defaults[name] is not None:
                    fields[name] = None
                continue
            bad = _or(
                bad, self._refused_values(rec.model, name, o_, n, required=name not in defaults)
            )
            values = _python(o_, n)
            default = defaults.get(name)
            if default is not None:
                values = [default if v is None else v for v in values]
                fields[name] = None
            elif o_.kind == "const":
                fields[name] = pa.repeat(pa.scalar(o_.const), n)
            else:
                fields[name] = o_.values
            columns.append(values)
        bad = _or(bad, _cross_field_refused(rec.model, outs, n))
        # Every column holds n values (checked once here: the rows are read by index).
        assert all(len(c) == n for c in columns)
        return bad, tuple(names), columns, keys or None, fields

    def _refused_values(
        self, model: str, name: str, o: _Out, n: int, *, required: bool
    ) -> pa.Array:
        """Where the model refuses the value of field ``name`` (or it is missing but
        required): each *distinct* value is validated once, by the model's own validator,
        and must come back as it went in."""
        if o.kind == "str" and (pattern := _only_pattern(model, name)) is not None:
            # Text whose one rule is a pattern (pseudonyms, ISTAT codes): checked in columns,
            # as there are about as many distinct values as records.
            assert o.values is not None
            matched = pc.fill_null(pc.match_substring_regex(o.values, pattern), True)
            out_ = pc.invert(matched)
            return _or(out_, pc.is_null(o.values)) if required else out_
        checked = self._checked.setdefault((model, name), {})
        strict = targets(model)[name].strict

        def accepted(v: Any) -> bool:
            key = (type(v), str(v) if isinstance(v, Decimal) else v)
            hit = checked.get(key)
            if hit is None:
                try:
                    out = plain(strict.validate_python(v))
                    hit = (type(out) is type(v) and out == v, out)
                except ValidationError:
                    hit = (False, None)
                if len(checked) < CHECKED_VALUES:
                    checked[key] = hit
            return hit[0]

        if o.kind == "const":
            ok = o.const is not None and accepted(o.const)
            return pa.array([not ok if (o.const is not None or required) else False] * n)
        assert o.values is not None
        distinct = pc.unique(o.values)
        values = distinct.to_pylist()
        if o.kind == "decimal":
            values = [None if v is None else Decimal(v) for v in values]
        refused = [
            d
            for d, v in zip(distinct.to_pylist(), values, strict=True)
            if v is not None and not accepted(v)
        ]
        out = pa.array([False] * n)
        if refused:
            out = pc.fill_null(
                pc.is_in(o.values, value_set=pa.array(refused, o.values.type)), False
            )
        if required:
            out = _or(out, pc.is_null(o.values))
        return out


@cache
def _only_pattern(model: str, name: str) -> str | None:
    """The pattern of a text field whose one constraint is a pattern (``None`` otherwise)."""
    info = MODELS[model].model_fields[name]
    ann: Any = info.annotation
    metadata = list(info.metadata)
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) != 1:
            return None
        ann = args[0]
    if get_origin(ann) is Annotated:
        ann, *extra = get_args(ann)
        metadata += extra
    if ann is not str or len(metadata) != 1 or not isinstance(metadata[0], StringConstraints):
        return None
    c = metadata[0]
    others = (c.strip_whitespace, c.to_upper, c.to_lower, c.strict, c.min_length, c.max_length)
    if any(x is not None for x in others) or not isinstance(c.pattern, str):
        return None
    return c.pattern


def _cross_field_refused(model: str, outs: Mapping[str, _Out], n: int) -> pa.Array:
    """Where a row breaks one of the model's cross-field rules (:data:`CROSS_FIELD_RULES`)."""
    rules = CROSS_FIELD_RULES.get(model)
    bad = pa.array([False] * n)
    if rules is None:
        return bad
    for later, earlier in rules.get("ordered", ()):
        a, b = outs.get(later), outs.get(earlier)
        if a is None or b is None:
            continue  # one of the two is never given: nothing to compare
        if a.kind != "date" or b.kind != "date":
            return pa.array([True] * n)
        assert a.values is not None and b.values is not None
        bad = _or(bad, pc.fill_null(pc.less(a.values, b.values), False))
    for group in rules.get("one_of", ()):
        given = pa.array([False] * n)
        for f in group:
            o = outs.get(f)
            if o is None:
                continue
            if o.kind == "const":
                given = _or(given, pa.array([o.const is not None] * n))
            else:
                assert o.values is not None
                given = _or(given, pc.is_valid(o.values))
        bad = _or(bad, pc.invert(given))
    return bad


def _values_of(datas: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    """Field ``name`` of every record (``None`` where absent)."""
    try:
        return list(map(operator.itemgetter(name), datas))  # every record has it: C speed
    except KeyError:
        return [d.get(name) for d in datas]


def _source_column(values: list[Any]) -> tuple[_Col, pa.Array] | None:
    """A source field as a column, and where its text is not printable ASCII."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    n = len(values)
    if pa.types.is_null(arr.type):
        text = pa.nulls(n, pa.string())
        return _Col(text, pa.array([True] * n), None), pa.array([False] * n)
    ints = None
    if pa.types.is_integer(arr.type):
        ints = arr.cast(pa.int64())
        text = pc.cast(ints, pa.string())
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim(arr.cast(pa.string()), " ")
    else:
        return None  # dates, decimals, booleans, floats: the row path
    odd = pc.invert(pc.fill_null(pc.match_substring_regex(text, _PRINTABLE), True))
    empty = pc.fill_null(pc.equal(text, ""), True)
    return _Col(text, empty, ints), odd


def _python(o: _Out, n: int) -> list[Any]:
    """A getter's values as the row path gives them (Python types, ``None`` for null)."""
    if o.kind == "const":
        return [o.const] * n
    assert o.values is not None
    if o.kind in ("date", "decimal") and isinstance(o.values, pa.Array):
        # Each distinct value converted once and shared by the rows that hold it: a date32
        # column's to_pylist builds a scalar object per value (~1.5 µs each, several dates
        # per record), a dictionary's indices are plain integers. Nulls are null indices.
        encoded = pc.dictionary_encode(o.values)
        distinct: list[Any] = encoded.dictionary.to_pylist()
        if o.kind == "decimal":
            distinct = [Decimal(v) for v in distinct]
        distinct.append(None)
        at = pc.fill_null(encoded.indices, len(distinct) - 1).to_pylist()
        return list(map(distinct.__getitem__, at))
    values: list[Any] = o.values.to_pylist()
    if o.kind == "decimal":
        return [None if v is None else Decimal(v) for v in values]
    # Dates are date32 columns: to_pylist gives datetime.date or None already.
    return values
