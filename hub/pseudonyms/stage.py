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
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from hub.pseudonyms.pseudonymiser import TEXT_PREFIX, pseudonym_text

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

#: A run forgets remembered identifier outcomes beyond this many (memory bound, about 220
#: bytes each with the identifier's text): enough for the distinct people and households of
#: a 1,000,000-record export, each of which would otherwise be pseudonymised again after the
#: cache is cleared.
CACHE_SIZE = 1_000_000
#: Length of a person key (``p1.`` and the base64url of 16 bytes), the first part of a
#: remembered outcome (:func:`_pack`).
_PERSON_KEY_LEN = 25


class BatchPseudonymiser(Protocol):
    """What the stage needs from a pseudonymiser (local or remote)."""

    epoch: int

    def pseudonymise_many(
        self, identifiers: Sequence[Identifier], *, remember: bool = True
    ) -> list[bytes]:
        """One 32-byte pseudonym per identifier, each a canonical ristretto255 element
        (the load stores them without checking them again: a remote client checks the
        service's answers)."""
        ...

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


class Prepared(NamedTuple):
    """A raw record after pseudonymisation (clear identifiers already gone).

    A named tuple: one is built per record read, and a frozen dataclass took about seven
    times as long to build (its fields are set one by one through ``object.__setattr__``).
    """

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


#: Held in a column of :class:`PreparedBatch` where a record lacks the field.
ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "ABSENT", "__slots__": ()})()


