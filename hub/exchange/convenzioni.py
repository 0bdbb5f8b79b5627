"""Convenzioni as policy-as-code: one TOML file per agreement, signed by both parties.

A *convenzione* is what two districts (or a district and a consortium) sign
before any data flows: who the parties are and their public keys, the
purpose and legal basis, what may flow in each direction (record tables and
their fields, or aggregate indicators with their threshold k), how often,
how long the recipient may keep it, and when it starts and ends. The file is
the policy: every package is checked against it when it is sent *and* when
it is received, and the reasons a package is refused are phrased for the
people who signed it.

Signatures live beside the file (``NAME.toml.sig``, JSON): each party signs
the SHA-256 of the file's exact bytes, so any later edit, even of a comment,
voids every signature and stops every flow until both sign again. A party
withdraws with a signed revocation (``NAME.toml.revoked``), which also stops
every flow; revocations are final (a new agreement is a new file).
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.exchange import crypto
from hub.exchange.errors import ConvenzioneError
from hub.registry import tables as t

SIGN_CONTEXT = "raccordo/convenzione/v1"
REVOKE_CONTEXT = "raccordo/convenzione-revocation/v1"

#: Columns the registry keeps for itself: never part of what flows.
INTERNAL_COLUMNS = frozenset({"id", "org", "key_hash", "source_record", "position", "run_id"})
#: Columns holding persons (ids of the registry's ``pseudonyms``): they flow as text
#: pseudonyms converted to the recipient's domain.
PSEUDONYM_COLUMNS = frozenset({"subject", "household"})


def exchangeable_fields(table: str) -> list[str]:
    """The fields of a record table that a convenzione may let flow."""
    return [c.name for c in t.RECORD_TABLES[table].columns if c.name not in INTERNAL_COLUMNS]


Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Party(_Model):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    #: Where its exchange endpoint listens (``https://...``); empty for a party that only sends.
    endpoint: str = ""
    pseudonym_domain: Code
    #: Ed25519 public key (base64url, 32 bytes): verifies its packages, receipts, signatures.
    signing_key: str
    #: HPKE public key (base64url, ML-KEM-768 + X25519): packages for it are sealed to it.
    encryption_key: str

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, v: str) -> str:
        try:
            raw = crypto.b64d(v)
        except crypto.CryptoFailure:
            raw = b""
        if len(raw) != 32:
            raise ValueError("must be an Ed25519 public key: 32 bytes in base64url")
        return v

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, v: str) -> str:
        try:
            raw = crypto.b64d(v)
        except crypto.CryptoFailure:
            raw = b""
        if len(raw) != 1216:
            raise ValueError(
                "must be an HPKE public key (ML-KEM-768 + X25519): 1216 bytes in base64url"
            )
        return v


class Indicator(_Model):
    #: Cells counting fewer than k people are suppressed before they leave.
    k: int = Field(ge=3, le=1000)


class Flow(_Model):
    from_: Code = Field(alias="from")
    to: Code
    kind: Literal["records", "aggregates"]
    #: records: table → allowed fields.
    tables: dict[str, list[str]] = Field(default_factory=dict)
    #: aggregates: indicator name → its threshold.
    indicators: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,60}$")], Indicator] = (
        Field(default_factory=dict)
    )
    frequency: Literal["daily", "weekly", "monthly", "quarterly", "yearly", "on_demand"]

    @model_validator(mode="after")
    def _what(self) -> Flow:
        if self.from_ == self.to:
            raise ValueError(f"a flow goes between two parties, not from {self.from_} to itself")
        if self.kind == "records":
            if not self.tables or self.indicators:
                raise ValueError("a records flow lists `tables` (and no `indicators`)")
            for table, fields in self.tables.items():
                if table not in t.RECORD_TABLES:
                    raise ValueError(
                        f"unknown table {table!r}; known: {', '.join(t.RECORD_TABLES)}"
                    )
                allowed = exchangeable_fields(table)
                bad = [f for f in fields if f not in allowed]
                if bad:
                    raise ValueError(
                        f"table {table!r} has no exchangeable field {', '.join(map(repr, bad))}; "
                        f"its fields: {', '.join(allowed)}"
                    )
                if not fields:
                    raise ValueError(f"table {table!r} lists no field")
                if len(set(fields)) != len(fields):
                    raise ValueError(f"table {table!r} lists a field twice")
        else:
            if not self.indicators or self.tables:
                raise ValueError("an aggregates flow lists `indicators` (and no `tables`)")
        return self


class Convenzione(_Model):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,60}$")]
    title: str = Field(min_length=1, max_length=300)
    #: A short code every package must name (checked), and what it means.
    purpose: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{3,80}$")]
    purpose_description: str = Field(min_length=1)
    legal_basis: str = Field(min_length=1)
    start: dt.date
    expiry: dt.date
    #: How long the recipient may keep what it received.
    retention_days: int = Field(ge=1, le=36500)
    parties: list[Party] = Field(min_length=2)
    flows: list[Flow] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Convenzione:
        if self.expiry <= self.start:
            raise ValueError(f"expiry {self.expiry} is not after start {self.start}")
        codes = [p.code for p in self.parties]
        if len(set(codes)) != len(codes):
            raise ValueError("a party is listed twice")
        for i, f in enumerate(self.flows):
            for end in (f.from_, f.to):
                if end not in codes:
                    raise ValueError(f"flows[{i}] names {end!r}, not a party ({', '.join(codes)})")
        return self

    def party(self, code: str) -> Party:
        for p in self.parties:
            if p.code == code:
                return p
        raise KeyError(code)

    def flows_between(self, sender: str, recipient: str) -> list[Flow]:
        return [f for f in self.flows if f.from_ == sender and f.to == recipient]


# -- files ------------------------------------------------------------------------------
@dataclass
class Revocation:
    by: str
    at: str
    reason: str


@dataclass
class ConvenzioneFile:
    """A convenzione as found on disk, with what its signatures and revocation say."""

    path: Path
    convenzione: Convenzione
    digest: str
    signatures: dict[str, str] = field(default_factory=dict)
    #: Parties whose signature is present but does not match the file as it is now.
    bad_signatures: list[str] = field(default_factory=list)
    revocation: Revocation | None = None

    @property
    def id(self) -> str:
        return self.convenzione.id

    @property
    def signed_by(self) -> list[str]:
        return sorted(self.signatures)

    @property
    def unsigned(self) -> list[str]:
        return [p.code for p in self.convenzione.parties if p.code not in self.signatures]

    def state(self, today: dt.date | None = None) -> str:
        """One word: draft, tampered, revoked, not-yet-in-force, expired or active."""
        today = today or dt.date.today()
        if self.bad_signatures:
            return "tampered"
        if self.revocation is not None:
            return "revoked"
        if self.unsigned:
            return "draft"
        if today < self.convenzione.start:
            return "not-yet-in-force"
        if today > self.convenzione.expiry:
            return "expired"
        return "active"

    def why_not_active(self, today: dt.date | None = None) -> str | None:
        """Why no package may flow under it now, for a person; None when it is active."""
        c = self.convenzione
        state = self.state(today)
        if state == "active":
            return None
        if state == "tampered":
            return (
                f"convenzione {c.id}: the file changed after it was signed "
                f"(signature of {', '.join(self.bad_signatures)} no longer matches); "
                "both parties must sign it again"
            )
        if state == "revoked":
            r = self.revocation
            assert r is not None
            return f"convenzione {c.id} was revoked by {r.by} on {r.at[:10]}: {r.reason}"
        if state == "draft":
            return f"convenzione {c.id} is not signed yet by {', '.join(self.unsigned)}"
        if state == "not-yet-in-force":
            return f"convenzione {c.id} starts on {c.start}: nothing may flow under it before"
        return f"convenzione {c.id} expired on {c.expiry}: nothing may flow under it any more"


def _sig_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def _revoked_path(path: Path) -> Path:
    return path.with_name(path.name + ".revoked")


def _format_errors(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}")
    return out


def parse(path: Path) -> tuple[Convenzione, bytes]:
    """Read and validate one file; errors name the file and each field."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConvenzioneError(
            f"cannot read the file: {e.strerror}", where=str(path), hint="check the path"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConvenzioneError(
            f"not a valid TOML file: {e}",
            where=str(path),
            hint="see docs/exchange.md for the layout of a convenzione",
        ) from None
    try:
        return Convenzione.model_validate(data), raw
    except ValidationError as e:
        errors = _format_errors(e)
        raise ConvenzioneError(
            f"{len(errors)} problem(s) in the convenzione",
            where=str(path),
            hint="fix each field listed; see docs/exchange.md",
            errors=errors,
        ) from None


