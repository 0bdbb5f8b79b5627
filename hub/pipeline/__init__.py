"""The one pipeline, four stages: extract → pseudonymise → transform → load.

=================  ===========================================================
stage              module
=================  ===========================================================
``extract``        :mod:`hub.pipeline.extract` — connector output as batches cut
                   at the connector's cursor
``pseudonymise``   :mod:`hub.pseudonyms.stage` — each distinct identifier of a
                   batch validated and pseudonymised once; clear identifiers end here
``transform``      :mod:`hub.pipeline.transform` — the compiled mapping and the
                   common-schema validation; unchanged records skipped
``load``           :mod:`hub.pipeline.load` — the registry, cursor in the same
                   transaction
=================  ===========================================================

Called through :class:`hub.service.Hub` by the CLI (``raccordo sync``), the Airflow
tasks (``dags/``) and the demo. Each batch, its quarantine entries, the run counters
and the connector's cursor are written together in one database transaction (see
:meth:`hub.registry.Registry.commit_batch`), committed every ``commit_every`` records or
``commit_seconds`` (:class:`hub.registry.LoadTransaction`).

Accounting: for every run ``read = loaded + unchanged + duplicates + quarantined``.
A record is *unchanged* when its pseudonymised content and the mapping version are
those already loaded; *loaded* when it was inserted, updated or applied a
cancellation; a *duplicate* when the same source record already came earlier in the
same unit (file, flow) of this run — the first occurrence is the one kept;
*quarantined* when any step refused it — then none of its outputs is loaded, and the
quarantine keeps why and where, never a clear identifier.

A connector is synced by one process at a time (:meth:`hub.registry.Registry.sync_lock`);
a second sync is refused at once. When a stream's mapping version differs from the
one its last run used, or on ``full_refresh``, the stream's cursor is reset and every
record is read and mapped again, the quarantined ones included.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import logging
import operator
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from pyroaring import BitMap64

from hub.config import Config
from hub.connector import Connector, RawRecord, RecordPart, SourceError, Stream
from hub.errors import RaccordoError, RunFailed, SourceUnavailable
from hub.gcpause import no_gc_pauses
from hub.mappings import CompiledMapping
from hub.pipeline.context import (
    Batch,
    KnownPart,
    PartSpan,
    Rejection,
    RunContext,
    RunProgress,
)
from hub.pipeline.extract import (
    Extract,
    build_connector,
    check_mapping_sources,
    iter_connectors,
    load_connector_mapping,
    open_keyring,
)
from hub.pipeline.load import load
from hub.pipeline.transform import Transform, record_hasher
from hub.pseudonyms import Keyring, Pseudonymiser, open_pseudonymiser
from hub.pseudonyms.rotation import refuse_mixed_schemes
from hub.pseudonyms.stage import (
    INVALID_MARKER,
    TYPE_ALIASES,
    Fingerprint,
    Prepared,
    PreparedBatch,
    PseudonymiseStage,
    identifier_type_named,
)
from hub.registry import (
    BatchCounts,
    LoadedPart,
    LoadedRecord,
    LoadTransaction,
    PartChanges,
    QuarantineEntry,
    ReadAhead,
    Registry,
    RunSummary,
    storage_error,
)
from hub.schema.comuni import load_comuni

__all__ = [
    "INVALID_MARKER",
    "STAGES",
    "TYPE_ALIASES",
    "Batch",
    "Pipeline",
    "ProgressCallback",
    "PseudonymisedBatch",
    "Rejection",
    "RunContext",
    "RunProgress",
    "build_connector",
    "check_mapping_sources",
    "identifier_type_named",
    "iter_connectors",
    "load_connector_mapping",
    "open_keyring",
    "pseudonymised_batches",
]

log = logging.getLogger("raccordo.pipeline")

ProgressCallback = Callable[[RunProgress], None]

#: The stages whose CPU time :attr:`Pipeline.stage_cpu` counts, in pipeline order
#: (``fingerprint``: the keyed hashes that decide "unchanged" before pseudonymisation;
#: ``load`` includes the commits; ``gc``: the garbage collection after each batch).
STAGES = ("extract", "fingerprint", "pseudonymise", "transform", "load", "gc")


class Pipeline:
    """Runs syncs for the connectors of one configuration."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        keyring: Keyring | None,
        *,
        pseudonymiser_token: str | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.pseudonymiser: Pseudonymiser = open_pseudonymiser(
            config, keyring, token=pseudonymiser_token
        )
        refuse_mixed_schemes(registry.engine, where=config.registry_url)
        self.reference_year = dt.date.today().year
        #: Per run, per unit not yet completed: the source keys of its records quarantined so
        #: far (a repeat of one in a later batch is a duplicate too, though the registry holds
        #: nothing of it; a repeat of a loaded or unchanged one is found in the registry).
        self._seen: dict[int, dict[str, set[str]]] = {}
        #: Per run: the ids of the source records it found unchanged so far (what it wrote to
        #: ``run_unchanged``; read back from there for a run this process did not start).
        self._unchanged: dict[int, BitMap64] = {}
        #: Per run: where its look-ups of stored records stand in each unit.
        self._ahead: dict[int, ReadAhead] = {}
        #: Per run, per unit (``units.id``) it read parts of: the parts the registry holds
        #: (key → ids of their records), less those the run dropped.
        self._held: dict[int, dict[int, dict[bytes, BitMap64]]] = {}
        #: Per run: the ids of the units it read parts of (None: not in the registry yet).
        self._part_units: dict[int, dict[str, int | None]] = {}
        self.transform = Transform(self.pseudonymiser, district_comuni(config))
        #: CPU seconds of this process spent in each of :data:`STAGES`, over every run of
        #: this pipeline (``raccordo sync --timings``, bench/ingest.py).
        self.stage_cpu: defaultdict[str, float] = defaultdict(float)
        try:
            self._register_organisations()
        except sa.exc.DBAPIError as e:
            raise storage_error(e) from None

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
    def sync(
        self,
        name: str,
        *,
        progress: ProgressCallback | None = None,
        full_refresh: bool = False,
    ) -> list[RunSummary]:
        """Sync every stream of connector ``name``; one run per stream.

        Refused at once (:class:`hub.registry.SyncRefused`) while another process syncs
        the same connector. A database error outside a run (starting one, reading the
        cursor) is a :class:`hub.errors.RaccordoError` in one line, never a traceback.
        """
        settings = self.config.connector(name)
        connector = build_connector(self.config, name)
        try:
            return self._sync_streams(
                name, settings.type, settings.org, connector, progress, full_refresh
            )
        except sa.exc.DBAPIError as e:
            raise storage_error(e) from None

    def _sync_streams(
        self,
        name: str,
        connector_type: str,
        org: str,
        connector: Connector,
        progress: ProgressCallback | None,
        full_refresh: bool,
    ) -> list[RunSummary]:
        with self.registry.sync_lock(name):
            summaries = []
            for stream in connector.streams():
                mapping = load_connector_mapping(self.config, name, connector, stream.name)
                check_mapping_sources(self.config, name, stream, mapping)
                summaries.append(
                    self._sync_stream(
                        name,
                        connector_type,
                        org,
                        connector,
                        stream,
                        mapping,
                        progress,
                        full_refresh=full_refresh,
                    )
                )
            return summaries

    def start_run(
        self,
        name: str,
        connector_type: str,
        org: str,
        connector: Connector,
        stream: Stream,
        mapping: CompiledMapping,
        *,
        full_refresh: bool = False,
    ) -> RunContext:
        """Record a run of one stream and return its context (the cursor is reset when
        the mapping version changed or on ``full_refresh``)."""
        previous = self.registry.last_mapping_version(name, stream.name)
        remap = full_refresh or (previous is not None and previous != mapping.version)
        run_id = self.registry.start_run(
            connector=name,
            connector_type=connector_type,
            org=org,
            mapping=mapping.name,
            mapping_version=mapping.version,
            stream=stream.name,
            reset_state=remap,
        )
        if remap:
            log.info(
                "run %s of %s/%s maps every record again (%s)",
                run_id,
                name,
                stream.name,
                "full refresh"
                if full_refresh
                else f"mapping version {previous} → {mapping.version}",
            )
        ctx = RunContext(
            connector=name,
            connector_type=connector_type,
            org=org,
            stream=stream,
            mapping=mapping,
            run_id=run_id,
            multi_org=connector.multi_org,
            retention=dt.timedelta(days=self.config.hub.quarantine_retention_days),
            full_refresh=remap,
        )
        return ctx

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
        *,
        full_refresh: bool = False,
    ) -> RunSummary:
        ctx = self.start_run(
            name, connector_type, org, connector, stream, mapping, full_refresh=full_refresh
        )
        run_id = ctx.run_id
        hub = self.config.hub
        state = self.registry.get_state(name, stream.name)
        pseudonymise = PseudonymiseStage(
            self.pseudonymiser,
            connector=name,
            stream=stream,
            reference_year=self.reference_year,
        )
        totals = RunProgress(name, stream.name, run_id, 0, 0, 0, 0)
        tx = self.registry.load_transaction(
            commit_every=hub.commit_every,
            commit_seconds=hub.commit_seconds,
            sqlite_cache_mib=hub.sqlite_cache_mib,
        )
        # Parts held as they are are not read again, unless everything is mapped again (or
        # records of several organisations share the batches).
        skip = not (ctx.full_refresh or ctx.multi_org)
        known = functools.partial(self._known_part, ctx, tx, pseudonymise) if skip else None
        extract = Extract(connector, stream.name, state, hub.batch_size, known=known)

        def flush(batch: Batch) -> None:
            groups = _by_org(batch.records, org, multi_org=ctx.multi_org, name=name)
            for i, (g_org, g_records) in enumerate(groups):
                last = i == len(groups) - 1
                # Errors, completed units and the state go with the last group, so the
                # cursor is committed only once every record it covers is.
                counts = self._process(
                    ctx,
                    pseudonymise,
                    g_org,
                    g_records,
                    batch if last else Batch(),
                    tx,
                    # Part spans index the batch's records: one group holds all of them.
                    batch.parts if len(groups) == 1 else [],
                )
                totals.read += counts.read
                totals.loaded += counts.loaded
                totals.unchanged += counts.unchanged
                totals.quarantined += counts.quarantined
                totals.duplicates += counts.duplicates
            clock = time.process_time()
            tx.batch_written(len(batch.records))  # commits now and then: part of load
            clock = _tick(self.stage_cpu, "load", clock)
            # The young objects of the batch, collected once (see _young_collections).
            gc.collect(1)
            _tick(self.stage_cpu, "gc", clock)
            if progress:
                progress(totals)

        try:
            try:
                with _young_collections():
                    clock = time.process_time()
                    for batch in extract:
                        self.stage_cpu["extract"] += time.process_time() - clock
                        flush(batch)
                        clock = time.process_time()
            except SourceUnavailable:
                # The source stopped answering: keep what was read up to the latest
                # cursor, so the next run resumes right there.
                covered = extract.covered()
                if covered is not None:
                    flush(covered)
                raise
            clock = time.process_time()
            tx.close()  # the last commit
            _tick(self.stage_cpu, "load", clock)
        except SourceUnavailable as e:
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
        except sa.exc.DBAPIError as e:
            # The database refused a write (disk full, connection lost...): the
            # transaction is rolled back to the last commit; say so in one line.
            tx.rollback()
            problem = storage_error(e)
            self._mark_failed(run_id, problem.message)
            raise RunFailed(
                f"run {run_id} of {name!r} stopped: {problem.message}",
                where=problem.where,
                hint=problem.hint,
            ) from None
        except Exception as e:
            tx.close()
            self.registry.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}")
            raise
        except BaseException:
            # Interrupted (Ctrl-C): keep the whole batches written so far.
            tx.close()
            raise
        finally:
            self.forget_run(run_id)
        return self.registry.finish_run(run_id, status="succeeded")

    def forget_run(self, run_id: int) -> None:
        """Drop what the pipeline remembers for a run that ended (push mode: the hub calls it
        when a worker's run finishes or its lock expires)."""
        self._seen.pop(run_id, None)
        self._unchanged.pop(run_id, None)
        self._ahead.pop(run_id, None)
        self._held.pop(run_id, None)
        self._part_units.pop(run_id, None)

    def _known_part(
        self,
        ctx: RunContext,
        tx: LoadTransaction,
        pseudonymise: PseudonymiseStage,
        part: RecordPart,
    ) -> KnownPart | None:
        """The registry's copy of ``part`` if it holds it as it is (see ``unit_parts``)."""
        units = self._part_units.setdefault(ctx.run_id, {})
        if part.unit not in units:  # a unit has many parts: its id looked up once
            unit_hash = pseudonymise.unit_hash(part.unit)
            found = self.registry.unit_ids(ctx.connector, ctx.stream.name, [unit_hash], tx=tx)
            units[part.unit] = found.get(unit_hash)
        unit = units[part.unit]
        if unit is None:
            return None
        key = self._part_key(ctx, part.unit, part.digest)
        records = self._held_parts(ctx.run_id, unit, tx).get(key)
        return None if records is None else KnownPart(unit, key, records)

    def _part_key(self, ctx: RunContext, unit: str, digest: bytes) -> bytes:
        """A part's key in the registry: keyed, and of this mapping version only (a record
        mapped by another version is not the one loaded)."""
        return self.pseudonymiser.key16(
            "part", ctx.connector, ctx.stream.name, ctx.mapping.version, unit, digest.hex()
        )

    def _held_parts(self, run_id: int, unit: int, tx: LoadTransaction) -> dict[bytes, BitMap64]:
        held = self._held.setdefault(run_id, {})
        parts = held.get(unit)
        if parts is None:
            parts = held[unit] = self.registry.unit_parts(unit, tx=tx)
        return parts

    def _unit_ids_of(
        self, ctx: RunContext, items: Sequence[_Keyed], tx: LoadTransaction
    ) -> dict[str, int]:
        """The registry's ids of the units the batch's records come in (those it knows)."""
        units = {p.unit_hash for p in items if p.unit_hash is not None}
        if not units:
            return {}
        return self.registry.unit_ids(ctx.connector, ctx.stream.name, units, tx=tx)

    def _unchanged_of(self, run_id: int, tx: LoadTransaction) -> BitMap64:
        seen = self._unchanged.get(run_id)
        if seen is None:
            seen = self._unchanged[run_id] = self.registry.unchanged_ids(run_id, tx=tx)
        return seen

    def _mark_failed(self, run_id: int, error: str) -> None:
        try:
            self.registry.finish_run(run_id, status="failed", error=error)
        except sa.exc.DBAPIError:
            # Not even that could be written (the disk is still full): the next run
            # marks this one "interrupted" when it starts.
            log.warning("run %s could not be marked failed", run_id)

    def _process(
        self,
        ctx: RunContext,
        pseudonymise: PseudonymiseStage,
        org: str,
        records: list[RawRecord],
        batch: Batch,
        tx: LoadTransaction,
        spans: Sequence[PartSpan] = (),
    ) -> BatchCounts:
        """One organisation's group of a batch: records whose fingerprint is the one loaded
        are *unchanged* before anything is pseudonymised; the rest go through the stages.

        The batch's skipped parts (before its records) count as read and unchanged; the
        parts in ``spans`` all of whose records load are remembered (``unit_parts``)."""
        cpu = self.stage_cpu
        clock = time.process_time()
        fingerprints = pseudonymise.fingerprints(records, org)
        units = [pseudonymise.unit_hash(u) for u in batch.units]
        counts = BatchCounts(read=len(records), source_errors=len(batch.errors))
        parts = PartChanges()
        if batch.skipped:
            parts.skipped = [(k.unit, k.key) for k in batch.skipped]
            seen = self._unchanged_of(ctx.run_id, tx)
            for k in batch.skipped:
                # A record of the part the run found unchanged earlier in the unit (a copy
                # of it came before) is a duplicate here, as it would be if it were read.
                again = len(k.records & seen)
                counts.read += len(k.records)
                counts.unchanged += len(k.records) - again
                counts.duplicates += again
                # Seen before every record of the batch: a later copy of one is a duplicate.
                seen |= k.records
                parts.skipped_records |= k.records
        keys = [f.source_key_hash for f in fingerprints]
        existing, keep, unit_ids = self._loaded_and_kept(ctx, fingerprints, keys, counts, tx)
        # A key twice in the batch (a change feed) is left to transform, which keeps the last.
        repeated = Counter(keys) if len(set(keys)) < len(keys) else None
        hashed = record_hasher(ctx.mapping.version)
        unchanged: list[int] = []
        todo: list[tuple[RawRecord, Fingerprint]] = []
        # A full refresh maps everything: nothing is looked at as loaded before.
        lookup: Callable[[str], LoadedRecord | None] = (
            (lambda _key: None) if ctx.full_refresh else existing.get
        )
        for record, fp, kept in zip(records, fingerprints, keep, strict=True):
            if not kept:
                continue
            before = lookup(fp.source_key_hash)
            if (
                before is not None
                and record.op == "upsert"
                and (repeated is None or repeated[fp.source_key_hash] == 1)
                and before.record_hash == hashed(fp.fingerprint)
            ):
                unchanged.append(before.id)
            else:
                todo.append((record, fp))
        counts.unchanged += len(unchanged)
        self._drop_changed_parts(ctx, parts, [fp for _, fp in todo], existing, unit_ids, tx)
        candidates = self._part_candidates(ctx, pseudonymise, spans, records, keys, keep, repeated)
        clock = _tick(cpu, "fingerprint", clock)
        prepared = pseudonymise([r for r, _ in todo], org, [fp for _, fp in todo])
        _tick(cpu, "pseudonymise", clock)
        self._transform_and_load(
            ctx,
            org,
            prepared,
            existing,
            counts,
            unchanged=unchanged,
            errors=batch.errors,
            units=units,
            state=batch.state,
            tx=tx,
            parts=parts,
            candidates=candidates,
            made_pseudonyms=pseudonymise.made,
        )
        return counts

    def _drop_changed_parts(
        self,
        ctx: RunContext,
        parts: PartChanges,
        changed: Sequence[_Keyed],
        existing: Mapping[str, LoadedRecord],
        unit_ids: Mapping[str, int],
        tx: LoadTransaction,
    ) -> None:
        """The parts that will no longer hold what they say once ``changed`` (records to
        map, some loaded before) load: those holding one of them, and every part of a unit
        one of them leaves for another."""
        ids: dict[int, BitMap64] = {}
        moved: set[int] = set()
        for item in changed:
            before = existing.get(item.source_key_hash)
            if before is None or before.unit is None:
                continue
            unit_hash = item.unit_hash
            if unit_hash is not None and unit_ids.get(unit_hash) == before.unit:
                ids.setdefault(before.unit, BitMap64()).add(before.id)
            else:
                moved.add(before.unit)
        dropped = []
        for unit, changed_ids in ids.items():
            held = self._held_parts(ctx.run_id, unit, tx)
            gone = [key for key, records in held.items() if records.intersect(changed_ids)]
            for key in gone:
                del held[key]
            dropped += [(unit, key) for key in gone]
        for gone_unit in moved:
            self._held.get(ctx.run_id, {}).pop(gone_unit, None)
        parts.dropped = dropped
        parts.dropped_units = moved

    def _part_candidates(
        self,
        ctx: RunContext,
        pseudonymise: PseudonymiseStage,
        spans: Sequence[PartSpan],
        records: Sequence[RawRecord],
        keys: Sequence[str],
        keep: Sequence[bool],
        repeated: Mapping[str, int] | None,
    ) -> list[tuple[str, bytes, list[str]]]:
        """The parts of the batch that may be remembered once loaded (unit hash, key, the
        source key hashes of their records): no source error, duplicate or cancellation
        among their records, no key repeated in the batch (transform keeps the last)."""
        out = []
        for span in spans:
            start, end = span.start, span.end
            if span.errors or start == end or not all(keep[start:end]):
                continue
            if any(r.op != "upsert" for r in records[start:end]):
                continue
            part_keys = list(keys[start:end])
            if repeated is not None and any(repeated[k] > 1 for k in part_keys):
                continue
            key = self._part_key(ctx, span.unit, span.digest)
            out.append((pseudonymise.unit_hash(span.unit), key, part_keys))
        return out

    def load_prepared(
        self,
        ctx: RunContext,
        org: str,
        prepared: list[Prepared],
        *,
        errors: list[SourceError],
        unit_hashes: list[str],
        state: dict[str, Any] | None,
        tx: LoadTransaction,
    ) -> BatchCounts:
        """transform → load for records already pseudonymised (one organisation's group).

        What a direct sync does after ``pseudonymise``; push mode
        (:mod:`hub.exchange.push`) calls it on the hub with the batches a worker
        pseudonymised, so mapping, validation, unchanged detection and accounting
        happen where the registry is. ``unit_hashes``: the completed units, keyed.
        """
        counts = BatchCounts(read=len(prepared), source_errors=len(errors))
        keys = [p.source_key_hash for p in prepared]
        existing, keep, unit_ids = self._loaded_and_kept(ctx, prepared, keys, counts, tx)
        parts = PartChanges()
        kept = [p for p, k in zip(prepared, keep, strict=True) if k]
        self._drop_changed_parts(ctx, parts, kept, existing, unit_ids, tx)
        self._transform_and_load(
            ctx,
            org,
            kept,
            existing,
            counts,
            unchanged=[],
            errors=errors,
            units=unit_hashes,
            state=state,
            tx=tx,
            parts=parts,
        )
        return counts

    def _loaded_and_kept(
        self,
        ctx: RunContext,
        items: Sequence[_Keyed],
        keys: list[str],
        counts: BatchCounts,
        tx: LoadTransaction,
    ) -> tuple[dict[str, LoadedRecord], list[bool], dict[str, int]]:
        """What the registry holds of the batch's records (``keys``: their source key
        hashes), which of them are not duplicates of an earlier one (counted), and the ids
        of their units the registry knows."""
        unit_ids = self._unit_ids_of(ctx, items, tx)
        # How many of the batch's records each known unit holds: the registry reads the next
        # records of those units as ranges (a re-read in the same order, ReadAhead).
        per_unit = {
            unit_ids[u]: n for u, n in Counter(map(_unit_hash_of, items)).items() if u in unit_ids
        }
        existing = self.registry.loaded_records(
            ctx.connector,
            ctx.stream.name,
            keys,
            tx=tx,
            units=per_unit,
            ahead=self._ahead.setdefault(ctx.run_id, ReadAhead()),
        )
        keep = _without_duplicates(
            items,
            existing,
            ctx.run_id,
            counts,
            self._seen.setdefault(ctx.run_id, {}),
            self._unchanged_of(ctx.run_id, tx),
            unit_ids,
        )
        return existing, keep, unit_ids

    def _transform_and_load(
        self,
        ctx: RunContext,
        org: str,
        prepared: Sequence[Prepared],
        existing: Mapping[str, LoadedRecord],
        counts: BatchCounts,
        *,
        unchanged: list[int],
        errors: Sequence[SourceError],
        units: Sequence[str],
        state: dict[str, Any] | None,
        tx: LoadTransaction,
        parts: PartChanges,
        candidates: Sequence[tuple[str, bytes, list[str]]] = (),
        made_pseudonyms: Mapping[str, tuple[int, bytes]] | None = None,
    ) -> None:
        """transform → load of pseudonymised records, with the ids of those already found
        unchanged (``unchanged``); the run then remembers what it refused and found unchanged.
        ``candidates``: the parts to remember if none of their records is refused;
        ``made_pseudonyms``: those the stage made for the batch (stored as they are)."""
        cpu = self.stage_cpu
        clock = time.process_time()
        batch = PreparedBatch.of(prepared)
        result = self.transform(
            ctx,
            org,
            batch,
            {} if ctx.full_refresh else _hashes_of(existing, batch.source_key_hashes),
            counts,
            loaded_before=existing.keys(),
        )
        unchanged = unchanged + [existing[k].id for k in result.unchanged]
        _remember_refused(self._seen.setdefault(ctx.run_id, {}), result.quarantine, batch, units)
        if candidates:
            refused = {q.source_key_hash for q in result.quarantine}
            loaded = []
            for unit_hash, key, part_keys in candidates:
                if refused.intersection(part_keys):
                    continue
                ids = [existing[k].id for k in part_keys if k in existing]
                new = [k for k in part_keys if k not in existing]
                loaded.append(LoadedPart(unit_hash, key, ids, new))
            parts.loaded = loaded
        clock = _tick(cpu, "transform", clock)
        load(
            self.registry,
            tx,
            ctx,
            org,
            result,
            unchanged=unchanged,
            errors=errors,
            units=units,
            state=state,
            parts=parts,
            made_pseudonyms=made_pseudonyms,
        )
        self._unchanged_of(ctx.run_id, tx).update(unchanged)
        _tick(cpu, "load", clock)


