"""Alembic environment for the registry.

Run programmatically by :func:`hub.registry.migrate`, which passes an open
connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from hub.registry.tables import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only via `alembic` CLI, which we do not ship
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
