"""Which registry rows are the district's own.

Rows received from another district under a convenzione (``hub.exchange.load``)
are written by runs of connector ``"x.<sender>"``, with ``org = <sender>``. They
are the other district's people in charge: they never enter this district's own
tables (prese in carico, interventions, Third Sector, overlaps, coverage) and
are used only by the cross-district indicators (:mod:`hub.observatory.cross`).

A row names the run that last wrote it (``run_id``, storage v2: provenance by
reference), so "received" is a semi-join on the small ``runs`` table.
"""

from __future__ import annotations

import sqlalchemy as sa

from hub.registry import tables as t

#: Connector prefix of received rows (the same rule ``hub.exchange.send`` uses).
RECEIVED_PREFIX = "x."


def _exchange_runs() -> sa.Select[tuple[int]]:
    return sa.select(t.runs.c.id).where(
        t.runs.c.connector.startswith(RECEIVED_PREFIX, autoescape=True)
    )


def own(table: sa.Table | sa.FromClause) -> sa.ColumnElement[bool]:
    """The row is the district's own (read by one of its connectors)."""
    return table.c.run_id.not_in(_exchange_runs())


def received(table: sa.Table | sa.FromClause) -> sa.ColumnElement[bool]:
    """The row was received from another district."""
    return table.c.run_id.in_(_exchange_runs())
