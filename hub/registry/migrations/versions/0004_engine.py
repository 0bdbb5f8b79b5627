"""Engine v2 (issue 11): runs record their stream and duplicates; one quarantine
entry per source record.

Revision ID: 0004_engine
Revises: 0002_obs
Create Date: 2026-12-01 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_engine"
down_revision = "0003_warnings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("duplicates", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("stream", sa.String(length=60), nullable=True))
    # Earlier runs could leave several entries for one source record: keep the latest.
    op.execute(
        "DELETE FROM quarantine WHERE source_key_hash IS NOT NULL AND id NOT IN ("
        "SELECT max(id) FROM quarantine WHERE source_key_hash IS NOT NULL "
        "GROUP BY connector, stream, source_key_hash)"
    )
    op.create_index(
        op.f("ix_quarantine_connector_stream_source_key_hash"),
        "quarantine",
        ["connector", "stream", "source_key_hash"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_quarantine_connector_stream_source_key_hash"), table_name="quarantine")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stream")
        batch.drop_column("duplicates")
