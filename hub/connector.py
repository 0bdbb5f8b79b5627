"""The connector contract (BLUEPRINT §9).

A connector knows how to *read* one kind of source. It never pseudonymises
and never writes: it yields raw records and state checkpoints, and the
pipeline (:mod:`hub.pipeline`) does the rest. This keeps clear identifiers
inside one well-tested component and makes every connector replaceable.

The verbs follow Airbyte/Singer: ``check`` (can I reach the source?),
``streams`` (what can I read, which fields are identifiers?) and
``read(stream, state)`` (raw records, then the new state).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from hub.pseudonyms import IdentifierType

JSONState = dict[str, Any]


def _resolve_in_workspace(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


def _resolve_glob_in_workspace(value: str, info: ValidationInfo) -> str:
    return str(_resolve_in_workspace(Path(value), info))


#: A path in a connector's config: relative paths are relative to ``raccordo.toml``.
WorkspacePath = Annotated[Path, AfterValidator(_resolve_in_workspace)]
#: A glob pattern in a connector's config, resolved like :data:`WorkspacePath`.
WorkspaceGlob = Annotated[str, AfterValidator(_resolve_glob_in_workspace)]


class ConnectorConfig(BaseModel):
    """Base of every connector's typed configuration.

    Frozen and closed: a misspelt key in ``raccordo.toml`` is an error, not an
    ignored setting. Secrets are declared as :class:`pydantic.SecretStr` so
    they never show in reprs, logs or error messages.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldRole(enum.StrEnum):
    """What a raw field is, privacy-wise. Decides what the pipeline does with it."""

    #: A personal identifier: validated, pseudonymised, the clear value discarded.
    IDENTIFIER = "identifier"
    #: Directly identifying but not a key (names, birthplace, address): dropped at once.
    PERSONAL = "personal"
    #: Anything else: kept for the mapping.
    DATA = "data"


@dataclass(frozen=True)
class FieldSpec:
    """One field a stream yields."""

    name: str
    role: FieldRole = FieldRole.DATA
    description: str = ""
    #: For identifiers: the expected type, or ``None`` to detect it from the value
    #: (CF, provisional CF, STP, ENI), or read it from ``type_field``.
    identifier_type: IdentifierType | None = None
    #: For identifiers whose type is given by another field of the record.
    type_field: str | None = None
    #: For CF identifiers: also expose birth year and sex derived from it as
    #: ``<name>__birth_year`` and ``<name>__sex`` before the CF is discarded.
    derive_birth_year_and_sex: bool = False
    #: A missing/empty identifier is allowed (anonymous contacts).
    optional: bool = False
    #: For LOCAL identifiers: the field holding the issuing ente's code, whose
    #: namespace the id lives in (default: the connector's organisation). By
    #: law some local ids (SINBA ``IDBeneficiario``) must not be linkable across enti.
    namespace_field: str | None = None


@dataclass(frozen=True)
class Stream:
    """A kind of record a connector can read."""

    name: str
    fields: tuple[FieldSpec, ...]
    #: Field(s) whose values identify a record in the source; stored only keyed-hashed.
    source_key: tuple[str, ...]
    description: str = ""
    #: False when the connector cannot tell every field yet (a CSV inbox with no
    #: readable file): the mapping's source fields are then not checked before
    #: the run (see ``hub.pipeline.check_mapping_sources``).
    fields_complete: bool = True

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def identifier_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.role is FieldRole.IDENTIFIER)

    @property
    def personal_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.role is FieldRole.PERSONAL)


class RawRecord(NamedTuple):
    """A record as read from the source, before pseudonymisation.

    ``location`` tells a person where to look (``file.csv:42``,
    ``GET /flussi page 3``); it must not contain identifiers.

    Immutable, built with the same arguments as a dataclass would be; a named tuple because
    one is made for every record read (a third of what a frozen dataclass costs).
    """

    stream: str
    data: Mapping[str, Any]
    location: str = ""
    #: ``delete`` removes what this source key produced earlier (e.g. SIUSS
    #: ``TipoOperazione="C"``).
    op: Literal["upsert", "delete"] = "upsert"
    #: Optional explicit source key; by default built from ``Stream.source_key``.
    key: str | None = None
    #: The unit of delivery the record came in (a file, a WaaS flow id), if the
    #: source delivers whole units that can later be replaced (see UnitComplete).
    unit: str | None = None
    #: The organisation that supplied this record, for connectors that read an
    #: intake shared by several organisations (``Connector.multi_org``); by
    #: default the connector's own ``org``.
    org: str | None = None

    def __repr__(self) -> str:  # never show data: it holds clear identifiers
        return f"RawRecord(stream={self.stream!r}, location={self.location!r}, op={self.op!r})"


@dataclass(frozen=True)
class StateCheckpoint:
    """New state covering every record yielded before it.

    The pipeline commits it in the same transaction as those records, so a
    crash never skips data and a re-run never duplicates it.
    """

    state: JSONState = field(default_factory=dict)


@dataclass(frozen=True)
class UnitComplete:
    """Every record of ``unit`` has been yielded (a whole file, a whole flow).

    When a unit is read again (a file changed after it was processed), the
    pipeline removes what the unit's earlier version produced and the new
    version no longer contains, in the same transaction as the state that
    marks the unit processed.
    """

    unit: str


