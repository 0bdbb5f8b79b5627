"""Helpers for the exchange tests: registries with rows, the district keys behind their
pseudonyms, and the in-process TEST DOUBLE of conversion.

:func:`pseudonym` gives *real* v2 pseudonyms of synthetic people, computed with the keyring of
one test district workspace (:func:`key_district`, made once per test process): the process
tests run the real ``raccordo pseudonymiser serve`` over that workspace, so a pseudonym
converted A → B by the service equals ``pseudonym(i, "DOM_B")``.

``InProcessTestConverter`` stands in for the service in the in-process tests only: its
"conversion" is a keyed hash of (target domain, pseudonym), deterministic like the real
``k_B · k_A⁻¹`` and never the identity, so a test can tell a converted pseudonym from the
sender's.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from hub.config import load_config
from hub.pseudonyms import (
    IdentifierType,
    Keyring,
    KeySource,
    Pseudonymiser,
    group,
    parse_identifier,
)
from hub.pseudonyms.identifiers import cf_check_character
from hub.pseudonyms.pseudonymiser import pseudonym_text
from hub.pseudonyms.service import add_client
from hub.registry import BatchCounts, EntityRow, Registry, SourceRecordChange
from hub.workspace import init_workspace

TEST_DOUBLE_KEY = b"test-double-conversion-key-not-a-real-key"


def double_convert(to_domain: str, pseudonym: str) -> str:
    """A valid v2 pseudonym of another domain standing for ``pseudonym`` (keyed, fake)."""
    mac = hmac.digest(TEST_DOUBLE_KEY, f"{to_domain}|{pseudonym}".encode(), hashlib.sha256)
    return pseudonym_text(1, group.hash_to_group(group.H2G_PREFIX + mac))


class InProcessTestConverter:
    """TEST DOUBLE of the pseudonymisation service's conversion (in-process)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def convert(
        self,
        *,
        from_domain: str,
        to_domain: str,
        purpose: str,
        convenzione: str,
        pseudonyms: Sequence[str],
    ) -> list[str]:
        self.calls.append(
            {"from": from_domain, "to": to_domain, "convenzione": convenzione, "n": len(pseudonyms)}
        )
        return [double_convert(to_domain, p) for p in pseudonyms]


@functools.cache
def key_district() -> tuple[Path, str]:
    """A district workspace whose keyring holds the test domains' keys (the one the real
    pseudonymisation service serves), and the token of its client ``hub-a`` (domain DOM_A,
    allowed to convert to DOM_B). Made once per test process, removed at exit."""
    ws = Path(tempfile.mkdtemp(prefix="raccordo-exchange-keys-"))
    atexit.register(shutil.rmtree, ws, True)
    init_workspace(ws, district="DOM_A", district_name="Distretto A", extra="")
    token = add_client(
        ws / "keys" / "pseudonymiser-clients.json",
        {"id": "hub-a", "domain": "DOM_A", "convert_to": ("DOM_B",)},
    )
    return ws, token


@functools.cache
def _pseudonymiser(domain: str) -> Pseudonymiser:
    cfg = load_config(key_district()[0] / "raccordo.toml")
    ring = Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))
    return Pseudonymiser(ring, domain)


def synthetic_cf(i: int) -> str:
    """A valid, fictitious codice fiscale for person ``i`` (distinct for every i < 26⁶)."""
    letters = "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(i // 26**k) % 26] for k in range(6))
    first15 = f"{letters}{40 + i % 60:02d}{'ABCDEHLMPRST'[i % 12]}{1 + i % 28:02d}H501"
    return first15 + cf_check_character(first15)


def pseudonym(i: int, domain: str = "DOM_A") -> str:
    """The v2 pseudonym (registry text form) of synthetic person ``i`` in ``domain``."""
    ident = parse_identifier(synthetic_cf(i), IdentifierType.CF)
    return _pseudonymiser(domain).pseudonym(ident)


def seed(registry: Registry, n: int, *, org: str = "ORG1", start: int = 0) -> None:
    """``n`` people, each a subject row and a case episode, as a sync would load them."""
    run = registry.start_run(
        connector="synthetic", connector_type="synthetic", org=org, mapping="m", mapping_version="1"
    )
    changes = []
    for i in range(start, start + n):
        p = pseudonym(i)
        subject = EntityRow(
            "subject",
            f"ks{i:08d}",
            {
                "subject": p,
                "household": None,
                "birth_year": 1940 + i % 60,
                "sex": "MF"[i % 2],
                "residence_comune_istat": "058091",
                "citizenship": "ITA",
            },
        )
        episode = EntityRow(
            "case_episode",
            f"ke{i:08d}",
            {
                "subject": p,
                "area": "ANZIANI",
                "opened_on": dt.date(2024, 1, 1) + dt.timedelta(days=i % 300),
                "closed_on": None,
            },
        )
        changes.append(SourceRecordChange(f"src{i:08d}", f"r{i}", "upsert", (subject, episode)))
    registry.commit_batch(
        run_id=run,
        connector="synthetic",
        stream="s",
        org=org,
        changes=changes,
        quarantine=[],
        counts=BatchCounts(read=n, loaded=n),
        state=None,
        retention=dt.timedelta(days=30),
    )
    registry.finish_run(run, status="succeeded")


def cancel(registry: Registry, indexes: Sequence[int], *, org: str = "ORG1") -> None:
    """Cancel people at the source (their rows leave the registry)."""
    run = registry.start_run(
        connector="synthetic", connector_type="synthetic", org=org, mapping="m", mapping_version="1"
    )
    changes = [SourceRecordChange(f"src{i:08d}", "gone", "delete", ()) for i in indexes]
    registry.commit_batch(
        run_id=run,
        connector="synthetic",
        stream="s",
        org=org,
        changes=changes,
        quarantine=[],
        counts=BatchCounts(read=len(changes), loaded=len(changes), deleted=len(changes)),
        state=None,
        retention=dt.timedelta(days=30),
    )
    registry.finish_run(run, status="succeeded")


@contextlib.contextmanager
def app_in_thread(app: Any, port: int) -> Iterator[None]:
    """An ASGI app (an exchange or push endpoint) served by uvicorn in a thread, on loopback."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
