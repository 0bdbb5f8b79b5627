"""The one pipeline: read → pseudonymise → map → validate → load.

Called the same way by the CLI (``raccordo sync``) and by Airflow tasks
(``dags/``). Records are processed in batches; each batch, its quarantine
entries, the run counters and the connector's state checkpoint are written
together in one database transaction (see :meth:`hub.registry.Registry.commit_batch`),
which is committed every ``commit_every`` records or ``commit_seconds``
(:class:`hub.registry.LoadTransaction`).

Accounting: for every run ``read = loaded + unchanged + quarantined``.
A record is *unchanged* when its pseudonymised content and the mapping
version are those already loaded; *loaded* when it was inserted, updated or
applied a cancellation; *quarantined* when any step refused it — then none of
its outputs is loaded, and the quarantine keeps why and where, never a clear
identifier.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache, lru_cache
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from hub.config import Config
from hub.connector import (
    Connector,
    FieldRole,
    FieldSpec,
    RawRecord,
    SourceError,
    StateCheckpoint,
    Stream,
    UnitComplete,
)
from hub.errors import MappingFileError, RaccordoError, RunFailed, SourceUnavailable
from hub.mappings import CompiledMapping, compile_mapping, load_mapping, unknown_sources
from hub.plugins import get_plugins
from hub.pseudonyms import (
    IdentifierType,
    InvalidIdentifier,
    Keyring,
    KeySource,
    Pseudonymiser,
    cf_birth_year_and_sex,
    open_pseudonymiser,
    parse_identifier,
)
from hub.pseudonyms.rotation import refuse_mixed_schemes
from hub.registry import (
    BatchCounts,
    EntityRow,
    LoadTransaction,
    QuarantineEntry,
    Registry,
    RunSummary,
    SourceRecordChange,
)
from hub.schema import model_for

log = logging.getLogger("raccordo.pipeline")

#: Marker stored in place of an identifier that could not be pseudonymised.
INVALID_MARKER = "<invalid identifier removed>"

ProgressCallback = Callable[["RunProgress"], None]


@dataclass
class RunProgress:
    connector: str
    stream: str
    run_id: int
    read: int
    loaded: int
    unchanged: int
    quarantined: int


@dataclass(frozen=True)
class _Prepared:
    """A raw record after pseudonymisation (clear identifiers already gone)."""

    source_key_hash: str
    location: str
    op: str
    data: dict[str, Any]
    problems: tuple[tuple[str, str, str], ...]  # (field, rule, message)
    unit_hash: str | None = None


#: Words sources use for identifier types, beyond the IdentifierType names.
TYPE_ALIASES = {
    "CFP": IdentifierType.CF_PROVV,
    "CF PROVVISORIO": IdentifierType.CF_PROVV,
    "CODICE FISCALE": IdentifierType.CF,
    "": IdentifierType.NONE,
    "NESSUNO": IdentifierType.NONE,
    "ND": IdentifierType.NONE,
}


def identifier_type_named(word: str) -> IdentifierType:
    """``IdentifierType`` from a source's word for it; ValueError if unknown."""
    w = " ".join(word.strip().upper().replace("_", " ").split())
    if w in TYPE_ALIASES:
        return TYPE_ALIASES[w]
    return IdentifierType(w.replace(" ", "_"))


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


