"""The Internet checksum (RFC 1071), the transport pseudo-headers of IPv4 (RFC 793 §3.1,
RFC 768) and IPv6 (RFC 8200 §8.1), and incremental update (RFC 1624).

How it is computed fast in pure Python
--------------------------------------
RFC 1071 §2(B): the 16-bit one's complement sum is unchanged by folding, and since
``2**16 == 1 (mod 0xFFFF)`` a whole buffer read as one big-endian integer ``N`` satisfies
``N == sum(words) (mod 0xFFFF)``. So ``int.from_bytes(buf) % 0xFFFF`` is the end-around-carry
sum, except that the one's complement sum of data that is not all zero is never ``0x0000``
but ``0xFFFF`` (RFC 1071 §1: "+0" only for all-zero input).

Measured on CPython 3.11 (x86-64, best of 9): ``int.from_bytes`` alone runs at ~1.6 GB/s
but CPython 3.11's single-digit ``%`` is about twice as slow again, so buffers larger than
:data:`_DIRECT_MAX` are read in 2 KiB chunks whose integers are added first (each chunk
starts at an even offset and ``2**(8*2048) == 1 (mod 0xFFFF)``, so the sum stays congruent)
and only the small sum is reduced: 1500 B in 2.9 us (0.52 GB/s), 9000 B in 11 us
(0.8 GB/s), 64 KiB in 60 us (1.1 GB/s, vs 110 us for one ``from_bytes`` + ``%``). Rejected:
``sum(memoryview.cast('H'))`` (0.13 GB/s), ``struct.unpack`` + ``sum`` (0.11 GB/s),
``array('H')`` + byteswap (0.02 GB/s), shift-and-mask folding of the big integer (no
better than chunking for reading a large buffer; as the reduction before ``%`` it pays,
see below).

Partial sums are plain ints that are congruent to the word sum modulo 0xFFFF and are zero
only when all data is zero; they can be added freely and are reduced once by
:func:`fold`.

Verifying a received segment needs only the sum modulo 0xFFFF, and there the ``%`` of the
big integer is most of the cost (one hardware division per 30-bit digit):
:func:`ones_residue` first folds the integer in halves, ``x = (x >> s) + (x & (2**s - 1))``
with ``s`` a multiple of 16 bits (``2**s == 1 (mod 0xFFFF)``, so the value stays
congruent), down to about 1000 bits, where ``%`` is cheap. Each fold is a few linear
passes over memory, much cheaper per digit than the division. Measured on CPython 3.11
(x86-64, thread CPU time, best of 9): a 1480-byte segment (MTU 1500) in 2.1 us instead of
2.6 us for ``from_bytes`` (1.0 us) + ``%`` (1.6 us); the pseudo-header is then added to
the small residue, not to the big integer (each big-integer ``+`` copies it, ~0.25 us).

Large buffers: numpy
--------------------
From :data:`_VECTOR_MIN` bytes on (a TCP segment of a 9000 or 65520 MTU, or a 64 KiB
super-frame when the TAP offloads nothing), the sum is numpy's: the buffer read in place
(``frombuffer``, no copy) as little-endian 32-bit words and added into a 64-bit
accumulator, a C loop at memory speed. Since ``2**16 == 1 (mod 0xFFFF)`` a 32-bit word is
congruent to the sum of its two 16-bit halves, and a little-endian 16-bit word is the
big-endian one byte-swapped, which is a multiplication by 256 modulo 0xFFFF (RFC 1071
§2(B): the sum is independent of byte order up to that swap; ``256 * 256 == 1``): so the
big-endian word sum is ``256 * S (mod 0xFFFF)`` for the 32-bit sum ``S``, and ``S`` is
zero only when the data is. A 64 KiB buffer takes ~8 us instead of ~70-100 us; below
~4 KiB numpy's fixed cost (~3.5 us) loses to the big integers. Without numpy (it is a
dependency, but the module does not need it) the pure path is used at every size; the
tests run both.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

_np: ModuleType | None
try:  # the vector path (see "Large buffers" above); without numpy the pure one serves
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is a dependency of the package
    _np = None

if TYPE_CHECKING:  # (a runtime import would cycle: netstack.link -> tap -> gso -> here)
    from netstack.link.base import BytesLike

__all__ = [
    "checksum_parts",
    "fold",
    "incremental_update",
    "internet_checksum",
    "ones_residue",
    "ones_sum",
    "pseudo_header_sum",
    "transport_checksum",
    "transport_checksum_parts",
    "verify",
]

#: Buffers up to this size are converted with one ``int.from_bytes``.
_DIRECT_MAX = 2048
#: Chunk size for larger buffers (even, so every chunk starts at a word boundary).
_CHUNK = 2048
#: Buffers of at least this many bytes are summed by numpy when it is there (measured
#: crossover 2-4 KiB); None: never (the pure path; tests set it to compare the two).
_VECTOR_MIN: int | None = 4096 if _np is not None else None
_LE32 = _np.dtype("<u4") if _np is not None else None


def _vector_sum(data: BytesLike) -> int:
    """``S``: the sum of ``data``'s little-endian 32-bit words, the last 1-3 bytes as a
    zero-padded word (see "Large buffers: numpy" above); congruent modulo 0xFFFF to 256
    times the big-endian 16-bit word sum of ``data`` taken from its first byte, and zero
    only for all-zero data."""
    assert _np is not None
    n_bytes = len(data)
    k = n_bytes >> 2
    s = int(_np.frombuffer(data, dtype=_LE32, count=k).sum(dtype=_np.uint64))
    rest = n_bytes - (k << 2)
    if rest:
        s += int.from_bytes(memoryview(data)[k << 2:], "little")
    return s


def ones_sum(data: BytesLike, ends_odd: bool | None = None) -> int:
    """A partial one's complement sum of ``data`` (RFC 1071 §4.1, done by big integers).

    The result is congruent modulo 0xFFFF to the sum of the 16-bit big-endian words of
    ``data`` and is zero only if ``data`` is all zero. ``ends_odd`` tells whether the data
    ends at an odd offset of the whole checksummed stream (default: ``len(data)`` is odd,
    i.e. ``data`` starts the stream): the last byte is then the high byte of a word whose
    low byte is the next part's first byte (or the zero pad of RFC 1071 §4.1).
    """
    n_bytes = len(data)
    if ends_odd is None:
        ends_odd = bool(n_bytes & 1)
    vmin = _VECTOR_MIN
    if vmin is not None and n_bytes >= vmin:
        s = _vector_sum(data)
        r = s % 0xFFFF
        if ends_odd == bool(n_bytes & 1):  # starts at an even offset: 256 * S
            r = r * 256 % 0xFFFF
        # (starting at an odd offset every word is byte-swapped: 256 * 256 * S == S)
        return r if r or not s else 0xFFFF
    fb = int.from_bytes
    if n_bytes <= _DIRECT_MAX:
        n = fb(data, "big")
    else:
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        # The last chunk may be short; it ends where the data ends, so it carries the
        # alignment of the whole buffer, and all the others end at even offsets.
        last = (n_bytes - 1) // _CHUNK * _CHUNK
        n = 0
        for i in range(0, last, _CHUNK):
            n += fb(mv[i : i + _CHUNK], "big")
        # Chunks before the last end at even offsets relative to the last chunk's end iff
        # the last chunk has even length; otherwise they need the same shift.
        if (n_bytes - last) & 1:
            n <<= 8
        n += fb(mv[last:], "big")
    if ends_odd:
        n <<= 8
    return n


#: Fold until the integer is at most this many bits, then take ``%`` (see the module
#: docstring; measured: 1024-2048 bits is the sweet spot, 256 is slower again).
_FOLD_STOP = 1024
#: The size class of :data:`_FOLD_PLANS`: buffers are rounded up to 64 bytes.
_PLAN_STEP = 64


def _fold_plan(bits: int) -> tuple[tuple[int, int], ...]:
    """``(shift, mask)`` pairs that halve an integer of up to ``bits`` bits until it has
    at most :data:`_FOLD_STOP`; each shift a multiple of 16 (``2**16 == 1 (mod 0xFFFF)``)."""
    plan = []
    while bits > _FOLD_STOP:
        sh = (bits // 2 + 15) & ~15
        plan.append((sh, (1 << sh) - 1))
        bits = max(bits - sh, sh) + 1
    return tuple(plan)


#: Plans for the buffers :func:`ones_residue` converts at once, indexed by the length in
#: :data:`_PLAN_STEP` units rounded up (bounded: 33 plans, ~30 KiB of masks in all).
_FOLD_PLANS = [_fold_plan(k * _PLAN_STEP * 8) for k in range(_DIRECT_MAX // _PLAN_STEP + 1)]


def ones_residue(data: BytesLike) -> int:
    """``ones_sum(data) % 0xFFFF``, faster: the one's complement sum of ``data`` (RFC 1071
    §4.1, an odd last byte padded with zero) reduced modulo 0xFFFF, in ``0..0xFFFE``.

    Zero when the sum is ``+0`` or ``-0`` (0xFFFF): enough to verify a checksum whose
    pseudo-header sum is nonzero (TCP, UDP: the protocol number is in it), where the
    received data with its checksum field must sum to ``-0`` (RFC 1071 §1, RFC 9293 §3.1).
    """
    n_bytes = len(data)
    vmin = _VECTOR_MIN
    if vmin is not None and n_bytes >= vmin:
        return _vector_sum(data) % 0xFFFF * 256 % 0xFFFF
    if n_bytes > _DIRECT_MAX:
        x = ones_sum(data)
        while (bits := x.bit_length()) > _FOLD_STOP:
            sh = (bits // 2 + 15) & ~15
            x = (x >> sh) + (x & ((1 << sh) - 1))
        return x % 0xFFFF
    x = int.from_bytes(data, "big")
    for sh, mask in _FOLD_PLANS[(n_bytes + _PLAN_STEP - 1) // _PLAN_STEP]:
        x = (x >> sh) + (x & mask)
    if n_bytes & 1:
        x <<= 8  # the zero pad byte (RFC 1071 §4.1): on the small integer, not the big one
    return x % 0xFFFF


def fold(total: int) -> int:
    """Reduce a partial sum to the 16-bit one's complement sum (RFC 1071 §4.1 "fold").

    Returns 0 only for an all-zero input, otherwise a value in ``1..0xFFFF``.
    """
    r = total % 0xFFFF
    if r == 0 and total:
        return 0xFFFF
    return r


def internet_checksum(data: BytesLike) -> int:
    """The Internet checksum of ``data`` (RFC 1071): the complement of the folded sum.

    Compute it with the checksum field zeroed and store it big-endian; over data that
    contains a correct checksum it returns 0 (see :func:`verify`).
    """
    return 0xFFFF - fold(ones_sum(data))


def verify(data: BytesLike) -> bool:
    """True when ``data`` (which contains its checksum field) sums to 0xFFFF (RFC 1071 §1)."""
    n = ones_sum(data)
    return n != 0 and n % 0xFFFF == 0


def checksum_parts(parts: Iterable[BytesLike], initial: int = 0) -> int:
    """The Internet checksum of the concatenation of ``parts`` without joining them.

    ``initial`` is a partial sum to add (e.g. :func:`pseudo_header_sum`). Parts of odd
    length are handled (RFC 1071 §2(B): byte order independence lets each part be summed
    on its own and shifted by its alignment).
    """
    total = initial
    offset = 0
    for part in parts:
        offset += len(part)
        total += ones_sum(part, bool(offset & 1))
    return 0xFFFF - fold(total)


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Partial sum of the transport pseudo-header, chosen by the address length.

    IPv4 (4-byte addresses, RFC 793 §3.1 "Checksum", RFC 768): src(4) dst(4) zero(1)
    proto(1) length(2). IPv6 (16-byte addresses, RFC 8200 §8.1): src(16) dst(16)
    upper-layer packet length(4) zero(3) next header(1). Each address read as one
    integer is congruent to the sum of its 16-bit words modulo 0xFFFF (``2**16 == 1``),
    and so is the 32-bit IPv6 length to the sum of its two words.
    """
    if len(src) == 16:
        return (int.from_bytes(src, "big") + int.from_bytes(dst, "big")
                + (length >> 16) + (length & 0xFFFF) + proto)
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length


