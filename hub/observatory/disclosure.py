"""Disclosure control for everything the observatory shows outside the analyst role.

``protect(tables, k, ledger)`` returns the tables with some values replaced by
:data:`SUPPRESSED`:

1. **Primary suppression**: a cell or total that counts people (or contacts)
   and is between 1 and k−1 is suppressed. Tables in the same *pattern*
   (interventions, people and amounts of the same grid) share the suppression
   pattern, so an amount never reveals what the count of people hides. Zeros
   are published.
2. **Sticky suppression**: a quantity suppressed in an earlier release (same
   key, same value; see the ledger) is suppressed again.
3. **Complementary suppression**: the reader's knowledge is written as a linear
   system: every published identity (each total = the sum of its cells, for
   every table of this release *and* of earlier releases in the ledger; cells
   of different tables with the same key are one unknown) with the published
   values substituted. A suppressed value is *recoverable* when it is
   determined by that system (the unit vector of the unknown lies in the row
   space of the coefficient matrix). While some suppressed value is
   recoverable, the smallest published non-zero cell of an identity involving
   it is suppressed too (totals only when no cell can be), and the check runs
   again. The check is exact linear algebra over GF(2^61−1), sparse.

For tables whose totals are not sums (distinct people, multi-valued codes),
the identities are still assumed: the reader is taken to be stronger than
they are.

The **ledger** (:class:`Ledger`, a JSON file in the workspace) keeps, for
each released quantity, its value, whether it was suppressed, and the
identities released with it. It holds the true values of suppressed cells, so
it is as confidential as the registry: never publish it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from hub.observatory.table import ALL, Table

#: The ISTAT minimum threshold: k below this is refused.
MIN_K: Final = 3
DEFAULT_K: Final = 5
_P: Final = (1 << 61) - 1


class Suppressed:
    """The marker of a suppressed value: distinct from 0 and from missing (None)."""

    _instance: Suppressed | None = None

    def __new__(cls) -> Suppressed:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SUPPRESSED"

    def __bool__(self) -> bool:
        raise TypeError("SUPPRESSED has no truth value: compare with `is SUPPRESSED`")


SUPPRESSED: Final = Suppressed()

Value = int | Suppressed | None

#: States of a quantity in the ledger.
PUBLISHED: Final = "p"
WITHHELD: Final = "s"  # suppressed in a release
HIDDEN: Final = "h"  # never shown, but in a published identity (e.g. one entity's share)


def check_k(k: int) -> int:
    if not isinstance(k, int) or k < MIN_K:
        raise ValueError(f"k must be an integer >= {MIN_K} (the ISTAT minimum), got {k!r}")
    return k


@dataclass(frozen=True)
class ProtectedTable:
    """A table as it may be shown: suppressed values replaced by :data:`SUPPRESSED`.

    ``spec`` is the original table with every suppressed value set to None, so
    the true values are not carried along.
    """

    spec: Table
    suppressed: frozenset[tuple[str, str]]
    #: Key of each shown position (revision-qualified when a value changed).
    keys: dict[tuple[str, str], str]
    k: int

    def value(self, row: str = ALL, col: str = ALL) -> Value:
        if (row, col) in self.suppressed:
            return SUPPRESSED
        return self.spec.value(row, col)

    @property
    def cells(self) -> list[list[Value]]:
        return [[self.value(r, c) for c in self.spec.cols] for r in self.spec.rows]

    @property
    def row_totals(self) -> list[Value]:
        return [self.value(r, ALL) for r in self.spec.rows]

    @property
    def col_totals(self) -> list[Value]:
        return [self.value(ALL, c) for c in self.spec.cols]

    @property
    def total(self) -> Value:
        return self.value()

    def key(self, row: str = ALL, col: str = ALL) -> str:
        return self.keys[(row, col)]


# -- ledger -------------------------------------------------------------------------
@dataclass
class Ledger:
    """Record of released tables: quantities (by key) and identities released.

    ``path=None`` keeps it in memory (tests, previews that are never shown).
    """

    path: Path | None = None
    values: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    equations: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Ledger:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != 1:
            raise ValueError(f"{path}: unknown ledger format {data.get('format')!r}")
        return cls(
            path,
            {k: (v[0], str(v[1])) for k, v in data["values"].items()},
            [(e[0], tuple(e[1])) for e in data["equations"]],
            list(data["releases"]),
        )

    def resolve(self, key: str, value: int | None) -> str:
        """The revision-qualified key for ``value``: the key itself while the value is the
        one released before (or nothing was), else ``key#2``, ``key#3``..."""
        n = 1
        while True:
            vkey = key if n == 1 else f"{key}#{n}"
            known = self.values.get(vkey)
            if known is None or known[0] == value:
                return vkey
            n += 1

    def record(self, release: Release, label: str) -> None:
        """Add a release and save (atomically) when the ledger has a path."""
        for vkey, (value, state) in release.values.items():
            prev = self.values.get(vkey)
            states = {state, prev[1] if prev else state}
            merged = next(s for s in (PUBLISHED, WITHHELD, HIDDEN) if s in states)
            self.values[vkey] = (value, merged)
        seen = set(self.equations)
        for eq in release.equations:
            if eq not in seen:
                self.equations.append(eq)
                seen.add(eq)
        self.releases.append(
            {
                "label": label,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "k": release.k,
                "tables": [p.spec.id for p in release.tables],
            }
        )
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": 1,
            "note": "Confidential: true values of suppressed cells. Never publish this file.",
            "releases": self.releases,
            "values": {k: [v, s] for k, (v, s) in sorted(self.values.items())},
            "equations": [[t, list(p)] for t, p in self.equations],
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Release:
    tables: list[ProtectedTable]
    k: int
    #: revision-qualified key -> (true value, state): for the ledger only.
    values: dict[str, tuple[int | None, str]]
    equations: list[tuple[str, tuple[str, ...]]]


