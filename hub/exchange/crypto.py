"""The few cryptographic operations exchange needs, all from ``cryptography``.

- Ed25519 for every signature (convenzioni, packages, receipts, tree heads).
- HPKE (RFC 9180, base mode) to encrypt a package for its recipient, with the
  post-quantum hybrid KEM ML-KEM-768 + X25519 (X-Wing, draft-ietf-hpke-pq),
  HKDF-SHA256 and ChaCha20-Poly1305. ``cryptography`` >= 47 offers HPKE and
  this KEM (on its OpenSSL wheels, which carry ML-KEM). A recipient key is
  stored as its two parts: the 64-byte ML-KEM seed and the X25519 key.
- SHA-256 for digests.

Nothing here invents cryptography: it only encodes (base64url, canonical
JSON) and calls the library.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

HPKE_SUITE_ID = "MLKEM768-X25519/HKDF-SHA256/ChaCha20Poly1305"
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_MLKEM_SEED = 64
_MLKEM_PUBLIC = 1184


class CryptoFailure(Exception):
    """A signature or a ciphertext did not verify."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise CryptoFailure(f"not base64url: {e}") from None


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, no spaces, UTF-8): what every signature covers."""
    return _CANONICAL.encode(obj).encode()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- Ed25519 ------------------------------------------------------------------------
def new_signing_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def signing_key_from_bytes(raw: bytes) -> ed25519.Ed25519PrivateKey:
    try:
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError as e:
        raise CryptoFailure(f"bad signing key: {e}") from None


def private_bytes(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def public_b64(key: ed25519.Ed25519PrivateKey) -> str:
    pub = key.public_key()
    return b64e(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign(key: ed25519.Ed25519PrivateKey, context: str, message: bytes) -> str:
    """An Ed25519 signature over ``context || 0x00 || message`` (domain separation)."""
    return b64e(key.sign(context.encode() + b"\x00" + message))


def verify(public_key_b64: str, context: str, message: bytes, signature_b64: str) -> None:
    try:
        pub = ed25519.Ed25519PublicKey.from_public_bytes(b64d(public_key_b64))
        pub.verify(b64d(signature_b64), context.encode() + b"\x00" + message)
    except (InvalidSignature, ValueError) as e:
        raise CryptoFailure(f"bad signature ({type(e).__name__})") from None


# -- HPKE -----------------------------------------------------------------------------
class KemKey:
    """A recipient's HPKE key: ML-KEM-768 seed + X25519 private key."""

    def __init__(self, mlkem_key: mlkem.MLKEM768PrivateKey, x_key: x25519.X25519PrivateKey):
        self._mlkem = mlkem_key
        self._x = x_key
        self.hpke_key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x_key)

    @classmethod
    def generate(cls) -> KemKey:
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> KemKey:
        if len(raw) != _MLKEM_SEED + 32:
            raise CryptoFailure("an HPKE key file holds 96 bytes")
        return cls(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED]),
            x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:]),
        )

    def to_bytes(self) -> bytes:
        return self._mlkem.private_bytes_raw() + private_bytes(self._x)

    def public_b64(self) -> str:
        x_pub = self._x.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return b64e(self._mlkem.public_key().public_bytes_raw() + x_pub)


def _public_kem(public_b64: str) -> hpke.MLKEM768X25519PublicKey:
    raw = b64d(public_b64)
    if len(raw) != _MLKEM_PUBLIC + 32:
        raise CryptoFailure("an HPKE public key (ML-KEM-768 + X25519) is 1216 bytes")
    try:
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC]),
            x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC:]),
        )
    except ValueError as e:
        raise CryptoFailure(f"bad HPKE public key: {e}") from None


def seal(plaintext: bytes, recipient_public_b64: str, info: bytes) -> bytes:
    """HPKE single-shot encryption (base mode) for the recipient's public key."""
    return _SUITE.encrypt(plaintext, _public_kem(recipient_public_b64), info=info)


def open_sealed(ciphertext: bytes, key: KemKey, info: bytes) -> bytes:
    try:
        return _SUITE.decrypt(ciphertext, key.hpke_key, info=info)
    except Exception as e:  # the library raises InvalidTag or ValueError
        raise CryptoFailure(f"cannot decrypt ({type(e).__name__})") from None


