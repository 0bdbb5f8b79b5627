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

import re
from collections.abc import Sequence
from typing import Any, Protocol

import requests

from hub.exchange.errors import PackageRefused, PeerUnavailable
from hub.pseudonyms.pseudonymiser import TEXT_PREFIX

#: Pseudonyms per request (bounded requests; the service may have a quota).
CHUNK = 10_000
#: A group element as the service and the text form write it: 32 bytes, unpadded base64url.
_ELEMENT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
#: The registry's text form of a pseudonym, ``v2.<epoch>.<element>``.
_TEXT = re.compile(re.escape(TEXT_PREFIX) + r"([0-9]{1,9})\.(" + _ELEMENT.pattern + r")\Z")


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
        # The text form's body is already the base64url the service takes: it is split
        # off, not decoded and encoded again (the service checks every element itself).
        parsed: list[tuple[int, str]] = []
        for n, text in enumerate(pseudonyms):
            m = _TEXT.match(text)
            if m is None:
                raise PackageRefused(
                    f"value number {n + 1} to convert is not a v2 pseudonym",
                    where=f"domain {from_domain}",
                    hint="only person pseudonyms of the registry can be converted",
                )
            parsed.append((int(m[1]), m[2]))
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
                        "pseudonyms": [parsed[j][1] for j in chunk],
                    },
                    expected=len(chunk),
                )
                prefix = f"{TEXT_PREFIX}{int(body['epoch'])}."
                for j, value in zip(chunk, body["pseudonyms"], strict=True):
                    if not isinstance(value, str) or not _ELEMENT.fullmatch(value):
                        raise PackageRefused(
                            "the pseudonymisation service answered with a value that is not "
                            "a pseudonym",
                            where=self.base_url,
                        )
                    out[j] = prefix + value
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
