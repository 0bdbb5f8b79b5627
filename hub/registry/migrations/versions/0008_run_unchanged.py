"""The records a running run found unchanged, as bitmaps instead of rewritten rows.

A re-read used to set ``source_records.run_id`` on every unchanged record (one row
update each: most of what re-reading a file with one changed record cost). Now a run
appends, per batch, a serialised roaring bitmap of the ids it found unchanged to
``run_unchanged``; ``source_records.run_id`` is the last run that *loaded* the record.
Nothing to convert: the table starts empty (no run is running during an upgrade).

Revision ID: 0008_run_unchanged
Revises: 0007_person_keys
Create Date: 2026-12-01 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_run_unchanged"
down_revision = "0007_person_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_unchanged",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("records", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_unchanged")),
    )
    op.create_index(op.f("ix_run_unchanged_run_id"), "run_unchanged", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_run_unchanged_run_id"), table_name="run_unchanged")
    op.drop_table("run_unchanged")