@dataclass
class PseudonymisedBatch:
    """One batch after ``extract → pseudonymise``: no clear identifier, no registry needed."""

    #: (organisation, its records), in the order the direct sync loads them.
    groups: list[tuple[str, Sequence[Prepared]]]
    errors: list[SourceError]
    #: Keyed hashes of the units (files, flows) completed with this batch.
    unit_hashes: list[str]
    #: The cursor covering this batch and the ones before (None: none yet).
    state: dict[str, Any] | None


def pseudonymised_batches(
    config: Config,
    pseudonymiser: Pseudonymiser,
    name: str,
    connector: Connector,
    stream: Stream,
    state: dict[str, Any],
) -> Iterator[PseudonymisedBatch]:
    """The first two stages only, for a worker in push mode (:mod:`hub.exchange.push`).

    Batches are cut exactly as a direct sync cuts them; transform and load happen on
    the hub. If the source stops answering, what the latest cursor covers is yielded,
    then :class:`hub.errors.SourceUnavailable` is raised (as a direct sync keeps it).
    """
    settings = config.connector(name)
    stage = PseudonymiseStage(
        pseudonymiser, connector=name, stream=stream, reference_year=dt.date.today().year
    )
    extract = Extract(connector, stream.name, state, config.hub.batch_size)

    def prepare(batch: Batch) -> PseudonymisedBatch:
        groups = _by_org(batch.records, settings.org, multi_org=connector.multi_org, name=name)
        return PseudonymisedBatch(
            [(g_org, stage(records, g_org)) for g_org, records in groups],
            batch.errors,
            [stage.unit_hash(u) for u in batch.units],
            batch.state,
        )

    try:
        for batch in extract:
            yield prepare(batch)
    except SourceUnavailable:
        covered = extract.covered()
        if covered is not None:
            yield prepare(covered)
        raise


