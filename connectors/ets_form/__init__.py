"""``ets_form``: the Third Sector intake of the web app (``hub/web``).

Entries typed in the form, uploaded as CSV or posted to the JSON API are
stored in the ``ets_entries`` table of the hub database, already
pseudonymised (the identifier is discarded at submit). This connector reads
them in change order (``seq``, gap-free and in commit order) and yields one
record per entry, each with the organisation that entered it; deleted
entries are yielded as deletions. The cursor is the last ``seq`` read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import Field, ValidationInfo, field_validator

from hub import hookimpl
from hub.config import resolve_sqlite_url
from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    FieldSpec,
    JSONState,
    RawRecord,
    ReadItem,
    StateCheckpoint,
    Stream,
)

RACCORDO_HOOK_API = 1

#: Records between two state checkpoints.
CHECKPOINT_EVERY = 500

#: The columns of the web app's ``ets_entries`` table this connector reads (the table is
#: defined in ``hub/registry/tables.py``; a connector only reads, so it does not import the
#: registry package: this light description is all a SELECT needs).
ENTRIES = sa.table(
    "ets_entries",
    sa.column("seq", sa.Integer),
    sa.column("entry_uuid", sa.String),
    sa.column("org", sa.String),
    sa.column("subject", sa.String),
    sa.column("needs", sa.String),
    sa.column("services_given", sa.String),
    sa.column("comune_istat", sa.String),
    sa.column("on", sa.Date),
    sa.column("referred_by_social_services", sa.Boolean),
    sa.column("birth_year", sa.SmallInteger),
    sa.column("sex", sa.String),
    sa.column("deleted", sa.Boolean),
)


class ETSFormConfig(ConnectorConfig):
    #: Database holding the web app's intake: normally the registry itself.
    #: A relative SQLite path is relative to raccordo.toml.
    database_url: str = "sqlite:///registry.sqlite"
    #: Entries between two state checkpoints (what a crash can make read again).
    checkpoint_every: Annotated[int, Field(ge=1, le=100_000)] = CHECKPOINT_EVERY

    @field_validator("database_url")
    @classmethod
    def _resolve(cls, v: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        return resolve_sqlite_url(v, base) if base is not None else v


FIELDS = (
    FieldSpec("entry", description="the entry's idempotency key (a random UUID)"),
    FieldSpec("subject", description="district-domain pseudonym, or empty (anonymous contact)"),
    FieldSpec("needs", description="need codes joined by |"),
    FieldSpec("services_given", description="service codes joined by |"),
    FieldSpec("comune_istat", description="six-digit ISTAT code of the comune"),
    FieldSpec("on", description="date of the contact (ISO)"),
    FieldSpec("referred", description="1 if referred by the social services, else 0"),
    FieldSpec("birth_year", description="birth year (derived from the CF, or typed)"),
    FieldSpec("sex", description="M or F (derived from the CF, or typed)"),
)


class ETSForm(Connector):
    name = "ets_form"
    summary = "Third Sector entries made in the Raccordo web app (form, CSV upload, API)"
    config_class = ETSFormConfig
    default_mapping = "ets_form.toml"
    multi_org = True

    config: ETSFormConfig

    def _engine(self) -> sa.Engine:
        return sa.create_engine(self.config.database_url)

    def check(self) -> CheckResult:
        try:
            engine = self._engine()
            with engine.connect() as conn:
                n = conn.execute(sa.select(sa.func.count()).select_from(ENTRIES)).scalar()
            engine.dispose()
        except sa.exc.SQLAlchemyError as e:
            return CheckResult(False, f"cannot read the web app's intake: {type(e).__name__}")
        return CheckResult(True, f"intake reachable, {n} entries")

    def streams(self) -> tuple[Stream, ...]:
        return (
            Stream(
                "entries",
                FIELDS,
                source_key=("entry",),
                description="Third Sector entries (need signals)",
            ),
        )

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        last = int(state.get("seq", 0))
        e = ENTRIES
        engine = self._engine()
        try:
            while True:
                with engine.connect() as conn:
                    rows = conn.execute(
                        sa.select(e)
                        .where(e.c.seq > last)
                        .order_by(e.c.seq)
                        .limit(self.config.checkpoint_every)
                    ).all()
                if not rows:
                    break
                for row in rows:
                    yield _record(row)
                    last = row.seq
                yield StateCheckpoint({"seq": last})
        finally:
            engine.dispose()


def _record(row: Any) -> RawRecord:
    location = f"ets_entries seq {row.seq}"
    if row.deleted:
        return RawRecord("entries", {"entry": row.entry_uuid}, location, "delete", org=row.org)
    data = {
        "entry": row.entry_uuid,
        "subject": row.subject or "",
        "needs": row.needs,
        "services_given": row.services_given,
        "comune_istat": row.comune_istat,
        "on": row.on.isoformat(),
        "referred": "1" if row.referred_by_social_services else "0",
        "birth_year": "" if row.birth_year is None else str(row.birth_year),
        "sex": row.sex or "",
    }
    return RawRecord("entries", data, location, org=row.org)


@hookimpl
def raccordo_register_connectors(register: Any) -> None:
    register(ETSForm)
