"""data-quality warnings (hub/quality.py)

Revision ID: 0003_warnings
Revises: 0002_obs
Create Date: 2026-12-01 08:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_warnings"
down_revision = "0002_obs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "warnings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("location", sa.String(length=300), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=True),
        sa.Column("field", sa.String(length=120), nullable=True),
        sa.Column("rule", sa.String(length=60), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warnings")),
    )
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_warnings_connector_created_at"),
            ["connector", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_warnings_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_warnings_run_id"))
        batch_op.drop_index(batch_op.f("ix_warnings_connector_created_at"))
    op.drop_table("warnings")