def transport_checksum(src: bytes, dst: bytes, proto: int, segment: BytesLike) -> int:
    """TCP/UDP/ICMPv6 checksum of ``segment`` (header + data) under the pseudo-header of
    the addresses' family (IPv4 for 4-byte, IPv6 for 16-byte addresses; see
    :func:`pseudo_header_sum`).

    With the checksum field zeroed this is the value to store; over a received segment
    it is 0 when the checksum is correct (RFC 793 §3.1, RFC 8200 §8.1, RFC 1071).
    """
    n = len(segment)
    return 0xFFFF - fold(pseudo_header_sum(src, dst, proto, n)
                         + ones_sum(segment, bool(n & 1)))


def transport_checksum_parts(
    src: bytes, dst: bytes, proto: int, parts: Iterable[BytesLike], length: int
) -> int:
    """Like :func:`transport_checksum` over the concatenation of ``parts`` (e.g. a header
    and a payload memoryview), ``length`` being their total length."""
    return checksum_parts(parts, pseudo_header_sum(src, dst, proto, length))


def incremental_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """Update a stored checksum when one 16-bit word changes (RFC 1624 §3, eqn. 3).

    ``HC' = ~(~HC + ~m + m')`` in one's complement arithmetic; unlike RFC 1141's form it
    gives the same result as recomputing the checksum from scratch (RFC 1624 §3-4).
    """
    s = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
