"""Third Sector entries: validation, pseudonymisation at submit, storage.

One path for the form, the CSV upload and the JSON API: an :class:`EntryInput`
is checked, its identifier is parsed and replaced by the district-domain
pseudonym (the clear value is never stored nor logged), and the entry is
written to ``ets_entries`` with a change sequence number the ``ets_form``
connector uses as its cursor.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import enum
import queue
import threading
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from hub.pseudonyms import (
    IdentifierType,
    InvalidIdentifier,
    Pseudonymiser,
    cf_birth_year_and_sex,
    parse_identifier,
)
from hub.registry import tables as t
from hub.schema.models import Need, ServiceGiven


class IdentifierKind(enum.StrEnum):
    CF = "cf"
    STP_ENI = "stp_eni"
    NONE = "none"


class EntryInput(BaseModel):
    """What an ETS operator submits (form, CSV row or API call)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    #: Idempotency key chosen by the client: sending the same entry twice stores it once.
    entry_id: uuid.UUID | None = None
    identifier_kind: IdentifierKind
    #: The codice fiscale or STP/ENI code: pseudonymised at once, never stored.
    identifier: Annotated[str, StringConstraints(max_length=40)] = ""
    comune_istat: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
    needs: Annotated[list[Need], Field(min_length=1, max_length=len(Need))]
    services_given: Annotated[list[ServiceGiven], Field(max_length=len(ServiceGiven))] = []
    on: dt.date = Field(default_factory=dt.date.today)
    referred_by_social_services: bool = False
    #: Asked only when there is no codice fiscale.
    birth_year: Annotated[int, Field(ge=1900, le=2100)] | None = None
    sex: Annotated[str, StringConstraints(pattern=r"^[MF]$")] | None = None

    def __repr__(self) -> str:  # never show the identifier
        return f"EntryInput(kind={self.identifier_kind.value}, comune={self.comune_istat})"

    __str__ = __repr__

    @model_validator(mode="after")
    def _coherent(self) -> EntryInput:
        if self.identifier_kind is IdentifierKind.NONE and self.identifier:
            raise ValueError("identifier given with identifier_kind 'none'")
        if self.identifier_kind is not IdentifierKind.NONE and not self.identifier:
            raise ValueError("identifier missing")
        if self.on > dt.date.today() + dt.timedelta(days=1):
            raise ValueError("the date is in the future")
        return self


