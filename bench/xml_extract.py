"""The SIUSS XML extract, part by part: CPU seconds of each pass alone, least of N rounds.

    .venv/bin/python bench/xml_extract.py --records 200000 --rounds 3

Generates the flow ``bench/ingest.py`` loads (``write_xml``) in a temporary directory, then
times: the checking pass (``validate``), the second pass alone (``iter_top_elements``), the
second pass with each record's XSD validation (``schema_problems``), the second pass cut into
parts with their digests and no record built (what a re-read does for a part it skips: since
2026-12-02 the one pass of such a re-read, the checking pass left out), the records built
(``_records``, every part read: XSD plus the RawRecords, and, past ``flows.HELD_ELEMENTS``
read, the checking pass too) and the whole ``iter_flow``. docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import write_xml  # noqa: E402

from connectors.siuss import flows  # noqa: E402
from hub.connector import UnitComplete, expand_parts  # noqa: E402
from hub.inputs import xml  # noqa: E402

MAX = xml.MAX_BYTES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flow.xml"
        write_xml(path, args.records)
        schema = flows.record_schema_for("Beneficiario")
        tags = {flows.HEADER, "Beneficiario"}

        def first() -> None:
            xml.validate(path, None, root="Flusso")

        def second() -> None:
            for _el in xml.iter_top_elements(path, tags):
                pass

        def second_xsd() -> None:
            for el in xml.iter_top_elements(path, tags):
                xml.schema_problems(schema, el)

        def digests() -> None:  # what a re-read of a changed file does for each part
            for _item in flows._records(path, "Beneficiario", "u", "flow.xml", "ps", MAX):
                pass

        def records() -> None:
            # Confirmed at the end, as iter_flow does (its parts come provisional).
            read = flows._records(path, "Beneficiario", "u", "f", "ps", MAX)
            for _item in expand_parts(itertools.chain(read, [UnitComplete("u")])):
                pass

        def whole() -> None:
            for _item in expand_parts(
                flows.iter_flow(path, stream="ps", unit="u", location_prefix="f")
            ):
                pass

        parts: dict[str, Callable[[], None]] = {
            "checking pass (validate)": first,
            "second pass alone": second,
            "second pass + XSD per record": second_xsd,
            "second pass + parts (digests)": digests,
            "second pass + XSD + records": records,
            "iter_flow (all of it)": whole,
        }
        print(f"SIUSS XML extract, {args.records:,} records, least CPU of {args.rounds} rounds")
        for name, fn in parts.items():
            best = float("inf")
            for _ in range(args.rounds):
                c0 = time.process_time()
                fn()
                best = min(best, time.process_time() - c0)
            print(f"  {name:32s} {best:6.2f} s CPU", flush=True)


if __name__ == "__main__":
    main()