class PreparedBatch(Sequence[Prepared]):
    """A batch of :class:`Prepared` records held column by column: what leaves the stage.

    Transform's fast path reads the columns without a record object or a data dict per
    record; ``batch[i]`` builds record ``i`` for the paths that take one (quarantine, the
    row path, push mode), equal to the one the stage used to build.

    ``columns`` holds each data field over the batch, pseudonyms in place of identifiers,
    :data:`ABSENT` where a record lacks the field; ``person_keys`` each identifier field's
    person keys (``None`` where the record has none).
    """

    __slots__ = (
        "_absent",
        "cf_derived",
        "columns",
        "fingerprints",
        "locations",
        "ops",
        "person_keys",
        "problems",
        "source_key_hashes",
        "unit_hashes",
    )

    def __init__(
        self,
        *,
        source_key_hashes: list[str],
        locations: list[str],
        ops: list[str],
        columns: dict[str, list[Any]],
        problems: list[tuple[tuple[str, str, str], ...]],
        unit_hashes: list[str | None],
        cf_derived: list[tuple[int, str] | None],
        fingerprints: list[str],
        person_keys: dict[str, list[str | None]],
        absent: frozenset[str],
    ) -> None:
        self.source_key_hashes = source_key_hashes
        self.locations = locations
        self.ops = ops
        self.columns = columns
        self.problems = problems
        self.unit_hashes = unit_hashes
        self.cf_derived = cf_derived
        self.fingerprints = fingerprints
        self.person_keys = person_keys
        #: The columns holding ABSENT somewhere.
        self._absent = absent

    @classmethod
    def of(cls, records: Sequence[Prepared]) -> PreparedBatch:
        """The columns of records built one by one (push mode, tests)."""
        if isinstance(records, PreparedBatch):
            return records
        names = list(dict.fromkeys(k for p in records for k in p.data))
        columns = {n: [p.data.get(n, ABSENT) for p in records] for n in names}
        keyed = list(dict.fromkeys(name for p in records for name, _ in p.person_keys))
        person_keys = {n: [dict(p.person_keys).get(n) for p in records] for n in keyed}
        return cls(
            source_key_hashes=[p.source_key_hash for p in records],
            locations=[p.location for p in records],
            ops=[p.op for p in records],
            columns=columns,
            problems=[p.problems for p in records],
            unit_hashes=[p.unit_hash for p in records],
            cf_derived=[p.cf_derived for p in records],
            fingerprints=[p.fingerprint for p in records],
            person_keys=person_keys,
            absent=frozenset(n for n, c in columns.items() if any(v is ABSENT for v in c)),
        )

    def __len__(self) -> int:
        return len(self.source_key_hashes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("record index out of range")
        absent = self._absent
        data = {n: c[i] for n, c in self.columns.items() if n not in absent or c[i] is not ABSENT}
        return Prepared(
            self.source_key_hashes[i],
            self.locations[i],
            self.ops[i],
            data,
            self.problems[i],
            self.unit_hashes[i],
            self.cf_derived[i],
            self.fingerprints[i],
            tuple((n, c[i]) for n, c in self.person_keys.items() if c[i] is not None),
        )

    def __iter__(self) -> Iterator[Prepared]:
        return (self[i] for i in range(len(self)))

    def values(self, name: str, at: Sequence[int] | None = None) -> list[Any]:
        """Field ``name`` of the records ``at`` (all: ``None``), ``None`` where absent."""
        column = self.columns.get(name)
        if column is None:
            return [None] * (len(self) if at is None else len(at))
        if at is not None:
            column = [column[i] for i in at]
        if name in self._absent:
            return [None if v is ABSENT else v for v in column]
        return column if at is not None else list(column)

    def __eq__(self, other: object) -> bool:
        """Equal to a batch or list of the same records, in the same order."""
        if not isinstance(other, PreparedBatch | list | tuple):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # never the values
        return f"PreparedBatch({len(self)} records)"


class Fingerprint(NamedTuple):
    """What identifies a raw record and its content, computed before pseudonymisation."""

    source_key_hash: str
    unit_hash: str | None
    #: Keyed hash (hex of 16 bytes, :meth:`~hub.pseudonyms.Pseudonymiser.record_fingerprints`)
    #: of the source key hash, the organisation, the operation and the declared fields as
    #: read (identifiers in clear, inside the keyed hash only).
    fingerprint: str


#: What the stage remembers of an identifier: its pseudonym, CF-derived (birth year, sex) and
#: person key packed in one text (:func:`_pack`), ``None`` for an absent one (type ``NONE``),
#: or why it is invalid.
Outcome = str | None | InvalidIdentifier
#: The identifiers whose outcomes share one table: (expected type, namespace).
_Group = tuple[IdentifierType | None, str | None]
#: An identifier as a record gives it: its group and its text as read.
_Key = tuple[_Group, str | None]


class _Marker:
    """What a record asks of the stage for one identifier field, when not an outcome key."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The identifier field is not in the record: nothing is set.
_ABSENT = _Marker("_ABSENT")
#: The field naming the identifier's type names no known type: refused.
_UNKNOWN_TYPE = _Marker("_UNKNOWN_TYPE")


#: Separates the fields of a record's content when they are all text (see :func:`_contents`).
_SEP = "\x1f"


def _contents(records: Sequence[RawRecord], org: str, declared: tuple[str, ...]) -> list[str]:
    """What each record's fingerprint covers: the organisation, the operation and the
    ``declared`` fields in that order, as one text that differs whenever one of them does.

    When every value is text (a CSV or spreadsheet row, an XML record) the values are joined
    with a separator none of them contains: about a fifth of the cost of ``repr``, the
    fingerprint's main cost on a re-read. Otherwise (``None`` for an absent field, numbers,
    dates, or a value holding the separator) the ``repr`` of the values, which is deterministic
    for the values sources give (str, int, float, bool, None, date, Decimal). The two forms
    never meet: a ``repr`` of a tuple starts with ``(``, a joined text with the separator.
    """
    out = []
    head = f"{_SEP}{org}{_SEP}"
    separators = len(declared) - 1
    every = _getter(declared)
    for r in records:
        try:
            values = every(r.data)  # all the fields at once (one C call)
        except KeyError:  # some field absent: None for it
            values = tuple(map(r.data.get, declared))
        try:
            text = _SEP.join(values)
        except TypeError:  # a value that is not text
            out.append(repr((org, r.op, values)))
            continue
        if text.count(_SEP) != separators:  # a value holds the separator itself
            out.append(repr((org, r.op, values)))
        else:
            out.append(f"{head}{r.op}{_SEP}{text}")
    return out


@lru_cache(maxsize=64)
def _getter(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function giving the values of ``fields`` of a mapping as a tuple (KeyError if one
    is absent)."""
    if len(fields) == 1:
        (name,) = fields
        return lambda data: (data[name],)
    if not fields:
        return lambda data: ()
    return operator.itemgetter(*fields)


def _pack(pseudonym: str, person: str, derived: tuple[int, str] | None) -> str:
    """One text for a valid identifier's outcome: person key, then ``YYYYS`` (birth year and
    sex) for a codice fiscale, then the pseudonym (``v2.…``).

    A run remembers up to a million outcomes: one string each is about 125 bytes, where a
    tuple of three strings (and a tuple for the birth year and sex) was about 340.
    """
    if len(person) != _PERSON_KEY_LEN:
        raise ValueError("a person key of an unexpected length")
    if derived is None:
        return person + pseudonym
    year, sex = derived
    return f"{person}{year:04d}{sex}{pseudonym}"


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
        # All of them at once from a record that has them all (a CSV row): a C call.
        self._data_values = _getter(self.data_fields)
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
        #: Per group, identifier text → outcome, for the run (at most ``CACHE_SIZE`` in all).
        self._outcomes: dict[_Group, dict[str | None, Outcome]] = {}
        self._remembered = 0
        #: (birth year, sex) tuples, one per distinct value (a few hundred at most).
        self._derived: dict[str, tuple[int, str]] = {}
        self._units: dict[str, str] = {}
        #: Identifiers pseudonymised (distinct per batch), for tests and progress.
        self.pseudonymised = 0
        #: The pseudonyms the last call made (text → epoch and 32-byte element): the load
        #: stores them without decoding and checking their text again (their elements come
        #: from the group operation, or from a service whose answers were checked).
        self.made: dict[str, tuple[int, bytes]] = {}

    # -- the stage ----------------------------------------------------------------
    def __call__(
        self,
        records: Sequence[RawRecord],
        org: str,
        fingerprints: Sequence[Fingerprint] | None = None,
    ) -> PreparedBatch:
        """Pseudonymise ``records`` of ``org`` (``fingerprints``: theirs, if computed)."""
        if fingerprints is None:
            fingerprints = self.fingerprints(records, org)
        self.made = {}
        datas = [r.data for r in records]
        # Field by field over the batch (no per-record plan): each record's outcome key.
        plans = [self._plan_column(spec, datas, org) for spec in self.identifier_fields]
        self._resolve({k for column in plans for k in column if type(k) is tuple})
        return self._prepare_all(records, datas, plans, fingerprints)

    def fingerprints(self, records: Sequence[RawRecord], org: str) -> list[Fingerprint]:
        """Each record's key hash, unit hash and fingerprint: keyed hashes only, nothing
        pseudonymised (cheap: what a re-read of unchanged records costs)."""
        stream, declared = self.stream, self.declared_order
        source_key = stream.source_key
        keys = [
            r.key if r.key is not None else "|".join(str(r.data.get(k, "")) for k in source_key)
            for r in records
        ]
        contents = _contents(records, org, declared)
        hashed = self.pseudonymiser.record_fingerprints(
            self.connector, stream.name, zip(keys, contents, strict=True)
        )
        units, unit_hash = self._units, self._unit_hash
        return [
            Fingerprint(
                skh,
                None if r.unit is None else (units.get(r.unit) or unit_hash(r)),
                fingerprint,
            )
            for r, (skh, fingerprint) in zip(records, hashed, strict=True)
        ]

    def _unit_hash(self, record: RawRecord) -> str | None:
        return None if record.unit is None else self.unit_hash(record.unit)

    def unit_hash(self, unit: str) -> str:
        """The keyed hash of a unit (a file, a flow) of this stream, as the registry keys it.

        Every record of a unit names it, and so do its parts and its completion: it is
        computed once per run (remembered with the stage's other outcomes)."""
        unit_hash = self._units.get(unit)
        if unit_hash is None:
            if len(self._units) >= CACHE_SIZE:
                self._units.clear()
            unit_hash = self._units[unit] = self.pseudonymiser.key_hash(
                "unit", self.connector, self.stream.name, unit
            )
        return unit_hash

    # -- internals ----------------------------------------------------------------
    def _plan_column(
        self, spec: FieldSpec, datas: Sequence[Mapping[str, Any]], org: str
    ) -> list[_Key | _Marker | None]:
        """Per record, what identifier field ``spec`` asks of the stage: the outcome key of
        its value, ``_ABSENT`` (the field is not in the record), ``None`` (an optional one
        left blank) or ``_UNKNOWN_TYPE`` (its type field names no known type)."""
        name = spec.name
        values = [d.get(name, _ABSENT) for d in datas]
        expected = spec.identifier_type
        if not spec.type_field and not (expected is IdentifierType.LOCAL and spec.namespace_field):
            # One outcome table for the whole column (the usual case).
            group = (expected, org if expected is IdentifierType.LOCAL else None)
            if not spec.optional:
                return [
                    v if v is _ABSENT else (group, v if v is None or type(v) is str else str(v))
                    for v in values
                ]
            return [
                v
                if v is _ABSENT
                else (None if v is None or not (text := str(v)).strip() else (group, text))
                for v in values
            ]
        return [
            v if v is _ABSENT else self._plan_one(spec, d, v, org)
            for d, v in zip(datas, values, strict=True)
        ]

    def _plan_one(
        self, spec: FieldSpec, raw: Mapping[str, Any], value: Any, org: str
    ) -> _Key | _Marker | None:
        """:meth:`_plan_column` for one record whose field names its type or namespace."""
        expected = spec.identifier_type
        if spec.type_field:
            try:
                expected = identifier_type_named(str(raw.get(spec.type_field) or ""))
            except ValueError:
                return _UNKNOWN_TYPE
        text = None if value is None else str(value)
        if spec.optional and not (text or "").strip():
            return None
        namespace = None
        if expected is IdentifierType.LOCAL:
            namespace = str(raw.get(spec.namespace_field) or "") if spec.namespace_field else org
        return ((expected, namespace), text)

    def _resolve(self, keys: set[_Key]) -> None:
        """Validate each new distinct identifier once; pseudonymise the valid ones at once."""
        tables = self._outcomes
        new = [k for k in keys if k[1] not in tables.get(k[0], ())]
        if not new:
            return
        if self._remembered + len(new) > CACHE_SIZE:
            # Forget all but what this batch needs.
            kept: dict[_Group, dict[str | None, Outcome]] = {}
            for group, text in keys:
                if text in tables.get(group, ()):
                    kept.setdefault(group, {})[text] = tables[group][text]
            tables = self._outcomes = kept
            self._remembered = sum(map(len, kept.values()))
        self._remembered += len(new)
        valid: dict[Identifier, list[_Key]] = {}
        for key in new:
            (expected, namespace), text = key
            table = tables.setdefault(key[0], {})
            try:
                ident = parse_identifier(text, expected, namespace=namespace)
            except InvalidIdentifier as e:
                table[text] = e
                continue
            if ident.type is IdentifierType.NONE:
                table[text] = None
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
        made = self.made
        for ident, digest in zip(idents, digests, strict=True):
            pseudonym = pseudonym_text(epoch, digest)
            made[pseudonym] = (epoch, digest)
            derived = (
                cf_birth_year_and_sex(ident.value, reference_year=self.reference_year)
                if ident.type is IdentifierType.CF
                else None
            )
            outcome = _pack(pseudonym, self.pseudonymiser.person_key(ident), derived)
            for group, text in valid[ident]:
                tables[group][text] = outcome

    def _prepare_all(
        self,
        records: Sequence[RawRecord],
        datas: Sequence[Mapping[str, Any]],
        plans: Sequence[list[_Key | _Marker | None]],
        fingerprints: Sequence[Fingerprint],
    ) -> PreparedBatch:
        """The batch's data fields as columns, pseudonyms in place of its identifiers."""
        n = len(records)
        columns: dict[str, list[Any]] = {}
        absent: set[str] = set()
        if not n:
            return PreparedBatch.of([])
        for name in self.data_fields:
            try:
                columns[name] = list(map(operator.itemgetter(name), datas))  # C speed
            except KeyError:  # some record lacks it
                columns[name] = [d.get(name, ABSENT) for d in datas]
                absent.add(name)
        problems: list[tuple[tuple[str, str, str], ...]] = [()] * n
        cf_derived: list[tuple[int, str] | None] = [None] * n
        person_keys: dict[str, list[str | None]] = {}
        tables = self._outcomes
        for spec, plan in zip(self.identifier_fields, plans, strict=True):
            # Each distinct outcome of the column read once: (the field's value, its person
            # key, the CF-derived birth year and sex, the problem).
            read: dict[Any, tuple[Any, str | None, tuple[int, str] | None, Any]] = {}
            rows = []
            for k in plan:
                outcome = tables[k[0]][k[1]] if type(k) is tuple else k
                got = read.get(outcome)
                if got is None:
                    got = read[outcome] = self._read_outcome(spec, outcome)
                rows.append(got)
            value, person, derived, problem = (list(c) for c in zip(*rows, strict=True))
            columns[spec.name] = value
            if _ABSENT in read:
                absent.add(spec.name)
            if any(p is not None for p in person):
                person_keys[spec.name] = person
            if any(d is not None for d in derived):
                if spec.derive_birth_year_and_sex:
                    columns[f"{spec.name}__birth_year"] = [
                        ABSENT if d is None else d[0] for d in derived
                    ]
                    columns[f"{spec.name}__sex"] = [ABSENT if d is None else d[1] for d in derived]
                    if None in derived:
                        absent.update((f"{spec.name}__birth_year", f"{spec.name}__sex"))
                # The first codice fiscale of the record gives its birth year and sex.
                cf_derived = [
                    c if c is not None else d for c, d in zip(cf_derived, derived, strict=True)
                ]
            if any(p is not None for p in problem):
                problems = [
                    ps if p is None else (*ps, p) for ps, p in zip(problems, problem, strict=True)
                ]
        return PreparedBatch(
            source_key_hashes=[f.source_key_hash for f in fingerprints],
            locations=[r.location for r in records],
            ops=[r.op for r in records],
            columns=columns,
            problems=problems,
            unit_hashes=[f.unit_hash for f in fingerprints],
            cf_derived=cf_derived,
            fingerprints=[f.fingerprint for f in fingerprints],
            person_keys=person_keys,
            absent=frozenset(absent),
        )

    def _read_outcome(
        self, spec: FieldSpec, outcome: Any
    ) -> tuple[Any, str | None, tuple[int, str] | None, tuple[str, str, str] | None]:
        """One identifier field's outcome as a record holds it: the field's value (its
        pseudonym, None, ``INVALID_MARKER`` or ``ABSENT``), its person key, the birth year
        and sex of a codice fiscale, and why it was refused."""
        if outcome is _ABSENT:
            return ABSENT, None, None, None
        if outcome is None:  # an absent identifier (type NONE, or optional and blank)
            return None, None, None, None
        if type(outcome) is not str:
            if isinstance(outcome, InvalidIdentifier):
                return INVALID_MARKER, None, None, (spec.name, outcome.rule, outcome.message)
            # _UNKNOWN_TYPE
            why = (spec.name, "unknown_type", f"{spec.type_field}: not a known identifier type")
            return INVALID_MARKER, None, None, why
        # _pack's layout: person key, then YYYYS for a codice fiscale, then "v2.…".
        person = outcome[:_PERSON_KEY_LEN]
        if outcome.startswith(TEXT_PREFIX, _PERSON_KEY_LEN):  # no birth year and sex
            return outcome[_PERSON_KEY_LEN:], person, None, None
        code = outcome[_PERSON_KEY_LEN : _PERSON_KEY_LEN + 5]
        derived = self._derived.get(code)
        if derived is None:
            derived = self._derived[code] = (int(code[:4]), code[4])
        return outcome[_PERSON_KEY_LEN + 5 :], person, derived, None