@dataclass(frozen=True)
class IntakeProblem(Exception):
    """A problem with an entry, in words a volunteer can act on (no identifier in it)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


#: Plain-language reasons for identifier problems (message ids of the web
#: catalogue: the web app shows them translated).
IDENTIFIER_MESSAGES = {
    "cf_check": (
        "The tax code is not correct: the last character (the check character) does not "
        "match. Check letters and numbers on the health card."
    ),
    "cf_format": (
        "The tax code must have 16 characters: 6 letters, 2 digits, 1 letter, 2 digits, "
        "1 letter, 3 digits, 1 letter."
    ),
    "cf_date": (
        "The tax code is not correct: the part with the date of birth is not valid. "
        "Check letters and numbers."
    ),
    "stp_format": "The STP/ENI code must have 16 characters and start with STP or ENI.",
}
COMUNE_MESSAGE = "The comune is not one of the district's."
ENTRY_ID_MESSAGE = "This entry id is already used by another organisation."


def _identifier_message(rule: str, kind: IdentifierKind) -> str:
    if rule == "cf_check_char":
        return IDENTIFIER_MESSAGES["cf_check"]
    if rule == "cf_date":
        return IDENTIFIER_MESSAGES["cf_date"]
    if kind is IdentifierKind.STP_ENI:
        return IDENTIFIER_MESSAGES["stp_format"]
    return IDENTIFIER_MESSAGES["cf_format"]


@dataclass(frozen=True)
class Prepared:
    """An entry ready to store: the identifier is gone, only its pseudonym is left."""

    entry_uuid: str
    subject: str | None
    identifier_kind: str
    tag: str | None
    needs: str
    services_given: str
    comune_istat: str
    on: dt.date
    referred: bool
    birth_year: int | None
    sex: str | None


def prepare(
    entry: EntryInput,
    *,
    org: str,
    pseudonymiser: Pseudonymiser,
    comuni: Iterable[str],
    today: dt.date | None = None,
) -> Prepared:
    """Check and pseudonymise an entry. Raises :class:`IntakeProblem`."""
    if entry.comune_istat not in set(comuni):
        raise IntakeProblem("comune_istat", COMUNE_MESSAGE)
    subject: str | None = None
    birth_year, sex = entry.birth_year, entry.sex
    kind = entry.identifier_kind
    if kind is not IdentifierKind.NONE:
        expected = IdentifierType.CF if kind is IdentifierKind.CF else None
        try:
            ident = parse_identifier(entry.identifier, expected)
        except InvalidIdentifier as e:
            raise IntakeProblem("identifier", _identifier_message(e.rule, kind)) from None
        if kind is IdentifierKind.STP_ENI and ident.type not in (
            IdentifierType.STP,
            IdentifierType.ENI,
        ):
            raise IntakeProblem("identifier", IDENTIFIER_MESSAGES["stp_format"])
        if ident.type is IdentifierType.CF:
            year = (today or dt.date.today()).year
            birth_year, sex = cf_birth_year_and_sex(ident.value, reference_year=year)
        subject = pseudonymiser.pseudonym(ident)
        del ident
    tag = short_tag(pseudonymiser, org, subject) if subject else None
    return Prepared(
        entry_uuid=str(entry.entry_id or uuid.uuid4()),
        subject=subject,
        identifier_kind="none" if kind is IdentifierKind.NONE else kind.value,
        tag=tag,
        needs="|".join(sorted({n.value for n in entry.needs})),
        services_given="|".join(sorted({s.value for s in entry.services_given})),
        comune_istat=entry.comune_istat,
        on=entry.on,
        referred=entry.referred_by_social_services,
        birth_year=birth_year,
        sex=sex,
    )


#: Letters of person tags: no vowels (no words, no names) and no look-alikes (0/O, 1/I).
TAG_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"


def short_tag(pseudonymiser: Pseudonymiser, org: str, subject: str) -> str:
    """A short label for a person, stable within one organisation only.

    Keyed (HMAC) and scoped to the organisation, so tags of two ETS cannot be
    matched with each other nor with the registry's pseudonyms.
    """
    digest = pseudonymiser.key_hash("ets_tag", org, subject).split(".", 1)[-1]
    # Consonants and digits only: a tag can never spell a name (or any word) by chance.
    raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
    number = int.from_bytes(raw, "big")
    chars = []
    for _ in range(6):
        number, i = divmod(number, len(TAG_ALPHABET))
        chars.append(TAG_ALPHABET[i])
    return f"{''.join(chars[:3])}-{''.join(chars[3:])}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _next_seq(conn: sa.Connection) -> int:
    e = t.ets_entries
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.c.seq), 0))).scalar_one()) + 1


#: One entry to store: (prepared entry, organisation, user id or None).
Item = tuple[Prepared, str, int | None]


class TokenRevoked(IntakeProblem):
    """The API token of a submission was revoked (or deleted) before the entry was stored."""

    def __init__(self) -> None:
        super().__init__("token", "unknown or revoked token")


def store(engine: sa.Engine, p: Prepared, *, org: str, user_id: int | None) -> tuple[int, bool]:
    """Insert the entry; returns (id, created). A known ``entry_uuid`` is not inserted again."""
    (result,) = store_many(engine, [(p, org, user_id)])
    if isinstance(result, Exception):
        raise result
    return result


def store_many(
    engine: sa.Engine,
    items: Sequence[Item],
    *,
    token_hashes: Sequence[str | None] | None = None,
    retries: int = 20,
) -> list[tuple[int, bool] | IntakeProblem]:
    """Insert several entries in one transaction (group commit); a result per item.

    ``seq`` is max+1 under a unique constraint: writers in other processes that
    collide make the transaction fail and retry, so sequence numbers become
    visible in commit order with no gaps. A known ``entry_uuid`` (a re-sent
    form, a retried API call) gives its row back with ``created = False``;
    one used by another organisation is an :class:`IntakeProblem` for that item.
    ``token_hashes`` (one per item, or None) names the API token each item came
    with: an item whose token is no longer valid when the transaction runs is a
    :class:`TokenRevoked`, so a revocation takes effect at once however the
    token's organisation was looked up. New rows go in with one multi-row
    INSERT (its RETURNING gives their ids in order), not one statement each.
    """
    e = t.ets_entries
    for _ in range(retries):
        try:
            with engine.begin() as conn:
                valid: set[str] = set()
                wanted = sorted({h for h in token_hashes or () if h})
                if wanted:
                    a = t.api_tokens
                    valid = set(
                        conn.execute(
                            sa.select(a.c.token_hash).where(
                                a.c.token_hash.in_(wanted), a.c.revoked.is_(False)
                            )
                        ).scalars()
                    )
                uuids = sorted({p.entry_uuid for p, _, _ in items})
                known: dict[str, tuple[int, str]] = {}
                for chunk in (uuids[i : i + 500] for i in range(0, len(uuids), 500)):
                    for row in conn.execute(
                        sa.select(e.c.id, e.c.org, e.c.entry_uuid).where(e.c.entry_uuid.in_(chunk))
                    ):
                        known[row.entry_uuid] = (int(row.id), row.org)
                seq = _next_seq(conn)
                now = _now()
                results: list[tuple[int, bool] | IntakeProblem | None] = []
                #: entry_uuid -> (organisation, index in ``rows``) of the rows to insert
                fresh: dict[str, tuple[str, int]] = {}
                rows: list[dict[str, Any]] = []
                #: (result index, index in ``rows``, created) to fill once the ids are known
                waiting: list[tuple[int, int, bool]] = []
                for i, (p, org, user_id) in enumerate(items):
                    token = token_hashes[i] if token_hashes else None
                    if token is not None and token not in valid:
                        results.append(TokenRevoked())
                        continue
                    found = known.get(p.entry_uuid)
                    pending = fresh.get(p.entry_uuid)
                    owner = found[1] if found else pending[0] if pending else None
                    if owner is not None and owner != org:
                        results.append(IntakeProblem("entry_id", ENTRY_ID_MESSAGE))
                    elif found is not None:
                        results.append((found[0], False))
                    elif pending is not None:  # sent twice in this batch
                        waiting.append((len(results), pending[1], False))
                        results.append(None)
                    else:
                        fresh[p.entry_uuid] = (org, len(rows))
                        waiting.append((len(results), len(rows), True))
                        results.append(None)
                        rows.append(
                            {
                                "entry_uuid": p.entry_uuid,
                                "org": org,
                                "seq": seq + len(rows),
                                "subject": p.subject,
                                "identifier_kind": p.identifier_kind,
                                "tag": p.tag,
                                "needs": p.needs,
                                "services_given": p.services_given,
                                "comune_istat": p.comune_istat,
                                "on": p.on,
                                "referred_by_social_services": p.referred,
                                "birth_year": p.birth_year,
                                "sex": p.sex,
                                "deleted": False,
                                "created_by": user_id,
                                "created_at": now,
                                "updated_at": now,
                            }
                        )
                ids: list[int] = []
                if rows:
                    ids = [
                        int(pk)
                        for pk in conn.execute(
                            e.insert().returning(e.c.id, sort_by_parameter_order=True), rows
                        ).scalars()
                    ]
                    if len(ids) != len(rows):
                        raise RuntimeError("the database did not return the ids of the entries")
                for at, new_row, created in waiting:
                    results[at] = (ids[new_row], created)
                return [r for r in results if r is not None]
        except sa.exc.IntegrityError:
            continue  # another process took the same seq (or entry_uuid): try again
        except sa.exc.OperationalError as err:
            if "locked" not in str(err.orig):
                raise
            continue
    raise RuntimeError("could not store the entries: the database stays busy")


@dataclass(frozen=True)
class Submission:
    """What a request hands to the :class:`IntakeWriter`: an entry (checked and
    pseudonymised by the writer if it is not :class:`Prepared` yet), who sent it and,
    from the API, the hash of the token it came with (checked again at commit)."""

    entry: EntryInput | Prepared
    org: str
    user_id: int | None = None
    token_hash: str | None = None


@dataclass(frozen=True)
class Stored:
    id: int
    created: bool
    entry_uuid: str
    tag: str | None


class IntakeWriter:
    """Group commit: requests hand entries to one writer thread, which prepares and
    stores everything waiting in one transaction. Under load this replaces a
    transaction (and, on SQLite, a fight for the write lock) per request by one per
    batch; identifiers of a batch are pseudonymised in one call (one round trip to a
    remote pseudonymisation service). ``enqueue`` does not block, so the API awaits
    the result on the event loop without holding a thread."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        pseudonymiser: Pseudonymiser | None = None,
        comuni: Iterable[str] = (),
        # 64: under 200 concurrent clients this answered sooner than 256 (p50 246 against
        # 300 ms, bench/ets_load.py) for the same CPU; larger batches wait longer.
        max_batch: int = 64,
    ) -> None:
        self.engine = engine
        self.pseudonymiser = pseudonymiser
        self.comuni = frozenset(comuni)
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[Submission, Future[Stored]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def enqueue(self, submission: Submission) -> Future[Stored]:
        """Queue an entry; the future gives its :class:`Stored` or raises its
        :class:`IntakeProblem` (:class:`TokenRevoked` for a revoked token)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="raccordo-intake-writer", daemon=True
                )
                self._thread.start()
        fut: Future[Stored] = Future()
        self._queue.put((submission, fut))
        return fut

    def submit(self, p: Prepared, *, org: str, user_id: int | None) -> tuple[int, bool]:
        stored = self.enqueue(Submission(p, org, user_id)).result(timeout=60)
        return stored.id, stored.created

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                self._write(batch)
            except Exception as e:  # handed to every waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)

    def _write(self, batch: list[tuple[Submission, Future[Stored]]]) -> None:
        self._pseudonymise_ahead([s.entry for s, _ in batch])
        ready: list[tuple[Submission, Prepared, Future[Stored]]] = []
        for s, fut in batch:
            if isinstance(s.entry, Prepared):
                ready.append((s, s.entry, fut))
                continue
            if self.pseudonymiser is None:
                raise RuntimeError("this writer has no pseudonymiser: hand it prepared entries")
            try:
                p = prepare(
                    s.entry, org=s.org, pseudonymiser=self.pseudonymiser, comuni=self.comuni
                )
            except Exception as problem:  # this sender's alone, not the whole batch's
                fut.set_exception(problem)
                continue
            ready.append((s, p, fut))
        if not ready:
            return
        results = store_many(
            self.engine,
            [(p, s.org, s.user_id) for s, p, _ in ready],
            token_hashes=[s.token_hash for s, _, _ in ready],
        )
        for (_, p, fut), res in zip(ready, results, strict=True):
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(Stored(res[0], res[1], p.entry_uuid, p.tag))

    def _pseudonymise_ahead(self, entries: Sequence[EntryInput | Prepared]) -> None:
        """Pseudonymise the batch's valid identifiers in one call (one round trip to a
        remote service); :func:`prepare` then finds them in the pseudonymiser's cache."""
        if self.pseudonymiser is None:
            return
        idents = []
        for entry in entries:
            if isinstance(entry, Prepared) or entry.identifier_kind is IdentifierKind.NONE:
                continue
            try:
                idents.append(parse_identifier(entry.identifier, None))
            except InvalidIdentifier:
                continue  # prepare() tells the sender
        if len(idents) > 1:
            # A failure here (a remote service down) is met again, entry by entry, in
            # prepare(): each sender gets its own error and the others are stored.
            with contextlib.suppress(Exception):
                self.pseudonymiser.pseudonymise_many(idents)


