"""TCP sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982 serial numbers).

Sequence numbers are compared by the sign of their 32-bit difference, so comparisons
stay right across the wrap from 0xFFFFFFFF to 0.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


def add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & MASK


def diff(a: int, b: int) -> int:
    """The signed distance ``a - b`` in (-2**31, 2**31]."""
    return ((a - b + HALF) & MASK) - HALF


def lt(a: int, b: int) -> bool:
    """``a < b`` in sequence space."""
    return diff(a, b) < 0


def le(a: int, b: int) -> bool:
    """``a <= b`` in sequence space."""
    return diff(a, b) <= 0


def gt(a: int, b: int) -> bool:
    """``a > b`` in sequence space."""
    return diff(a, b) > 0


def ge(a: int, b: int) -> bool:
    """``a >= b`` in sequence space."""
    return diff(a, b) >= 0


def between(lo: int, x: int, hi: int) -> bool:
    """``lo <= x < hi`` in sequence space (an empty range when lo == hi)."""
    return ((x - lo) & MASK) < ((hi - lo) & MASK)
