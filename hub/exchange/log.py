"""The tamper-evident log of every flow: an append-only Merkle tree with signed heads.

Every package a hub sends, receives, refuses or has converted is one entry
(counts, digests and codes only: never a pseudonym, never a record). After
each entry the hub signs a *tree head* (size, root, the new leaf's hash, time)
in the manner of RFC 9162 (:mod:`hub.exchange.merkle` for the hashing).
Heads travel: the sender's current head inside each package, the
recipient's inside each receipt. So each party holds signed heads of the
other's log, and neither can later rewrite its own history alone: a head the
other side holds no longer matches a log that was edited or cut.

Files, in ``<home>/log/``: ``entries.jsonl`` (one canonical JSON entry per
line, the bytes the leaf hash covers) and ``heads.jsonl`` (one signed head per
line). :func:`verify` reads both and says which entry was edited, deleted,
moved or cut off.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from hub.exchange import crypto, merkle

HEAD_CONTEXT = "raccordo/log-head/v1"
KINDS = frozenset(
    {
        "sent",
        "received",
        "refused",
        "replayed",
        "receipt",
        "converted",
        "revoked",
        "erasure",
        "peer-inconsistent",
        # push serve released a connector's sync lock held by a worker gone quiet
        "lock-expired",
    }
)


def head_message(head: Mapping[str, Any]) -> bytes:
    return crypto.canonical({k: head[k] for k in ("log", "size", "root", "leaf", "at")})


def verify_head(head: Mapping[str, Any], public_key_b64: str) -> None:
    """Raises :class:`crypto.CryptoFailure` unless ``head`` is signed by that key."""
    crypto.verify(public_key_b64, HEAD_CONTEXT, head_message(head), str(head.get("signature")))


class FlowLog:
    """One party's log. Thread- and process-safe appends (a file lock)."""

    def __init__(
        self,
        folder: Path,
        party: str,
        key: ed25519.Ed25519PrivateKey | Callable[[], ed25519.Ed25519PrivateKey],
    ) -> None:
        """``key`` signs the heads; a callable is asked for it only when one is signed (so
        reading a log needs no private key)."""
        self.folder = folder
        self.party = party
        self._key = key
        folder.mkdir(parents=True, exist_ok=True)
        self.entries_path = folder / "entries.jsonl"
        self.heads_path = folder / "heads.jsonl"
        self._lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, (self.folder / "lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _range(self) -> merkle.CompactRange:
        cr = merkle.CompactRange()
        for line in _lines(self.entries_path):
            cr.append(merkle.leaf_hash(line))
        return cr

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one entry and sign the new head; returns that head."""
        if kind not in KINDS:
            raise ValueError(f"unknown log entry kind {kind!r}")
        with self._locked():
            cr = self._range()
            entry = {
                "seq": cr.size,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "kind": kind,
                **{k: v for k, v in fields.items() if v is not None},
            }
            line = crypto.canonical(entry)
            leaf = merkle.leaf_hash(line)
            cr.append(leaf)
            head = self._sign_head(cr.size, cr.root(), leaf)
            _append_line(self.entries_path, line)
            _append_line(self.heads_path, crypto.canonical(head))
            return head

    def _sign_head(self, size: int, root: bytes, leaf: bytes) -> dict[str, Any]:
        head: dict[str, Any] = {
            "log": self.party,
            "size": size,
            "root": root.hex(),
            "leaf": leaf.hex(),
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        key = self._key if isinstance(self._key, ed25519.Ed25519PrivateKey) else self._key()
        head["signature"] = crypto.sign(key, HEAD_CONTEXT, head_message(head))
        return head

    def head(self) -> dict[str, Any] | None:
        """The latest signed head (None for an empty log)."""
        heads = list(_lines(self.heads_path))
        return json.loads(heads[-1]) if heads else None

    def entries(self) -> list[dict[str, Any]]:
        return read_entries(self.folder)

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.entries() if all(e.get(k) == v for k, v in match.items())]

    def inclusion_proof(self, seq: int) -> dict[str, Any]:
        leaves = [merkle.leaf_hash(line) for line in _lines(self.entries_path)]
        return {
            "seq": seq,
            "size": len(leaves),
            "root": merkle.root(leaves).hex(),
            "proof": [p.hex() for p in merkle.inclusion_proof(seq, leaves)],
        }

    def consistency_proof(self, old_size: int, size: int | None = None) -> dict[str, Any]:
        """RFC 9162 consistency proof from ``old_size`` to ``size`` (default: now)."""
        leaves = [merkle.leaf_hash(line) for line in _lines(self.entries_path)]
        leaves = leaves[: len(leaves) if size is None else size]
        return {
            "old_size": old_size,
            "size": len(leaves),
            "root": merkle.root(leaves).hex(),
            "proof": [p.hex() for p in merkle.consistency_proof(old_size, leaves)],
        }


def check_consistency(
    old: Mapping[str, Any], new: Mapping[str, Any], proof: Mapping[str, Any]
) -> bool:
    """Whether ``proof`` shows the log of head ``new`` extends the log of head ``old``."""
    try:
        return merkle.verify_consistency(
            int(old["size"]),
            int(new["size"]),
            bytes.fromhex(str(old["root"])),
            bytes.fromhex(str(new["root"])),
            [bytes.fromhex(str(p)) for p in proof["proof"]],
        )
    except (KeyError, TypeError, ValueError):
        return False


def read_entries(folder: Path) -> list[dict[str, Any]]:
    """The entries of the log in ``folder``, read only (no key needed)."""
    return [json.loads(line) for line in _lines(folder / "entries.jsonl")]


def _lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\n")
            if line:
                yield line


def _append_line(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


# -- verification ---------------------------------------------------------------------
@dataclass
class Report:
    entries: int = 0
    heads: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    folder: Path, public_key_b64: str, external_heads: Iterable[Mapping[str, Any]] = ()
) -> Report:
    """Check a log against its own signed heads and against heads others hold.

    Says which entry was edited (its bytes no longer hash to the leaf its head
    signed), deleted (a sequence number is missing), moved (an entry sits at
    another position than its number) or cut off (heads, here or held by the
    other party, cover more entries than the file has).
    """
    report = Report()
    lines = list(_lines(folder / "entries.jsonl"))
    report.entries = len(lines)
    heads: dict[int, dict[str, Any]] = {}
    for n, raw in enumerate(_lines(folder / "heads.jsonl"), start=1):
        try:
            head = json.loads(raw)
            verify_head(head, public_key_b64)
        except (ValueError, crypto.CryptoFailure):
            report.problems.append(f"heads.jsonl line {n}: a tree head whose signature fails")
            continue
        heads[int(head["size"])] = head
    report.heads = len(heads)
    for head in external_heads:
        try:
            verify_head(head, public_key_b64)
        except crypto.CryptoFailure:
            report.problems.append(
                f"a head held by the other party (size {head.get('size')}) is not signed by "
                "this log's key: ignored"
            )
            continue
        size = int(head["size"])
        own = heads.get(size)
        if own is None:
            heads[size] = dict(head)
        elif own["root"] != head["root"]:
            report.problems.append(
                f"the head of size {size} held by the other party differs from this log's own: "
                "the log and its heads were rewritten"
            )
    seqs: list[int | None] = []
    for pos, raw in enumerate(lines):
        try:
            seqs.append(int(json.loads(raw)["seq"]))
        except (ValueError, KeyError, TypeError):
            seqs.append(None)
            report.problems.append(f"entry at line {pos + 1} is not a valid entry")
    present = {s for s in seqs if s is not None}
    leaves = [merkle.leaf_hash(raw) for raw in lines]
    top = max([*present, *(s - 1 for s in heads)], default=-1)
    for s in range(top + 1):
        if s not in present:
            what = "cut off (the log was truncated)" if s > max(present, default=-1) else "deleted"
            report.problems.append(f"entry #{s} {what}")
    highest = -1
    for pos, seq in enumerate(seqs):
        if seq is None:
            continue
        head = heads.get(seq + 1)
        if seq <= highest:
            report.problems.append(
                f"entry #{seq} found after entry #{highest} (entries reordered or duplicated)"
            )
        highest = max(highest, seq)
        if head is not None and head["leaf"] != leaves[pos].hex():
            report.problems.append(f"entry #{seq} edited: it no longer matches its signed head")
    # The roots: binds every head to everything before it (catches what the
    # per-entry checks cannot name, e.g. an inserted entry).
    if not report.problems:
        cr = merkle.CompactRange()
        for pos, leaf in enumerate(leaves):
            cr.append(leaf)
            head = heads.get(pos + 1)
            if head is not None and head["root"] != cr.root().hex():
                report.problems.append(f"the tree head of size {pos + 1} does not match the log")
                break
    return report