def _sign_message(conv_id: str, digest: str) -> bytes:
    return crypto.canonical({"convenzione": conv_id, "sha256": digest})


def load(path: Path) -> ConvenzioneFile:
    """A convenzione with its signatures checked against the file as it is now."""
    conv, raw = parse(path)
    digest = crypto.sha256_hex(raw)
    cf = ConvenzioneFile(path=path, convenzione=conv, digest=digest)
    sig_file = _sig_path(path)
    if sig_file.exists():
        try:
            sigs = json.loads(sig_file.read_text())["signatures"]
            assert isinstance(sigs, dict)
        except (ValueError, KeyError, AssertionError, TypeError):
            raise ConvenzioneError(
                "the signature file is damaged",
                where=str(sig_file),
                hint="delete it and have both parties sign again",
            ) from None
        for code, sig in sigs.items():
            try:
                party = conv.party(code)
                crypto.verify(party.signing_key, SIGN_CONTEXT, _sign_message(conv.id, digest), sig)
            except (KeyError, crypto.CryptoFailure):
                cf.bad_signatures.append(code)
                continue
            cf.signatures[code] = sig
    rev_file = _revoked_path(path)
    if rev_file.exists():
        cf.revocation = _read_revocation(rev_file, conv)
    return cf


def _read_revocation(rev_file: Path, conv: Convenzione) -> Revocation:
    try:
        data = json.loads(rev_file.read_text())
    except ValueError:
        data = None
    rev = _verified_revocation(data, conv)
    # A revocation nobody can verify still stops the flows: failing closed.
    return rev or Revocation(by="(unverified)", at="?", reason=f"unreadable {rev_file.name}")


