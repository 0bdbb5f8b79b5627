"""Initial registry schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 15:54:49.668573
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=100), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=80), nullable=False),
        sa.Column("mapping_version", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("assessed_on", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("disability", sa.Boolean(), nullable=True),
        sa.Column("non_self_sufficient", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessments")),
        sa.UniqueConstraint("org", "key_hash", name=op.f("uq_assessments_org_key_hash")),
    )
    with op.batch_alter_table("assessments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_assessments_org_source_key_hash"),
            ["org", "source_key_hash"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_assessments_subject"), ["subject"], unique=False)

    op.create_table(
        "case_episodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=100), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=80), nullable=False),
        sa.Column("mapping_version", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("area", sa.String(length=10), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_episodes")),
        sa.UniqueConstraint("org", "key_hash", name=op.f("uq_case_episodes_org_key_hash")),
    )
    with op.batch_alter_table("case_episodes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_case_episodes_org_source_key_hash"),
            ["org", "source_key_hash"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_case_episodes_subject"), ["subject"], unique=False)

    op.create_table(
        "connector_state",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connector", "stream", name=op.f("pk_connector_state")),
    )
    op.create_table(
        "districts",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pseudonym_domain", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_districts")),
    )
    op.create_table(
        "interventions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=100), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=80), nullable=False),
        sa.Column("mapping_version", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("service_code", sa.String(length=20), nullable=False),
        sa.Column("area", sa.String(length=10), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("amount_co_paid", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("comune_istat", sa.String(length=6), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interventions")),
        sa.UniqueConstraint("org", "key_hash", name=op.f("uq_interventions_org_key_hash")),
    )
    with op.batch_alter_table("interventions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_interventions_org_source_key_hash"),
            ["org", "source_key_hash"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_interventions_subject"), ["subject"], unique=False)

    op.create_table(
        "need_signals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=100), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=80), nullable=False),
        sa.Column("mapping_version", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=True),
        sa.Column("needs", sa.String(length=200), nullable=False),
        sa.Column("services_given", sa.String(length=300), nullable=False),
        sa.Column("comune_istat", sa.String(length=6), nullable=False),
        sa.Column("on", sa.Date(), nullable=False),
        sa.Column("referred_by_social_services", sa.Boolean(), nullable=False),
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_need_signals")),
        sa.UniqueConstraint("org", "key_hash", name=op.f("uq_need_signals_org_key_hash")),
    )
    with op.batch_alter_table("need_signals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_need_signals_org_source_key_hash"),
            ["org", "source_key_hash"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_need_signals_subject"), ["subject"], unique=False)

    op.create_table(
        "organisations",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("district", sa.String(length=40), nullable=True),
        sa.Column("tax_code", sa.String(length=11), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_organisations")),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("location", sa.String(length=300), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=True),
        sa.Column("field", sa.String(length=120), nullable=True),
        sa.Column("rule", sa.String(length=60), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_connector_created_at"),
            ["connector", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_quarantine_run_id"), ["run_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("connector_type", sa.String(length=40), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("mapping", sa.String(length=80), nullable=False),
        sa.Column("mapping_version", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("read", sa.Integer(), nullable=False),
        sa.Column("loaded", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("source_errors", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("unmapped_codes", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_runs_connector_started_at"), ["connector", "started_at"], unique=False
        )

    op.create_table(
        "source_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("stream", sa.String(length=60), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.Column("unit_hash", sa.String(length=100), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_records")),
        sa.UniqueConstraint(
            "connector",
            "stream",
            "source_key_hash",
            name=op.f("uq_source_records_connector_stream_source_key_hash"),
        ),
    )
    with op.batch_alter_table("source_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_source_records_connector_stream_unit_hash"),
            ["connector", "stream", "unit_hash"],
            unique=False,
        )

    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=100), nullable=False),
        sa.Column("source_key_hash", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=80), nullable=False),
        sa.Column("mapping_version", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("household", sa.String(length=80), nullable=True),
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("residence_comune_istat", sa.String(length=6), nullable=True),
        sa.Column("citizenship", sa.String(length=3), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
        sa.UniqueConstraint("org", "key_hash", name=op.f("uq_subjects_org_key_hash")),
    )
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subjects_org_source_key_hash"), ["org", "source_key_hash"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_subjects_subject"), ["subject"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subjects_subject"))
        batch_op.drop_index(batch_op.f("ix_subjects_org_source_key_hash"))

    op.drop_table("subjects")
    with op.batch_alter_table("source_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_source_records_connector_stream_unit_hash"))

    op.drop_table("source_records")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_connector_started_at"))

    op.drop_table("runs")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_run_id"))
        batch_op.drop_index(batch_op.f("ix_quarantine_connector_created_at"))

    op.drop_table("quarantine")
    op.drop_table("organisations")
    with op.batch_alter_table("need_signals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_need_signals_subject"))
        batch_op.drop_index(batch_op.f("ix_need_signals_org_source_key_hash"))

    op.drop_table("need_signals")
    with op.batch_alter_table("interventions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interventions_subject"))
        batch_op.drop_index(batch_op.f("ix_interventions_org_source_key_hash"))

    op.drop_table("interventions")
    op.drop_table("districts")
    op.drop_table("connector_state")
    with op.batch_alter_table("case_episodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_episodes_subject"))
        batch_op.drop_index(batch_op.f("ix_case_episodes_org_source_key_hash"))

    op.drop_table("case_episodes")
    with op.batch_alter_table("assessments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assessments_subject"))
        batch_op.drop_index(batch_op.f("ix_assessments_org_source_key_hash"))

    op.drop_table("assessments")
