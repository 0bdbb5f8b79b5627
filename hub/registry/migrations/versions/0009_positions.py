"""Unkeyed rows by position (issue 11): no key hash, and one index fewer, for most rows.

An output without a mapping ``key`` (an intervention, in the shipped mappings) was identified
by a keyed hash of (its source record's key, model, n-th output): a random 16-byte value with
an index of its own, ``(org, key_hash)``, besides the ``source_record`` index. It is now
identified by ``(source_record, position)``, the n-th output of its model in the record:
``key_hash`` is NULL for it. In each table a source record owns (assessments, case episodes,
interventions, need signals):

* ``position`` is added; ``key_hash`` may be NULL, exactly one of the two is set (a check);
* ``(org, key_hash)`` unique becomes a partial unique index, of the keyed rows only;
* the ``source_record`` index becomes ``(source_record, position)`` unique: the conflict
  target of unkeyed rows, and still what finds the rows of a source record.

Old unkeyed rows cannot be told from keyed ones (both are keyed hashes), so, as
``0007_person_keys`` did, the next ``raccordo sync`` of every own connector maps every record
again (each source record's stored hash is cleared and each cursor forgotten): it writes the
unkeyed rows by position and removes the ones under the old keys. **Run ``raccordo sync``
after upgrading**; until then the rows are those of before. Rows received from other
districts (``x.`` connectors) are keyed by the exchange and are not touched.

The downgrade deletes the rows that have a position (the release before keys them by a hash
of the source key, which the registry does not keep) and makes the next sync map everything
again, which writes them back.

Revision ID: 0009_positions
Revises: 0008_run_unchanged
Create Date: 2026-12-01 16:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_positions"
down_revision = "0008_run_unchanged"
branch_labels = None
depends_on = None

#: The tables a source record owns (``hub.registry.tables.OWNED_KINDS``).
_OWNED = ("assessments", "case_episodes", "interventions", "need_signals")
_OWN_STREAMS = "SELECT id FROM streams WHERE connector NOT LIKE 'x.%'"
_KEYED = "key_hash IS NOT NULL"
_KEY = sa.LargeBinary(length=16)


def _map_everything_again() -> None:
    # A record hash of 16 zero bytes matches no record: each one is mapped again and replaces
    # what it produced; without a cursor, every unit (file, flow, page) is read again.
    zeros = "00" * 16
    nothing = (
        f"X'{zeros}'" if op.get_bind().dialect.name == "sqlite" else f"decode('{zeros}', 'hex')"
    )
    op.execute(
        f"UPDATE source_records SET record_hash = {nothing} "  # noqa: S608 - constant SQL
        f"WHERE stream_id IN ({_OWN_STREAMS})"
    )
    op.execute("DELETE FROM connector_state WHERE connector NOT LIKE 'x.%'")


def upgrade() -> None:
    for name in _OWNED:
        op.drop_index(op.f(f"ix_{name}_source_record"), table_name=name)
        with op.batch_alter_table(name) as b:
            b.add_column(sa.Column("position", sa.SmallInteger(), nullable=True))
            b.alter_column("key_hash", existing_type=_KEY, nullable=True)
            b.drop_constraint(op.f(f"uq_{name}_org_key_hash"), type_="unique")
            b.create_unique_constraint(
                op.f(f"uq_{name}_source_record_position"), ["source_record", "position"]
            )
            b.create_check_constraint(
                op.f(f"ck_{name}_identity"), "(key_hash IS NULL) <> (position IS NULL)"
            )
        op.create_index(
            op.f(f"ix_{name}_org_key_hash"),
            name,
            ["org", "key_hash"],
            unique=True,
            sqlite_where=sa.text(_KEYED),
            postgresql_where=sa.text(_KEYED),
        )
    _map_everything_again()


def downgrade() -> None:
    for name in _OWNED:
        op.execute(f"DELETE FROM {name} WHERE key_hash IS NULL")  # noqa: S608 - constant SQL
        op.drop_index(op.f(f"ix_{name}_org_key_hash"), table_name=name)
        with op.batch_alter_table(name) as b:
            b.drop_constraint(op.f(f"ck_{name}_identity"), type_="check")
            b.drop_constraint(op.f(f"uq_{name}_source_record_position"), type_="unique")
            b.drop_column("position")
            b.alter_column("key_hash", existing_type=_KEY, nullable=False)
            b.create_unique_constraint(op.f(f"uq_{name}_org_key_hash"), ["org", "key_hash"])
        op.create_index(op.f(f"ix_{name}_source_record"), name, ["source_record"])
    _map_everything_again()
