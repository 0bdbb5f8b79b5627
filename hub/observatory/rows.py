"""Which registry rows are the district's own.

Rows received from another district under a convenzione (``hub.exchange.load``)
are stored with ``connector = "x.<sender>"`` and ``org = <sender>``. They are
the other district's people in charge: they never enter this district's own
tables (prese in carico, interventions, Third Sector, overlaps, coverage) and
are used only by the cross-district indicators (:mod:`hub.observatory.cross`).
"""

from __future__ import annotations

import sqlalchemy as sa

#: Connector prefix of received rows (the same rule ``hub.exchange.send`` uses).
RECEIVED_PREFIX = "x."


def own(table: sa.Table | sa.FromClause) -> sa.ColumnElement[bool]:
    """The row is the district's own (read by one of its connectors)."""
    return sa.not_(table.c.connector.startswith(RECEIVED_PREFIX, autoescape=True))


def received(table: sa.Table | sa.FromClause) -> sa.ColumnElement[bool]:
    """The row was received from another district."""
    return table.c.connector.startswith(RECEIVED_PREFIX, autoescape=True)
