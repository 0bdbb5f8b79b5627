"""The district's comuni: kept here for existing imports; the data lives in the observatory."""

from __future__ import annotations

from hub.observatory.comuni import BUILTIN, Comune, load_comuni, parse_comune

__all__ = ["BUILTIN", "Comune", "load_comuni", "parse_comune"]
