"""Comune boundaries (shipped in hub/data) and the offline SVG map."""

from __future__ import annotations

import re

from hub.observatory.geo import classes, rates_per_1000, shapes, svg_map
from hub.web.comuni import load_comuni


def test_every_comune_of_the_demo_province_has_a_boundary() -> None:
    comuni = load_comuni()
    found = shapes(comuni)
    assert set(found) == set(comuni)
    novara = found["003106"]
    lons = [p[0] for ring in novara.rings for p in ring]
    lats = [p[1] for ring in novara.rings for p in ring]
    assert 8.4 < min(lons) < max(lons) < 8.8 and 45.3 < min(lats) < max(lats) < 45.6


def test_map_colours_values_and_hatches_missing_ones() -> None:
    comuni = load_comuni()
    found = shapes(list(comuni)[:10])
    values: dict[str, float | None] = {c: float(i) for i, c in enumerate(found)}
    hidden = next(iter(found))
    values[hidden] = None
    svg = svg_map(found, values, {c: comuni[c].name for c in found}, title="T", unit="u")
    paths = re.findall(r'<path d="[^"]+" fill="([^"]+)"[^>]*data-istat="(\d{6})"', svg)
    assert len(paths) == 10
    fills = dict((code, fill) for fill, code in paths)
    assert fills[hidden] == "url(#hatch)"
    assert len({f for c, f in fills.items() if c != hidden}) > 1  # a real scale, not one colour
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    assert "CC-BY-4.0" in svg


def test_classes_and_rates() -> None:
    assert classes([]) == []
    assert classes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])[-1] == 10
    assert rates_per_1000({"a": 5, "b": None}, {"a": 1000, "b": 10, "c": 0}) == {
        "a": 5.0,
        "b": None,
        "c": None,
    }


def test_all_zero_values_are_drawn_in_the_lightest_shade() -> None:
    comuni = load_comuni()
    found = shapes(list(comuni)[:5])
    svg = svg_map(found, dict.fromkeys(found, 0.0), {}, title="T", unit="u")
    fills = set(re.findall(r'<path d="[^"]+" fill="([^"]+)"', svg))
    assert fills == {"#deebf7"}
