"""hub.quality: the data-quality rules as pure functions, and the refusal line of a sync task."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa

from hub.orchestration import refusal_line
from hub.quality import (
    cf_consistency,
    comune_in_district,
    dates_in_order,
    may_warn,
    plausible_birth_year,
    record_warnings,
)

NOVARA = {"003106", "003024"}


def test_cf_consistency_compares_the_two_digits_and_the_sex() -> None:
    assert cf_consistency(1941, "F", 1941, "F") == []
    assert cf_consistency("1941", "F", 2041, "F") == []  # the CF holds two digits only
    (w,) = cf_consistency(1951, "F", 1941, "F")
    assert (w.rule, w.field) == ("cf_birth_year_mismatch", "subject.birth_year")
    assert "1951" not in w.message and "1941" not in w.message  # never a value
    (w,) = cf_consistency(1941, "M", 1941, "F")
    assert w.rule == "cf_sex_mismatch"
    assert cf_consistency(None, None, 1941, "F") == []


def test_comune_dates_and_age() -> None:
    assert comune_in_district("003106", NOVARA, field="x") is None
    assert comune_in_district("", NOVARA, field="x") is None
    assert comune_in_district("001272", set(), field="x") is None  # no list: unchecked
    w = comune_in_district("001272", NOVARA, field="subject.residence_comune_istat")
    assert w is not None and w.rule == "comune_outside_district"
    assert dates_in_order(dt.date(2024, 1, 2), None, start_field="a", end_field="b") is None
    w = dates_in_order("2024-03-01", "2024-02-01", start_field="s", end_field="e")
    assert w is not None and w.rule == "ends_before_start" and w.field == "e"
    assert plausible_birth_year(1941, dt.date(2024, 1, 1), field="f") is None
    w = plausible_birth_year(2025, dt.date(2024, 1, 1), field="f")
    assert w is not None and w.rule == "born_after_event"
    w = plausible_birth_year(1900, dt.date(2024, 1, 1), field="f")
    assert w is not None and w.rule == "implausible_age"


def test_record_warnings_over_the_mapped_records_of_one_source_record() -> None:
    outputs = [
        ("subject", {"birth_year": 1951, "sex": "F", "residence_comune_istat": "001272"}),
        ("intervention", {"started_on": dt.date(1949, 5, 1), "comune_istat": "003106"}),
        ("case_episode", {"opened_on": dt.date(2022, 2, 5), "closed_on": dt.date(2022, 1, 5)}),
    ]
    got = sorted(
        (w.rule, w.field) for w in record_warnings(outputs, cf_derived=(1941, "F"), district=NOVARA)
    )
    assert got == [
        ("born_after_event", "intervention.started_on"),
        ("cf_birth_year_mismatch", "subject.birth_year"),
        ("comune_outside_district", "subject.residence_comune_istat"),
        ("ends_before_start", "case_episode.closed_on"),
    ]
    assert record_warnings(outputs[1:2], district=NOVARA) == []


def test_record_warnings_take_the_same_decisions_for_text_and_typed_values() -> None:
    """The usual case is decided by plain comparisons; values that are not plain dates or
    ints (text, a lower-case sex) still go through the rules and give the same result."""
    agree = [("subject", {"birth_year": "1941", "sex": "f"})]
    assert record_warnings(agree, cf_derived=(1941, "F")) == []
    (w,) = record_warnings(
        [("subject", {"birth_year": "1951", "sex": "F"})], cf_derived=(1941, "F")
    )
    assert w.rule == "cf_birth_year_mismatch"
    for start, end, expected in (
        (dt.date(2024, 3, 1), dt.date(2024, 3, 1), []),
        ("2024-03-01", "2024-03-01", []),
        (dt.date(2024, 3, 1), dt.date(2024, 2, 1), ["ends_before_start"]),
        ("2024-03-01", "2024-02-01", ["ends_before_start"]),
        (dt.date(2024, 3, 1), "2024-02-01", ["ends_before_start"]),
        (None, dt.date(2024, 2, 1), []),
    ):
        got = record_warnings([("assessment", {"assessed_on": start, "valid_until": end})])
        assert [w.rule for w in got] == expected, (start, end)
    # The age checks take a need signal's birth year when no subject gives one.
    signal = ("need_signal", {"birth_year": 1900, "on": dt.date(2024, 1, 1)})
    assert [w.rule for w in record_warnings([signal])] == ["implausible_age"]
    signal = ("need_signal", {"birth_year": "1960", "on": dt.date(2024, 1, 1)})
    assert record_warnings([signal]) == []


def test_refusal_line_says_how_many_units_and_where() -> None:
    ok = {"connector": "csv", "runs": [{"run_id": 3, "refused_units": 0}], "refused_units": 0}
    assert refusal_line(ok) == "csv: no unit refused"
    bad = {
        "connector": "siuss",
        "runs": [{"run_id": 4, "refused_units": 2}, {"run_id": 5, "refused_units": 0}],
        "refused_units": 2,
    }
    line = refusal_line(bad)
    assert line.startswith("siuss: 2 unit(s)") and "raccordo quarantine list --run 4" in line
    assert "--run 5" not in line


def _random_outputs(
    rng: random.Random,
) -> tuple[list[tuple[str, dict[str, object]]], tuple[int, str] | None]:
    """One source record's outputs as the column path gives them (typed values) and its
    CF-derived year and sex: mostly ordinary, each odd value the rules look for (other
    sex or year than the CF's, an end before its start, a comune outside the district, a
    birth after the event or too long before it) rare, so that most records that warn
    break one rule only."""

    def odd() -> bool:
        return rng.random() < 0.03

    def span() -> tuple[dt.date | None, dt.date | None]:
        start = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1500))
        end = start + dt.timedelta(days=rng.randint(-30, -1) if odd() else rng.randint(0, 90))
        return rng.choice([start, start, None]) if odd() else start, rng.choice([end, None])

    # Odd years at the edges of the age rule (born 0-4 years after, or 109-113 years before
    # events of 2020-2024).
    year = rng.randint(2020, 2024) if odd() else rng.randint(1907, 1915) if odd() else 1970
    sex = rng.choice(["F", "M"])
    other = {"F": "M", "M": "F"}[sex]
    cf = None if rng.random() < 0.2 else (year + 1 if odd() else year, other if odd() else sex)
    opened, closed = span()
    started, ended = span()
    assessed, until = span()
    return [
        (
            "subject",
            {
                "birth_year": None if odd() else year,
                "sex": None if odd() else sex,
                "residence_comune_istat": "001272" if odd() else "003106",
            },
        ),
        ("case_episode", {"opened_on": opened, "closed_on": closed}),
        (
            "intervention",
            {
                "started_on": started,
                "ended_on": ended,
                "comune_istat": rng.choice([None, "X"]) if odd() else "003024",
            },
        ),
        ("assessment", {"assessed_on": assessed, "valid_until": until}),
    ], cf


def test_may_warn_marks_every_record_a_rule_warns_about() -> None:
    """The column path asks for warnings only where may_warn says so: a record it leaves
    out must be one record_warnings has nothing to say about (and it must leave some out,
    or it would be no use)."""
    rng = random.Random(11)
    n = 4000
    drawn = [_random_outputs(rng) for _ in range(n)]
    records = [r for r, _ in drawn]
    cf = [c for _, c in drawn]
    # The assessment's ``when``: some records give none.
    active = [rng.random() < 0.7 for _ in range(n)]
    specs = []
    for s, (model, _) in enumerate(records[0]):
        names = list(records[0][s][1])
        fields = {name: pa.array([r[s][1][name] for r in records]) for name in names}
        mask = pa.array(active) if model == "assessment" else None
        specs.append((model, fields, mask))
    may = may_warn(specs, n, cf_derived=cf, district=NOVARA)
    assert may is not None
    flags = may.to_pylist()
    warned = 0
    for i, outputs in enumerate(records):
        given = [o for o in outputs if o[0] != "assessment" or active[i]]
        if record_warnings(given, cf_derived=cf[i], district=NOVARA):
            warned += 1
            assert flags[i], (i, given, cf[i])
    assert 0 < warned <= sum(flags) < n // 2


def test_may_warn_cannot_tell_with_two_specs_giving_the_birth_year() -> None:
    fields = {"birth_year": pa.array([1950])}
    assert (
        may_warn([("subject", fields, None), ("subject", fields, None)], 1, cf_derived=[None])
        is None
    )
