"""The district's comuni (ISTAT code, name, population) for forms and maps."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "comuni_novara.csv"


@dataclass(frozen=True)
class Comune:
    istat: str
    name: str
    population: int | None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.istat})"


def load_comuni(path: Path | None = None) -> dict[str, Comune]:
    """Read a CSV with columns ``istat``, ``municipality`` and optionally ``pop``."""
    source = path or BUILTIN
    with source.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    out: dict[str, Comune] = {}
    for row in csv.DictReader(lines):
        code = (row.get("istat") or "").strip()
        name = (row.get("municipality") or row.get("name") or "").strip()
        if len(code) == 6 and code.isdigit() and name:
            pop = (row.get("pop") or "").strip()
            out[code] = Comune(code, name, int(pop) if pop.isdigit() else None)
    return dict(sorted(out.items(), key=lambda kv: kv[1].name))


def parse_comune(value: str, comuni: dict[str, Comune]) -> str | None:
    """ISTAT code from what a form sends: a code, "Name (code)" or an exact name."""
    v = value.strip()
    if v in comuni:
        return v
    if v.endswith(")") and "(" in v:
        code = v.rsplit("(", 1)[1].rstrip(")").strip()
        if code in comuni:
            return code
    by_name = [c.istat for c in comuni.values() if c.name.casefold() == v.casefold()]
    return by_name[0] if len(by_name) == 1 else None
