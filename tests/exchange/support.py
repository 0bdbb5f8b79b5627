"""Helpers for the exchange tests: registries with rows, and the TEST DOUBLE of conversion.

``InProcessTestConverter`` and ``tests/exchange/fake_pseudonym_service.py`` stand in for the
pseudonymisation service's ``POST /v1/convert`` until the pseudonyms work lands. They are
test doubles, used only by tests: the "conversion" is a keyed hash of (target domain,
pseudonym), deterministic like the real ``k_B · k_A⁻¹`` and never the identity, so a test
can tell a converted pseudonym from the sender's.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence

from hub.registry import BatchCounts, EntityRow, Registry, SourceRecordChange

TEST_DOUBLE_KEY = b"test-double-conversion-key-not-a-real-key"


def double_convert(to_domain: str, pseudonym: str) -> str:
    mac = hmac.digest(TEST_DOUBLE_KEY, f"{to_domain}|{pseudonym}".encode(), hashlib.sha256)
    return "2." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


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


def pseudonym(i: int, domain: str = "DOM_A") -> str:
    mac = hashlib.sha256(f"{domain}|person|{i}".encode()).digest()
    return "1." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def seed(registry: Registry, n: int, *, org: str = "ORG1", start: int = 0) -> None:
    """``n`` people, each a subject row and a case episode, as a sync would load them."""
    run = registry.start_run(
        connector="synthetic", connector_type="synthetic", org=org, mapping="m", mapping_version="1"
    )
    prov = {"connector": "synthetic", "run_id": run, "mapping": "m", "mapping_version": "1"}
    changes = []
    for i in range(start, start + n):
        p = pseudonym(i)
        subject = EntityRow(
            "subject",
            f"ks{i:08d}",
            f"hs{i}",
            {
                **prov,
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
            f"he{i}",
            {
                **prov,
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
