"""Names of SIUSS prestazione codes: reference data below every layer.

A SIUSS flow carries each prestazione as a code (``CodicePrestazione``, e.g. ``A1.09``)
and its name (``DenominazionePrestazione``); the registry keeps the code only, so tables
and charts take the name from the catalogue shipped in ``hub/data/siuss_prestazioni.csv``
(its source and licence are in ``hub/data/README.md``). A code without a name there is
shown alone: a name is never guessed.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "siuss_prestazioni.csv"


@functools.cache
def prestazioni(path: Path = BUILTIN) -> dict[str, str]:
    """``{code: name}`` of the catalogue (read once per process)."""
    with path.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    out: dict[str, str] = {}
    for row in csv.DictReader(lines):
        code = (row.get("codice") or "").strip()
        name = " ".join((row.get("denominazione") or "").split())
        if code and name:
            out[code] = name
    return out


def prestazione_label(code: str) -> str:
    """``"A1.09 · Telesoccorso e teleassistenza"``; the bare code when it has no name."""
    name = prestazioni().get(code)
    return f"{code} · {name}" if name else code
