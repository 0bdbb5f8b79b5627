"""The one seam to the pseudonymisation service: converting pseudonyms between domains.

A record-level package carries pseudonyms of the *recipient's* domain, so the
recipient can link the rows with its own people and never sees the sender's
pseudonyms. Only the pseudonymisation service holds the keys that convert
``k_A · H(id)`` into ``k_B · H(id)`` (BLUEPRINT §7); this module is its HTTP
client, written against the endpoint the pseudonyms work defines::

    POST {service}/v1/convert            (the client's token names its domain A)
    {"to_domain": "DOM_B", "purpose": "...", "convenzione": "conv-id",
     "from_epoch": 1, "pseudonyms": ["<base64url of 32 bytes>", ...]}
    → 200 {"domain": "DOM_B", "epoch": 1, "pseudonyms": [...]}   (same order, same length)

Values are read and written in the registry's text form (``v2.<epoch>.<base64url>``).
The service refuses what the district has not allowed (and ``LOCAL`` pseudonyms,
which never convert); its refusal is shown to the user as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import requests

from hub.exchange.errors import PackageRefused, PeerUnavailable
from hub.pseudonyms.pseudonymiser import b64url, parse_pseudonym_text, pseudonym_text, unb64url

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
    """HTTP client of the pseudonymisation service's conversion endpoint
    (``raccordo pseudonymiser serve``, :mod:`hub.pseudonyms.service`).

    The registry stores pseudonyms in their text form ``v2.<epoch>.<base64url>``
    (:func:`hub.pseudonyms.pseudonymiser.pseudonym_text`); the service takes the 32-byte
    elements of one epoch per request and answers them in the target domain's current
    epoch. The source domain is the client's own (its token says which): a
    ``from_domain`` other than that is refused by the service.
    """

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
        parsed: list[tuple[int, bytes]] = []
        for n, text in enumerate(pseudonyms):
            try:
                parsed.append(parse_pseudonym_text(text))
            except ValueError:
                raise PackageRefused(
                    f"value number {n + 1} to convert is not a v2 pseudonym",
                    where=f"domain {from_domain}",
                    hint="only person pseudonyms of the registry can be converted",
                ) from None
        out: list[str | None] = [None] * len(parsed)
        by_epoch: dict[int, list[int]] = {}
        for i, (epoch, _) in enumerate(parsed):
            by_epoch.setdefault(epoch, []).append(i)
        for epoch, positions in by_epoch.items():
            for i in range(0, len(positions), CHUNK):
                chunk = positions[i : i + CHUNK]
                body = self._post(
                    {
                        "to_domain": to_domain,
                        "purpose": purpose,
                        "convenzione": convenzione,
                        "from_epoch": epoch,
                        "pseudonyms": [b64url(parsed[j][1]) for j in chunk],
                    },
                    expected=len(chunk),
                )
                to_epoch = int(body["epoch"])
                for j, value in zip(chunk, body["pseudonyms"], strict=True):
                    out[j] = pseudonym_text(to_epoch, unb64url(str(value)))
        return [x for x in out if x is not None]

    def _post(self, payload: dict[str, Any], *, expected: int) -> dict[str, Any]:
        try:
            resp = self._session.post(
                f"{self.base_url}/v1/convert", json=payload, timeout=self.timeout
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
            body = resp.json()
            ok = isinstance(body["pseudonyms"], list) and len(body["pseudonyms"]) == expected
            int(body["epoch"])
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise PackageRefused(
                "the pseudonymisation service answered with a different number of "
                "pseudonyms than it was asked to convert",
                where=self.base_url,
            )
        return dict(body)


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
