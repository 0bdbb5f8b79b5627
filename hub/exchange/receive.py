"""The recipient's side: verify, check the convenzione, load, log, answer with a signed receipt.

The order matters for "no loss, no duplicates" (BLUEPRINT §8.3): the rows are
committed first, then the log entry, then the receipt is stored and returned.
A crash after the commit and before the answer makes the sender send the same
package again; the load then finds every row unchanged and the answer is a
receipt like the first one. A package already answered gets its stored
receipt back (a replay is idempotent) and never touches the registry.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub.exchange import crypto, frequency
from hub.exchange.home import Home
from hub.exchange.load import load_records
from hub.exchange.package import Opened, make_receipt, open_package, peek
from hub.registry import Registry

_PACKAGE_ID = re.compile(r"^[0-9a-f]{32}$")


def append_jsonl(path: Path, obj: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(dict(obj), sort_keys=True) + "\n")


def write_json_atomic(path: Path, obj: Mapping[str, Any], *, compact: bool = False) -> None:
    """Write, fsync and rename: a reader sees the old file or the new one, never part."""
    tmp = path.with_name(path.name + ".tmp")
    if compact:  # large indexes: no indentation, no sorting
        tmp.write_text(json.dumps(dict(obj), separators=(",", ":")))
    else:
        tmp.write_text(json.dumps(dict(obj), indent=2, sort_keys=True))
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Receiver:
    """One hub's receiving side; :meth:`handle` is what ``POST /v1/packages`` calls."""

    def __init__(self, home: Home, registry: Registry | None) -> None:
        self.home = home
        self.registry = registry
        self._lock = threading.Lock()
        self.inbox = home.folder("inbox")

    def _stored(self, package_id: str | None) -> dict[str, Any] | None:
        if not package_id or not _PACKAGE_ID.match(package_id):
            return None
        p = self.inbox / f"{package_id}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return self._handle(headers, body)

    def _handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        log = self.home.log
        pid, _ = peek(headers)
        stored = self._stored(pid)
        digest = crypto.sha256_hex(body)
        if stored is not None and stored["body_sha256"] == digest:
            log.append(
                "replayed",
                package=pid,
                convenzione=stored.get("convenzione"),
                peer=stored.get("sender"),
                digest=digest,
            )
            return (200 if stored["status"] == "accepted" else 422), stored
        opened = open_package(self.home, self.home.convenzioni, headers, body)
        if stored is not None and opened.authenticated:
            opened.reasons.append(
                f"package id {pid} was already used for another package: "
                "each package needs a new id"
            )
        if opened.reasons:
            return self._refuse(opened)
        manifest = opened.manifest
        assert manifest is not None and opened.convenzione is not None
        cf = opened.convenzione
        if manifest["kind"] == "records":
            if self.registry is None:
                opened.reasons.append(f"{self.home.party} has no registry to receive records in")
                return self._refuse(opened)
            counts = load_records(
                self.registry,
                sender=str(opened.sender),
                convenzione=cf.id,
                convenzione_digest=cf.digest,
                package_id=str(opened.package_id),
                rows=opened.rows,
            ).as_dict()
        else:
            counts = self._store_aggregates(opened)
        self._keep_sender_head(opened)
        head = log.append(
            "received",
            package=opened.package_id,
            convenzione=cf.id,
            peer=opened.sender,
            digest=digest,
            kind_of_data=manifest["kind"],
            # What the convenzione's frequency is checked against (hub.exchange.frequency).
            flow=manifest.get("flow") or opened.package_id,
            created_at=manifest.get("created_at"),
            erasure_only=frequency.erasure_only(manifest["kind"], manifest["tables"]),
            rows=counts.get("received"),
            loaded=counts.get("loaded"),
            unchanged=counts.get("unchanged"),
            deleted=counts.get("deleted"),
            quarantined=counts.get("quarantined"),
        )
        receipt = make_receipt(self.home, opened, status="accepted", counts=counts, log_head=head)
        write_json_atomic(self.inbox / f"{opened.package_id}.json", receipt)
        return 200, receipt

    def _refuse(self, opened: Opened) -> tuple[int, dict[str, Any]]:
        head = self.home.log.append(
            "refused",
            direction="in",
            package=opened.package_id if opened.authenticated else None,
            convenzione=opened.convenzione.id if opened.convenzione else None,
            peer=opened.sender if opened.authenticated else None,
            digest=opened.body_sha256,
            reason="; ".join(opened.reasons)[:1000],
        )
        receipt = make_receipt(self.home, opened, status="refused", log_head=head)
        # Only a package whose sender is proven may fix the answer to its id: an
        # altered copy must not stop the genuine one from being received later.
        if opened.authenticated and opened.package_id:
            write_json_atomic(self.inbox / f"{opened.package_id}.json", receipt)
            return 422, receipt
        return 400, receipt

    def _store_aggregates(self, opened: Opened) -> dict[str, int]:
        """Snapshot-replace: a period's table is stored whole, replacing the one before."""
        manifest = opened.manifest
        assert manifest is not None and opened.convenzione is not None
        period = manifest["period"]
        folder = self.home.folder("received") / opened.convenzione.id / str(opened.sender)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in opened.aggregates.items():
            write_json_atomic(
                folder / f"{name}.{period['start']}.{period['end']}.json",
                {"package": opened.package_id, "period": period, "table": table},
            )
        n = sum(len(t.get("cells", [])) for t in opened.aggregates.values())
        return {"received": n, "loaded": n, "unchanged": 0, "deleted": 0, "quarantined": 0}

    def _keep_sender_head(self, opened: Opened) -> None:
        head = (opened.manifest or {}).get("sender_log_head")
        if head:
            append_jsonl(self.home.folder("peers") / f"{opened.sender}.heads.jsonl", head)
