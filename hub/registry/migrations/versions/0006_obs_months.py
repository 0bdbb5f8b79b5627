"""Observatory: per-(organisation × month) aggregates with roaring bitmaps of subjects.

``obs_months`` holds, per kind of record, organisation, calendar month and grouping key,
the additive counts and amounts and the set of subjects active in the month (a serialised
roaring bitmap of person ids), from which any period of whole months is answered and the
year tables are assembled (docs/indicators.md, "Pre-computed tables"). The table starts
empty; the stored year tables are dropped too, so the next ``raccordo sync`` or
``raccordo observatory refresh`` recomputes everything from the registry.

Revision ID: 0006_obs_months
Revises: 0005_storage
Create Date: 2026-12-01 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_obs_months"
down_revision = "0005_storage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "obs_months",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=520), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("cents", sa.BigInteger(), nullable=False),
        sa.Column("carry_n", sa.Integer(), nullable=False),
        sa.Column("carry_cents", sa.BigInteger(), nullable=False),
        sa.Column("people", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obs_months")),
        sa.UniqueConstraint(
            "kind", "month", "org", "key", name=op.f("uq_obs_months_kind_month_org_key")
        ),
    )
    op.execute("DELETE FROM obs_tables")
    op.execute("DELETE FROM obs_refresh")


def downgrade() -> None:
    op.drop_table("obs_months")
