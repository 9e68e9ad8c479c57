"""Ed25519 signature *verification* (RFC 8032, section 5.1.7) in pure Python.

The device only ever checks signatures made on the host, so it needs no
signing code and no third-party crypto package. Integers stand in for field
elements; points use extended homogeneous coordinates (X:Y:Z:T) with x = X/Z,
y = Y/Z, x*y = T/Z. One verification costs ~10 ms of CPython on a desktop.

Strict about encodings: a public key or R that is not a canonical point
encoding, or an S that is not below the group order, makes ``verify`` return
False. Cofactorless check [S]B == R + [k]A, like OpenSSL and libsodium.
"""
from __future__ import annotations

import hashlib

__all__ = ["verify", "PUBLIC_KEY_SIZE", "SIGNATURE_SIZE"]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_P = 2**255 - 19                                     # the field prime
_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
_D = (-121665 * pow(121666, _P - 2, _P)) % _P        # curve constant d
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)                 # a square root of -1


def _add(p1, p2):
    """Point addition; the formula is complete, so it doubles too (RFC 8032 5.1.4)."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(scalar: int, point):
    """[scalar]point by double-and-add (verification handles public data only)."""
    acc = (0, 1, 1, 0)  # the neutral element
    while scalar:
        if scalar & 1:
            acc = _add(acc, point)
        point = _add(point, point)
        scalar >>= 1
    return acc


def _equal(p1, p2) -> bool:
    x1, y1, z1, _ = p1
    x2, y2, z2, _ = p2
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


def _recover_x(y: int, sign: int):
    """x from y and the sign bit, or None when (y, sign) is not on the curve."""
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    # candidate root of u/v: u v^3 (u v^7)^((p-5)/8)
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx == u:
        pass
    elif vxx == (-u) % _P:
        x = x * _SQRT_M1 % _P
    else:
        return None
    if x == 0 and sign:
        return None  # -0 is not a canonical encoding
    if x & 1 != sign:
        x = _P - x
    return x


def _decode_point(data: bytes):
    if len(data) != 32:
        return None
    n = int.from_bytes(data, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


_BY = 4 * pow(5, _P - 2, _P) % _P
_B = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % _P)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by
    ``public_key`` (32 raw bytes). Never raises for malformed input."""
    if not isinstance(public_key, (bytes, bytearray)) or not isinstance(signature, (bytes, bytearray)):
        return False
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    a = _decode_point(bytes(public_key))
    if a is None:
        return False
    r_bytes = bytes(signature[:32])
    r = _decode_point(r_bytes)
    if r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + bytes(public_key) + bytes(message)).digest(), "little") % _L
    return _equal(_mul(s, _B), _add(r, _mul(k, a)))
