"""The parts of units whose records all loaded: what lets a changed file be re-read at
the cost of what changed in it (``unit_parts``, see hub/registry/tables.py).

Nothing to convert: the table starts empty; the first re-read of each changed file
after the upgrade reads it whole (as before) and fills it.

Revision ID: 0010_unit_parts
Revises: 0009_positions
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_unit_parts"
down_revision = "0009_positions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unit_parts",
        sa.Column("unit", sa.Integer(), nullable=False),
        sa.Column("key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("records", sa.LargeBinary(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("unit", "key", name=op.f("pk_unit_parts")),
    )


def downgrade() -> None:
    op.drop_table("unit_parts")
