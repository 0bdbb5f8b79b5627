"""The values the stages pass along: one frozen run context, one batch, one rejection."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pyroaring import BitMap64

from hub.connector import RawRecord, SourceError, Stream
from hub.mappings import CompiledMapping


class Rejection(NamedTuple):
    """Why a record was refused: the field, the rule it broke and a reason for people.

    Never the value itself (it may be an identifier).
    """

    field: str
    rule: str
    reason: str


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run of one connector stream may read (and none may change)."""

    connector: str
    connector_type: str
    org: str
    stream: Stream
    mapping: CompiledMapping
    run_id: int
    multi_org: bool
    retention: dt.timedelta
    #: Everything is mapped again (a new mapping version, or ``--full-refresh``).
    full_refresh: bool = False

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "run_id": self.run_id,
            "mapping": self.mapping.name,
            "mapping_version": self.mapping.version,
        }


class PartSpan(NamedTuple):
    """Records ``start:end`` of a batch came in one part (:class:`hub.connector.RecordPart`)."""

    unit: str
    digest: bytes
    start: int
    end: int
    #: Record-scope source errors the part held (a part with any is not remembered).
    errors: int


class KnownPart(NamedTuple):
    """A part the registry holds as it is: not read again; its records count as unchanged."""

    #: Its unit (``units.id``) and the keyed hash of its digest, as the registry stores them.
    unit: int
    key: bytes
    #: The ids of the source records it gave (all of them loaded).
    records: BitMap64


@dataclass
class Batch:
    """What ``extract`` hands on: records read, source errors, units completed, the cursor.

    The cursor (``state``) covers every record of the batch and of the batches before
    it, and nothing after: it is committed with the batch.
    """

    records: list[RawRecord] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)
    #: Names of the units (files, flows) whose last record is in this batch or before.
    units: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None
    #: The parts whose records are in ``records`` (a part is never split between batches).
    parts: list[PartSpan] = field(default_factory=list)
    #: Parts not read (the registry holds them as they are); they come before ``records``.
    skipped: list[KnownPart] = field(default_factory=list)


@dataclass
class RunProgress:
    connector: str
    stream: str
    run_id: int
    read: int
    loaded: int
    unchanged: int
    quarantined: int
    duplicates: int = 0
