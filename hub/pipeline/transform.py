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
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any, NamedTuple, get_args, get_origin

from pydantic import ValidationError

from hub.mappings import CompiledMapping
from hub.pipeline.context import Rejection, RunContext
from hub.pseudonyms.stage import BatchPseudonymiser, Prepared, PreparedBatch
from hub.quality import may_warn, record_warnings
from hub.registry import (
    BatchCounts,
    ColumnChanges,
    ColumnRows,
    EntityRow,
    QuarantineEntry,
    SourceRecordChange,
    WarningEntry,
)
from hub.registry.tables import OWNED_KINDS
from hub.schema import model_for

#: Row key hashes remembered between batches, over all models (a subject's key recurs in
#: every record of the person): above this many the cache starts again.
KEY_CACHE_SIZE = 200_000


class _Decided(NamedTuple):
    """A record the fast path decided: its index in the batch's :class:`ColumnChanges`, and
    whether it was loaded before (or came earlier in the batch)."""

    at: int
    replaces: bool


@dataclass
class Transformed:
    """What ``load`` writes for one batch: ``changes`` record by record, or, when the fast
    path decided every change and none is twice in the batch, ``columns`` instead."""

    counts: BatchCounts
    changes: dict[str, SourceRecordChange] = field(default_factory=dict)
    #: The records with their rows as columns (then ``changes`` is empty).
    columns: ColumnChanges | None = None
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
        #: Per model, key parts → the row's key hash (subjects' keys recur across records).
        self._key_hashes: dict[str, dict[tuple[str, ...], bytes]] = {}

    def _output_key_hash(self, model: str, key: tuple[str, ...]) -> bytes:
        cache = self._key_hashes.setdefault(model, {})
        kh = cache.get(key)
        if kh is None:
            kh = cache[key] = self.pseudonymiser.key16(model, *key)
            self._bound_cache()
        return kh

    def _bound_cache(self) -> None:
        """Forget every remembered key hash once they pass :data:`KEY_CACHE_SIZE` over all
        models."""
        if sum(map(len, self._key_hashes.values())) > KEY_CACHE_SIZE:
            self._key_hashes.clear()

    def _output_key_hashes(self, model: str, keys: Sequence[tuple[str, ...]]) -> list[bytes]:
        """The key hash of each key of a batch's rows of ``model``: each key not cached
        computed once, all of them in one call to the pseudonymiser."""
        cache = self._key_hashes.setdefault(model, {})
        todo = [k for k in dict.fromkeys(keys) if k not in cache]
        if todo:
            many = getattr(self.pseudonymiser, "key16_many", None)
            if many is None:  # a pseudonymiser without the batch form
                hashes = [self.pseudonymiser.key16(model, *k) for k in todo]
            else:
                hashes = many(model, todo)
            cache.update(zip(todo, hashes, strict=True))
        out = list(map(cache.__getitem__, keys))
        if todo:
            self._bound_cache()
        return out

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
        batch = PreparedBatch.of(prepared)
        changes: dict[str, SourceRecordChange | _Decided] = {}
        hashes = record_hashes(mapping.version, batch)
        index, fast, quiet = self._fast_outputs(mapping, batch, hashes, existing)
        at = {i: x for x, i in enumerate(index)}
        #: The batch's changes are all records the fast path decided, none twice.
        only_fast = True
        skhs, ops, problems = batch.source_key_hashes, batch.ops, batch.problems
        for i, skh in enumerate(skhs):
            if problems[i]:
                out.quarantine.append(quarantine_entry(batch[i], Rejection(*problems[i][0])))
                counts.quarantined += 1
                continue
            record_hash = hashes[i]
            op = ops[i]
            if op == "upsert" and existing.get(skh) == record_hash and skh not in changes:
                counts.unchanged += 1
                out.unchanged.append(skh)
                continue
            twice = skh in changes
            replaces = twice or skh in loaded_before
            if op == "delete":
                changes[skh] = SourceRecordChange(
                    skh, record_hash, "delete", (), batch.unit_hashes[i]
                )
                counts.loaded += 1
                counts.deleted += 1
                only_fast = False
                continue
            x = at.get(i)
            if x is not None:
                assert fast is not None
                # Decided in columns: mapped, validated and keyed; warnings only where the
                # columns say a rule may fire.
                mapped = () if i in quiet else fast.outputs(x)
                changes[skh] = _Decided(x, replaces)
                only_fast = only_fast and not twice
            else:
                p = batch[i]
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
                changes[skh] = SourceRecordChange(
                    skh, record_hash, "upsert", entities, p.unit_hash, replaces=replaces
                )
                only_fast = False
            # -- data-quality warnings (hub/quality.py): counted, never a refusal.
            for w in (
                record_warnings(mapped, cf_derived=batch.cf_derived[i], district=self.district)
                if mapped
                else ()
            ):
                out.warnings.append(
                    WarningEntry(batch.locations[i], w.rule, w.field, w.message, skh)
                )
            counts.loaded += 1
        if fast is not None and only_fast and len(changes) == len(fast):
            # Every change is a record decided in columns, none twice: they go to load as
            # columns, with which of them were loaded before.
            flags = [False] * len(fast)
            for c in changes.values():
                assert isinstance(c, _Decided)
                flags[c.at] = c.replaces
            if any(flags):
                fast.replaces = flags
            out.columns = fast
            return out
        one_by_one = fast.changes() if fast is not None else []
        out.changes = {
            k: c
            if isinstance(c, SourceRecordChange)
            else one_by_one[c.at]._replace(replaces=c.replaces)
            for k, c in changes.items()
        }
        return out

    def _fast_outputs(
        self,
        mapping: CompiledMapping,
        records: Sequence[Prepared],
        hashes: Sequence[bytes],
        existing: Mapping[str, bytes],
    ) -> tuple[list[int], ColumnChanges | None, set[int]]:
        """The records the fast path decides (their indexes in the batch), their rows as
        columns, built spec by spec over the batch's columns, and those of them for which no
        warning rule can fire (:func:`hub.quality.may_warn`); the others take the row path
        (refused by a step, or left by the fast path to the row path). The same rows, keys
        and positions as :meth:`_entities`."""
        columns = mapping.columns
        if columns is None:
            return [], None, set()
        prepared = PreparedBatch.of(records)
        skhs, ops, problems = prepared.source_key_hashes, prepared.ops, prepared.problems
        todo = [
            i
            for i, skh in enumerate(skhs)
            if not problems[i] and ops[i] == "upsert" and existing.get(skh) != hashes[i]
        ]
        if not todo:
            return [], None, set()
        whole = len(todo) == len(prepared)
        batch = columns.apply_to_columns(
            len(todo), lambda name: prepared.values(name, None if whole else todo)
        )
        if batch is None:
            return [], None, set()
        ok = [j for j, refused in enumerate(batch.refused) if not refused]
        if not ok:
            return [], None, set()
        every = len(ok) == len(todo)
        #: The records decided, by their index in the batch.
        index = todo if every else [todo[j] for j in ok]

        def decided(values: list[Any]) -> list[Any]:
            """A column over the batch's records, cut to those decided."""
            return values if every else [values[j] for j in ok]

        #: Per identifier field with person keys: its pseudonyms and person keys over the
        #: records decided, and the pseudonyms of those that have one; built when a key
        #: first needs them.
        persons: list[tuple[list[Any], list[str | None], set[Any]]] | None = None
        #: A key part's column (by identity: specs keyed by one field share it) → its
        #: values over the records decided, identifier pseudonyms made persons' keys.
        parts_of: dict[int, list[str]] = {}
        #: Per model, the number of unkeyed outputs each record gave so far (positions),
        #: and how many specs of the model have no key.
        positions: dict[str, list[int]] = {}
        unkeyed = Counter(s.model for s in batch.specs if s.key_columns is None)
        out: list[ColumnRows] = []
        for spec in batch.specs:
            model = spec.model
            active = None if spec.active is None else decided(spec.active)
            rows = [decided(c) for c in spec.columns]
            if spec.key_columns is not None:
                parts = []
                for column in spec.key_columns:
                    values = parts_of.get(id(column))
                    if values is None:
                        values = decided(column)
                        if persons is None:
                            persons = []
                            for name, keys_ in prepared.person_keys.items():
                                pseudonyms = prepared.values(name, index)
                                person = [keys_[i] for i in index]
                                given = {
                                    ps
                                    for ps, pk in zip(pseudonyms, person, strict=True)
                                    if pk is not None
                                }
                                persons.append((pseudonyms, person, given))
                        # A key naming an identifier field is built from the person's key,
                        # which needs no group operation to stay the same across key
                        # rotations (a pseudonym that came already pseudonymised is made
                        # epoch-independent by key16). A column holding none of the
                        # batch's pseudonyms is left as it is.
                        for pseudonyms, person, given in persons:
                            if not given.isdisjoint(values):
                                values = [
                                    pk if pk is not None and v == ps else v
                                    for v, ps, pk in zip(values, pseudonyms, person, strict=True)
                                ]
                        parts_of[id(column)] = values
                    parts.append(values)
                keys = list(zip(*parts, strict=True))
                ident: list[bytes | int | None]
                if active is not None:
                    wanted = [k for k, a in zip(keys, active, strict=True) if a]
                    hashed = iter(self._output_key_hashes(model, wanted))
                    ident = [next(hashed) if a else None for a in active]
                else:
                    ident = list(self._output_key_hashes(model, keys))
                out.append(ColumnRows(model, spec.names, rows, ident, False))
                continue
            # Without a key: the n-th unkeyed output of this model in its record.
            owned = model in OWNED_KINDS
            if active is None and owned and unkeyed[model] == 1:
                # The model's one unkeyed spec, giving a row in every record: position 0.
                out.append(ColumnRows(model, spec.names, rows, [0] * len(ok), True))
                continue
            counts = positions.get(model)
            if counts is None:
                counts = positions[model] = [0] * len(ok)
            ident = []
            for x in range(len(ok)):
                if active is not None and not active[x]:
                    ident.append(None)
                    continue
                n = counts[x]
                counts[x] = n + 1
                # Owned: identified by (source record, position) in the registry, no hash;
                # else by a hash of the record's own keyed source-key hash.
                ident.append(n if owned else _unkeyed_hash(skhs[index[x]], model, n))
            out.append(ColumnRows(model, spec.names, rows, ident, owned))
        may = may_warn(
            [(spec.model, spec.fields, spec.active_mask) for spec in batch.specs],
            len(todo),
            cf_derived=[prepared.cf_derived[i] for i in todo],
            district=self.district,
        )
        quiet: set[int] = set()
        if may is not None:
            flags = may.to_pylist()
            quiet = {todo[j] for j in ok if not flags[j]}
        return (
            index,
            ColumnChanges(
                [skhs[i] for i in index],
                [hashes[i] for i in index],
                [prepared.unit_hashes[i] for i in index],
                out,
            ),
            quiet,
        )

    def _entities(
        self,
        p: Prepared,
        outputs: Iterable[tuple[str, tuple[str, ...] | None, Mapping[str, Any]]],
    ) -> tuple[EntityRow, ...]:
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
            entities.append(EntityRow(model, _unkeyed_hash(p.source_key_hash, model, n), values))
        return tuple(entities)

    def _validate(
        self, org: str, p: Prepared, outputs: Any
    ) -> tuple[tuple[EntityRow, ...], Rejection | None]:
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
                return (), Rejection(f"{out.model}.{loc}", f"schema.{err['type']}", _safe_msg(err))
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


def _unkeyed_hash(source_key_hash: str, model: str, n: int) -> bytes:
    """The identity of the n-th output of ``model`` of a record, of a kind no source record
    owns (a subject without a key): keyed by the record's own keyed source-key hash (no
    second HMAC needed)."""
    return hashlib.blake2b(
        f"{model}|{n}".encode(), key=source_key_hash.encode()[:64], digest_size=16
    ).digest()


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


def record_hashes(mapping_version: str, prepared: Sequence[Prepared]) -> list[bytes]:
    """:func:`record_hasher`'s hash of each record of a batch (``b""`` for one refused by
    pseudonymisation), each from a copy of the keyed BLAKE2b state: the same bytes, for
    about two thirds of the cost."""
    copy = hashlib.blake2b(key=mapping_version.encode()[:64], digest_size=16).copy
    batch = PreparedBatch.of(prepared)
    out = []
    for fingerprint, problems in zip(batch.fingerprints, batch.problems, strict=True):
        if problems:
            out.append(b"")
            continue
        h = copy()
        h.update(fingerprint.encode())
        out.append(h.digest())
    return out
