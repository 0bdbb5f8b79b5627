"""Limits of the web app: failed logins, client addresses behind proxies, request bodies."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import unicodedata
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hub.web.store import StateStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def normalise_username(username: str) -> str:
    """The user name as authentication compares it (also the key of the login limit)."""
    return unicodedata.normalize("NFKC", username).strip()


def login_key(addr: str, username: str | None = None) -> str:
    """Key of a login counter. Hashed: whatever was typed as a user name (a codice
    fiscale by mistake, say) is never written to the store in clear."""
    text = (
        f"addr:{addr}"
        if username is None
        else f"user:{addr}|{normalise_username(username).casefold()}"
    )
    return hashlib.sha256(text.encode()).hexdigest()


class LoginLimiter:
    """Failed logins in a sliding window, kept in the store every worker shares.

    Two keys are counted: the pair (client address, normalised user name), limited to
    ``attempts``; and the address alone, limited to ``4 × attempts`` (one client trying
    many names). Only the client who fails is locked: the real user, from their own
    address, can still sign in while an attacker elsewhere is locked out. Attempts made
    while locked are refused without being counted, so a lock ends ``window_s`` after
    the last counted failure whatever the attacker keeps sending.
    """

    def __init__(self, store: StateStore, attempts: int, window_s: float) -> None:
        self.store = store
        self.attempts = attempts
        self.window_s = window_s

    def _keys(self, addr: str, username: str) -> tuple[str, str]:
        return login_key(addr, username), login_key(addr)

    def blocked(self, addr: str, username: str) -> bool:
        pair, alone = self._keys(addr, username)
        counts = self.store.failures([pair, alone], self.window_s)
        return counts[pair] >= self.attempts or counts[alone] >= 4 * self.attempts

    def failed(self, addr: str, username: str) -> None:
        self.store.add_failure(list(self._keys(addr, username)), self.window_s)

    def succeeded(self, addr: str, username: str) -> None:
        self.store.clear_failures(self._keys(addr, username)[0])


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def _trusted(addr: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy.

    From a trusted proxy, ``X-Forwarded-For`` is read from the right, skipping the
    other trusted proxies; the first address that is not one is the client. A
    header sent by anyone else is ignored, so rotating it changes nothing.
    """
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer


class BodyLimit:
    """Refuses a request body larger than the cap of its route (413) without keeping it.

    The declared ``Content-Length`` is checked first; then the body is read (at most
    the cap: a body sent chunked is cut as soon as it passes it) before the app sees
    it, so no route can be made to hold more. The upload route has its own, larger cap.
    """

    def __init__(self, app: ASGIApp, *, default: int, per_path: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        cap = self.per_path.get(scope["path"], self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = cap + 1
                if declared > cap:
                    await _too_large(scope, send, cap)
                    return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > cap:
                await _too_large(scope, send, cap)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, send: Send, cap: int) -> None:
    from hub.web.i18n import gettext

    api = scope["path"].startswith("/api/")
    if api:
        body = json.dumps({"detail": f"request body larger than {cap} bytes"}).encode()
        ctype = b"application/json"
    else:
        text = gettext("The request is too large.")
        body = (
            '<!doctype html><html lang="it"><head><meta charset="utf-8"><title>413</title>'
            f"</head><body><main><h1>{text}</h1></main></body></html>"
        ).encode()
        ctype = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