class Pipeline:
    """Runs syncs for the connectors of one configuration."""

    def __init__(self, config: Config, registry: Registry, keyring: Keyring | None) -> None:
        self.config = config
        self.registry = registry
        self.pseudonymiser: Pseudonymiser = open_pseudonymiser(config, keyring)
        refuse_mixed_schemes(registry.engine, where=config.registry_url)
        self.reference_year = dt.date.today().year
        self._identifiers: dict[
            tuple[str | None, IdentifierType | None, str | None], _IdentifierOutcome
        ] = {}
        self._unit_hashes: dict[tuple[str, str, str], str] = {}
        self._output_key_hash = lru_cache(maxsize=200_000)(self._compute_output_key_hash)
        self._register_organisations()

    def _compute_output_key_hash(self, model: str, key: tuple[str, ...]) -> str:
        return self.pseudonymiser.key_hash(model, *key)

    def _register_organisations(self) -> None:
        hub = self.config.hub
        self.registry.upsert_district(hub.district, hub.district_name, self.config.pseudonym_domain)
        self.registry.upsert_organisations(
            {
                "code": code,
                "name": o.name,
                "kind": o.kind.value,
                "district": hub.district,
                "tax_code": o.tax_code,
            }
            for code, o in self.config.settings.organisations.items()
        )

    # -- public -------------------------------------------------------------------
    def sync(self, name: str, *, progress: ProgressCallback | None = None) -> list[RunSummary]:
        """Sync every stream of connector ``name``; one run per stream."""
        settings = self.config.connector(name)
        connector = build_connector(self.config, name)
        summaries = []
        for stream in connector.streams():
            mapping = load_connector_mapping(self.config, name, connector, stream.name)
            check_mapping_sources(self.config, name, stream, mapping)
            summaries.append(
                self._sync_stream(
                    name, settings.type, settings.org, connector, stream, mapping, progress
                )
            )
        return summaries

    # -- internals ----------------------------------------------------------------
    def _sync_stream(
        self,
        name: str,
        connector_type: str,
        org: str,
        connector: Connector,
        stream: Stream,
        mapping: CompiledMapping,
        progress: ProgressCallback | None,
    ) -> RunSummary:
        run_id = self.registry.start_run(
            connector=name,
            connector_type=connector_type,
            org=org,
            mapping=mapping.name,
            mapping_version=mapping.version,
        )
        state = self.registry.get_state(name, stream.name)
        batch: list[RawRecord] = []
        errors: list[SourceError] = []
        units: list[str] = []
        latest_state: dict[str, Any] | None = None
        totals = RunProgress(name, stream.name, run_id, 0, 0, 0, 0)
        hub = self.config.hub
        batch_size = hub.batch_size
        tx = self.registry.load_transaction(
            commit_every=hub.commit_every,
            commit_seconds=hub.commit_seconds,
            sqlite_cache_mib=hub.sqlite_cache_mib,
        )

        def flush() -> None:
            groups = _by_org(batch, org, multi_org=connector.multi_org, name=name)
            for i, (g_org, g_batch) in enumerate(groups):
                last = i == len(groups) - 1
                # Errors, completed units and the state go with the last group, so the
                # cursor is committed only once every record it covers is.
                counts = self._process_batch(
                    name,
                    g_org,
                    stream,
                    mapping,
                    run_id,
                    g_batch,
                    errors if last else [],
                    units if last else [],
                    latest_state if last else None,
                    tx,
                )
                totals.read += counts.read
                totals.loaded += counts.loaded
                totals.unchanged += counts.unchanged
                totals.quarantined += counts.quarantined
            tx.batch_written(sum(len(g) for _, g in groups))
            batch.clear()
            errors.clear()
            units.clear()
            if progress:
                progress(totals)

        try:
            for item in connector.read(stream.name, state):
                if isinstance(item, RawRecord):
                    batch.append(item)
                    if len(batch) >= batch_size:
                        flush()
                elif isinstance(item, StateCheckpoint):
                    latest_state = dict(item.state)
                elif isinstance(item, SourceError):
                    errors.append(item)
                elif isinstance(item, UnitComplete):
                    # Committed with the batch holding the unit's last records (or a
                    # later one): removal of what the unit no longer holds happens
                    # only once all of it has been seen.
                    units.append(self.pseudonymiser.key_hash("unit", name, stream.name, item.unit))
                else:  # a connector bug, not bad data
                    raise TypeError(f"connector yielded {type(item).__name__}")
            flush()
            tx.close()
        except SourceUnavailable as e:
            # The source stopped answering: keep what was read up to now (the state
            # checkpoint covers it), so the next run resumes right there.
            flush()
            tx.close()
            self.registry.finish_run(run_id, status="failed", error=str(e))
            raise RunFailed(
                f"run {run_id} of {name!r} stopped: {e.message}", where=e.where, hint=e.hint
            ) from None
        except RaccordoError as e:
            # Batches written before the error are whole, with their state: keep
            # them, as if each had been committed (if writing one failed, the
            # transaction was rolled back already and this does nothing).
            tx.close()
            self.registry.finish_run(run_id, status="failed", error=str(e))
            raise RunFailed(
                f"run {run_id} of {name!r} stopped: {e.message}", where=e.where, hint=e.hint
            ) from None
        except Exception as e:
            tx.close()
            self.registry.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}")
            raise
        except BaseException:
            # Interrupted (Ctrl-C): keep the whole batches written so far.
            tx.close()
            raise
        return self.registry.finish_run(run_id, status="succeeded")

    def _process_batch(
        self,
        name: str,
        org: str,
        stream: Stream,
        mapping: CompiledMapping,
        run_id: int,
        batch: list[RawRecord],
        errors: list[SourceError],
        units: list[str],
        state: dict[str, Any] | None,
        tx: LoadTransaction | None = None,
    ) -> BatchCounts:
        counts = BatchCounts(read=len(batch), source_errors=len(errors))
        quarantine: list[QuarantineEntry] = [
            QuarantineEntry(
                kind="source", location=e.location, rule=e.rule, reason=e.reason, payload={}
            )
            for e in errors
        ]
        prepared = [self._pseudonymise(name, org, stream, r) for r in batch]
        # Last occurrence of a key in a batch wins (a later line updates an earlier one).
        existing = self.registry.existing_record_hashes(
            name, stream.name, [p.source_key_hash for p in prepared], tx=tx
        )
        changes: dict[str, SourceRecordChange] = {}
        unchanged: list[str] = []
        for p in prepared:
            if p.problems:
                quarantine.append(_quarantine_entry(p, p.problems[0]))
                counts.quarantined += 1
                continue
            record_hash = _record_hash(mapping.version, p.op, p.data)
            if (
                p.op == "upsert"
                and existing.get(p.source_key_hash) == record_hash
                and p.source_key_hash not in changes
            ):
                counts.unchanged += 1
                unchanged.append(p.source_key_hash)
                continue
            if p.op == "delete":
                changes[p.source_key_hash] = SourceRecordChange(
                    p.source_key_hash, record_hash, "delete", (), p.unit_hash
                )
                counts.loaded += 1
                counts.deleted += 1
                continue
            result = mapping.apply(p.data)
            for table, code in result.unmapped:
                slot = counts.unmapped.setdefault(table, {})
                slot[code] = slot.get(code, 0) + 1
            if result.problems:
                pr = result.problems[0]
                quarantine.append(_quarantine_entry(p, (pr.field, pr.rule, pr.message)))
                counts.quarantined += 1
                continue
            entities, problem = self._validate(
                org,
                name,
                stream.name,
                p,
                result.outputs,
                {
                    "connector": name,
                    "run_id": run_id,
                    "mapping": mapping.name,
                    "mapping_version": mapping.version,
                },
            )
            if problem:
                quarantine.append(_quarantine_entry(p, problem))
                counts.quarantined += 1
                continue
            changes[p.source_key_hash] = SourceRecordChange(
                p.source_key_hash,
                record_hash,
                "upsert",
                tuple(entities),
                p.unit_hash,
                replaces=p.source_key_hash in existing or p.source_key_hash in changes,
            )
            counts.loaded += 1
        retention = dt.timedelta(days=self.config.hub.quarantine_retention_days)
        self.registry.commit_batch(
            run_id=run_id,
            connector=name,
            stream=stream.name,
            org=org,
            changes=list(changes.values()),
            quarantine=quarantine,
            counts=counts,
            state=state,
            retention=retention,
            unchanged=unchanged,
            completed_units=list(units),
            tx=tx,
        )
        return counts

    def _pseudonymise(self, name: str, org: str, stream: Stream, record: RawRecord) -> _Prepared:
        """Replace identifiers by pseudonyms, drop personal fields and undeclared fields."""
        raw = record.data
        if record.key is not None:
            key = record.key
        else:
            key = "|".join(str(raw.get(k, "")) for k in stream.source_key)
        skh = self.pseudonymiser.key_hash(name, stream.name, key)
        data: dict[str, Any] = {}
        problems: list[tuple[str, str, str]] = []
        data_fields, identifier_fields = _field_plan(stream)
        for f in data_fields:
            if f in raw:
                data[f] = raw[f]
        for spec in identifier_fields:
            if spec.name not in raw:
                continue
            value = raw[spec.name]
            expected = spec.identifier_type
            if spec.type_field:
                try:
                    expected = identifier_type_named(str(raw.get(spec.type_field) or ""))
                except ValueError:
                    problems.append(
                        (
                            spec.name,
                            "unknown_type",
                            f"{spec.type_field}: not a known identifier type",
                        )
                    )
                    data[spec.name] = INVALID_MARKER
                    continue
            text = None if value is None else str(value)
            if spec.optional and not (text or "").strip():
                data[spec.name] = None
                continue
            namespace = None
            if expected is IdentifierType.LOCAL:
                namespace = (
                    str(raw.get(spec.namespace_field) or "") if spec.namespace_field else org
                )
            outcome = self._identifier(text, expected, namespace)
            if isinstance(outcome, InvalidIdentifier):
                problems.append((spec.name, outcome.rule, outcome.message))
                data[spec.name] = INVALID_MARKER
                continue
            pseudonym, derived = outcome
            data[spec.name] = pseudonym
            if derived is not None and spec.derive_birth_year_and_sex:
                data[f"{spec.name}__birth_year"] = derived[0]
                data[f"{spec.name}__sex"] = derived[1]
        unit_hash = None
        if record.unit is not None:
            # Every record of a file (or flow) names the same unit: hash it once.
            unit_key = (name, stream.name, record.unit)
            unit_hash = self._unit_hashes.get(unit_key)
            if unit_hash is None:
                if len(self._unit_hashes) >= _IDENTIFIER_CACHE_SIZE:
                    self._unit_hashes.clear()
                unit_hash = self._unit_hashes[unit_key] = self.pseudonymiser.key_hash(
                    "unit", *unit_key
                )
        return _Prepared(skh, record.location, record.op, data, tuple(problems), unit_hash)

    def _identifier(
        self, text: str | None, expected: IdentifierType | None, namespace: str | None
    ) -> _IdentifierOutcome:
        """Pseudonym (and CF-derived birth year and sex) of one identifier, or why not.

        Sources repeat the same people on many records: outcomes are remembered for
        the run (in memory only, like the pseudonymiser's own cache).
        """
        key = (text, expected, namespace)
        hit = self._identifiers.get(key)
        if hit is not None:
            return hit
        outcome: _IdentifierOutcome
        try:
            ident = parse_identifier(text, expected, namespace=namespace)
        except InvalidIdentifier as e:
            outcome = e
        else:
            if ident.type is IdentifierType.NONE:
                outcome = (None, None)
            else:
                derived = (
                    cf_birth_year_and_sex(ident.value, reference_year=self.reference_year)
                    if ident.type is IdentifierType.CF
                    else None
                )
                outcome = (self.pseudonymiser.pseudonym(ident), derived)
        if len(self._identifiers) >= _IDENTIFIER_CACHE_SIZE:
            self._identifiers.clear()
        self._identifiers[key] = outcome
        return outcome

    def _validate(
        self,
        org: str,
        name: str,
        stream: str,
        p: _Prepared,
        outputs: Any,
        provenance: dict[str, Any],
    ) -> tuple[list[EntityRow], tuple[str, str, str] | None]:
        entities: list[EntityRow] = []
        seen: dict[str, int] = {}
        for out in outputs:
            validator, converted = _validator_for(out.model)
            try:
                obj = validator({**out.data, "org": org})
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                # pydantic's message may quote the input: keep only the message text
                # (type + constraint), never the value.
                return [], (f"{out.model}.{loc}", f"schema.{err['type']}", _safe_msg(err))
            # The validated field values, as model_dump would give them (they are all
            # plain values, dates or Decimals), minus org; enums and tuples of enums
            # become the codes stored in the columns.
            row = dict(obj.__dict__)
            del row["org"]
            for name in converted:
                row[name] = _column_value(row[name])
            if out.key is not None:
                key_hash = self._output_key_hash(out.model, tuple(str(k) for k in out.key))
            else:
                n = seen.get(out.model, 0)
                seen[out.model] = n + 1
                key_hash = self.pseudonymiser.key_hash(out.model, p.source_key_hash, str(n))
            # Field order is the model's, fixed: no need to sort.
            content = hashlib.sha256(repr(tuple(row.items())).encode()).hexdigest()
            entities.append(EntityRow(out.model, key_hash, content, {**row, **provenance}))
        return entities, None


