"""Declarative mappings: Italian-export values, precise errors, no code execution."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from connectors.synthetic import make_record
from hub.errors import MappingFileError
from hub.mappings import (
    CompiledMapping,
    MappingFile,
    compile_mapping,
    load_mapping,
    mapping_json_schema_text,
    parse_mapping,
    unknown_sources,
)
from hub.mappings.model import TRANSFORM_TYPES, ModelName, Transform, When
from hub.schema import MODELS, model_for

ROOT = Path(__file__).resolve().parents[2]
CF = "RSSMRA80A01H501U"  # fictitious, valid layout: must never be echoed

BASE = """
version = "1"
name = "t"
[codes.area]
unmapped = "quarantine"
[codes.area.values]
MINORI = "FAM"
ANZIANI = "ELD"
[codes.sex]
default = "F"
[codes.sex.values]
"1" = "M"
"2" = "F"
[[records]]
model = "intervention"
[records.fields]
subject = { type = "field", source = "who" }
service_code = { type = "const", value = "A1.16" }
area = { type = "code", source = "area", table = "area" }
started_on = { type = "date", source = "start", formats = ["%d/%m/%Y", "%Y-%m-%d"] }
ended_on = { type = "date", source = "end", formats = ["%d/%m/%Y"], optional = true }
amount = { type = "decimal", source = "eur", decimal_comma = true, optional = true }
"""

WHO = "p1.abcdefghij"  # looks like a pseudonym


def _mapping(text: str = BASE) -> CompiledMapping:
    return compile_mapping(parse_mapping(text))


def _errors(text: str) -> list[str]:
    with pytest.raises(MappingFileError) as e:
        parse_mapping(text, where="m.toml")
    assert e.value.where == "m.toml" and e.value.exit_code == 6
    return e.value.errors


# -- values as Italian exports write them ---------------------------------------------


def test_a_typical_row_maps_to_plain_python_values() -> None:
    res = _mapping().apply(
        {"who": WHO, "area": "MINORI", "start": "31/12/2021", "end": "", "eur": "1.234,56"}
    )
    assert res.problems == [] and res.unmapped == []
    (out,) = res.outputs
    assert out.model == "intervention" and out.key is None
    assert out.data == {
        "subject": WHO,
        "service_code": "A1.16",
        "area": "FAM",
        "started_on": dt.date(2021, 12, 31),
        "amount": Decimal("1234.56"),
    }
    # What the pipeline does next: the strict model accepts the output as it is.
    model_for("intervention").model_validate({**out.data, "org": "ENTE1"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.234,56", Decimal("1234.56")),
        ("1.234.567,89", Decimal("1234567.89")),
        ("1234,5", Decimal("1234.5")),
        ("12", Decimal("12")),
        ("1.234", Decimal("1234")),  # a dot groups thousands in Italian
        ("0,00", Decimal("0.00")),
        (" 15,00 ", Decimal("15.00")),
        ("€ 1.234,56", Decimal("1234.56")),
        ("1.234,56 €", Decimal("1234.56")),
        ("1\u00a0234,56", Decimal("1234.56")),  # Excel's non-breaking space grouping
    ],
)
def test_italian_decimals(text: str, expected: Decimal) -> None:
    res = _mapping().apply({"who": WHO, "area": "MINORI", "start": "01/01/2021", "eur": text})
    assert res.problems == []
    assert res.outputs[0].data["amount"] == expected


@pytest.mark.parametrize(
    "text",
    ["1234.56", "12.34,5", "1,2,3", "1.2345,00", "dodici", "1e5", "NaN", "Infinity", "12,", "--1"],
)
def test_bad_decimals_are_problems_not_guesses(text: str) -> None:
    # "1234.56" in an Italian column would silently become 123456 if dots were just dropped.
    res = _mapping().apply({"who": WHO, "area": "MINORI", "start": "01/01/2021", "eur": text})
    assert res.outputs == []
    (p,) = res.problems
    assert (p.field, p.source, p.rule) == ("intervention.amount", "eur", "decimal_format")
    assert p.message == "eur is not a number like 1.234,56"


def test_decimal_with_a_dot_and_typed_values() -> None:
    m = _mapping(BASE.replace("decimal_comma = true", "decimal_comma = false"))
    rec = {"who": WHO, "area": "MINORI", "start": "01/01/2021"}
    assert m.apply({**rec, "eur": "1234.5"}).outputs[0].data["amount"] == Decimal("1234.5")
    assert m.apply({**rec, "eur": "1.234,56"}).problems[0].rule == "decimal_format"
    assert m.apply({**rec, "eur": 12}).outputs[0].data["amount"] == Decimal(12)
    assert m.apply({**rec, "eur": Decimal("3.10")}).outputs[0].data["amount"] == Decimal("3.10")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("31/12/2021", dt.date(2021, 12, 31)),
        ("1/2/2021", dt.date(2021, 2, 1)),
        ("2021-12-31", dt.date(2021, 12, 31)),
        (" 05/03/2020 ", dt.date(2020, 3, 5)),
    ],
)
def test_dates_in_either_format(text: str, expected: dt.date) -> None:
    res = _mapping().apply({"who": WHO, "area": "MINORI", "start": text})
    assert res.problems == [] and res.outputs[0].data["started_on"] == expected


@pytest.mark.parametrize("text", ["31/02/2021", "2021/12/31", "31-12-21", "31/12/21", "ieri", "0"])
def test_bad_dates_name_the_expected_form_but_not_the_value(text: str) -> None:
    res = _mapping().apply({"who": WHO, "area": "MINORI", "start": text})
    (p,) = res.problems
    assert (p.field, p.source, p.rule) == ("intervention.started_on", "start", "date_format")
    assert p.message == "start does not match dd/mm/yyyy or yyyy-mm-dd"


def test_excel_serial_dates_only_when_asked() -> None:
    excel = BASE.replace('formats = ["%d/%m/%Y", "%Y-%m-%d"]', "excel_serial = true")
    rec = {"who": WHO, "area": "MINORI", "start": "44561"}
    assert _mapping(excel).apply(rec).outputs[0].data["started_on"] == dt.date(2021, 12, 31)
    assert _mapping().apply(rec).problems[0].rule == "date_format"
    assert _mapping(excel).apply({**rec, "start": "4456100000"}).problems[0].rule == "date_format"


def test_date_values_pass_through() -> None:
    m = _mapping()
    rec = {"who": WHO, "area": "MINORI", "start": dt.datetime(2021, 3, 4, 10, 30)}
    assert m.apply(rec).outputs[0].data["started_on"] == dt.date(2021, 3, 4)


def test_missing_required_value_and_optional_value() -> None:
    res = _mapping().apply({"who": " ", "area": "MINORI", "start": None, "end": None})
    assert {(p.field, p.source, p.rule) for p in res.problems} == {
        ("intervention.subject", "who", "missing"),
        ("intervention.started_on", "start", "missing"),
    }
    assert res.outputs == []


# -- code tables --------------------------------------------------------------------


def test_unmapped_code_with_quarantine_is_a_problem_and_counted() -> None:
    res = _mapping().apply({"who": WHO, "area": "DISABILI", "start": "01/01/2021"})
    (p,) = res.problems
    assert (p.field, p.source, p.rule) == ("intervention.area", "area", "unmapped_code")
    assert p.message == "area: code 'DISABILI' is not in code table 'area'"
    assert res.unmapped == [("area", "DISABILI")]
    assert res.outputs == []


SEX = """
[[records]]
model = "subject"
key = ["who"]
[records.fields]
subject = { type = "field", source = "who" }
sex = { type = "code", source = "g", table = "sex" }
"""


def test_unmapped_code_with_default_is_only_counted() -> None:
    m = _mapping(BASE + SEX)
    rec = {"who": WHO, "area": "MINORI", "start": "01/01/2020"}
    res = m.apply({**rec, "g": "9"})
    assert res.problems == [] and res.unmapped == [("sex", "9")]
    assert res.outputs[1].data["sex"] == "F"
    assert m.apply({**rec, "g": "1"}).outputs[1].data["sex"] == "M"
    # A missing code takes the table's default too, and is counted as such.
    res = m.apply({**rec, "g": ""})
    assert res.outputs[1].data["sex"] == "F" and res.unmapped == [("sex", "(empty)")]


def test_code_upper_and_counted_once_per_record() -> None:
    m = _mapping(BASE.replace('table = "area" }', 'table = "area", upper = true }'))
    res = m.apply({"who": WHO, "area": " minori ", "start": "01/01/2021"})
    assert res.problems == [] and res.outputs[0].data["area"] == "FAM"
    two = BASE + "[[records]]" + BASE.split("[[records]]")[1]
    res = _mapping(two).apply({"who": WHO, "area": "X", "start": "01/01/2021"})
    assert len(res.problems) == 2 and res.unmapped == [("area", "X")]


def test_a_code_that_looks_like_an_identifier_is_never_shown() -> None:
    res = _mapping().apply({"who": WHO, "area": CF, "start": "01/01/2021"})
    (p,) = res.problems
    assert p.rule == "unmapped_code" and CF not in p.message
    assert res.unmapped == [("area", "(not shown: 16 characters)")]
    long_code = "X" * 41
    res = _mapping().apply({"who": WHO, "area": long_code, "start": "01/01/2021"})
    assert long_code not in res.problems[0].message


# -- every other transform ----------------------------------------------------------


def test_split_through_a_table_dedupes() -> None:
    text = BASE.replace(
        "[[records]]",
        "[codes.need]\nunmapped = 'quarantine'\n[codes.need.values]\n"
        'CIBO = "food"\nALIMENTI = "food"\nCASA = "housing"\n[[records]]',
        1,
    )
    text += """
