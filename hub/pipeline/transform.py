"""Stage 3, ``transform``: pseudonymised records → validated common-schema rows.

The declarative mapping (compiled once per run, :mod:`hub.mappings.engine`) gives
each record's outputs; each output is validated against its common-schema model.
A record whose content and mapping version are those already loaded is
*unchanged* and is not mapped again. A refused record becomes a
:class:`~hub.pipeline.context.Rejection` (field, rule, reason) and none of its
outputs is kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache, lru_cache
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from hub.mappings import CompiledMapping
from hub.mappings.columns import RowOutputs
from hub.pipeline.context import Rejection, RunContext
from hub.pseudonyms.stage import BatchPseudonymiser, Prepared
from hub.quality import record_warnings
from hub.registry import (
    BatchCounts,
    EntityRow,
    QuarantineEntry,
    SourceRecordChange,
    WarningEntry,
)
from hub.registry.tables import OWNED_KINDS
from hub.schema import model_for


@dataclass
class Transformed:
    """What ``load`` writes for one batch."""

    counts: BatchCounts
    changes: dict[str, SourceRecordChange] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    #: Data-quality warnings of records that load (``hub.quality``): never a refusal.
    warnings: list[WarningEntry] = field(default_factory=list)


class Transform:
    """The stage for one pipeline (caches shared by its runs)."""

    def __init__(
        self, pseudonymiser: BatchPseudonymiser, district: frozenset[str] = frozenset()
    ) -> None:
        self.pseudonymiser = pseudonymiser
        #: ISTAT codes of the district's comuni, for the data-quality warnings.
        self.district = district
        self._output_key_hash = lru_cache(maxsize=200_000)(self._compute_output_key_hash)

    def _compute_output_key_hash(self, model: str, key: tuple[str, ...]) -> bytes:
        return self.pseudonymiser.key16(model, *key)

    def __call__(
        self,
        ctx: RunContext,
        org: str,
        prepared: Sequence[Prepared],
        existing: Mapping[str, bytes],
        counts: BatchCounts,
        *,
        loaded_before: Collection[str],
    ) -> Transformed:
        """``existing``: the record hashes to compare with (empty: map everything);
        ``loaded_before``: the source keys loaded before (their old rows may go)."""
        out = Transformed(counts)
        mapping = ctx.mapping
        changes = out.changes
        hashed = record_hasher(mapping.version)
        hashes = [b"" if p.problems else hashed(p.fingerprint) for p in prepared]
        fast = self._fast_outputs(mapping, prepared, hashes, existing)
        for i, p in enumerate(prepared):
            if p.problems:
                out.quarantine.append(quarantine_entry(p, Rejection(*p.problems[0])))
                counts.quarantined += 1
                continue
            record_hash = hashes[i]
            if (
                p.op == "upsert"
                and existing.get(p.source_key_hash) == record_hash
                and p.source_key_hash not in changes
            ):
                counts.unchanged += 1
                out.unchanged.append(p.source_key_hash)
                continue
            if p.op == "delete":
                changes[p.source_key_hash] = SourceRecordChange(
                    p.source_key_hash, record_hash, "delete", (), p.unit_hash
                )
                counts.loaded += 1
                counts.deleted += 1
                continue
            outputs = fast.get(i)
            if outputs is not None:
                # Decided in columns: mapped and validated; only the keys are left.
                entities = self._entities(p, outputs)
                mapped: list[tuple[str, Mapping[str, Any]]] = [
                    (model, values) for model, _, values in outputs
                ]
            else:
                result = mapping.apply(p.data)
                for table, code in result.unmapped:
                    slot = counts.unmapped.setdefault(table, {})
                    slot[code] = slot.get(code, 0) + 1
                if result.problems:
                    pr = result.problems[0]
                    problem: Rejection | None = Rejection(pr.field, pr.rule, pr.message)
                else:
                    entities, problem = self._validate(org, p, result.outputs)
                if problem:
                    out.quarantine.append(quarantine_entry(p, problem))
                    counts.quarantined += 1
                    continue
                mapped = [(o.model, o.data) for o in result.outputs]
            # -- data-quality warnings (hub/quality.py): counted, never a refusal.
            for w in record_warnings(mapped, cf_derived=p.cf_derived, district=self.district):
                out.warnings.append(
                    WarningEntry(p.location, w.rule, w.field, w.message, p.source_key_hash)
                )
            changes[p.source_key_hash] = SourceRecordChange(
                p.source_key_hash,
                record_hash,
                "upsert",
                tuple(entities),
                p.unit_hash,
                replaces=p.source_key_hash in loaded_before or p.source_key_hash in changes,
            )
            counts.loaded += 1
        return out

    def _fast_outputs(
        self,
        mapping: CompiledMapping,
        prepared: Sequence[Prepared],
        hashes: Sequence[bytes],
        existing: Mapping[str, bytes],
    ) -> dict[int, list[tuple[str, tuple[str, ...] | None, dict[str, Any]]]]:
        """The fast path's outputs of the records to map (by index); the others take the
        row path (refused by a step, or left by the fast path to the row path)."""
        columns = mapping.columns
        if columns is None:
            return {}
        todo = [
            i
            for i, p in enumerate(prepared)
            if not p.problems and p.op == "upsert" and existing.get(p.source_key_hash) != hashes[i]
        ]
        if not todo:
            return {}
        results: list[RowOutputs] | None = columns.apply([prepared[i].data for i in todo])
        if results is None:
            return {}
        return {i: r for i, r in zip(todo, results, strict=True) if r is not None}

    def _entities(
        self,
        p: Prepared,
        outputs: Iterable[tuple[str, tuple[str, ...] | None, Mapping[str, Any]]],
    ) -> list[EntityRow]:
        """The record's outputs as rows, each with its identity: its key's hash, or (no
        ``key``, a kind a source record owns) its position among the record's outputs of
        that model."""
        entities: list[EntityRow] = []
        seen: dict[str, int] = {}
        person_keys = p.person_keys
        #: Identifier-field value (its pseudonym) → the person's key, built once per record.
        persons: dict[Any, str] | None = None
        key_hash = self._output_key_hash
        for model, key, values in outputs:
            if key is not None:
                if person_keys:
                    # A key naming an identifier field is built from the person's key, which
                    # needs no group operation to stay the same across key rotations (a
                    # pseudonym that came already pseudonymised is made epoch-independent by
                    # key16).
                    if persons is None:
                        data = p.data
                        persons = {data.get(name): person for name, person in person_keys}
                    key = tuple(map(persons.get, key, key))
                entities.append(EntityRow(model, key_hash(model, key), values))
                continue
            n = seen.get(model, 0)
            seen[model] = n + 1
            if model in OWNED_KINDS:
                # Identified by (source record, position) in the registry: no hash, no index.
                entities.append(EntityRow(model, None, values, n))
                continue
            # The n-th output of this model of the record, of a kind no source record owns (a
            # subject without a key): keyed by the record's own keyed source-key hash (no
            # second HMAC needed).
            kh = hashlib.blake2b(
                f"{model}|{n}".encode(), key=p.source_key_hash.encode()[:64], digest_size=16
            ).digest()
            entities.append(EntityRow(model, kh, values))
        return entities

    def _validate(
        self, org: str, p: Prepared, outputs: Any
    ) -> tuple[list[EntityRow], Rejection | None]:
        rows: list[tuple[str, tuple[str, ...] | None, dict[str, Any]]] = []
        for out in outputs:
            validator, converted = _validator_for(out.model)
            try:
                obj = validator({**out.data, "org": org})
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                # pydantic's message may quote the input: keep only the message text
                # (type + constraint), never the value.
                return [], Rejection(f"{out.model}.{loc}", f"schema.{err['type']}", _safe_msg(err))
            # The validated field values, as model_dump would give them (they are all
            # plain values, dates or Decimals), minus org; enums and tuples of enums
            # become the codes stored in the columns.
            row = dict(obj.__dict__)
            del row["org"]
            for name in converted:
                row[name] = _column_value(row[name])
            key = None if out.key is None else tuple(str(k) for k in out.key)
            rows.append((out.model, key, row))
        return self._entities(p, rows), None


def quarantine_entry(p: Prepared, problem: Rejection) -> QuarantineEntry:
    return QuarantineEntry(
        kind="record",
        location=p.location,
        rule=problem.rule,
        reason=problem.reason,
        payload=p.data,
        source_key_hash=p.source_key_hash,
        field=problem.field,
    )


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


def record_hasher(mapping_version: str) -> Callable[[str], bytes]:
    """The function giving the one keyed record hash (16 bytes) that decides *unchanged*,
    from the mapping version and a record's fingerprint (:class:`hub.pseudonyms.stage.
    Fingerprint`, a keyed hash of what the stream declares of the raw record).

    It takes the identifiers as read, not their pseudonyms, so a key rotation changes no
    record hash; and it can be computed before pseudonymisation, so unchanged records are
    never pseudonymised nor mapped again."""
    key = mapping_version.encode()[:64]
    blake2b = hashlib.blake2b

    def record_hash(fingerprint: str) -> bytes:
        return blake2b(fingerprint.encode(), key=key, digest_size=16).digest()

    return record_hash