_FieldPlan = tuple[tuple[str, ...], tuple[FieldSpec, ...]]
#: Field plans by stream object (the stream is kept so that its id is never reused).
_plans: dict[int, tuple[Stream, _FieldPlan]] = {}


def _field_plan(stream: Stream) -> _FieldPlan:
    """A stream's data fields (kept as they are) and identifier fields (pseudonymised);
    personal and undeclared fields are in neither, so they are dropped."""
    hit = _plans.get(id(stream))
    if hit is not None and hit[0] is stream:
        return hit[1]
    plan = (
        tuple(f.name for f in stream.fields if f.role is FieldRole.DATA),
        tuple(f for f in stream.fields if f.role is FieldRole.IDENTIFIER),
    )
    if len(_plans) >= 256:
        _plans.clear()
    _plans[id(stream)] = (stream, plan)
    return plan


def _listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _by_org(
    batch: list[RawRecord], default: str, *, multi_org: bool, name: str
) -> list[tuple[str, list[RawRecord]]]:
    """Split a batch by supplying organisation (one group, possibly empty, at least)."""
    if not multi_org:
        if any(r.org is not None for r in batch):
            raise TypeError(f"connector {name!r} set RawRecord.org but is not multi_org")
        return [(default, batch)]
    groups: dict[str, list[RawRecord]] = {}
    for r in batch:
        groups.setdefault(r.org or default, []).append(r)
    return list(groups.items()) or [(default, [])]


