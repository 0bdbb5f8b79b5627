"""Storage v2 (issue 11): integer person ids, binary 16-byte keys, provenance by reference.

The record tables and ``source_records`` are **rebuilt, not converted**: their rows are
dropped and every connector's cursor is forgotten, so the next ``raccordo sync`` re-reads
every source and writes the v2 shape (docs/architecture.md, "Storage v2").
Runs, quarantine, warnings, the web intake and the exchange log are kept; the observatory's
pre-aggregates are dropped (the next sync or ``raccordo observatory refresh`` recomputes
them). Received exchange packages are not re-read by a sync: ask the sender to send them
again (``raccordo exchange send`` is idempotent at the recipient).

Revision ID: 0005_storage
Revises: 0004_engine
Create Date: 2026-12-01 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_storage"
down_revision = "0004_engine"
branch_labels = None
depends_on = None

_RECORD_TABLES = ("subjects", "assessments", "case_episodes", "interventions", "need_signals")


def _record(name: str, *columns: sa.Column[object], owned: bool = True) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=16), nullable=False),
        sa.Column("source_record", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("org", "key_hash", name=op.f(f"uq_{name}_org_key_hash")),
    )
    if owned:
        op.create_index(op.f(f"ix_{name}_source_record"), name, ["source_record"])


def upgrade() -> None:
    for name in (*_RECORD_TABLES, "source_records"):
        op.drop_table(name)
    op.execute("DELETE FROM connector_state")
    op.execute("DELETE FROM obs_tables")
    op.execute("DELETE FROM obs_refresh")

    op.create_table(
        "pseudonyms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("epoch", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pseudonyms")),
        sa.UniqueConstraint("value", name=op.f("uq_pseudonyms_value")),
    )
    op.create_table(
        "streams",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_streams")),
        sa.UniqueConstraint("connector", "stream", name=op.f("uq_streams_connector_stream")),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.LargeBinary(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        sa.UniqueConstraint("stream_id", "key", name=op.f("uq_units_stream_id_key")),
    )
    op.create_table(
        "source_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream_id", sa.Integer(), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("record_hash", sa.LargeBinary(length=16), nullable=False),
        sa.Column("unit", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_records")),
        sa.UniqueConstraint("stream_id", "key", name=op.f("uq_source_records_stream_id_key")),
    )
    op.create_index(
        op.f("ix_source_records_stream_id_unit"), "source_records", ["stream_id", "unit"]
    )
    _record(
        "subjects",
        sa.Column("subject", sa.Integer(), nullable=False),
        sa.Column("household", sa.Integer(), nullable=True),
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("residence_comune_istat", sa.String(length=6), nullable=True),
        sa.Column("citizenship", sa.String(length=3), nullable=True),
        owned=False,
    )
    op.create_index(op.f("ix_subjects_subject"), "subjects", ["subject"])
    _record(
        "assessments",
        sa.Column("subject", sa.Integer(), nullable=False),
        sa.Column("assessed_on", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("disability", sa.Boolean(), nullable=True),
        sa.Column("non_self_sufficient", sa.Boolean(), nullable=True),
    )
    _record(
        "case_episodes",
        sa.Column("subject", sa.Integer(), nullable=False),
        sa.Column("area", sa.String(length=10), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("closed_on", sa.Date(), nullable=True),
    )
    _record(
        "interventions",
        sa.Column("subject", sa.Integer(), nullable=False),
        sa.Column("service_code", sa.String(length=20), nullable=False),
        sa.Column("area", sa.String(length=10), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("amount_co_paid", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("comune_istat", sa.String(length=6), nullable=True),
    )
    _record(
        "need_signals",
        sa.Column("subject", sa.Integer(), nullable=True),
        sa.Column("needs", sa.String(length=200), nullable=False),
        sa.Column("services_given", sa.String(length=300), nullable=False),
        sa.Column("comune_istat", sa.String(length=6), nullable=False),
        sa.Column("on", sa.Date(), nullable=False),
        sa.Column("referred_by_social_services", sa.Boolean(), nullable=False),
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
    )


def downgrade() -> None:
    raise NotImplementedError(
        "storage v2 cannot be turned back into v1 rows: restore the backup taken before "
        "the upgrade, or rebuild a v1 registry with the Raccordo release that wrote it"
    )
