"""Registry tables (SQLAlchemy Core). Alembic migrations in ``migrations/``
must produce exactly this metadata (a test compares them).

Storage v2 (issue 11, migration ``0005_storage``): what the registry keeps per record
is small and fixed-width.

* **People are integers.** A pseudonym is stored once, in :data:`pseudonyms`
  (epoch + the 32-byte group element); record tables hold its integer id in
  ``subject`` / ``household``. Key rotation rewrites that one table.
* **Keys are 16 bytes.** ``key_hash`` (a keyed row's identity) and the source-record keys
  are the first 16 bytes of keyed hashes, stored binary (:func:`hub.registry.h16`).
* **Unkeyed rows are positions** (migration ``0009_positions``). An output without a
  mapping ``key`` (an intervention: the n-th of its model in a record) is identified by
  ``(source_record, position)``, not by a hash: no ``key_hash``, no index of its own.
* **Provenance by reference.** A record row names the source record that produced it
  (``source_record`` → :data:`source_records` ``id``) and the run that last wrote it;
  connector, mapping and time are on that run, not copied into every row.
* **One record hash.** Whether a source record changed is decided by its keyed
  record hash in :data:`source_records`; rows carry no content hash (an upsert leaves
  a row whose values are the same untouched).

Indexes, each for a query or a uniqueness rule (docs/architecture.md lists them):
``(org, key_hash)`` unique in every record table, of the keyed rows only in the tables a
source record owns (the upsert's conflict target for keyed rows); ``(source_record,
position)`` unique in the tables a source record owns (the conflict target of unkeyed rows,
and by its first column what replacing or removing a changed, cancelled or vanished
record's rows looks up); ``subjects.subject`` (a person's rows: erasure, conversion for
exchange). No table has a column for a clear identifier.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Text pseudonyms (``v2.<epoch>.<base64url>``): only the web intake keeps them.
PSEUDONYM = sa.String(80)
HASH = sa.String(100)
CODE = sa.String(40)
#: 16 bytes of a keyed hash (:func:`hub.registry.h16`).
KEY = sa.LargeBinary(16)
#: A person (or household): the id of its row in :data:`pseudonyms`.
PERSON = sa.Integer()

#: Every pseudonym the registry holds, once. ``value`` is the 32-byte ristretto255 element
#: ``k[domain, epoch] · H(identifier)``; its text form is ``v2.<epoch>.<base64url(value)>``.
pseudonyms = sa.Table(
    "pseudonyms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("epoch", sa.SmallInteger, nullable=False),
    sa.Column("value", sa.LargeBinary(32), nullable=False),
    sa.UniqueConstraint("value"),
)


#: The rows of an owned table that have a ``key_hash`` (the others have a ``position``).
KEYED_ROWS = "key_hash IS NOT NULL"


def _record_table(name: str, *columns: sa.schema.SchemaItem, owned: bool = True) -> sa.Table:
    """A record table. In a table a source record owns, a row is identified either by
    ``key_hash`` (an output with a mapping ``key``: many records may write the same row)
    or by ``position``, the n-th output of its model in the record ``source_record``
    (an output without a key): exactly one of the two is set."""
    identity: list[sa.schema.SchemaItem]
    if owned:
        identity = [
            sa.Column("key_hash", KEY),
            # The source record that produced the row (source_records.id).
            sa.Column("source_record", sa.Integer, nullable=False),
            # Unkeyed rows: the row is the position-th output of its model in the record.
            sa.Column("position", sa.SmallInteger),
            sa.Index(
                None,
                "org",
                "key_hash",
                unique=True,
                sqlite_where=sa.text(KEYED_ROWS),
                postgresql_where=sa.text(KEYED_ROWS),
            ),
            sa.UniqueConstraint("source_record", "position"),
            sa.CheckConstraint("(key_hash IS NULL) <> (position IS NULL)", name="identity"),
        ]
    else:
        identity = [
            sa.Column("key_hash", KEY, nullable=False),
            sa.Column("source_record", sa.Integer, nullable=False),
            sa.UniqueConstraint("org", "key_hash"),
        ]
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("org", CODE, nullable=False),
        *identity,
        # The run that last wrote the row (runs.id: connector, mapping, time).
        sa.Column("run_id", sa.Integer, nullable=False),
        *columns,
    )


subjects = _record_table(
    "subjects",
    sa.Column("subject", PERSON, nullable=False),
    sa.Column("household", PERSON),
    sa.Column("birth_year", sa.SmallInteger),
    sa.Column("sex", sa.String(1)),
    sa.Column("residence_comune_istat", sa.String(6)),
    sa.Column("citizenship", sa.String(3)),
    sa.Index(None, "subject"),
    # A subject row is keyed by the person, shared by every record that names them: no
    # source record owns it (cancellations and clean-up never delete subjects).
    owned=False,
)

assessments = _record_table(
    "assessments",
    sa.Column("subject", PERSON, nullable=False),
    sa.Column("assessed_on", sa.Date, nullable=False),
    sa.Column("valid_until", sa.Date),
    sa.Column("disability", sa.Boolean),
    sa.Column("non_self_sufficient", sa.Boolean),
)

case_episodes = _record_table(
    "case_episodes",
    sa.Column("subject", PERSON, nullable=False),
    sa.Column("area", sa.String(10), nullable=False),
    sa.Column("opened_on", sa.Date, nullable=False),
    sa.Column("closed_on", sa.Date),
)

interventions = _record_table(
    "interventions",
    sa.Column("subject", PERSON, nullable=False),
    sa.Column("service_code", sa.String(20), nullable=False),
    sa.Column("area", sa.String(10), nullable=False),
    sa.Column("started_on", sa.Date, nullable=False),
    sa.Column("ended_on", sa.Date),
    sa.Column("amount", sa.Numeric(14, 2)),
    sa.Column("amount_co_paid", sa.Numeric(14, 2)),
    sa.Column("comune_istat", sa.String(6)),
)

need_signals = _record_table(
    "need_signals",
    sa.Column("subject", PERSON),
    # Closed-list codes joined by "|" (portable across SQLite and PostgreSQL).
    sa.Column("needs", sa.String(200), nullable=False),
    sa.Column("services_given", sa.String(300), nullable=False),
    sa.Column("comune_istat", sa.String(6), nullable=False),
    sa.Column("on", sa.Date, nullable=False),
    sa.Column("referred_by_social_services", sa.Boolean, nullable=False),
    sa.Column("birth_year", sa.SmallInteger),
    sa.Column("sex", sa.String(1)),
)

#: Record tables by model kind (see :data:`hub.schema.MODELS`).
RECORD_TABLES: dict[str, sa.Table] = {
    "subject": subjects,
    "assessment": assessments,
    "case_episode": case_episodes,
    "intervention": interventions,
    "need_signal": need_signals,
}
#: Kinds whose rows a source record owns: replaced or removed with it, and an output without
#: a mapping ``key`` is a ``position`` (a subject is shared by every record naming the person).
OWNED_KINDS: frozenset[str] = frozenset(k for k in RECORD_TABLES if k != "subject")

organisations = sa.Table(
    "organisations",
    metadata,
    sa.Column("code", CODE, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("district", CODE),
    sa.Column("tax_code", sa.String(11)),
)

districts = sa.Table(
    "districts",
    metadata,
    sa.Column("code", CODE, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("pseudonym_domain", CODE, nullable=False),
)

#: The connector streams that ever loaded records: source records name theirs by id.
streams = sa.Table(
    "streams",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("connector", CODE, nullable=False),
    sa.Column("stream", sa.String(60), nullable=False),
    sa.UniqueConstraint("connector", "stream"),
)

#: The units (files, flows) records came in, per stream: source records name theirs by id.
units = sa.Table(
    "units",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.Integer, nullable=False),
    # 16 bytes of the keyed hash of the unit's name.
    sa.Column("key", KEY, nullable=False),
    sa.UniqueConstraint("stream_id", "key"),
)

#: One row per source record ever loaded: lets a re-run tell "unchanged"
#: without mapping again, and lets a changed or cancelled record replace
#: what it produced before.
source_records = sa.Table(
    "source_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.Integer, nullable=False),
    sa.Column("org", CODE, nullable=False),
    # 16 bytes of the keyed hash of the record's source key.
    sa.Column("key", KEY, nullable=False),
    # 16 bytes of the keyed record hash: mapping version, operation, values (identifiers
    # as rotation-stable tokens). Equal: the record is unchanged.
    sa.Column("record_hash", KEY, nullable=False),
    # The unit (file, flow) it last came in, if any (units.id).
    sa.Column("unit", sa.Integer),
    # The last run that loaded this record (inserted or changed it). A run that finds it
    # unchanged does not rewrite the row: it lists the record in run_unchanged instead.
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.UniqueConstraint("stream_id", "key"),
    # What a re-read unit no longer holds (removed): by unit, then by run.
    sa.Index(None, "stream_id", "unit"),
)

#: The source records a running run found unchanged (migration ``0008_run_unchanged``):
#: one row per batch that had any, a serialised 64-bit roaring bitmap of ``source_records.id``.
#: With ``source_records.run_id`` it says what the run has seen: a unit it completes
#: loses the records it holds that the run neither loaded nor found unchanged, and a
#: record seen earlier in the same unit is a duplicate. Appending a few bytes per batch
#: replaces rewriting every unchanged row; the rows go when the run ends.
run_unchanged = sa.Table(
    "run_unchanged",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("records", sa.LargeBinary, nullable=False),
    # A run's rows: read when a unit completes, deleted when the run ends.
    sa.Index(None, "run_id"),
)

#: The parts (runs of consecutive records, :class:`hub.connector.RecordPart`) of a unit
#: whose records all loaded, as last read (migration ``0010_unit_parts``): the keyed
#: hash of the part's digest (with the mapping version), and a serialised roaring bitmap
#: of the ids of the source records it gave. A changed file re-read finds its unchanged
#: parts here and does not read them again: their records count as unchanged. A part's
#: row goes when its unit is completed by a run that did not see it, when one of its
#: records changes or is deleted, and when one of them moves to another unit.
unit_parts = sa.Table(
    "unit_parts",
    metadata,
    sa.Column("unit", sa.Integer, nullable=False),
    sa.Column("key", KEY, nullable=False),
    sa.Column("records", sa.LargeBinary, nullable=False),
    # The last run that loaded or found it: a unit's completion drops the others.
    sa.Column("run_id", sa.Integer, nullable=False),
    # Looked up by unit (all of a unit's parts at once), replaced by (unit, key).
    sa.PrimaryKeyConstraint("unit", "key"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("connector", CODE, nullable=False),
    sa.Column("connector_type", CODE, nullable=False),
    sa.Column("org", CODE, nullable=False),
    sa.Column("mapping", sa.String(80), nullable=False),
    sa.Column("mapping_version", sa.String(40), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # running | succeeded | failed | interrupted
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("read", sa.Integer, nullable=False, default=0),
    sa.Column("loaded", sa.Integer, nullable=False, default=0),
    sa.Column("unchanged", sa.Integer, nullable=False, default=0),
    sa.Column("quarantined", sa.Integer, nullable=False, default=0),
    # Records repeated within one unit (file, flow): read = loaded + unchanged +
    # duplicates + quarantined.
    sa.Column("duplicates", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("deleted", sa.Integer, nullable=False, default=0),
    # Records removed because a re-read unit (file, flow) no longer contains them.
    sa.Column("removed", sa.Integer, nullable=False, default=0),
    sa.Column("source_errors", sa.Integer, nullable=False, default=0),
    sa.Column("batches", sa.Integer, nullable=False, default=0),
    # JSON object {"table": {"code": count}}: source codes the mapping could not map.
    sa.Column("unmapped_codes", sa.Text, nullable=False, default="{}"),
    sa.Column("error", sa.Text),
    # The connector's stream (NULL for runs recorded before migration 0004).
    sa.Column("stream", sa.String(60)),
    sa.Index(None, "connector", "started_at"),
)

connector_state = sa.Table(
    "connector_state",
    metadata,
    sa.Column("connector", CODE, primary_key=True),
    sa.Column("stream", sa.String(60), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("connector", CODE, nullable=False),
    sa.Column("stream", sa.String(60), nullable=False),
    sa.Column("org", CODE, nullable=False),
    # record (a bad record) | source (a unit that could not be read at all)
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("location", sa.String(300), nullable=False),
    sa.Column("source_key_hash", HASH),
    sa.Column("field", sa.String(120)),
    sa.Column("rule", sa.String(60), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # JSON of the record after pseudonymisation: identifiers replaced by their
    # pseudonym or by a marker, personal fields removed. Never the raw record.
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(None, "run_id"),
    sa.Index(None, "connector", "created_at"),
    # A source record keeps one entry, its latest refusal (replaced when read again).
    sa.Index(None, "connector", "stream", "source_key_hash"),
)

# -- data-quality warnings (hub/quality.py; migration 0003_warnings) --------------
# A suspicious value in a record that loaded: where, which rule and field, why. Like the
# quarantine, it never holds a value (nor a clear identifier); kept as long as the quarantine.
warnings = sa.Table(
    "warnings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("connector", CODE, nullable=False),
    sa.Column("stream", sa.String(60), nullable=False),
    sa.Column("org", CODE, nullable=False),
    sa.Column("location", sa.String(300), nullable=False),
    sa.Column("source_key_hash", HASH),
    sa.Column("field", sa.String(120)),
    sa.Column("rule", sa.String(60), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(None, "run_id"),
    sa.Index(None, "connector", "created_at"),
)


# -- Third Sector web app (hub/web) ------------------------------------------------
# Accounts of the web app, and the intake of Third Sector entries. Entries hold
# the subject's pseudonym only: the identifier typed in the form is pseudonymised
# at submit and discarded. The ``ets_form`` connector reads this intake.

web_users = sa.Table(
    "web_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(80), nullable=False, unique=True),
    # argon2id encoded hash (memory-hard), never the password.
    sa.Column("password_hash", sa.String(200), nullable=False),
    # admin | ets | analyst
    sa.Column("role", sa.String(10), nullable=False),
    # ETS operators: their organisation; analysts: a consortium, or NULL for the district.
    sa.Column("org", CODE),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

ets_entries = sa.Table(
    "ets_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Client-chosen idempotency key: a re-sent form or API call never duplicates.
    sa.Column("entry_uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("org", CODE, nullable=False),
    # Change sequence, gap-free and in commit order: the ets_form connector's cursor.
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
    sa.Column("subject", PSEUDONYM),
    # cf | stp | eni | none: what kind of identifier was given (never the identifier).
    sa.Column("identifier_kind", sa.String(8), nullable=False),
    # Short tag shown to the ETS instead of any identifier (keyed, per organisation).
    sa.Column("tag", sa.String(12)),
    sa.Column("needs", sa.String(200), nullable=False),
    sa.Column("services_given", sa.String(300), nullable=False),
    sa.Column("comune_istat", sa.String(6), nullable=False),
    sa.Column("on", sa.Date, nullable=False),
    sa.Column("referred_by_social_services", sa.Boolean, nullable=False),
    sa.Column("birth_year", sa.SmallInteger),
    sa.Column("sex", sa.String(1)),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("created_by", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(None, "org", "on"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("org", CODE, nullable=False),
    # SHA-256 of a random 256-bit token (not a personal identifier).
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(80), nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


# -- observatory pre-aggregates (hub.observatory.aggregates.refresh) -------------------
#: Indicator tables pre-computed per calendar year after each sync (JSON of
#: :class:`hub.observatory.table.Table`), so that dashboard queries read one row instead
#: of scanning millions. ``org`` is ``*`` for the district.
obs_tables = sa.Table(
    "obs_tables",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("year", sa.SmallInteger, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("org", CODE, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.UniqueConstraint("kind", "year", "org"),
)

#: When the pre-aggregates were last computed, and the last sync run they include.
obs_refresh = sa.Table(
    "obs_refresh",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_run_id", sa.Integer, nullable=False),
    sa.Column("first_year", sa.SmallInteger),
    sa.Column("last_year", sa.SmallInteger),
)


#: Per-(kind × organisation × month × key) aggregates (:mod:`hub.observatory.months`):
#: row counts and amounts (cents) of rows starting in the month (``n``, ``cents``) and of
#: rows started before it and still running on its first day (``carry_n``,
#: ``carry_cents``), and the subjects active in the month as a serialised roaring bitmap
#: of person ids (``people``). ``month`` is ``YYYYMM``.
obs_months = sa.Table(
    "obs_months",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("org", CODE, nullable=False),
    sa.Column("month", sa.Integer, nullable=False),
    sa.Column("key", sa.String(520), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("cents", sa.BigInteger, nullable=False),
    sa.Column("carry_n", sa.Integer, nullable=False),
    sa.Column("carry_cents", sa.BigInteger, nullable=False),
    sa.Column("people", sa.LargeBinary),
    # Queries read a kind over a range of months; a refresh replaces an organisation's.
    sa.UniqueConstraint("kind", "month", "org", "key"),
)


#: Columns holding *text* pseudonyms (``f"v2.{epoch}." + base64url(32 bytes)``), as
#: ``(table, column)``: only the web intake keeps them (each entry is read into the registry
#: by the ``ets_form`` connector). The registry's own pseudonyms are the rows of
#: :data:`pseudonyms` (``PSEUDONYM_TABLE``). Key rotation rewrites both, plus the ``payload``
#: JSON of ``quarantine`` rows (identifier fields hold text pseudonyms there; quarantine rows
#: expire, so rotation may also purge them). Keyed hashes of source-record keys are not
#: pseudonyms: they are recomputed by re-reading the sources.
PSEUDONYM_COLUMNS: tuple[tuple[str, str], ...] = (("ets_entries", "subject"),)
#: The table of the registry's pseudonyms (``epoch``, binary ``value``).
PSEUDONYM_TABLE = "pseudonyms"
#: Record-table columns holding person ids (rows of :data:`pseudonyms`).
PERSON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("subjects", "subject"),
    ("subjects", "household"),
    ("assessments", "subject"),
    ("case_episodes", "subject"),
    ("interventions", "subject"),
    ("need_signals", "subject"),
)
