"""The one seam to the pseudonymisation service: converting pseudonyms between domains.

A record-level package carries pseudonyms of the *recipient's* domain, so the
recipient can link the rows with its own people and never sees the sender's
pseudonyms. Only the pseudonymisation service holds the keys that convert
``k_A · H(id)`` into ``k_B · H(id)`` (BLUEPRINT §7); this module is its HTTP
client, written against the endpoint the pseudonyms work defines::

    POST {service}/v1/convert
    {"from_domain": "DOM_A", "to_domain": "DOM_B", "purpose": "...",
     "convenzione": "conv-id", "pseudonyms": ["<base64>", ...]}
    → 200 {"pseudonyms": ["<base64>", ...]}   (same order, same length)

Values are sent as the registry stores them. The service refuses what the
convenzione does not allow (and ``LOCAL`` pseudonyms, which never convert);
its refusal is shown to the user as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import requests

from hub.exchange.errors import PackageRefused, PeerUnavailable

#: Pseudonyms per request (bounded requests; the service may have a quota).
CHUNK = 10_000


class Converter(Protocol):
    def convert(
        self,
        *,
        from_domain: str,
        to_domain: str,
        purpose: str,
        convenzione: str,
        pseudonyms: Sequence[str],
    ) -> list[str]: ...


class ServiceConverter:
    """HTTP client of the pseudonymisation service's conversion endpoint."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def convert(
        self,
        *,
        from_domain: str,
        to_domain: str,
        purpose: str,
        convenzione: str,
        pseudonyms: Sequence[str],
    ) -> list[str]:
        out: list[str] = []
        for i in range(0, len(pseudonyms), CHUNK):
            chunk = list(pseudonyms[i : i + CHUNK])
            try:
                resp = self._session.post(
                    f"{self.base_url}/v1/convert",
                    json={
                        "from_domain": from_domain,
                        "to_domain": to_domain,
                        "purpose": purpose,
                        "convenzione": convenzione,
                        "pseudonyms": chunk,
                    },
                    timeout=self.timeout,
                )
            except requests.RequestException as e:
                raise PeerUnavailable(
                    f"the pseudonymisation service cannot be reached ({type(e).__name__})",
                    where=self.base_url,
                    hint="nothing was sent; try again when the service is up",
                ) from None
            if resp.status_code >= 500:
                raise PeerUnavailable(
                    f"the pseudonymisation service failed (HTTP {resp.status_code})",
                    where=self.base_url,
                    hint="nothing was sent; try again later",
                )
            if resp.status_code != 200:
                raise PackageRefused(
                    f"the pseudonymisation service refused the conversion "
                    f"(HTTP {resp.status_code}): {_detail(resp)}",
                    where=self.base_url,
                )
            try:
                converted = resp.json()["pseudonyms"]
            except (ValueError, KeyError, TypeError):
                converted = None
            if not isinstance(converted, list) or len(converted) != len(chunk):
                raise PackageRefused(
                    "the pseudonymisation service answered with a different number of "
                    "pseudonyms than it was asked to convert",
                    where=self.base_url,
                )
            out += [str(x) for x in converted]
        return out


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("detail") or body.get("error") or body)[:300]
    except ValueError:
        return resp.text[:300]


def convert_rows_values(
    converter: Converter,
    *,
    from_domain: str,
    to_domain: str,
    purpose: str,
    convenzione: str,
    values: Sequence[str],
) -> dict[str, str]:
    """Distinct values → converted values (one call per distinct pseudonym)."""
    distinct = sorted(set(values))
    converted = converter.convert(
        from_domain=from_domain,
        to_domain=to_domain,
        purpose=purpose,
        convenzione=convenzione,
        pseudonyms=distinct,
    )
    return dict(zip(distinct, converted, strict=True))