# -- protection ---------------------------------------------------------------------
def protect(
    tables: Sequence[Table], k: int = DEFAULT_K, ledger: Ledger | None = None
) -> list[ProtectedTable]:
    """The tables with primary, sticky and complementary suppression applied."""
    return protect_release(tables, k, ledger).tables


def protect_release(
    tables: Sequence[Table],
    k: int = DEFAULT_K,
    ledger: Ledger | None = None,
    *,
    complementary: bool = True,
) -> Release:
    """:func:`protect`, keeping what the ledger must record. ``complementary=False``
    applies primary and sticky suppression only: unsafe, for tests that show why."""
    check_k(k)
    ledger = ledger if ledger is not None else Ledger()
    ids = [tb.id for tb in tables]
    if len(set(ids)) != len(ids):
        raise ValueError("two tables in one release have the same id")

    # Positions, their revision-qualified keys and the groups suppressed together.
    Pos = tuple[int, str, str]
    positions: list[Pos] = []
    vkey_of: dict[Pos, str] = {}
    value_of: dict[Pos, int | None] = {}
    resolved: dict[str, str] = {}
    by_key: dict[str, Pos] = {}
    for ti, tb in enumerate(tables):
        for r, c, v in tb.positions():
            pos = (ti, r, c)
            positions.append(pos)
            key = tb.key(r, c)
            if key in resolved and value_of[by_key[key]] != v:
                raise ValueError(
                    f"{tb.id}: {key} has two values in one release "
                    f"({value_of[by_key[key]]} in {tables[by_key[key][0]].id}, {v} here)"
                )
            by_key.setdefault(key, pos)
            vkey = resolved.setdefault(key, ledger.resolve(key, v))
            vkey_of[pos] = vkey
            value_of[pos] = v
    shown = set(vkey_of.values())
    hidden: dict[str, int | None] = {}
    for tb in tables:
        for key, v in tb.hidden:
            vkey = resolved.setdefault(key, ledger.resolve(key, v))
            if vkey not in shown:
                hidden[vkey] = v
    uf = _UnionFind()
    by_vkey: dict[str, Pos] = {}
    by_unit: dict[tuple[str, str, str], Pos] = {}
    for pos in positions:
        uf.add(pos)
        first = by_vkey.setdefault(vkey_of[pos], pos)
        uf.union(first, pos)
        tb = tables[pos[0]]
        if tb.pattern:
            unit = (tb.pattern, pos[1], pos[2])
            uf.union(by_unit.setdefault(unit, pos), pos)
    protectable = {
        uf.find(p) for p in positions if tables[p[0]].sensitive and value_of[p] is not None
    }
    # A group with a non-sensitive position cannot be suppressed.
    for p in positions:
        if not tables[p[0]].sensitive:
            protectable.discard(uf.find(p))

    suppressed_groups: set[Pos] = set()
    primary: set[Pos] = set()
    for p in positions:
        tb, v = tables[p[0]], value_of[p]
        g = uf.find(p)
        if g not in protectable:
            continue
        if tb.counts_people and v is not None and 0 < v < k:
            suppressed_groups.add(g)
            primary.add(g)
        prev = ledger.values.get(vkey_of[p])
        if prev is not None and prev[1] == WITHHELD:
            suppressed_groups.add(g)

    equations = _dedup(
        (_qualify(tot, resolved, ledger), tuple(_qualify(x, resolved, ledger) for x in parts))
        for tb in tables
        for tot, parts in tb.equations()
    )
    all_equations = _dedup([*ledger.equations, *equations])
    vkey_group: dict[str, Pos] = {vkey_of[p]: uf.find(p) for p in positions}
    # Published before: the reader knows it, whatever this release shows.
    already_public = {vk for vk, (_, st) in ledger.values.items() if st == PUBLISHED}
    variables = {x for tot, parts in all_equations for x in (tot, *parts)}

    members_vkeys: dict[Pos, set[str]] = defaultdict(set)
    for vk, g in vkey_group.items():
        members_vkeys[g].add(vk)

    def group_vkeys_all(g: Pos) -> set[str]:
        return members_vkeys[g]

    # What earlier releases already give away (with nothing of this release shown): it
    # cannot be protected any more, and needs no protecting from this release.
    past = determined(_linear_rows(all_equations, variables - already_public))

    # Hiding what is known anyway protects nothing: publish it (unless it is small, which
    # only an unsafe earlier release could have given away), and never use it as a complement.
    for vk in past:
        g = vkey_group.get(vk)
        if g is not None and g not in primary and group_vkeys_all(g) <= past:
            suppressed_groups.discard(g)
            protectable.discard(g)

    def must_stay_unknown(vk: str) -> bool:
        """Values the reader must not be able to compute: suppressed ones (now or
        before), and never-shown shares that are small or of unknown size."""
        if vk in past:
            return False
        if vk in vkey_group:
            return vkey_group[vk] in suppressed_groups
        if vk in hidden:
            v = hidden[vk]
            return v is None or 0 < v < k
        prev = ledger.values.get(vk)
        if prev is None:
            return True
        if prev[1] == WITHHELD:
            return True
        return prev[1] == HIDDEN and (prev[0] is None or 0 < prev[0] < k)

    group_value: dict[Pos, int] = {}
    for p in positions:
        v = value_of[p]
        g = uf.find(p)
        group_value[g] = max(group_value.get(g, 0), abs(v) if v is not None else 0)
    is_total = {uf.find(p): (p[1] == ALL or p[2] == ALL) for p in positions}
    for p in positions:
        if p[1] != ALL and p[2] != ALL:
            is_total[uf.find(p)] = False

    eq_of: dict[str, list[int]] = defaultdict(list)
    for i, (tot, parts) in enumerate(all_equations):
        for x in {tot, *parts}:
            eq_of[x].append(i)
    group_vkeys = members_vkeys

    for _round in range(100_000 if complementary else 0):
        unknown = {
            vk
            for vk in variables
            if vk not in already_public
            and (vk not in vkey_group or vkey_group[vk] in suppressed_groups)
        }
        exposed = {vk for vk in determined(_linear_rows(all_equations, unknown))}
        exposed = {vk for vk in exposed if must_stay_unknown(vk)}
        if not exposed:
            break

        def n_unknown(i: int, unknown: set[str] = unknown) -> int:
            tot, parts = all_equations[i]
            return len({tot, *parts} & unknown)

        # The exposed value pinned most directly (an identity with fewest unknowns).
        u = min(exposed, key=lambda v: (min((n_unknown(i) for i in eq_of[v]), default=0), v))

        def score(g: Pos, unknown: set[str] = unknown) -> tuple[Any, ...]:
            # Prefer cells over totals, complements that share an identity with values
            # already suppressed (closing a cycle), then small non-zero values.
            links = sum(1 for vk in group_vkeys[g] for i in eq_of[vk] if n_unknown(i, unknown) > 0)
            return (is_total[g], -links, group_value[g] == 0, group_value[g], str(g))

        # The identities pinning u most directly (fewest unknowns) first.
        eqs = sorted(eq_of[u], key=n_unknown)
        choice: Pos | None = None
        for width in sorted({n_unknown(i) for i in eqs}):
            cands = [
                g
                for i in eqs
                if n_unknown(i) == width
                for x in {all_equations[i][0], *all_equations[i][1]}
                if (g := vkey_group.get(x)) is not None
                and g in protectable
                and g not in suppressed_groups
            ]
            if cands:
                choice = min(cands, key=score)
                break
        if choice is None:
            found = _any_complement(
                u, all_equations, vkey_group, suppressed_groups, protectable, group_value
            )
            if found:
                choice = min(found, key=score)
        if choice is None:
            raise RuntimeError(
                "disclosure control cannot protect this release: a suppressed value is "
                "determined by earlier releases alone"
            )
        suppressed_groups.add(choice)
    else:
        if complementary:  # pragma: no cover - each round suppresses one more group
            raise RuntimeError("disclosure control did not converge")

    out: list[ProtectedTable] = []
    values: dict[str, tuple[int | None, str]] = {vk: (v, HIDDEN) for vk, v in hidden.items()}
    for ti, tb in enumerate(tables):
        sup = frozenset(
            (r, c) for (i, r, c) in positions if i == ti and uf.find((i, r, c)) in suppressed_groups
        )
        keys = {(r, c): vkey_of[(i, r, c)] for (i, r, c) in positions if i == ti}
        for (r, c), vk in keys.items():
            values[vk] = (value_of[(ti, r, c)], WITHHELD if (r, c) in sup else PUBLISHED)
        spec = replace(
            _strip(tb, sup),
            relations=tuple(
                (_qualify(tot, resolved, ledger), tuple(_qualify(x, resolved, ledger) for x in ps))
                for tot, ps in tb.relations
            ),
        )
        out.append(ProtectedTable(spec, sup, keys, k))
    return Release(out, k, values, equations)