def _verified_revocation(data: Any, conv: Convenzione) -> Revocation | None:
    try:
        body = {k: str(data[k]) for k in ("convenzione", "by", "at", "reason")}
        party = conv.party(body["by"])
        crypto.verify(party.signing_key, REVOKE_CONTEXT, crypto.canonical(body), data["signature"])
    except (KeyError, TypeError, crypto.CryptoFailure):
        return None
    if body["convenzione"] != conv.id:
        return None
    return Revocation(by=body["by"], at=body["at"], reason=body["reason"])


def sign(path: Path, party_code: str, key: Any) -> ConvenzioneFile:
    """Add ``party_code``'s signature; refuses if the key is not the one the file lists."""
    cf = load(path)
    conv = cf.convenzione
    try:
        party = conv.party(party_code)
    except KeyError:
        raise ConvenzioneError(
            f"{party_code} is not a party of convenzione {conv.id}",
            where=str(path),
            hint="parties: " + ", ".join(p.code for p in conv.parties),
        ) from None
    if crypto.public_b64(key) != party.signing_key:
        raise ConvenzioneError(
            f"the signing key of this hub is not the one the file lists for {party_code}",
            where=f"{path}: parties.{party_code}.signing_key",
            hint="put this hub's key there (`raccordo exchange keys`) before signing",
        )
    sigs = dict(cf.signatures)
    sigs[party_code] = crypto.sign(key, SIGN_CONTEXT, _sign_message(conv.id, cf.digest))
    _sig_path(path).write_text(
        json.dumps({"convenzione": conv.id, "sha256": cf.digest, "signatures": sigs}, indent=2)
        + "\n"
    )
    return load(path)


def revoke(path: Path, party_code: str, key: Any, reason: str, now: dt.datetime) -> Revocation:
    cf = load(path)
    conv = cf.convenzione
    if party_code not in {p.code for p in conv.parties}:
        raise ConvenzioneError(f"{party_code} is not a party of convenzione {conv.id}")
    if crypto.public_b64(key) != conv.party(party_code).signing_key:
        raise ConvenzioneError(
            f"the signing key of this hub is not the one the file lists for {party_code}",
            where=str(path),
        )
    body = {"convenzione": conv.id, "by": party_code, "at": now.isoformat(), "reason": reason}
    sig = crypto.sign(key, REVOKE_CONTEXT, crypto.canonical(body))
    _revoked_path(path).write_text(json.dumps({**body, "signature": sig}, indent=2) + "\n")
    return Revocation(by=party_code, at=body["at"], reason=reason)


def revocation_document(path: Path) -> dict[str, Any] | None:
    """The signed revocation as sent to the other party (or None)."""
    rev = _revoked_path(path)
    return json.loads(rev.read_text()) if rev.exists() else None


def accept_revocation(path: Path, document: Mapping[str, Any]) -> Revocation:
    """Store a revocation received from the other party, after checking its signature."""
    cf = load(path)
    rev = _verified_revocation(document, cf.convenzione)
    if rev is None:
        raise ConvenzioneError(
            f"the revocation of {cf.id} does not verify against the parties' keys",
            where=str(path),
        )
    _revoked_path(path).write_text(json.dumps(dict(document), indent=2) + "\n")
    return rev


