"""Observatory: pre-computed indicator tables and their refresh marker.

Revision ID: 0002_obs
Revises: 0002_web
Create Date: 2026-11-23 02:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_obs"
down_revision = "0002_web"  # chained after the web app tables
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "obs_tables",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obs_tables")),
        sa.UniqueConstraint("kind", "year", "org", name=op.f("uq_obs_tables_kind_year_org")),
    )
    op.create_table(
        "obs_refresh",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=False),
        sa.Column("first_year", sa.SmallInteger(), nullable=True),
        sa.Column("last_year", sa.SmallInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obs_refresh")),
    )


def downgrade() -> None:
    op.drop_table("obs_refresh")
    op.drop_table("obs_tables")
