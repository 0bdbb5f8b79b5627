"""Where a SIUSS record is, in a flow longer than the lines libxml2 counts exactly.

libxml2 keeps an element's line in 16 bits: past line 65,535 lxml's ``sourceline`` of an
element taken out of its document is 65,535 or a neighbour's line. A record there is located
by its position in the flow instead, so that an operator can still find a refused one.
"""

from __future__ import annotations

import re
from pathlib import Path

from connectors.siuss import flows
from hub.connector import RawRecord, SourceError, expand_parts

MINIMAL = (
    Path(__file__).resolve().parents[1] / "fixtures" / "inps" / "sample-ps_psa_sina-minimal.xml"
).read_bytes()
START, END = MINIMAL.index(b"<Beneficiario"), MINIMAL.index(b"</Flusso>")
ONE = MINIMAL[START:END]
BROKEN_AT = 4150  # a beneficiary breaking the schema, well past line 65,535


def _flow(path: Path, count: int) -> list[int]:
    """A flow of ``count`` beneficiaries; the line of each one's PrestazioniSociali."""
    parts = []
    for i in range(1, count + 1):
        b = ONE.replace(b"Protocollo fittizio", b"P%d" % i)
        if i == BROKEN_AT:
            b = b.replace(b"RSSMRK66C14H501U", b"RSSMRK6XC14H501U")
        parts.append(b)
    data = MINIMAL[:START] + b"".join(parts) + MINIMAL[END:]
    path.write_bytes(data)
    lines = []
    for m in re.finditer(rb"<PrestazioniSociali ", data):
        lines.append(data.count(b"\n", 0, m.start()) + 1)
    return lines


def test_records_past_line_65535_are_located_by_their_position(tmp_path: Path) -> None:
    path = tmp_path / "flusso.xml"
    lines = _flow(path, 4200)
    assert lines[-1] > 65_535  # the flow is long enough to matter
    items = list(
        expand_parts(flows.iter_flow(path, stream="ps", unit="u", location_prefix="flusso.xml"))
    )
    records = [i for i in items if isinstance(i, RawRecord)]
    errors = [i for i in items if isinstance(i, SourceError)]
    assert len(records) == 4199 and len(errors) == 1
    by_protocol = {r.data["protocollo"]: r.location for r in records}
    for n, line in enumerate(lines, start=1):
        if n == BROKEN_AT:
            continue
        where = by_protocol[f"P{n}"]
        if line <= flows.LAST_EXACT_LINE:
            assert where == f"flusso.xml line {line}", n
        else:
            assert where == (
                f"flusso.xml Beneficiario {n:,}, PrestazioniSociali 1 (past line 65,535)"
            ), n
    (error,) = errors
    assert error.location == f"flusso.xml Beneficiario {BROKEN_AT:,} (past line 65,535)"
    assert "65535" not in " ".join(r.location for r in records)


def test_a_record_of_no_known_line_is_located_by_its_position_alone() -> None:
    assert flows._where("f.xml", 12, "Beneficiario 3") == "f.xml line 12"
    assert flows._where("f.xml", 0, "Beneficiario 3") == "f.xml Beneficiario 3"
    assert flows._where("f.xml", None, "SINBA 3") == "f.xml SINBA 3"
    assert flows._where("f.xml", 70_000, "SINBA 3") == "f.xml SINBA 3 (past line 65,535)"