def _strip(tb: Table, sup: frozenset[tuple[str, str]]) -> Table:
    def v(r: str, c: str) -> int | None:
        return None if (r, c) in sup else tb.value(r, c)

    return replace(
        tb,
        hidden=(),
        cells=tuple(tuple(v(r, c) for c in tb.cols) for r in tb.rows),
        row_totals=tuple(v(r, ALL) for r in tb.rows),
        col_totals=tuple(v(ALL, c) for c in tb.cols),
        total=v(ALL, ALL),
    )


def _qualify(key: str, resolved: dict[str, str], ledger: Ledger) -> str:
    # A key neither shown nor hidden here: its latest revision in the ledger, if any.
    if key in resolved:
        return resolved[key]
    n = 1
    while f"{key}#{n + 1}" in ledger.values:
        n += 1
    return key if n == 1 else f"{key}#{n}"


def _dedup(
    eqs: Iterable[tuple[str, tuple[str, ...]]],
) -> list[tuple[str, tuple[str, ...]]]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for eq in eqs:
        if eq not in seen:
            seen.add(eq)
            out.append(eq)
    return out


def _linear_rows(
    equations: Iterable[tuple[str, tuple[str, ...]]], unknown: set[str]
) -> list[dict[str, int]]:
    """Each identity restricted to its unknowns (known values moved to the constant side)."""
    rows = []
    for tot, parts in equations:
        row: dict[str, int] = defaultdict(int)
        if tot in unknown:
            row[tot] -= 1
        for x in parts:
            if x in unknown:
                row[x] += 1
        clean = {v: c for v, c in row.items() if c}
        if clean:
            rows.append(clean)
    return rows