@contextlib.contextmanager
def _young_collections() -> Iterator[None]:
    """No automatic garbage collection while a run loads; ``flush`` collects the two young
    generations after each batch instead.

    A run keeps large caches (identifier outcomes, pseudonyms, key hashes: up to a million
    entries each) and every 700 allocations the collector would look at young objects and,
    from time to time, at all of them: a quarter of a sync's CPU time at 100,000 records.
    What a batch leaves behind in cycles is still collected, with the batch; the long-lived
    caches are never scanned again during the run.
    """
    with no_gc_pauses():
        try:
            yield
        finally:
            # What the run left in cycles that reached the old generation goes now, not at
            # some later collection (a connection closed late, memory held after the run).
            gc.collect()


def _tick(cpu: defaultdict[str, float], stage: str, since: float) -> float:
    """Add the CPU time since ``since`` to ``stage``; the time now."""
    now = time.process_time()
    cpu[stage] += now - since
    return now


class _Keyed(Protocol):
    @property
    def source_key_hash(self) -> str: ...

    @property
    def unit_hash(self) -> str | None: ...


_unit_hash_of = operator.attrgetter("unit_hash")


def _hashes_of(existing: Mapping[str, LoadedRecord], todo: Sequence[str]) -> dict[str, bytes]:
    """The stored record hashes of the records still to map (``todo``: their source key
    hashes; not the whole batch's)."""
    out = {}
    for skh in todo:
        before = existing.get(skh)
        if before is not None:
            out[skh] = before.record_hash
    return out


