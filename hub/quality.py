"""Data-quality warnings: what is plausible but suspicious in a record that loads.

A warning never refuses a record on its own (refusals are the schema's and the
mapping's job): it is counted per run with its location, rule and field, shown
by the sync summary, ``raccordo runs`` and ``raccordo warnings list``, so that
an office can correct its source. Messages never quote values: a birth year
next to a location is already personal data.

The rules are pure functions over a record's fields, so any pipeline (the row
pipeline of today, a columnar one tomorrow) can call them:

* :func:`cf_consistency` — declared birth year or sex contradicting those
  encoded in the codice fiscale (the same person then has two ages);
* :func:`comune_in_district` — a residence or service comune outside the
  district's list of comuni;
* :func:`dates_in_order` — an end before its start (an intervention, a case, an
  assessment's validity);
* :func:`plausible_birth_year` — a person born after the event recorded, or
  older than 110 at it.

:func:`record_warnings` applies every rule to the common-schema records mapped
from one source record; :func:`may_warn` tells, over a batch's columns, which records
it could give a warning for (the others need no call).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MAX_AGE = 110


@dataclass(frozen=True)
class QualityWarning:
    """One suspicious value: ``rule`` for machines, ``field`` (a common-schema field,
    prefixed by its model) and a ``message`` for people that quotes no value."""

    rule: str
    field: str
    message: str


def _year(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _code(value: Any) -> str | None:
    v = getattr(value, "value", value)  # enums
    return str(v).strip().upper() if v is not None and str(v).strip() else None


def cf_consistency(
    declared_year: Any,
    declared_sex: Any,
    cf_year: int | None,
    cf_sex: str | None,
    *,
    prefix: str = "subject",
) -> list[QualityWarning]:
    """Declared birth year / sex against those encoded in the codice fiscale.

    The CF holds two digits of the year: only those are compared (a declared
    1923 and a CF saying 23 agree, whatever century the CF is read in).
    """
    out = []
    year = _year(declared_year)
    if year is not None and cf_year is not None and year % 100 != cf_year % 100:
        out.append(
            QualityWarning(
                "cf_birth_year_mismatch",
                f"{prefix}.birth_year",
                "the declared birth year differs from the one encoded in the codice fiscale: "
                "correct the source (the same person would have two ages)",
            )
        )
    sex = _code(declared_sex)
    if sex in ("M", "F") and cf_sex in ("M", "F") and sex != cf_sex:
        out.append(
            QualityWarning(
                "cf_sex_mismatch",
                f"{prefix}.sex",
                "the declared sex differs from the one encoded in the codice fiscale",
            )
        )
    return out


def comune_in_district(
    comune: Any, district: Collection[str], *, field: str, what: str = "the comune"
) -> QualityWarning | None:
    """A comune outside the district's list (nothing when the list is empty)."""
    code = _code(comune)
    if code is None or not district or code in district:
        return None
    return QualityWarning(
        "comune_outside_district",
        field,
        f"{what} is not one of the district's comuni: a typo in the ISTAT code, a person "
        "who moved, or a list of comuni ([web] comuni_file) to update",
    )


def dates_in_order(
    start: Any, end: Any, *, start_field: str, end_field: str
) -> QualityWarning | None:
    """An end date before its start date."""
    s, e = _date(start), _date(end)
    if s is None or e is None or e >= s:
        return None
    return QualityWarning(
        "ends_before_start",
        end_field,
        f"{end_field} is before {start_field}: are the two dates swapped?",
    )


def plausible_birth_year(birth_year: Any, on: Any, *, field: str) -> QualityWarning | None:
    """A birth year after the event's date, or more than :data:`MAX_AGE` years before it."""
    year, when = _year(birth_year), _date(on)
    if year is None or when is None:
        return None
    if year > when.year:
        return QualityWarning(
            "born_after_event", field, "the person is born after the date of this record"
        )
    if when.year - year > MAX_AGE:
        return QualityWarning(
            "implausible_age", field, f"the person would be over {MAX_AGE} at this record's date"
        )
    return None


