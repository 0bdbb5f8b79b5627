"""The district's comuni for the observatory's maps and reports (reference data in hub.schema)."""

from __future__ import annotations

from hub.schema.comuni import BUILTIN, Comune, load_comuni, parse_comune

__all__ = ["BUILTIN", "Comune", "load_comuni", "parse_comune"]
