"""The one result shape of every observatory indicator: :class:`Table`.

A table is a grid of cells (rows × columns) with row totals, column totals and a
grand total. Every cell and total has a **key** that names the quantity it
measures independently of the table it appears in::

    DEMO-NO|2022-01-01..2022-12-31|interventi.n|area=FAM|org=CBV

Two tables (or two releases) showing the same quantity give it the same key:
that is how disclosure control (:mod:`hub.observatory.disclosure`) sees that a
column total of one table is the column total of another, or that a cell was
already published last month.

Keys are built from the *scope* (district and period), the *measure* and the
dimensions fixed for that cell (the table's filters, its row and column);
a total drops the dimension it adds up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Period:
    """A closed date interval ``start``–``end`` (both included)."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def year(cls, year: int) -> Period:
        return cls(dt.date(year, 1, 1), dt.date(year, 12, 31))

    @property
    def label(self) -> str:
        whole = (self.start.month, self.start.day, self.end.month, self.end.day) == (1, 1, 12, 31)
        if whole and self.start.year == self.end.year:
            return str(self.start.year)
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    def months(self) -> list[str]:
        """``YYYY-MM`` of every month the period touches."""
        out = []
        y, m = self.start.year, self.start.month
        while (y, m) <= (self.end.year, self.end.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


#: Dimension value used in keys for "all values" (a total).
ALL = "*"


@dataclass(frozen=True)
class Table:
    """One indicator as a grid, plus everything disclosure control needs to know.

    ``cells[i][j]`` is the value for ``rows[i]`` × ``cols[j]``; ``None`` means
    *missing* (not applicable / not computed), never zero.
    """

    #: Stable identifier of the table within a release (file name of the export).
    id: str
    title: str
    #: What a cell counts (``interventi``, ``persone``, ``euro``, ``segnalazioni``...).
    unit: str
    #: District code and period label: the population and period of every key.
    scope: str
    #: Measure name used in keys (tables showing the same measure share keys).
    measure: str
    row_dim: str
    row_label: str
    rows: tuple[str, ...]
    row_headings: tuple[str, ...]
    col_dim: str
    col_label: str
    cols: tuple[str, ...]
    col_headings: tuple[str, ...]
    cells: tuple[tuple[int | None, ...], ...]
    row_totals: tuple[int | None, ...]
    col_totals: tuple[int | None, ...]
    total: int | None
    #: True when totals are exactly the sums of the cells. When False (distinct
    #: people, multi-valued codes) totals are computed on their own.
    additive: bool = True
    #: Cells count people (or contacts): they are subject to the threshold rule.
    counts_people: bool = True
    #: False for tables about organisations, not people (no disclosure control).
    sensitive: bool = True
    #: Tables with the same pattern share one suppression pattern (same grid):
    #: e.g. number of interventions, people and amounts by area.
    pattern: str | None = None
    #: Dimensions fixed for the whole table (filters), e.g. ``{"org": "CBV"}``.
    fixed: tuple[tuple[str, str], ...] = ()
    #: Extra published identities: (key of a total, keys of its parts).
    relations: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: True values of keys used in ``relations`` but not shown (e.g. each entity's share
    #: of a district cell): disclosure control must keep the small ones unrecoverable.
    hidden: tuple[tuple[str, int | None], ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.row_headings) or len(self.cols) != len(self.col_headings):
            raise ValueError(f"{self.id}: headings do not match rows/columns")
        if len(self.cells) != len(self.rows) or any(len(r) != len(self.cols) for r in self.cells):
            raise ValueError(f"{self.id}: the grid is not rows × columns")
        if len(self.row_totals) != len(self.rows) or len(self.col_totals) != len(self.cols):
            raise ValueError(f"{self.id}: totals do not match the grid")

    # -- keys -----------------------------------------------------------------------
    def key(self, row: str = ALL, col: str = ALL) -> str:
        dims = dict(self.fixed)
        if row != ALL:
            dims[self.row_dim] = row
        if col != ALL:
            dims[self.col_dim] = col
        return key_of(self.scope, self.measure, dims)

    def positions(self) -> list[tuple[str, str, int | None]]:
        """Every (row, col, value) shown, totals included (``ALL`` for a total)."""
        out: list[tuple[str, str, int | None]] = []
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                out.append((r, c, self.cells[i][j]))
            out.append((r, ALL, self.row_totals[i]))
        for j, c in enumerate(self.cols):
            out.append((ALL, c, self.col_totals[j]))
        out.append((ALL, ALL, self.total))
        return out

    def equations(self) -> list[tuple[str, tuple[str, ...]]]:
        """Identities a reader can write: each total = the sum of its cells (by key).

        Given for non-additive tables too: disclosure control then assumes a
        reader stronger than reality (safe side).
        """
        eqs: list[tuple[str, tuple[str, ...]]] = []
        for r in self.rows:
            eqs.append((self.key(r, ALL), tuple(self.key(r, c) for c in self.cols)))
        for c in self.cols:
            eqs.append((self.key(ALL, c), tuple(self.key(r, c) for r in self.rows)))
        eqs.append((self.key(), tuple(self.key(r, ALL) for r in self.rows)))
        eqs.extend(self.relations)
        return [(tot, parts) for tot, parts in eqs if parts and parts != (tot,)]

    def value(self, row: str = ALL, col: str = ALL) -> int | None:
        if row == ALL and col == ALL:
            return self.total
        if row == ALL:
            return self.col_totals[self.cols.index(col)]
        if col == ALL:
            return self.row_totals[self.rows.index(row)]
        return self.cells[self.rows.index(row)][self.cols.index(col)]


def key_of(scope: str, measure: str, dims: dict[str, str]) -> str:
    return "|".join([scope, measure, *(f"{k}={dims[k]}" for k in sorted(dims))])


@dataclass
class GridBuilder:
    """Collects ``(row, col) -> value`` and totals, then makes a :class:`Table`."""

    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], int] = field(default_factory=dict)
    row_totals: dict[str, int] = field(default_factory=dict)
    col_totals: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def grid(self) -> tuple[tuple[int | None, ...], ...]:
        return tuple(tuple(self.cells.get((r, c), 0) for c in self.cols) for r in self.rows)

    def sums(self) -> None:
        """Totals as sums of the cells (additive measures)."""
        self.row_totals = {r: sum(self.cells.get((r, c), 0) for c in self.cols) for r in self.rows}
        self.col_totals = {c: sum(self.cells.get((r, c), 0) for r in self.rows) for c in self.cols}
        self.total = sum(self.row_totals.values())

    def table(
        self,
        *,
        row_headings: Sequence[str] | None = None,
        col_headings: Sequence[str] | None = None,
        **kw: object,
    ) -> Table:
        return Table(
            rows=tuple(self.rows),
            row_headings=tuple(row_headings if row_headings is not None else self.rows),
            cols=tuple(self.cols),
            col_headings=tuple(col_headings if col_headings is not None else self.cols),
            cells=self.grid(),
            row_totals=tuple(self.row_totals.get(r, 0) for r in self.rows),
            col_totals=tuple(self.col_totals.get(c, 0) for c in self.cols),
            total=self.total,
            **kw,  # type: ignore[arg-type]
        )