#: (start, end) date fields of each model whose order is checked.
DATE_PAIRS = {
    "intervention": ("started_on", "ended_on"),
    "case_episode": ("opened_on", "closed_on"),
    "assessment": ("assessed_on", "valid_until"),
}
#: (comune field, what it is) of each model checked against the district.
COMUNE_FIELDS = {
    "subject": ("residence_comune_istat", "the residence comune"),
    "intervention": ("comune_istat", "the comune of the service"),
    "need_signal": ("comune_istat", "the comune of the contact"),
}
#: The date a model's record is about, for the age checks.
EVENT_DATES = {
    "intervention": "started_on",
    "case_episode": "opened_on",
    "assessment": "assessed_on",
    "need_signal": "on",
}


#: Per model, the checks of the loop below: (date pair, comune field, event date), each
#: ``None`` where the model has none (built once from the three tables above).
_CHECKS: dict[str, tuple[tuple[str, str] | None, tuple[str, str] | None, str | None]] = {
    model: (DATE_PAIRS.get(model), COMUNE_FIELDS.get(model), EVENT_DATES.get(model))
    for model in (*DATE_PAIRS, *COMUNE_FIELDS, *EVENT_DATES)
}


def record_warnings(
    outputs: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    cf_derived: tuple[int, str] | None = None,
    district: Collection[str] = (),
) -> list[QualityWarning]:
    """Every rule over the ``(model, fields)`` records mapped from one source record.

    ``cf_derived``: birth year and sex encoded in the record's codice fiscale, if it
    had one; ``district``: the ISTAT codes of the district's comuni (empty: unchecked).
    Called once per loaded record, so the path where nothing is wrong is kept short
    (a few dictionary look-ups and comparisons per output); the rule functions above
    build the warnings.
    """
    records = outputs if isinstance(outputs, list | tuple) else list(outputs)
    out: list[QualityWarning] = []
    birth_year = None
    for model, data in records:
        if model == "subject":
            birth_year = data.get("birth_year")
            if cf_derived is not None:
                sex = data.get("sex")
                # (equal values first: the usual case, decided without a conversion)
                if (
                    birth_year is not None
                    and birth_year != cf_derived[0]
                    and _year(birth_year) != cf_derived[0]
                ) or (sex is not None and sex != cf_derived[1] and _code(sex) != cf_derived[1]):
                    out += cf_consistency(birth_year, sex, *cf_derived)
        elif model == "need_signal" and birth_year is None:
            birth_year = data.get("birth_year")
    year = None if birth_year is None else _year(birth_year)
    for model, data in records:
        checks = _CHECKS.get(model)
        if checks is None:
            continue
        pair, comune, event = checks
        if pair is not None:
            end = data.get(pair[1])
            if end is not None:
                start = data.get(pair[0])
                if not (type(start) is dt.date and type(end) is dt.date and end >= start):
                    w = _dates(model, data, pair)
                    if w is not None:
                        out.append(w)
        if comune is not None and district:
            value = data.get(comune[0])
            if value is not None and value not in district:
                w = comune_in_district(
                    value, district, field=f"{model}.{comune[0]}", what=comune[1]
                )
                if w is not None:
                    out.append(w)
        if event is not None and birth_year is not None:
            when = data.get(event)
            if (
                when is not None
                and year is not None
                and hasattr(when, "year")
                and 0 <= when.year - year <= MAX_AGE
            ):
                continue  # plausible: the usual case, decided without building anything
            w = plausible_birth_year(birth_year, when, field=f"{model}.{event}")
            if w is not None:
                out.append(w)
    return out


def _dates(model: str, data: Mapping[str, Any], pair: tuple[str, str]) -> QualityWarning | None:
    return dates_in_order(
        data.get(pair[0]),
        data.get(pair[1]),
        start_field=f"{model}.{pair[0]}",
        end_field=f"{model}.{pair[1]}",
    )


#: One spec's outputs over a batch for :func:`may_warn`: its model, its fields as columns
#: (absent: never given; ``None``: not known) and where it gives a row (``None``: always).
SpecColumns = tuple[str, Mapping[str, "pa.Array | None"], "pa.Array | None"]


