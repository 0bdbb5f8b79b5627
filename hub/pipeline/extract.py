"""Stage 1, ``extract``: a connector's output as batches, each with the cursor that covers it.

Also the helpers that build a connector and its mapping from the configuration.

A batch holds at most ``batch_size`` records and is cut where the connector last
yielded a cursor (:class:`hub.connector.StateCheckpoint`), so the cursor committed
with a batch covers exactly the records committed before it: after a crash, the next
run re-reads nothing that was committed and misses nothing (the run counters add up
to what the cursor says). Records after the last cursor wait for the next batch. A
batch in which the connector gave no cursor at all (one per file, say) is loaded
without one: after a crash the next run starts again from the last committed cursor
and finds those records unchanged.

A :class:`hub.connector.RecordPart` is read whole into one batch (``Batch.parts`` says
where its records are), unless ``known`` finds it in the registry as it is: then it is
not read at all (``Batch.skipped``), and its batch starts with it, so every record after
it in the unit is processed knowing its records were seen (duplicates).

A provisional part (its unit not yet read to the end) is looked up and read the same way
when it comes, but what that gave is held, and placed as above only when the connector
confirms the unit (its next item that is not a provisional part) or dropped if it refuses
it (a unit-scope source error). A held part found in the registry was looked up before
the held parts ahead of it loaded: if one of those changed a record that it repeats (the
same source key twice in one file), that copy counts as unchanged rather than as a
duplicate, as within one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from pydantic import ValidationError

from hub.config import Config
from hub.connector import (
    Connector,
    FieldRole,
    ProvisionalPartsLeft,
    RawRecord,
    RecordPart,
    SourceError,
    StateCheckpoint,
    Stream,
    UnitComplete,
    refuses_unit,
)
from hub.errors import MappingFileError, RaccordoError
from hub.mappings import CompiledMapping, compile_mapping, load_mapping, unknown_sources
from hub.pipeline.context import Batch, KnownPart, PartSpan
from hub.plugins import get_plugins
from hub.pseudonyms import Keyring, KeySource


def open_keyring(config: Config) -> Keyring | None:
    """The local keyring; None when a pseudonymisation service holds the keys."""
    if config.hub.pseudonymiser_url:
        return None
    return Keyring.open(config.keyring_path, KeySource.from_env(config.keyring_key_file))


def build_connector(config: Config, name: str) -> Connector:
    settings = config.connector(name)
    cls = get_plugins().connector(settings.type, where=f"{config.path} [connectors.{name}] type")
    try:
        return cls.from_settings(settings.config, base_dir=config.base_dir)
    except ValidationError as e:
        problems = "; ".join(
            f"key {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise RaccordoError(
            f"invalid connector settings: {problems}",
            where=f"{config.path} [connectors.{name}.config]",
            hint=f"see the README of the {settings.type!r} connector for its settings",
        ) from None


def load_connector_mapping(
    config: Config, name: str, connector: Connector, stream: str
) -> CompiledMapping:
    """The mapping of one stream: from the config, else the connector's default."""
    settings = config.connector(name)
    chosen = settings.mapping if settings.mapping is not None else connector.default_mapping
    mapping_name = chosen.get(stream) if isinstance(chosen, dict) else chosen
    if not mapping_name:
        raise RaccordoError(
            f"connector {name!r} has no mapping file for stream {stream!r}",
            where=f"{config.path} [connectors.{name}]",
            hint='add mapping = "file.toml" or mapping = { stream = "file.toml" } '
            "(see docs/mappings.md)",
        )
    return compile_mapping(load_mapping(config.mapping_path(mapping_name)))


def check_mapping_sources(
    config: Config, name: str, stream: Stream, mapping: CompiledMapping
) -> None:
    """Refuse, before reading anything, a mapping that reads fields the stream lacks.

    Otherwise a misspelt source field would quarantine every record (a required
    field "missing") or, worse, silently leave an optional value empty.
    """
    if not stream.fields_complete:
        return
    available = {f.name for f in stream.fields if f.role is not FieldRole.PERSONAL}
    available |= {
        f"{f.name}__{derived}"
        for f in stream.fields
        if f.derive_birth_year_and_sex
        for derived in ("birth_year", "sex")
    }
    problems = unknown_sources(mapping.spec, available)
    if problems:
        raise MappingFileError(
            f"mapping {mapping.name!r} reads fields that stream {stream.name!r} of connector "
            f"{name!r} does not have",
            where=f"mapping {mapping.name!r} (used by {config.path} [connectors.{name}])",
            hint="fix the source names in the mapping file; the stream's fields are: "
            + _listing(sorted(available)),
            errors=problems,
        )


def iter_connectors(config: Config, names: list[str] | None) -> Iterator[str]:
    """The connectors to sync: those named, or every enabled one."""
    if names:
        for n in names:
            config.connector(n)  # raises a ConfigError naming the known ones
        yield from names
        return
    for n, c in config.settings.connectors.items():
        if c.enabled:
            yield n