[[records]]
model = "need_signal"
[records.fields]
needs = { type = "split", source = "bisogni", sep = ";", table = "need", upper = true }
services_given = { type = "split", source = "servizi", optional = true }
comune_istat = { type = "const", value = "003106" }
on = { type = "date", source = "start", formats = ["%d/%m/%Y"] }
"""
    m = _mapping(text)
    rec = {"who": WHO, "area": "MINORI", "start": "01/01/2021"}
    res = m.apply({**rec, "bisogni": "cibo; CASA;;alimenti", "servizi": "food_parcel|goods"})
    assert res.problems == []
    ns = res.outputs[1].data
    assert ns["needs"] == ("food", "housing") and ns["services_given"] == ("food_parcel", "goods")
    model_for("need_signal").model_validate({**ns, "org": "ETS1"})
    res = m.apply({**rec, "bisogni": "CIBO;LAVORO"})
    assert [(p.field, p.source, p.rule) for p in res.problems] == [
        ("need_signal.needs", "bisogni", "unmapped_code")
    ]
    assert res.unmapped == [("need", "LAVORO")]
    assert m.apply({**rec, "bisogni": " ; "}).problems[0].rule == "missing"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("S", True), ("s", True), (" si ", True), ("N", False), ("no", False), (True, True)],
)
def test_bool(value: Any, expected: bool) -> None:
    text = BASE + (
        '\n[[records]]\nmodel = "assessment"\n[records.fields]\n'
        'subject = { type = "field", source = "who" }\n'
        'assessed_on = { type = "date", source = "start", formats = ["%d/%m/%Y"] }\n'
        'disability = { type = "bool", source = "inv", true = ["S", "SI"], false = ["N", "NO"] }\n'
    )
    res = _mapping(text).apply({"who": WHO, "area": "MINORI", "start": "01/01/2021", "inv": value})
    assert res.problems == [] and res.outputs[1].data["disability"] is expected
    res = _mapping(text).apply(
        {"who": WHO, "area": "MINORI", "start": "01/01/2021", "inv": "FORSE"}
    )
    (p,) = res.problems
    assert p.rule == "bool_value" and p.message == "inv is not one of S, SI, N, NO"


SUBJECT = """
version = "1"
name = "s"
[[records]]
model = "subject"
[records.fields]
subject = { type = "first_of", sources = ["cf", "stp"] }
birth_year = { type = "int", source = "anno", optional = true }
household = { type = "field", source = "nucleo", upper = true, default = "nucleo-ignoto" }
sex = { type = "field", source = "cf__sex", optional = true }
"""


def test_first_of_int_field_defaults() -> None:
    m = _mapping(SUBJECT)
    res = m.apply({"cf": "", "stp": WHO, "anno": " 1980 ", "nucleo": "h1.abcdefgh"})
    assert res.problems == []
    assert res.outputs[0].data == {"subject": WHO, "birth_year": 1980, "household": "H1.ABCDEFGH"}
    res = m.apply({"cf": WHO, "anno": 1975, "cf__sex": "F"})
    assert res.outputs[0].data == {
        "subject": WHO,
        "birth_year": 1975,
        "household": "nucleo-ignoto",
        "sex": "F",
    }
    res = m.apply({"anno": "1980.0"})
    assert {(p.field, p.source, p.rule) for p in res.problems} == {
        ("subject.subject", "cf, stp", "missing"),
        ("subject.birth_year", "anno", "int_format"),
    }


@pytest.mark.parametrize("text", ["1980.0", "19 80", "١٩٨٠", "1_980", "0x7bc", ""])
def test_int_accepts_only_plain_digits(text: str) -> None:
    res = _mapping(SUBJECT.replace(", optional = true }", " }", 1)).apply({"cf": WHO, "anno": text})
    assert res.problems[0].rule == ("missing" if not text else "int_format")


def test_field_keeps_derived_values_and_strip_can_be_off() -> None:
    text = SUBJECT.replace(
        'birth_year = { type = "int", source = "anno", optional = true }',
        'birth_year = { type = "field", source = "cf__birth_year" }',
    ).replace("upper = true,", "strip = false,")
    res = _mapping(text).apply({"cf": WHO, "cf__birth_year": 1980, "nucleo": " h1.abcdefgh"})
    assert res.outputs[0].data["birth_year"] == 1980
    assert res.outputs[0].data["household"] == " h1.abcdefgh"


def test_constants_are_checked_and_converted_for_their_field() -> None:
    text = BASE.replace(
        'amount = { type = "decimal", source = "eur", decimal_comma = true, optional = true }',
        'amount = { type = "const", value = "12.50" }',
    )
    res = _mapping(text).apply({"who": WHO, "area": "MINORI", "start": "01/01/2021"})
    assert res.outputs[0].data["amount"] == Decimal("12.50")
    text = BASE.replace(
        'area = { type = "code", source = "area", table = "area" }',
        'area = { type = "const", value = "FAM" }',
    )
    data = _mapping(text).apply({"who": WHO, "start": "01/01/2021"}).outputs[0].data
    assert data["area"] == "FAM" and type(data["area"]) is str  # plain str, not an enum


# -- when and key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "value", "produced"),
    [
        ('{ field = "pic", equals = "1" }', " 1 ", True),
        ('{ field = "pic", equals = "1" }', "0", False),
        ('{ field = "pic", in = ["1", "S"] }', "S", True),
        ('{ field = "pic", in = ["1", "S"] }', None, False),
        ('{ field = "pic", not_empty = true }', "x", True),
        ('{ field = "pic", not_empty = true }', "  ", False),
        ('{ field = "pic", not_empty = false }', "", True),
        ('{ field = "pic", not_empty = false }', "x", False),
    ],
)
def test_when(when: str, value: str | None, produced: bool) -> None:
    text = BASE.replace('model = "intervention"', f'model = "intervention"\nwhen = {when}')
    res = _mapping(text).apply({"who": WHO, "area": "MINORI", "start": "01/01/2021", "pic": value})
    assert len(res.outputs) == (1 if produced else 0) and res.problems == []


def test_a_skipped_record_is_not_checked() -> None:
    text = BASE.replace(
        'model = "intervention"', 'model = "intervention"\nwhen = { field = "pic", equals = "1" }'
    )
    res = _mapping(text).apply({"pic": "0", "start": "garbage"})
    assert res.outputs == [] and res.problems == [] and res.unmapped == []


def test_key_is_the_tuple_of_source_values_and_must_be_present() -> None:
    text = BASE.replace('model = "intervention"', 'model = "intervention"\nkey = ["who", "start"]')
    m = _mapping(text)
    res = m.apply({"who": WHO, "area": "MINORI", "start": "01/01/2021"})
    assert res.outputs[0].key == (WHO, "01/01/2021")
    text2 = text.replace('key = ["who", "start"]', 'key = ["who", "pratica"]')
    res = _mapping(text2).apply(
        {"who": WHO, "area": "MINORI", "start": "01/01/2021", "pratica": ""}
    )
    assert res.outputs == []
    (p,) = res.problems
    assert (p.field, p.source, p.rule) == ("intervention.key", "pratica", "missing_key")


def test_an_output_with_a_problem_is_left_out_but_others_are_kept() -> None:
    res = _mapping(BASE + SEX).apply({"who": WHO, "area": "NO", "start": "01/01/2021", "g": "2"})
    assert [o.model for o in res.outputs] == ["subject"] and len(res.problems) == 1


# -- privacy and safety ---------------------------------------------------------------


def test_messages_never_echo_source_values() -> None:
    text = BASE + SEX.replace(
        'sex = { type = "code", source = "g", table = "sex" }',
        'birth_year = { type = "int", source = "g" }',
    )
    text = text.replace('key = ["who"]', 'key = ["who", "missing"]')
    bad = f"{CF} Mario Rossi"
    res = _mapping(text).apply(
        {"who": bad, "area": bad, "start": bad, "end": bad, "eur": bad, "g": bad}
    )
    assert {p.rule for p in res.problems} == {
        "unmapped_code",
        "date_format",
        "decimal_format",
        "int_format",
        "missing_key",
    }
    shown = repr(res)
    assert CF not in shown and "Rossi" not in shown


def test_eval_like_strings_are_only_data(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    text = BASE.replace('source = "who"', f'source = "{payload}"')
    text = text.replace('MINORI = "FAM"', '"${7*7}" = "FAM"')
    m = _mapping(text)
    res = m.apply({payload: payload, "area": "${7*7}", "start": "01/01/2021"})
    assert res.problems == [] and res.outputs[0].data["subject"] == payload
    assert res.outputs[0].data["area"] == "FAM"
    res = m.apply({payload: WHO, "area": "{{7*7}}", "start": "01/01/2021"})
    assert res.unmapped == [("area", "{{7*7}}")]  # a code, not a template
    assert not marker.exists()


# -- loading: errors a person can act on ---------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('version = "1"\n', "", "version: Field required"),
        ('version = "1"', "version = 1", "version: Input should be a valid string"),
        ('name = "t"', 'name = "Nome Bello"', "name: String should match pattern"),
        (
            'table = "area" }',
            'table = "areas" }',
            "records[0].fields.area.table: no code table 'areas' in [codes] (area, sex)",
        ),
        (
            'type = "date", source = "start"',
            'type = "dat", source = "start"',
            "records[0].fields.started_on: Input tag 'dat' found using 'type' does not match",
        ),
        (
            'type = "date", source = "start"',
            'source = "start"',
            "records[0].fields.started_on: a transform needs a type: one of",
        ),
        (
            'formats = ["%d/%m/%Y", "%Y-%m-%d"]',
            'formats = ["%d/%m/%Q"]',
            "records[0].fields.started_on.formats: format '%d/%m/%Q' uses %Q (allowed:",
        ),
        (
            'formats = ["%d/%m/%Y", "%Y-%m-%d"]',
            'formats = ["%d/%m"]',
            "records[0].fields.started_on.formats: format '%d/%m' has no year (%Y or %y)",
        ),
        (
            'formats = ["%d/%m/%Y", "%Y-%m-%d"]',
            "formats = []",
            "records[0].fields.started_on.formats: List should have at least 1 item",
        ),
        (
            "optional = true }",
            'optional = "yes" }',
            "records[0].fields.ended_on.optional: Input should be a valid boolean",
        ),
        (
            "decimal_comma = true",
            "decimal_coma = true",
            "records[0].fields.amount.decimal_coma: Extra inputs are not permitted",
        ),
        ('model = "intervention"', 'model = "prestazione"', "records[0].model: Input should be"),
        (
            'unmapped = "quarantine"',
            'unmapped = "quarantine"\ndefault = "FAM"',
            "codes.area: say what to do with unknown codes",
        ),
        ('default = "F"', "", "codes.sex: say what to do with unknown codes"),
        ('MINORI = "FAM"', '" MINORI" = "FAM"', "codes.area.values: code ' MINORI' is empty"),
        (
            'MINORI = "FAM"',
            'MINORI = "MINORI"',
            "codes.area.values.MINORI: Input should be 'FAM', 'DIS', 'ADD', 'ELD', 'IMMNOM', "
            "'POV' or 'MULBEN' (for intervention.area)",
        ),
        (
            'default = "F"',
            'default = "X"',
            "",  # sex table is unused by BASE: nothing to check it against
        ),
        (
            'service_code = { type = "const", value = "A1.16" }',
            'service_code = { type = "const", value = "A1 16" }',
            "records[0].fields.service_code.value: not valid for intervention.service_code: "
            "String should match pattern",
        ),
        (
            'service_code = { type = "const", value = "A1.16" }',
            'service_code = { type = "const", value = { a = 1 } }',
            "records[0].fields.service_code.value: a constant is a text, a whole number",
        ),
        (
            'subject = { type = "field", source = "who" }\n',
            'nome = { type = "field", source = "who" }\n',
            "records[0].fields.nome: intervention has no field 'nome' (fields: amount,",
        ),
        (
            'subject = { type = "field", source = "who" }\n',
            "",
            "records[0].fields: intervention needs a value for 'subject'",
        ),
        (
            'amount = { type = "decimal", source = "eur", decimal_comma = true, optional = true }',
            'amount = { type = "date", source = "eur", optional = true }',
            "records[0].fields.amount.type: intervention.amount takes a decimal number, "
            "but a 'date' transform gives a date",
        ),
        (
            "optional = true }\namount",
            "default = 2020-01-01 }\namount",
            "",
        ),
        (
            "decimal_comma = true, optional = true",
            'decimal_comma = true, default = "-1"',
            "records[0].fields.amount.default: not valid for intervention.amount: "
            "Input should be greater than or equal to 0",
        ),
        (
            "[records.fields]",
            'when = { field = "x", equals = "1", in = ["2"] }\n[records.fields]',
            "records[0].when: a condition needs exactly one of equals, in, not_empty",
        ),
        ("[records.fields]", "key = []\n[records.fields]", "records[0].key: List should have"),
        ("[[records]]", "[[record]]", "record: Extra inputs are not permitted"),
    ],
)
def test_bad_files_point_at_the_place(old: str, new: str, expected: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    if not expected:
        parse_mapping(text)  # valid
        return
    errors = _errors(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_all_errors_are_reported_at_once() -> None:
    text = BASE.replace('table = "area" }', 'table = "areas" }').replace(
        'subject = { type = "field", source = "who" }\n', ""
    ) + SEX.replace('source = "g"', 'source = "g", upper = 1')
    errors = _errors(text)
    assert errors == ["records[1].fields.sex.upper: Input should be a valid boolean"]
    errors = _errors(text.replace("upper = 1", "upper = true"))
    assert errors == [
        "records[0].fields.area.table: no code table 'areas' in [codes] (area, sex)",
        "records[0].fields: intervention needs a value for 'subject'",
    ]


def test_toml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(MappingFileError) as e:
        parse_mapping('version = "1"\nname = \n', where="m.toml")
    assert e.value.message == "not valid TOML"
    assert "line 2, column 8" in e.value.errors[0]


def test_files_missing_binary_or_with_a_bom(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match="mapping file not found"):
        load_mapping(tmp_path / "nope.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('description = "perché"\n'.encode("latin-1"))
    with pytest.raises(MappingFileError, match="not UTF-8"):
        load_mapping(bad)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_mapping(bom).name == "t"
    with pytest.raises(MappingFileError) as err:
        load_mapping(tmp_path)
    assert err.value.where == str(tmp_path)


def test_compile_checks_files_not_made_by_load() -> None:
    data = {
        "version": "1",
        "name": "x",
        "records": [
            {
                "model": "subject",
                "fields": {"subject": {"type": "code", "source": "a", "table": "missing"}},
            }
        ],
    }
    with pytest.raises(MappingFileError) as e:
        compile_mapping(MappingFile.model_validate(data))
    assert e.value.errors == [
        "records[0].fields.subject.table: no code table 'missing' in [codes] (none)"
    ]


def test_unknown_sources_against_a_stream() -> None:
    spec = parse_mapping(BASE + SEX)
    assert unknown_sources(spec, {"who", "area", "start", "end", "eur", "g"}) == []
    assert unknown_sources(spec, {"who", "area", "start", "end", "g"}) == [
        "records[0].fields.amount: no source field 'eur'"
    ]


def test_model_names_follow_the_schema() -> None:
    assert set(typing.get_args(ModelName)) == set(MODELS)


# -- shipped files ----------------------------------------------------------------------


def test_shipped_mappings_validate() -> None:
    files = sorted((ROOT / "mappings").glob("*.toml"))
    assert {f.name for f in files} >= {"synthetic.toml"}
    for f in files:
        compile_mapping(load_mapping(f))


def test_published_json_schema_is_current() -> None:
    published = ROOT / "docs" / "schema" / "mapping.schema.json"
    assert published.read_text(encoding="utf-8") == mapping_json_schema_text(), (
        "regenerate: raccordo mappings schema > docs/schema/mapping.schema.json"
    )
    schema = json.loads(published.read_text(encoding="utf-8"))
    assert set(schema["required"]) == {"version", "name", "records"}


def _pseudonymised(raw: dict[str, str]) -> dict[str, Any]:
    """What the pipeline hands the mapping: pseudonyms, no names, derived birth year/sex."""
    data: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("cognome", "nome")}
    cf = raw["cf"]
    data["cf"] = "p1." + hashlib.sha256(cf.encode()).hexdigest()[:20]
    data["household_id"] = "p1." + hashlib.sha256(raw["household_id"].encode()).hexdigest()[:20]
    year = int(cf[6:8])
    data["cf__birth_year"] = 1900 + year if year > 25 else 2000 + year
    data["cf__sex"] = "F" if int(cf[9:11]) > 40 else "M"
    return data


def test_synthetic_mapping_produces_records_the_schema_accepts() -> None:
    m = compile_mapping(load_mapping(ROOT / "mappings" / "synthetic.toml"))
    kinds: set[str] = set()
    for i in range(400):
        rec = _pseudonymised(make_record(i, seed=7, bad_ratio=0.0))
        res = m.apply(rec)
        assert res.problems == [] and res.unmapped == [], i
        kinds.update(o.model for o in res.outputs)
        for out in res.outputs:
            model_for(out.model).model_validate({**out.data, "org": "SYN"})
        by_model = {o.model: o for o in res.outputs}
        assert by_model["subject"].key == (rec["cf"],)
        assert by_model["subject"].data["birth_year"] == rec["cf__birth_year"]
        assert by_model["intervention"].data["service_code"] == rec["service"]
        if rec["assessed"]:
            assert by_model["assessment"].key == (rec["cf"], rec["assessed"])
        else:
            assert "assessment" not in by_model
    assert kinds == {"subject", "case_episode", "intervention", "assessment"}
    bad = _pseudonymised(make_record(0, seed=7, bad_ratio=0.0)) | {"area": "XXX"}
    res = m.apply(bad)
    assert {p.field for p in res.problems} == {"case_episode.area", "intervention.area"}
    assert res.unmapped == [("area", "XXX")]


def test_every_transform_and_condition_in_the_docs_is_valid() -> None:
    """The examples in docs/mappings.md parse, so the documentation cannot drift from the code."""
    doc = (ROOT / "docs" / "mappings.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    transforms = TypeAdapter(Transform)
    seen: set[str] = set()
    for block in blocks:
        for line in block.splitlines():
            m = re.match(r"^(\w+) = (\{.*\})\s*(#.*)?$", line)
            if not m:
                continue
            value = tomllib.loads(f"x = {m.group(2)}")["x"]
            if m.group(1) == "when":
                When.model_validate(value)
                seen.add("when")
            else:
                seen.add(transforms.validate_python(value).type)
    assert seen == {*TRANSFORM_TYPES, "when"}
