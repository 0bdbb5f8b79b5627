"""The remote pseudonymiser: a consortium worker's client of the district's service.

For each distinct identifier ``x`` the worker computes ``H(x)``, blinds it with a fresh
random scalar ``r`` (``r · H(x)``), sends batches of 10,000 blinded elements, and unblinds
each answer with ``r⁻¹``: ``r⁻¹ · k · r · H(x) = k · H(x)``, the same pseudonym the embedded
pseudonymiser computes. The service sees only uniformly random group elements; the worker
never holds ``k`` (RFC 9497's OPRF flow, without its final hash, so that pseudonyms stay
group elements and can be converted).
"""

from __future__ import annotations

import binascii
from typing import Any

import requests

from hub.errors import RaccordoError
from hub.pseudonyms import group
from hub.pseudonyms.pseudonymiser import Pseudonymiser, b64url, unb64url
from hub.pseudonyms.rotation import EpochConverter

BATCH = 10_000


class ServiceError(RaccordoError):
    """The pseudonymisation service cannot be reached, refused a request or answered wrongly."""

    exit_code = 5


class RemotePseudonymiser(Pseudonymiser):
    """Same type and results as the embedded :class:`Pseudonymiser`; the key stays remote."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        expect_domain: str | None = None,
        batch_size: int = BATCH,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        info = self._call("GET", "/v1/session", None)
        self.domain = str(info["domain"])
        self.epoch = int(info["epoch"])
        self.batch_size = min(batch_size, int(info.get("max_batch", BATCH)))
        if expect_domain is not None and expect_domain != self.domain:
            raise ServiceError(
                f"the service pseudonymises this client for domain {self.domain!r}, but this "
                f"configuration's domain is {expect_domain!r}",
                where=self.url,
                hint="use the token of this district's client, or fix pseudonym_domain",
            )
        self._init_common(unb64url(str(info["record_key"])), unb64url(str(info["stable_factor"])))

    def __repr__(self) -> str:
        return f"RemotePseudonymiser({self.url!r}, domain={self.domain!r}, epoch={self.epoch})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            r = self._http.request(method, self.url + path, json=body, timeout=self._timeout)
        except requests.RequestException as e:
            raise ServiceError(
                f"cannot reach the pseudonymisation service ({type(e).__name__})",
                where=self.url,
                hint="check [hub] pseudonymiser_url and that `raccordo pseudonymiser serve` runs "
                "and is reachable from this machine",
            ) from None
        try:
            doc = r.json()
        except ValueError:
            doc = {}
        if r.status_code != 200:
            what = doc.get("error") if isinstance(doc, dict) else None
            hint = {
                401: "the token is wrong or revoked: ask the district for this client's token",
                429: "the service limits how many identifiers a client may have pseudonymised; "
                "wait, or ask the district to raise the quota",
            }.get(r.status_code)
            raise ServiceError(
                f"the pseudonymisation service refused the request (HTTP {r.status_code}): "
                f"{what or 'no reason given'}",
                where=self.url + path,
                hint=hint,
            )
        if not isinstance(doc, dict):
            raise ServiceError("the pseudonymisation service answered nonsense", where=self.url)
        return doc

    def _apply_key(self, elements: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, len(elements), self.batch_size):
            chunk = elements[start : start + self.batch_size]
            blinds = [group.random_scalar() for _ in chunk]
            blinded = [b64url(group.multiply(r, e)) for r, e in zip(blinds, chunk, strict=True)]
            doc = self._call("POST", "/v1/evaluate", {"epoch": self.epoch, "elements": blinded})
            answers = doc.get("elements")
            if (
                doc.get("epoch") != self.epoch
                or not isinstance(answers, list)
                or len(answers) != len(chunk)
            ):
                raise ServiceError(
                    "the pseudonymisation service answered a different number of elements "
                    "or another epoch",
                    where=self.url,
                )
            for r, a in zip(blinds, answers, strict=True):
                try:
                    z = unb64url(str(a))
                    out.append(group.multiply(group.scalar_invert(r), z))
                except (ValueError, binascii.Error):
                    raise ServiceError(
                        "the pseudonymisation service answered an invalid element",
                        where=self.url,
                    ) from None
        return out


def remote_epoch_converter(client: RemotePseudonymiser) -> tuple[int, EpochConverter]:
    """The service's current epoch, and a converter to it through ``/v1/reepoch`` (for a
    client allowed to rotate: the district hub whose keys the service holds)."""
    target = int(client._call("GET", "/v1/session", None)["epoch"])

    def convert(from_epoch: int, elements: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, len(elements), client.batch_size):
            chunk = elements[start : start + client.batch_size]
            doc = client._call(
                "POST",
                "/v1/reepoch",
                {"from_epoch": from_epoch, "pseudonyms": [b64url(e) for e in chunk]},
            )
            answers = doc.get("pseudonyms")
            if (
                doc.get("epoch") != target
                or not isinstance(answers, list)
                or len(answers) != len(chunk)
            ):
                raise ServiceError(
                    "the pseudonymisation service's epoch changed during the rotation",
                    where=client.url,
                    hint="run `raccordo keys rotate` again: it resumes where it stopped",
                )
            for a in answers:
                z = unb64url(str(a))
                if not group.is_element(z):
                    raise ServiceError("the service answered an invalid element", where=client.url)
                out.append(z)
        return out

    return target, convert