#: A run forgets remembered identifier outcomes beyond this many (memory bound).
_IDENTIFIER_CACHE_SIZE = 200_000

#: Pseudonym and CF-derived (birth year, sex), or the reason the identifier is invalid.
_IdentifierOutcome = tuple[str | None, tuple[int, str] | None] | InvalidIdentifier


@cache
def _validator_for(kind: str) -> tuple[Callable[[Any], Any], tuple[str, ...]]:
    """The model's compiled validator and its fields holding enums or tuples."""
    model = model_for(kind)
    converted = tuple(
        name for name, f in model.model_fields.items() if _holds_enum_or_tuple(f.annotation)
    )
    return model.__pydantic_validator__.validate_python, converted


def _holds_enum_or_tuple(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, (Enum, tuple))
    if get_origin(annotation) is tuple:
        return True
    return any(_holds_enum_or_tuple(a) for a in get_args(annotation))


def _safe_msg(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    return msg[:300]


def _column_value(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, tuple):
        return "|".join(str(x.value if isinstance(x, Enum) else x) for x in v)
    return v


def _record_hash(mapping_version: str, op: str, data: Mapping[str, Any]) -> str:
    # repr of sorted items is deterministic for the value types records hold (str, int,
    # bool, None, date, Decimal) and much cheaper than JSON.
    payload = repr((mapping_version, op, sorted(data.items())))
    return hashlib.sha256(payload.encode()).hexdigest()


def _quarantine_entry(p: _Prepared, problem: tuple[str, str, str]) -> QuarantineEntry:
    field, rule, message = problem
    return QuarantineEntry(
        kind="record",
        location=p.location,
        rule=rule,
        reason=message,
        payload=p.data,
        source_key_hash=p.source_key_hash,
        field=field,
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