# -- JWS (RFC 7515 compact, EdDSA per RFC 8037), as AgID ModI's Agid-JWT-Signature -----
def jws_sign(key: ed25519.Ed25519PrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = b64e(canonical({**header, "alg": "EdDSA"})) + "." + b64e(canonical(claims))
    return signing_input + "." + b64e(key.sign(signing_input.encode()))


def jws_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, *before* verification (to find which key verifies it)."""
    try:
        h, p, _ = token.split(".")
        header, claims = json.loads(b64d(h)), json.loads(b64d(p))
    except (ValueError, CryptoFailure):
        raise CryptoFailure("not a compact JWS") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise CryptoFailure("not a compact JWS")
    if header.get("alg") != "EdDSA":
        raise CryptoFailure(f"JWS algorithm {header.get('alg')!r} is not EdDSA")
    return header, claims


def jws_verify(token: str, public_key_b64: str) -> dict[str, Any]:
    _, claims = jws_unverified(token)
    h, p, s = token.split(".")
    try:
        pub = ed25519.Ed25519PublicKey.from_public_bytes(b64d(public_key_b64))
        pub.verify(b64d(s), f"{h}.{p}".encode())
    except (InvalidSignature, ValueError):
        raise CryptoFailure("the JWS signature does not verify") from None
    return claims


def digest_header(body: bytes) -> str:
    """``Digest: SHA-256=<base64>`` (RFC 3230), as ModI's integrity pattern signs it."""
    return "SHA-256=" + base64.b64encode(sha256(body)).decode()


# -- ModI-shaped messages (packages between hubs, pushes from workers) ---------------------
def header(headers: Any, name: str) -> str | None:
    """A header's value, its name compared without case (HTTP headers as a plain mapping)."""
    for k, v in headers.items():
        if str(k).lower() == name.lower():
            return str(v)
    return None


def modi_headers(
    key: ed25519.Ed25519PrivateKey,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    issued: int,
    expires: int,
    body: bytes,
    content_type: str,
    claims: dict[str, Any],
) -> dict[str, str]:
    """``Digest``, ``Agid-JWT-Signature`` (a JWS over the body digest, AgID ModI integrity
    pattern) and ``Content-Type`` for a sealed ``body``; ``claims`` are added to the JWS."""
    digest = digest_header(body)
    jws = jws_sign(
        key,
        {"typ": "JWT", "kid": sender},
        {
            "iss": sender,
            "sub": sender,
            "aud": recipient,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "jti": message_id,
            **claims,
            "signed_headers": [{"digest": digest}, {"content-type": content_type}],
        },
    )
    return {"Digest": digest, "Agid-JWT-Signature": jws, "Content-Type": content_type}


def modi_claims(headers: Any, body: bytes, *, what: str, resend: str) -> dict[str, Any] | str:
    """The (not yet verified) JWS claims of a ModI-shaped message whose body matches its
    ``Digest``; or the reason, for people, why it is refused before anything else."""
    if header(headers, "Digest") != digest_header(body):
        return (
            f"the body does not match its Digest header: the {what} was altered in transit "
            f"or truncated; {resend}"
        )
    token = header(headers, "Agid-JWT-Signature")
    if not token:
        return "the Agid-JWT-Signature header is missing"
    try:
        _, claims = jws_unverified(token)
    except CryptoFailure as e:
        return f"the Agid-JWT-Signature header is not valid: {e}"
    return claims


#: How far apart two parties' clocks may be when a message's validity window is checked.
CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class ModiMessages:
    """What :func:`modi_verify` says when a check fails, in the caller's words. Each text
    may use ``{sender}``, ``{aud}`` (the audience the JWS names) and ``{me}``."""

    not_signed: str = "the Agid-JWT-Signature is not signed by {sender}'s key"
    wrong_recipient: str = "the message is addressed to {aud}, not {me}"
    digest_not_signed: str = "the JWS does not sign this body's Digest"
    future: str = "the message is dated in the future: check both clocks"
    expired: str = "the message's signature has expired"
    not_sealed: str = "the message is not encrypted for {me} or is damaged"
    manifest_not_signed: str = "the manifest is not signed by {sender}"


@dataclass(frozen=True)
class Verified:
    """A ModI-shaped message whose JWS, recipient, signed Digest, validity window, sealing
    and manifest signature all checked out."""

    claims: dict[str, Any]
    manifest: dict[str, Any]
    payload: bytes


def modi_verify(
    headers: Any,
    body: bytes,
    *,
    sender: str,
    sender_key: str,
    me: str,
    kem_key: KemKey,
    info: bytes,
    context: str,
    now: float,
    messages: ModiMessages,
) -> Verified | str:
    """The checks every sealed message gets once its claimed sender's public key is known
    (after :func:`modi_claims`): the JWS signature, the audience, the Digest among the signed
    headers, ``nbf``/``exp`` (± :data:`CLOCK_SKEW_SECONDS`), HPKE opening for ``me`` and the
    manifest's signature (``context``). The reason, in ``messages``' words, if one fails."""
    say = {"sender": sender, "me": me}
    try:
        claims = jws_verify(header(headers, "Agid-JWT-Signature") or "", sender_key)
    except CryptoFailure:
        return messages.not_signed.format(**say, aud="")
    if claims.get("aud") != me:
        return messages.wrong_recipient.format(**say, aud=claims.get("aud"))
    if {"digest": header(headers, "Digest")} not in claims.get("signed_headers", []):
        return messages.digest_not_signed.format(**say, aud=me)
    if int(claims.get("nbf", 0)) > now + CLOCK_SKEW_SECONDS:
        return messages.future.format(**say, aud=me)
    if int(claims.get("exp", 0)) < now - CLOCK_SKEW_SECONDS:
        return messages.expired.format(**say, aud=me)
    try:
        plaintext = open_sealed(body, kem_key, info)
    except CryptoFailure:
        return messages.not_sealed.format(**say, aud=me)
    head, _, payload = plaintext.partition(b"\n")
    try:
        signed = json.loads(head)
        manifest, signature = signed["manifest"], signed["signature"]
        verify(sender_key, context, canonical(manifest), signature)
    except (ValueError, KeyError, TypeError, CryptoFailure):
        return messages.manifest_not_signed.format(**say, aud=me)
    return Verified(claims, manifest, payload)