def delete(engine: sa.Engine, entry_id: int, *, org: str, retries: int = 20) -> bool:
    """Mark an entry of ``org`` deleted (the connector then removes its need signal)."""
    e = t.ets_entries
    for _ in range(retries):
        try:
            with engine.begin() as conn:
                row = conn.execute(
                    sa.select(e.c.id).where(
                        e.c.id == entry_id, e.c.org == org, e.c.deleted.is_(False)
                    )
                ).first()
                if row is None:
                    return False
                conn.execute(
                    e.update()
                    .where(e.c.id == entry_id)
                    .values(
                        deleted=True,
                        subject=None,
                        tag=None,
                        seq=_next_seq(conn),
                        updated_at=_now(),
                    )
                )
                return True
        except sa.exc.IntegrityError:
            continue
    raise RuntimeError("could not delete the entry: the database stays busy")


def update(
    engine: sa.Engine, entry_id: int, p: Prepared, *, org: str, keep_person: bool, retries: int = 20
) -> bool:
    """Change an entry of ``org``; ``keep_person`` keeps its pseudonym, tag and what the
    code told (kind, birth year, sex). The connector replaces its need signal."""
    e = t.ets_entries
    values: dict[str, Any] = {
        "needs": p.needs,
        "services_given": p.services_given,
        "comune_istat": p.comune_istat,
        "on": p.on,
        "referred_by_social_services": p.referred,
    }
    for _ in range(retries):
        try:
            with engine.begin() as conn:
                row = conn.execute(
                    sa.select(e.c.id, e.c.identifier_kind).where(
                        e.c.id == entry_id, e.c.org == org, e.c.deleted.is_(False)
                    )
                ).first()
                if row is None:
                    return False
                person: dict[str, Any] = {}
                if not keep_person:
                    person = {
                        "subject": p.subject,
                        "tag": p.tag,
                        "identifier_kind": p.identifier_kind,
                        "birth_year": p.birth_year,
                        "sex": p.sex,
                    }
                elif row.identifier_kind == "none":
                    person = {"birth_year": p.birth_year, "sex": p.sex}
                conn.execute(
                    e.update()
                    .where(e.c.id == entry_id)
                    .values(**values, **person, seq=_next_seq(conn), updated_at=_now())
                )
                return True
        except sa.exc.IntegrityError:
            continue
    raise RuntimeError("could not change the entry: the database stays busy")


def entries_of(
    engine: sa.Engine, org: str, *, limit: int = 200, entry_id: int | None = None
) -> list[dict[str, Any]]:
    """The organisation's own entries, newest first, without any identifier."""
    e = t.ets_entries
    where = [e.c.org == org, e.c.deleted.is_(False)]
    if entry_id is not None:
        where.append(e.c.id == entry_id)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                e.c.id,
                e.c.entry_uuid,
                e.c.tag,
                e.c.identifier_kind,
                e.c.needs,
                e.c.services_given,
                e.c.comune_istat,
                e.c.on,
                e.c.referred_by_social_services,
                e.c.birth_year,
                e.c.sex,
            )
            .where(*where)
            .order_by(e.c.on.desc(), e.c.id.desc())
            .limit(limit)
        ).all()
    return [
        {
            **r._asdict(),
            "needs": [x for x in r.needs.split("|") if x],
            "services_given": [x for x in r.services_given.split("|") if x],
        }
        for r in rows
    ]


def entry_of(engine: sa.Engine, org: str, entry_id: int) -> dict[str, Any] | None:
    rows = entries_of(engine, org, limit=1, entry_id=entry_id)
    return rows[0] if rows else None
