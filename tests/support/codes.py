"""Fictitious identifiers for tests (computed, never copied from anywhere)."""

from __future__ import annotations

import itertools

from hub.pseudonyms.identifiers import cf_check_character

DIGIT_POSITIONS = (6, 7, 9, 10, 12, 13, 14)


def omocodic_variants(cf: str) -> set[str]:
    """The code itself and every omocodic variant: 2**7 = 128 codes, each a different person."""
    out = set()
    for r in range(len(DIGIT_POSITIONS) + 1):
        for combo in itertools.combinations(DIGIT_POSITIONS, r):
            chars = list(cf[:15])
            for p in combo:
                chars[p] = "LMNPQRSTUV"[int(chars[p])]
            first15 = "".join(chars)
            out.add(first15 + cf_check_character(first15))
    return out
