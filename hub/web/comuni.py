"""The district's comuni: kept here for existing imports; the data lives in hub.schema."""

from __future__ import annotations

from hub.schema.comuni import BUILTIN, Comune, load_comuni, parse_comune

__all__ = ["BUILTIN", "Comune", "load_comuni", "parse_comune"]