def _without_duplicates(
    items: Sequence[_Keyed],
    existing: Mapping[str, LoadedRecord],
    run_id: int,
    counts: BatchCounts,
    refused: dict[str, set[str]],
    unchanged: BitMap64,
    unit_ids: Mapping[str, int],
) -> list[bool]:
    """Per record (prepared, or the fingerprint of a raw one): False for one already read
    earlier in the same unit of this run (counted as a duplicate).

    An earlier copy is found in this batch, in the registry (from this unit, and loaded by
    this run or among the ids it found ``unchanged``) or in ``refused`` (per unit: the keys
    of its records this run quarantined). Records of no unit (a database cursor, a change
    feed) are never duplicates: a later one updates an earlier one.
    """
    batch: set[tuple[str, str]] = set()
    keep: list[bool] = []
    append = keep.append
    #: Per unit of the batch: the keys refused in it so far, and its id (None: unknown).
    of_unit: dict[str, tuple[Collection[str], int | None]] = {}
    for p in items:
        unit = p.unit_hash
        if unit is None:
            append(True)
            continue
        skh = p.source_key_hash
        key = (skh, unit)
        seen = of_unit.get(unit)
        if seen is None:
            seen = of_unit[unit] = (refused.get(unit, ()), unit_ids.get(unit))
        before = existing.get(skh)
        if (
            key in batch
            or skh in seen[0]
            or (
                before is not None
                and before.unit is not None
                and before.unit == seen[1]
                and (before.run_id == run_id or before.id in unchanged)
            )
        ):
            counts.duplicates += 1
            append(False)
            continue
        batch.add(key)
        append(True)
    return keep


def _remember_refused(
    refused: dict[str, set[str]],
    quarantine: Sequence[QuarantineEntry],
    prepared: PreparedBatch,
    completed_units: Sequence[str],
) -> None:
    """Keep the keys of this batch's quarantined records per unit, and forget the units this
    batch completed (they cannot repeat a record any more)."""
    unit_of = (
        {
            skh: unit
            for skh, unit in zip(prepared.source_key_hashes, prepared.unit_hashes, strict=True)
            if unit is not None
        }
        if quarantine
        else {}
    )
    for q in quarantine:
        unit = unit_of.get(q.source_key_hash or "")
        if unit is not None and q.source_key_hash is not None:
            refused.setdefault(unit, set()).add(q.source_key_hash)
    for unit in completed_units:
        refused.pop(unit, None)


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


def district_comuni(config: Config) -> frozenset[str]:
    """ISTAT codes of the district's comuni ([web] comuni_file, or the built-in list), for
    the data-quality warnings; empty (no check) when the file cannot be read."""
    web = config.settings.web
    try:
        return frozenset(load_comuni(config.resolve(web.comuni_file) if web.comuni_file else None))
    except OSError:
        return frozenset()
