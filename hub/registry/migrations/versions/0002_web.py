"""web app: accounts, Third Sector intake, API tokens

Revision ID: 0002_web
Revises: 0001
Create Date: 2026-11-23 01:49:19.903820
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_web"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=80), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "ets_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entry_uuid", sa.String(length=36), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=True),
        sa.Column("identifier_kind", sa.String(length=8), nullable=False),
        sa.Column("tag", sa.String(length=12), nullable=True),
        sa.Column("needs", sa.String(length=200), nullable=False),
        sa.Column("services_given", sa.String(length=300), nullable=False),
        sa.Column("comune_istat", sa.String(length=6), nullable=False),
        sa.Column("on", sa.Date(), nullable=False),
        sa.Column("referred_by_social_services", sa.Boolean(), nullable=False),
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ets_entries")),
        sa.UniqueConstraint("entry_uuid", name=op.f("uq_ets_entries_entry_uuid")),
        sa.UniqueConstraint("seq", name=op.f("uq_ets_entries_seq")),
    )
    with op.batch_alter_table("ets_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ets_entries_org_on"), ["org", "on"], unique=False)

    op.create_table(
        "web_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("org", sa.String(length=40), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_users")),
        sa.UniqueConstraint("username", name=op.f("uq_web_users_username")),
    )


def downgrade() -> None:
    op.drop_table("web_users")
    with op.batch_alter_table("ets_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ets_entries_org_on"))

    op.drop_table("ets_entries")
    op.drop_table("api_tokens")
