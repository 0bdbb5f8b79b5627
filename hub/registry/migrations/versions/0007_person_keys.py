"""Row keys from person keys (issue 11): the next sync of each connector maps every record again.

A row whose key names an identifier field (a subject keyed by its codice fiscale, an
assessment by person and date) was keyed by the pseudonym made epoch-independent, one group
operation per person; it is now keyed by the person key the pseudonymise stage computes beside
the pseudonym (one HMAC, :meth:`hub.pseudonyms.Pseudonymiser.person_key`). Old keys cannot be
converted (they are keyed hashes), so this migration makes the next ``raccordo sync`` of every
own connector read and map everything again, as a new mapping version does: each source
record's stored hash is cleared and each cursor forgotten. Re-mapped records replace the rows
they produced under the old keys. The district's own ``subjects`` rows (shared by many
records, so never removed by re-mapping one) are deleted here and written again by that
sync: **run ``raccordo sync`` after upgrading** (until then, birth year, sex and residence of
the own people are missing from the observatory). The other rows stay as they were until
their connector's next sync; rows received from other districts (``x.`` connectors, keyed by
the exchange) are not touched.

A source that is no longer readable (a file removed from the inbox) keeps its other rows
under the old keys, and its people have no subject row until a readable source names them.

Revision ID: 0007_person_keys
Revises: 0006_obs_months
Create Date: 2026-12-01 14:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0007_person_keys"
down_revision = "0006_obs_months"
branch_labels = None
depends_on = None

_OWN_STREAMS = "SELECT id FROM streams WHERE connector NOT LIKE 'x.%'"


def _map_everything_again() -> None:
    # A record hash of 16 zero bytes matches no record: each one is mapped again and replaces
    # what it produced; without a cursor, every unit (file, flow, page) is read again.
    zeros = "00" * 16
    nothing = f"X'{zeros}'" if _sqlite() else f"decode('{zeros}', 'hex')"
    op.execute(
        f"UPDATE source_records SET record_hash = {nothing} "  # noqa: S608 - constant SQL
        f"WHERE stream_id IN ({_OWN_STREAMS})"
    )
    op.execute("DELETE FROM connector_state WHERE connector NOT LIKE 'x.%'")
    # Subjects are shared by many records and never removed by re-mapping one: drop the own
    # ones now; the next sync writes them again under the new keys.
    op.execute(
        "DELETE FROM subjects WHERE source_record IN "  # noqa: S608 - constant SQL
        f"(SELECT id FROM source_records WHERE stream_id IN ({_OWN_STREAMS}))"
    )


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    _map_everything_again()


def downgrade() -> None:
    # The release before this one keys those rows the old way: the same re-mapping.
    _map_everything_again()