def table_to_dict(tb: Table) -> dict[str, object]:
    """A JSON-ready form of a table (see :func:`table_from_dict`): its fields, tuples
    as they are (JSON writes them as lists; no deep copy, a refresh writes hundreds)."""
    from dataclasses import fields

    return {f.name: getattr(tb, f.name) for f in fields(tb)}


def table_from_dict(data: dict[str, Any]) -> Table:
    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return Table(**{k: tup(v) for k, v in data.items()})


def column_of(tb: Table, col: str, rows: Sequence[str] | None = None) -> Table:
    """One column of a district table as that column's own table (e.g. one organisation's
    interventions): cells and row totals are the column, totals the column total. Rows
    where the column is zero are dropped. Valid when the column dimension is fixed for the
    new table (its keys then match the district table's). ``rows`` keeps those rows instead
    (tables sharing a suppression pattern must keep the same grid)."""
    from dataclasses import replace

    j = tb.cols.index(col)
    if rows is None:
        keep = [i for i, row in enumerate(tb.cells) if row[j]]
    else:
        keep = [tb.rows.index(r) for r in rows]
    cells = tuple((tb.cells[i][j],) for i in keep)
    return replace(
        tb,
        rows=tuple(tb.rows[i] for i in keep),
        row_headings=tuple(tb.row_headings[i] for i in keep),
        cols=(col,),
        col_headings=(tb.col_headings[j],),
        cells=cells,
        row_totals=tuple(c[0] for c in cells),
        col_totals=(tb.col_totals[j],),
        total=tb.col_totals[j],
        fixed=(*tb.fixed, (tb.col_dim, col)),
        pattern=(tb.pattern.rsplit("|", 1)[0] + f"|{col}") if tb.pattern else None,
        relations=(),
        hidden=(),
    )


def row_of(tb: Table, row: str) -> Table:
    """One row of a table as its own table (the transpose case of :func:`column_of`)."""
    from dataclasses import replace

    i = tb.rows.index(row)
    return replace(
        tb,
        rows=(row,),
        row_headings=(tb.row_headings[i],),
        cells=(tb.cells[i],),
        row_totals=(tb.row_totals[i],),
        col_totals=tb.cells[i],
        total=tb.row_totals[i],
        fixed=(*tb.fixed, (tb.row_dim, row)),
        pattern=(tb.pattern.rsplit("|", 1)[0] + f"|{row}") if tb.pattern else None,
        relations=(),
        hidden=(),
    )