class Directory:
    """The convenzioni of one hub: every ``*.toml`` in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.toml")) if self.folder.is_dir() else []

    def all(self) -> list[ConvenzioneFile]:
        return [load(p) for p in self.files()]

    def get(self, conv_id: str) -> ConvenzioneFile:
        for p in self.files():
            try:
                conv, _ = parse(p)
            except ConvenzioneError:
                continue
            if conv.id == conv_id:
                return load(p)
        raise ConvenzioneError(
            f"no convenzione {conv_id!r}",
            where=str(self.folder),
            hint="known: " + (", ".join(self._ids()) or "none"),
        )

    def _ids(self) -> list[str]:
        out = []
        for p in self.files():
            try:
                out.append(parse(p)[0].id)
            except ConvenzioneError:
                continue
        return out


# -- the check ------------------------------------------------------------------------
@dataclass(frozen=True)
class PackageShape:
    """What a package claims, as far as the convenzione is concerned."""

    convenzione: str
    sender: str
    recipient: str
    purpose: str
    kind: str
    #: records: table → fields present; aggregates: indicator → the k applied.
    tables: Mapping[str, Iterable[str]] = field(default_factory=dict)
    indicators: Mapping[str, int] = field(default_factory=dict)
    period_start: dt.date | None = None
    period_end: dt.date | None = None


def refusals(cf: ConvenzioneFile, shape: PackageShape, today: dt.date | None = None) -> list[str]:
    """Every reason this package may not flow under this convenzione (empty: allowed)."""
    conv = cf.convenzione
    out: list[str] = []
    if shape.convenzione != conv.id:
        return [f"the package names convenzione {shape.convenzione!r}, not {conv.id!r}"]
    why = cf.why_not_active(today)
    if why:
        out.append(why)
    parties = {p.code for p in conv.parties}
    for role, code in (("sender", shape.sender), ("recipient", shape.recipient)):
        if code not in parties:
            out.append(f"the {role} {code} is not a party of convenzione {conv.id}")
    if out and any("not a party" in r for r in out):
        return out
    if shape.purpose != conv.purpose:
        out.append(
            f"the package's purpose {shape.purpose!r} is not the purpose of convenzione "
            f"{conv.id} ({conv.purpose!r})"
        )
    flows = [f for f in conv.flows_between(shape.sender, shape.recipient) if f.kind == shape.kind]
    if not flows:
        out.append(
            f"convenzione {conv.id} lets no {shape.kind} flow from {shape.sender} "
            f"to {shape.recipient}"
        )
        return out
    if shape.period_start and shape.period_end and shape.period_start > shape.period_end:
        out.append(f"the period {shape.period_start}–{shape.period_end} ends before it starts")
    if shape.kind == "records":
        allowed: dict[str, set[str]] = {}
        for f in flows:
            for table, fields in f.tables.items():
                allowed.setdefault(table, set()).update(fields)
        for table, present in shape.tables.items():
            if table not in allowed:
                out.append(
                    f"table {table!r} may not flow from {shape.sender} to {shape.recipient} "
                    f"under convenzione {conv.id} (allowed: {', '.join(sorted(allowed))})"
                )
                continue
            extra = sorted(set(present) - allowed[table])
            if extra:
                out.append(
                    f"field(s) {', '.join(map(repr, extra))} of table {table!r} may not flow "
                    f"under convenzione {conv.id} (allowed: {', '.join(sorted(allowed[table]))})"
                )
    else:
        ks: dict[str, int] = {}
        for f in flows:
            for name, ind in f.indicators.items():
                ks[name] = max(ks.get(name, 0), ind.k)
        for name, k in shape.indicators.items():
            if name not in ks:
                out.append(
                    f"indicator {name!r} may not flow under convenzione {conv.id} "
                    f"(allowed: {', '.join(sorted(ks))})"
                )
            elif k < ks[name]:
                out.append(
                    f"indicator {name!r} was suppressed below {k} people, but convenzione "
                    f"{conv.id} requires at least {ks[name]}"
                )
    return out


# -- drafting -----------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | dt.date):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)


def draft_toml(
    *,
    conv_id: str,
    title: str,
    purpose: str,
    purpose_description: str,
    legal_basis: str,
    start: dt.date,
    expiry: dt.date,
    retention_days: int,
    parties: list[Mapping[str, str]],
    flows: list[Mapping[str, Any]],
) -> str:
    """The text of a new convenzione file (to be reviewed, then signed by both parties)."""
    lines = [
        "# A convenzione between the parties below. Every byte of this file is signed:",
        "# after any edit both parties sign again (`raccordo convenzioni sign`).",
        f"id = {_toml_value(conv_id)}",
        f"title = {_toml_value(title)}",
        f"purpose = {_toml_value(purpose)}",
        f"purpose_description = {_toml_value(purpose_description)}",
        f"legal_basis = {_toml_value(legal_basis)}",
        f"start = {start}",
        f"expiry = {expiry}",
        f"retention_days = {retention_days}",
    ]
    for p in parties:
        lines += ["", "[[parties]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in p.items()]
    for f in flows:
        lines += ["", "[[flows]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in f.items()]
    return "\n".join(lines) + "\n"