def may_warn(
    specs: Sequence[SpecColumns],
    n: int,
    *,
    cf_derived: Sequence[tuple[int, str] | None],
    district: Collection[str] = (),
) -> pa.Array | None:
    """Where :func:`record_warnings` may give a warning, over a batch of ``n`` records mapped
    column by column (each spec giving at most one row per record, in the mapping's order):
    a mask true wherever one of its rules may fire (it is then called for that record), so
    a record outside it gets none. ``None`` when that cannot be told in columns (several
    specs give the birth year the rules compare, or a field is not known)."""
    people = [s for s in specs if s[0] in ("subject", "need_signal")]
    if len(people) > 1:
        return None
    none = pa.repeat(pa.scalar(False), n)
    may = none

    def col(fields: Mapping[str, pa.Array | None], name: str) -> pa.Array | bool | None:
        """The column, ``None`` if never given, ``False`` if not known."""
        if name not in fields:
            return None
        c = fields[name]
        return False if c is None else c

    def where(active: pa.Array | None, mask: pa.Array) -> pa.Array:
        mask = pc.fill_null(mask, False)
        return mask if active is None else pc.and_(mask, active)

    birth_year: pa.Array | None = None
    if people:
        model, fields, active = people[0]
        by = col(fields, "birth_year")
        if by is False:
            return None
        if isinstance(by, pa.Array):
            if not pa.types.is_integer(by.type):
                return None
            birth_year = by if active is None else pc.if_else(active, by, pa.scalar(None, by.type))
        if model == "subject" and any(c is not None for c in cf_derived):
            cf_year = pa.array([None if c is None else c[0] for c in cf_derived], pa.int64())
            cf_sex = pa.array([None if c is None else c[1] for c in cf_derived], pa.string())
            sex = col(fields, "sex")
            if sex is False:
                return None
            if isinstance(by, pa.Array):
                may = pc.or_(may, where(active, pc.not_equal(by, cf_year)))
            if isinstance(sex, pa.Array):
                if not pa.types.is_string(sex.type):
                    return None
                may = pc.or_(may, where(active, pc.not_equal(sex, cf_sex)))
    for model, fields, active in specs:
        pair = DATE_PAIRS.get(model)
        if pair is not None:
            start, end = col(fields, pair[0]), col(fields, pair[1])
            if start is False or end is False:
                return None
            if isinstance(end, pa.Array):
                if (
                    not isinstance(start, pa.Array)
                    or not pa.types.is_date32(start.type)
                    or not pa.types.is_date32(end.type)
                ):
                    may = pc.or_(may, where(active, pc.is_valid(end)))
                else:
                    in_order = pc.fill_null(pc.greater_equal(end, start), False)
                    may = pc.or_(may, where(active, pc.and_(pc.is_valid(end), pc.invert(in_order))))
        comune = COMUNE_FIELDS.get(model)
        if comune is not None and district:
            value = col(fields, comune[0])
            if value is False:
                return None
            if isinstance(value, pa.Array):
                if pa.types.is_string(value.type):
                    inside = pc.is_in(value, value_set=pa.array(sorted(district), pa.string()))
                    outside = pc.and_(pc.is_valid(value), pc.invert(inside))
                else:
                    outside = pc.is_valid(value)
                may = pc.or_(may, where(active, outside))
        event = EVENT_DATES.get(model)
        if event is not None and birth_year is not None:
            when = col(fields, event)
            if when is False:
                return None
            if isinstance(when, pa.Array):
                given = pc.and_(pc.is_valid(when), pc.is_valid(birth_year))
                if pa.types.is_date32(when.type):
                    age = pc.subtract(pc.year(when), birth_year)
                    plausible = pc.and_(pc.greater_equal(age, 0), pc.less_equal(age, MAX_AGE))
                    may = pc.or_(may, where(active, pc.and_(given, pc.invert(plausible))))
                else:
                    may = pc.or_(may, where(active, given))
    return may