class Extract:
    """Batches of one stream's output (iterate once); see the module's docstring."""

    def __init__(
        self,
        connector: Connector,
        stream: str,
        state: dict[str, Any],
        batch_size: int,
        *,
        known: Callable[[RecordPart], KnownPart | None] | None = None,
    ) -> None:
        self.connector = connector
        self.stream = stream
        self.state = state
        self.batch_size = batch_size
        self.known = known
        self._pending = Batch()
        # Provisional parts taken, not placed yet (see the module's docstring).
        self._held: list[_Taken] = []
        # Where the latest cursor cut the pending items: how many records, errors, units,
        # parts and skipped parts it covers, and the state.
        self._cut: tuple[int, int, int, int, int, dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[Batch]:
        for item in self.connector.read(self.stream, self.state):
            if isinstance(item, RecordPart) and item.provisional:
                self._held.append(self._take(item))
                continue
            if self._held:
                held, self._held = self._held, []
                if not refuses_unit(item):
                    for taken in held:  # confirmed: in order, before this item
                        yield from self._place(taken)
            p = self._pending
            if isinstance(item, RawRecord):
                p.records.append(item)
                if len(p.records) >= self.batch_size:
                    yield from self._full()
            elif isinstance(item, RecordPart):
                yield from self._part(item)
            elif isinstance(item, StateCheckpoint):
                self._cut = (
                    len(p.records),
                    len(p.errors),
                    len(p.units),
                    len(p.parts),
                    len(p.skipped),
                    dict(item.state),
                )
            elif isinstance(item, SourceError):
                p.errors.append(item)
            elif isinstance(item, UnitComplete):
                # Committed with the batch holding the unit's last records (or a later
                # one): removal of what the unit no longer holds happens only once all
                # of it has been seen.
                p.units.append(item.unit)
            else:  # a connector bug, not bad data
                raise TypeError(f"connector yielded {type(item).__name__}")
        if self._held:
            raise ProvisionalPartsLeft()
        yield self._take_all()

    def _full(self) -> Iterator[Batch]:
        batch = self._take_cut()
        if batch is None:  # no cursor since the last batch: none to wait for
            batch = self._take_all()
        yield batch

    def _part(self, part: RecordPart) -> Iterator[Batch]:
        yield from self._place(self._take(part))

    def _take(self, part: RecordPart) -> _Taken:
        """The part looked up in the registry, or read (while the connector is at it)."""
        found = self.known(part) if self.known is not None else None
        if found is not None:
            return _Taken(part.unit, part.digest, found, [])
        items = list(part.items())
        for item in items:
            if not isinstance(item, RawRecord | SourceError):  # a connector bug
                raise TypeError(f"a RecordPart yielded {type(item).__name__}")
        return _Taken(part.unit, part.digest, None, items)

    def _place(self, taken: _Taken) -> Iterator[Batch]:
        found = taken.found
        if found is not None:
            if self._pending.records:
                # A skipped part starts its batch (see the module's docstring).
                cut = self._take_cut()
                if cut is not None:
                    yield cut
                if self._pending.records:
                    yield self._take_all()
            self._pending.skipped.append(found)
            return
        p = self._pending
        start = len(p.records)
        errors = 0
        for item in taken.items:
            if isinstance(item, RawRecord):
                p.records.append(item)
            else:
                p.errors.append(item)
                errors += 1
        p.parts.append(PartSpan(taken.unit, taken.digest, start, len(p.records), errors))
        if len(p.records) >= self.batch_size:
            yield from self._full()

    def covered(self) -> Batch | None:
        """After the source failed midway: what the latest cursor covers, with it."""
        return self._take_cut()

    def _take_cut(self) -> Batch | None:
        if self._cut is None:
            return None
        n, e, u, k, s, state = self._cut
        p = self._pending
        batch = Batch(p.records[:n], p.errors[:e], p.units[:u], state, p.parts[:k], p.skipped[:s])
        self._pending = Batch(
            p.records[n:],
            p.errors[e:],
            p.units[u:],
            parts=[x._replace(start=x.start - n, end=x.end - n) for x in p.parts[k:]],
            skipped=p.skipped[s:],
        )
        self._cut = None
        return batch

    def _take_all(self) -> Batch:
        """Everything pending, with the latest cursor (records after it go along:
        after a crash they are read again and found unchanged)."""
        p = self._pending
        p.state = self._cut[-1] if self._cut is not None else None
        self._pending = Batch()
        self._cut = None
        return p


class _Taken(NamedTuple):
    """A part as :meth:`Extract._take` found it: in the registry, or read. Not the part
    itself: its ``items`` may hold what the connector read (a held part must not keep it)."""

    unit: str
    digest: bytes
    found: KnownPart | None
    items: list[RawRecord | SourceError]


def _listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
