"""Declarative mappings: Italian-export values, precise errors, no code execution."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from hub.errors import MappingFileError
from hub.mappings import compile_mapping, load_mapping, mapping_json_schema

ROOT = Path(__file__).resolve().parents[2]

BASE = """
version = "1"
name = "t"
[codes.area]
unmapped = "quarantine"
[codes.area.values]
MINORI = "FAM"
[codes.sex]
default = "F"
[codes.sex.values]
"1" = "M"
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


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


def test_italian_values(tmp_path: Path) -> None:
    m = compile_mapping(load_mapping(_write(tmp_path, BASE)))
    res = m.apply(
        {
            "who": "1.abcdefghij",
            "area": "MINORI",
            "start": "31/12/2021",
            "end": "",
            "eur": "1.234,56",
        }
    )
    assert res.problems == [] and res.unmapped == []
    (out,) = res.outputs
    assert out.data == {
        "subject": "1.abcdefghij",
        "service_code": "A1.16",
        "area": "FAM",
        "started_on": dt.date(2021, 12, 31),
        "amount": Decimal("1234.56"),
    }
    assert m.apply({"who": "x", "area": "MINORI", "start": "2021-12-31"}).outputs[0].data[
        "started_on"
    ] == dt.date(2021, 12, 31)


def test_problems_name_field_and_rule_without_values(tmp_path: Path) -> None:
    m = compile_mapping(load_mapping(_write(tmp_path, BASE)))
    res = m.apply(
        {"who": "RSSMRA80A01H501U", "area": "ANZIANI", "start": "31/02/2021", "eur": "dodici"}
    )
    rules = {(p.field, p.rule) for p in res.problems}
    assert rules == {
        ("intervention.area", "unmapped_code"),
        ("intervention.started_on", "date_format"),
        ("intervention.amount", "decimal_format"),
    }
    assert res.unmapped == [("area", "ANZIANI")]
    assert all("31/02" not in p.message and "dodici" not in p.message for p in res.problems)


def test_default_code_is_reported_but_not_refused(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[[records]]
model = "subject"
key = ["who"]
when = { field = "kind", in = ["A", "B"] }
[records.fields]
subject = { type = "field", source = "who" }
sex = { type = "code", source = "g", table = "sex" }
"""
    )
    m = compile_mapping(load_mapping(_write(tmp_path, text)))
    res = m.apply(
        {"who": "p1.xxxxxxxx", "area": "MINORI", "start": "01/01/2020", "g": "9", "kind": "A"}
    )
    assert res.problems == [] and res.unmapped == [("sex", "9")]
    assert res.outputs[1].data["sex"] == "F" and res.outputs[1].key == ("p1.xxxxxxxx",)
    res = m.apply({"who": "p1", "area": "MINORI", "start": "01/01/2020", "kind": "C"})
    assert [o.model for o in res.outputs] == ["intervention"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ('version = "1"', "version: Field required"),
        ('table = "area" }', "no code table"),
        ('type = "date"', "records.0.fields.started_on"),
    ],
)
def test_bad_files_point_at_the_place(tmp_path: Path, change: str, expected: str) -> None:
    text = BASE
    if change == 'version = "1"':
        text = text.replace(change, "")
    elif change == 'table = "area" }':
        text = text.replace(change, 'table = "areas" }')
    else:
        text = text.replace('type = "date", source = "start"', 'type = "dat", source = "start"')
    with pytest.raises(MappingFileError) as e:
        load_mapping(_write(tmp_path, text))
    assert expected in str(e.value)


def test_unknown_target_and_missing_required_field(tmp_path: Path) -> None:
    text = BASE.replace(
        'subject = { type = "field", source = "who" }\n',
        'nome = { type = "field", source = "who" }\n',
        1,
    )
    with pytest.raises(MappingFileError) as e:
        load_mapping(_write(tmp_path, text))
    assert "has no field 'nome'" in str(e.value)
    assert "needs a value for 'subject'" in str(e.value)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match="line 2"):
        load_mapping(_write(tmp_path, 'version = "1"\nname = \n'))


def test_eval_like_strings_are_only_data(tmp_path: Path) -> None:
    m = compile_mapping(load_mapping(_write(tmp_path, BASE)))
    res = m.apply(
        {"who": "__import__('os').system('echo pwned')", "area": "MINORI", "start": "01/01/2020"}
    )
    assert res.outputs[0].data["subject"].startswith("__import__")


def test_shipped_mappings_validate() -> None:
    files = sorted((ROOT / "mappings").glob("*.toml"))
    assert files
    for f in files:
        load_mapping(f)


def test_published_json_schema_is_current() -> None:
    text = json.dumps(mapping_json_schema(), indent=2, sort_keys=True) + "\n"
    assert (ROOT / "docs" / "schema" / "mapping.schema.json").read_text() == text, (
        "regenerate docs/schema/mapping.schema.json (see docs/mappings.md)"
    )
