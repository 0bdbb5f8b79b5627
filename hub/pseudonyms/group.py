"""The ristretto255 group, through libsodium (``rbcl`` bundles it). No arithmetic here.

Pseudonyms v2 are group elements (32-byte encodings); keys and blinding factors are
scalars (32 bytes, little endian, reduced modulo the group order). Everything below is a
one-line call into libsodium; this module only names the operations and turns
libsodium's errors into ``ValueError``.
"""

from __future__ import annotations

import hashlib

import rbcl  # type: ignore[import-untyped]

ELEMENT_BYTES = 32
SCALAR_BYTES = 32

#: Domain-separation tag of the v2 hash-to-group input (``"raccordo/v2|TYPE|namespace|value"``).
H2G_PREFIX = b"raccordo/v2|"


def hash_to_group(message: bytes) -> bytes:
    """H(m): SHA-512 of ``m``, mapped to the group by ``crypto_core_ristretto255_from_hash``
    (the two-Elligator one-way map of RFC 9496 §4.3.4)."""
    return bytes(rbcl.crypto_core_ristretto255_from_hash(hashlib.sha512(message).digest()))


def scalar_from_wide(wide: bytes) -> bytes:
    """A uniform scalar from 64 bytes of key material (reduced modulo the order)."""
    if len(wide) != 64:
        raise ValueError("a scalar is derived from 64 bytes")
    s = bytes(rbcl.crypto_core_ristretto255_scalar_reduce(wide))
    if s == bytes(SCALAR_BYTES):  # probability 2**-252; a zero key would erase pseudonyms
        raise ValueError("derived a zero scalar")
    return s


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar (libsodium's CSPRNG): a blinding factor."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_random())


def scalar_invert(s: bytes) -> bytes:
    return bytes(rbcl.crypto_core_ristretto255_scalar_invert(s))


def scalar_mul(a: bytes, b: bytes) -> bytes:
    return bytes(rbcl.crypto_core_ristretto255_scalar_mul(a, b))


def multiply(scalar: bytes, element: bytes) -> bytes:
    """``scalar · element``. ``ValueError`` if ``element`` is not a valid encoding or is the
    identity (libsodium decodes and checks the element itself, and refuses an identity
    result)."""
    if len(element) != ELEMENT_BYTES or element == _IDENTITY:
        raise ValueError("not a ristretto255 element")
    try:
        return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, element))
    except RuntimeError:  # not a canonical encoding, or the identity element
        raise ValueError("not a ristretto255 element") from None


def is_element(data: bytes) -> bool:
    """A canonical encoding of a group element other than the identity."""
    return (
        len(data) == ELEMENT_BYTES
        and data != _IDENTITY
        and bool(rbcl.crypto_core_ristretto255_is_valid_point(data))
    )


_IDENTITY = bytes(ELEMENT_BYTES)