def determined(rows: Iterable[dict[str, int]]) -> set[str]:
    """Unknowns whose value the linear system fixes (sparse elimination mod 2^61−1).

    The system is put in reduced row echelon form; an unknown is determined
    exactly when some reduced row has it as its only entry.
    """
    pivots: dict[str, dict[str, int]] = {}
    where: dict[str, set[str]] = defaultdict(set)  # var -> pivots whose row holds it
    for raw in rows:
        row = {v: c % _P for v, c in raw.items() if c % _P}
        for v in [v for v in row if v in pivots]:
            c = row.get(v, 0)
            if c:
                for w, d in pivots[v].items():
                    nv = (row.get(w, 0) - c * d) % _P
                    if nv:
                        row[w] = nv
                    else:
                        row.pop(w, None)
        if not row:
            continue
        v0 = min(row, key=lambda v: (len(where.get(v, ())), v))
        inv = pow(row[v0], _P - 2, _P)
        row = {w: (d * inv) % _P for w, d in row.items()}
        for pv in list(where.get(v0, ())):
            prow = pivots[pv]
            c = prow.get(v0, 0)
            if not c:
                continue
            for w, d in row.items():
                nv = (prow.get(w, 0) - c * d) % _P
                if nv:
                    if w not in prow:
                        where[w].add(pv)
                    prow[w] = nv
                else:
                    if w in prow:
                        del prow[w]
                        where[w].discard(pv)
        pivots[v0] = row
        for w in row:
            where[w].add(v0)
    return {pv for pv, row in pivots.items() if len(row) == 1}


def _any_complement(
    u: str,
    equations: Sequence[tuple[str, tuple[str, ...]]],
    vkey_group: dict[str, Any],
    suppressed: set[Any],
    protectable: set[Any],
    group_value: dict[Any, int],
) -> list[Any] | None:
    """Fallback: a protectable published group anywhere in ``u``'s connected identities."""
    seen = {u}
    frontier = [u]
    neighbours: dict[str, set[str]] = defaultdict(set)
    for tot, parts in equations:
        allv = {tot, *parts}
        for x in allv:
            neighbours[x] |= allv
    found = []
    while frontier:
        x = frontier.pop()
        for y in neighbours[x]:
            if y in seen:
                continue
            seen.add(y)
            g = vkey_group.get(y)
            if g is not None and g in protectable and g not in suppressed:
                found.append(g)
            frontier.append(y)
    return found or None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def add(self, x: Any) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: Any) -> Any:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