@dataclass(frozen=True)
class SourceError:
    """A problem the connector found in the source (unreadable file, bad XML,
    a record element that breaks the source's own schema) that the connector
    could not turn into a record. Counted and quarantined by the pipeline;
    reading goes on (with the next record or the next unit)."""

    reason: str
    location: str = ""
    rule: str = "source"
    #: The field (attribute, element, column) at fault, when one is (never its value).
    field: str | None = None
    #: ``unit``: a whole unit (file, flow, page) was refused — what ``raccordo sync``'s exit
    #: code 8 and the Airflow task's last line count; ``record``: one record of a unit that
    #: otherwise loads (a row with a cut line, a beneficiary breaking the XSD).
    scope: Literal["unit", "record"] = "unit"


@dataclass(frozen=True)
class RecordPart:
    """A run of consecutive records of a unit, offered with a digest of what produces them.

    A file connector may yield its records in parts (:func:`hub.inputs.parts.in_parts` cuts
    them where their content says, so an edit changes one part and leaves the others
    as they were). ``digest`` covers everything that decides the part's records: their
    source content and whatever of the connector's settings shapes them; it is never
    stored as it is (the pipeline keys it). The pipeline either calls ``items`` and
    loads what it yields (records and record-scope :class:`SourceError`), or, when the
    registry holds this very part of this unit from an earlier read in which all of
    its records loaded, does not call it at all: its records count as read and
    unchanged (a changed file is then re-read at the cost of its changed parts).

    ``items`` may be called once, and only while the connector's ``read`` is at this
    part (it may read a buffer the connector reuses).

    A ``provisional`` part comes before its connector has read the rest of its unit (a file
    that may still turn out broken, which loads nothing): the pipeline decides at once
    whether it reads it, as for any part, but holds what it read (and that it skipped it)
    until the next item of the read that is not a provisional part, and then loads it
    before that item; if that item is a unit-scope :class:`SourceError` (the unit was
    refused), it drops them instead. A read that ends with parts still provisional is a
    connector bug. So one pass can both check a file and offer its parts, and a re-read
    that changed one part need not read the file twice.
    """

    unit: str
    digest: bytes
    #: The records (and record-scope source errors) of the part, in order.
    items: Callable[[], Iterable[RawRecord | SourceError]] = field(repr=False)
    provisional: bool = False

    def __repr__(self) -> str:  # never show data
        return f"RecordPart(unit={self.unit!r})"


ReadItem = RawRecord | StateCheckpoint | SourceError | UnitComplete | RecordPart


def expand_parts(items: Iterable[ReadItem]) -> Iterator[ReadItem]:
    """A connector's output with every :class:`RecordPart` replaced by what it holds (what a
    first read loads): for tests and tools that look at records one by one.

    What provisional parts hold comes once they are confirmed, and not at all if their
    unit is refused (see :class:`RecordPart`)."""
    held: list[RawRecord | SourceError] = []
    holding: str | None = None  # the unit of the provisional parts held
    for item in items:
        if isinstance(item, RecordPart) and item.provisional:
            held.extend(item.items())
            holding = item.unit
            continue
        if holding is not None:
            if not refuses_unit(item):
                yield from held
            held, holding = [], None
        if isinstance(item, RecordPart):
            yield from item.items()
        else:
            yield item
    if holding is not None:
        raise ProvisionalPartsLeft()


def refuses_unit(item: ReadItem) -> bool:
    """Whether ``item`` refuses its unit (a unit-scope :class:`SourceError`): what drops
    the provisional parts before it (see :class:`RecordPart`)."""
    return isinstance(item, SourceError) and item.scope == "unit"


class ProvisionalPartsLeft(TypeError):
    """A connector's read ended with parts still provisional (a connector bug)."""

    def __init__(self) -> None:
        # Not the unit's name: the run's error is stored, and a file may be named after
        # a person.
        super().__init__(
            "the connector's read ended with provisional parts neither confirmed nor "
            "refused (see RecordPart.provisional)"
        )


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


class Connector:
    """Base class of connectors. Subclasses set ``name``, ``config_class`` and
    implement :meth:`check`, :meth:`streams` and :meth:`read`."""

    #: Connector type name, as written in ``raccordo.toml`` (``type = "..."``).
    name: ClassVar[str] = ""
    #: One line for ``raccordo connectors list``.
    summary: ClassVar[str] = ""
    config_class: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    #: Mapping file used when the configuration names none (relative to ``mappings/``):
    #: one file for every stream, or a file per stream name.
    default_mapping: ClassVar[str | dict[str, str] | None] = None
    #: The connector reads records of several organisations (each ``RawRecord.org``),
    #: like the Third Sector intake of the web app. Others may not set ``org``.
    multi_org: ClassVar[bool] = False

    def __init__(self, config: ConnectorConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], *, base_dir: Path | None = None
    ) -> Connector:
        """Build from the ``[connectors.NAME.config]`` table (validated).

        ``base_dir`` (the directory of ``raccordo.toml``) anchors relative
        :data:`WorkspacePath` / :data:`WorkspaceGlob` settings.
        """
        context = {"base_dir": base_dir} if base_dir is not None else None
        return cls(cls.config_class.model_validate(dict(settings), context=context))

    def check(self) -> CheckResult:
        raise NotImplementedError

    def streams(self) -> tuple[Stream, ...]:
        raise NotImplementedError

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        raise NotImplementedError

    def stream(self, name: str) -> Stream:
        for s in self.streams():
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no stream {name!r}")
