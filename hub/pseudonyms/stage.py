"""The pipeline's ``pseudonymise`` stage: a batch of raw records in, no clear identifier out.

Each *distinct* identifier of a batch (same text, expected type and namespace) is
normalised and validated once, and the distinct valid ones are pseudonymised in one
call, :meth:`hub.pseudonyms.Pseudonymiser.pseudonymise_many` (local keyring or, in a
multi-consortium district, the remote pseudonymisation service). Outcomes are also
remembered for the run (in memory only, bounded), since sources repeat the same
people across batches.

What leaves the stage (:class:`Prepared`) holds the stream's data fields as they
are, pseudonyms in place of identifiers (``INVALID_MARKER`` where one was refused)
and the keyed hash of the source record key; personal and undeclared fields are
dropped here, so nothing downstream can see them.

Each record also gets a **fingerprint** (:meth:`PseudonymiseStage.fingerprints`): a keyed
hash (HMAC with the record key) of what the stream declares of it, identifiers as read.
It decides "unchanged" *before* anything is pseudonymised, so re-reading a file in which
little changed costs little; it does not move when the pseudonym keys rotate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from hub.connector import FieldRole, FieldSpec, RawRecord, Stream
from hub.pseudonyms.identifiers import (
    Identifier,
    IdentifierType,
    InvalidIdentifier,
    cf_birth_year_and_sex,
    parse_identifier,
)
from hub.pseudonyms.pseudonymiser import pseudonym_text

#: Marker stored in place of an identifier that could not be pseudonymised.
INVALID_MARKER = "<invalid identifier removed>"

#: Words sources use for identifier types, beyond the IdentifierType names.
TYPE_ALIASES = {
    "CFP": IdentifierType.CF_PROVV,
    "CF PROVVISORIO": IdentifierType.CF_PROVV,
    "CODICE FISCALE": IdentifierType.CF,
    "": IdentifierType.NONE,
    "NESSUNO": IdentifierType.NONE,
    "ND": IdentifierType.NONE,
}

#: A run forgets remembered identifier outcomes beyond this many (memory bound, about 400
#: bytes each): enough for the distinct people and households of a 1,000,000-record export,
#: each of which would otherwise be pseudonymised again after the cache is cleared.
CACHE_SIZE = 1_000_000


class BatchPseudonymiser(Protocol):
    """What the stage needs from a pseudonymiser (local or remote)."""

    epoch: int

    def pseudonymise_many(
        self, identifiers: Sequence[Identifier], *, remember: bool = True
    ) -> list[bytes]: ...

    def key_hash(self, *parts: str) -> str: ...

    def key16(self, *parts: str) -> bytes: ...

    def record_fingerprints(
        self, connector: str, stream: str, items: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]: ...

    def person_key(self, identifier: Identifier) -> str: ...


@lru_cache(maxsize=1024)
def identifier_type_named(word: str) -> IdentifierType:
    """``IdentifierType`` from a source's word for it; ValueError if unknown."""
    w = " ".join(word.strip().upper().replace("_", " ").split())
    if w in TYPE_ALIASES:
        return TYPE_ALIASES[w]
    return IdentifierType(w.replace(" ", "_"))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A raw record after pseudonymisation (clear identifiers already gone)."""

    source_key_hash: str
    location: str
    op: str
    data: dict[str, Any]
    problems: tuple[tuple[str, str, str], ...]  # (field, rule, message)
    unit_hash: str | None = None
    #: Birth year and sex encoded in the record's codice fiscale, for hub.quality.
    cf_derived: tuple[int, str] | None = None
    #: The record's fingerprint (:class:`Fingerprint`): with the mapping version, what
    #: decides "unchanged" (:func:`hub.pipeline.transform.record_hasher`).
    fingerprint: str = ""
    #: (identifier field, :meth:`~hub.pseudonyms.Pseudonymiser.person_key` of its value) for
    #: each identifier pseudonymised: what row keys naming that field are built from.
    person_keys: tuple[tuple[str, str], ...] = ()


class Fingerprint(NamedTuple):
    """What identifies a raw record and its content, computed before pseudonymisation."""

    source_key_hash: str
    unit_hash: str | None
    #: Keyed hash (hex of 16 bytes, :meth:`~hub.pseudonyms.Pseudonymiser.record_fingerprints`)
    #: of the source key hash, the organisation, the operation and the declared fields as
    #: read (identifiers in clear, inside the keyed hash only).
    fingerprint: str


#: Pseudonym, CF-derived (birth year, sex) and person key, or why the identifier is invalid.
Outcome = tuple[str | None, tuple[int, str] | None, str | None] | InvalidIdentifier
_Key = tuple[str | None, IdentifierType | None, str | None]


class PseudonymiseStage:
    """The stage for one run of one connector stream."""

    def __init__(
        self,
        pseudonymiser: BatchPseudonymiser,
        *,
        connector: str,
        stream: Stream,
        reference_year: int | None = None,
    ) -> None:
        self.pseudonymiser = pseudonymiser
        self.connector = connector
        self.stream = stream
        self.reference_year = reference_year or dt.date.today().year
        self.data_fields = tuple(f.name for f in stream.fields if f.role is FieldRole.DATA)
        self.identifier_fields = tuple(f for f in stream.fields if f.role is FieldRole.IDENTIFIER)
        #: The fields the fingerprint covers, in a fixed order: every declared one but the
        #: personal ones, and the fields naming identifier types and namespaces.
        self.declared_order = tuple(
            sorted(
                {f.name for f in stream.fields if f.role is not FieldRole.PERSONAL}
                | {
                    n
                    for f in self.identifier_fields
                    for n in (f.type_field, f.namespace_field)
                    if n
                }
            )
        )
        self._outcomes: dict[_Key, Outcome] = {}
        self._units: dict[str, str] = {}
        #: Identifiers pseudonymised (distinct per batch), for tests and progress.
        self.pseudonymised = 0

    # -- the stage ----------------------------------------------------------------
    def __call__(
        self,
        records: Sequence[RawRecord],
        org: str,
        fingerprints: Sequence[Fingerprint] | None = None,
    ) -> list[Prepared]:
        """Pseudonymise ``records`` of ``org`` (``fingerprints``: theirs, if computed)."""
        if fingerprints is None:
            fingerprints = self.fingerprints(records, org)
        plans = [self._plan(r, org) for r in records]
        self._resolve({k for plan in plans for _, k, _ in plan if k is not None})
        return [
            self._prepare(r, plan, fp)
            for r, plan, fp in zip(records, plans, fingerprints, strict=True)
        ]

    def fingerprints(self, records: Sequence[RawRecord], org: str) -> list[Fingerprint]:
        """Each record's key hash, unit hash and fingerprint: keyed hashes only, nothing
        pseudonymised (cheap: what a re-read of unchanged records costs)."""
        stream, declared = self.stream, self.declared_order
        source_key = stream.source_key
        keys = [
            r.key if r.key is not None else "|".join(str(r.data.get(k, "")) for k in source_key)
            for r in records
        ]
        # repr is deterministic for the values sources give (str, int, float, bool, None,
        # date, Decimal) and much cheaper than JSON; fields in a fixed order (absent = None).
        contents = [repr((org, r.op, tuple(map(r.data.get, declared)))) for r in records]
        hashed = self.pseudonymiser.record_fingerprints(
            self.connector, stream.name, zip(keys, contents, strict=True)
        )
        unit_hash = self._unit_hash
        return [
            Fingerprint(skh, unit_hash(r), fingerprint)
            for r, (skh, fingerprint) in zip(records, hashed, strict=True)
        ]

    def _unit_hash(self, record: RawRecord) -> str | None:
        if record.unit is None:
            return None
        # Every record of a file (or flow) names the same unit: hash it once.
        unit_hash = self._units.get(record.unit)
        if unit_hash is None:
            if len(self._units) >= CACHE_SIZE:
                self._units.clear()
            unit_hash = self._units[record.unit] = self.pseudonymiser.key_hash(
                "unit", self.connector, self.stream.name, record.unit
            )
        return unit_hash

    # -- internals ----------------------------------------------------------------
    def _plan(self, record: RawRecord, org: str) -> list[tuple[FieldSpec, _Key | None, str | None]]:
        """Per identifier field: (spec, outcome key, or None and a problem rule)."""
        raw = record.data
        plan: list[tuple[FieldSpec, _Key | None, str | None]] = []
        for spec in self.identifier_fields:
            if spec.name not in raw:
                continue
            expected = spec.identifier_type
            if spec.type_field:
                try:
                    expected = identifier_type_named(str(raw.get(spec.type_field) or ""))
                except ValueError:
                    plan.append((spec, None, "unknown_type"))
                    continue
            value = raw[spec.name]
            text = None if value is None else str(value)
            if spec.optional and not (text or "").strip():
                plan.append((spec, None, None))
                continue
            namespace = None
            if expected is IdentifierType.LOCAL:
                namespace = (
                    str(raw.get(spec.namespace_field) or "") if spec.namespace_field else org
                )
            plan.append((spec, (text, expected, namespace), None))
        return plan

    def _resolve(self, keys: set[_Key]) -> None:
        """Validate each new distinct identifier once; pseudonymise the valid ones at once."""
        new = [k for k in keys if k not in self._outcomes]
        if not new:
            return
        if len(self._outcomes) + len(new) > CACHE_SIZE:
            # Forget all but what this batch needs.
            self._outcomes = {k: v for k, v in self._outcomes.items() if k in keys}
        valid: dict[Identifier, list[_Key]] = {}
        for key in new:
            text, expected, namespace = key
            try:
                ident = parse_identifier(text, expected, namespace=namespace)
            except InvalidIdentifier as e:
                self._outcomes[key] = e
                continue
            if ident.type is IdentifierType.NONE:
                self._outcomes[key] = (None, None, None)
            else:
                valid.setdefault(ident, []).append(key)
        if not valid:
            return
        idents = list(valid)
        # The stage remembers the outcomes itself (``_outcomes``): the pseudonymiser need not.
        digests = self.pseudonymiser.pseudonymise_many(idents, remember=False)
        if len(digests) != len(idents):  # a remote service answering short is a bug
            raise RuntimeError("the pseudonymiser answered a different number of pseudonyms")
        self.pseudonymised += len(idents)
        epoch = self.pseudonymiser.epoch
        for ident, digest in zip(idents, digests, strict=True):
            derived = (
                cf_birth_year_and_sex(ident.value, reference_year=self.reference_year)
                if ident.type is IdentifierType.CF
                else None
            )
            outcome: Outcome = (
                pseudonym_text(epoch, digest),
                derived,
                self.pseudonymiser.person_key(ident),
            )
            for key in valid[ident]:
                self._outcomes[key] = outcome

    def _prepare(
        self,
        record: RawRecord,
        plan: list[tuple[FieldSpec, _Key | None, str | None]],
        fp: Fingerprint,
    ) -> Prepared:
        raw = record.data
        data: dict[str, Any] = {f: raw[f] for f in self.data_fields if f in raw}
        problems: list[tuple[str, str, str]] = []
        cf_derived: tuple[int, str] | None = None
        person_keys: list[tuple[str, str]] = []
        for spec, okey, rule in plan:
            if okey is None:
                if rule == "unknown_type":
                    problems.append(
                        (spec.name, rule, f"{spec.type_field}: not a known identifier type")
                    )
                    data[spec.name] = INVALID_MARKER
                else:
                    data[spec.name] = None
                continue
            outcome = self._outcomes[okey]
            if isinstance(outcome, InvalidIdentifier):
                problems.append((spec.name, outcome.rule, outcome.message))
                data[spec.name] = INVALID_MARKER
                continue
            pseudonym, derived, person = outcome
            data[spec.name] = pseudonym
            if person is not None:
                person_keys.append((spec.name, person))
            if derived is not None and cf_derived is None:
                cf_derived = derived
            if derived is not None and spec.derive_birth_year_and_sex:
                data[f"{spec.name}__birth_year"] = derived[0]
                data[f"{spec.name}__sex"] = derived[1]
        return Prepared(
            fp.source_key_hash,
            record.location,
            record.op,
            data,
            tuple(problems),
            fp.unit_hash,
            cf_derived,
            fp.fingerprint,
            tuple(person_keys),
        )
