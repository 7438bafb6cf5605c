"""RFC 1982 serial number arithmetic for 32-bit iSCSI sequence numbers.

CmdSN, ExpCmdSN, MaxCmdSN, StatSN, ExpStatSN, DataSN and R2TSN are compared with
RFC 1982 arithmetic (SERIAL_BITS = 32) as RFC 7143 §4.2.2.1 and §4.2.2.2 require.
Two numbers exactly 2**31 apart are incomparable (RFC 1982 §3.2): neither is less
nor greater than the other.
"""

from __future__ import annotations

SERIAL_BITS = 32
MASK = (1 << SERIAL_BITS) - 1
HALF = 1 << (SERIAL_BITS - 1)


def sn_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (RFC 1982 §3.1; ``n`` must be in 0..2**31-1)."""
    if not 0 <= n < HALF:
        raise ValueError(f"serial addition of {n} is outside 0..2**31-1 (RFC 1982 §3.1)")
    return (a + n) & MASK


def sn_inc(a: int) -> int:
    """``a + 1`` modulo 2**32."""
    return (a + 1) & MASK


def sn_lt(a: int, b: int) -> bool:
    """``a < b`` in serial arithmetic (RFC 1982 §3.2)."""
    d = (b - a) & MASK
    return 0 < d < HALF


def sn_gt(a: int, b: int) -> bool:
    """``a > b`` in serial arithmetic (RFC 1982 §3.2)."""
    return sn_lt(b, a)


def sn_le(a: int, b: int) -> bool:
    """``a <= b`` in serial arithmetic."""
    return a == b or sn_lt(a, b)


def sn_ge(a: int, b: int) -> bool:
    """``a >= b`` in serial arithmetic."""
    return a == b or sn_lt(b, a)


def sn_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in -2**31..2**31-1 (``sn_add(b, d) == a`` when d >= 0)."""
    d = (a - b) & MASK
    return d - (1 << SERIAL_BITS) if d >= HALF else d


def in_window(sn: int, low: int, high: int) -> bool:
    """``low <= sn <= high`` in serial arithmetic (an empty window when high < low)."""
    return sn_le(low, sn) and sn_le(sn, high)


def cmd_window_size(exp_cmdsn: int, max_cmdsn: int) -> int:
    """Commands the target accepts now: MaxCmdSN - ExpCmdSN + 1 (RFC 7143 §4.2.2.1).

    0 when MaxCmdSN = ExpCmdSN - 1 (window closed); also 0 for an invalid pair
    (MaxCmdSN < ExpCmdSN - 1), which the caller should have ignored.
    """
    d = sn_diff(max_cmdsn, exp_cmdsn)
    return d + 1 if d >= -1 else 0


def update_cmd_window(
    exp_cmdsn: int, max_cmdsn: int, new_exp: int, new_max: int
) -> tuple[int, int]:
    """Apply ExpCmdSN/MaxCmdSN from a target PDU (RFC 7143 §4.2.2.1).

    A pair with MaxCmdSN < ExpCmdSN - 1 is ignored; otherwise each value only
    moves forward (a stale, smaller value from a reordered PDU is not applied).
    Returns the new (ExpCmdSN, MaxCmdSN).
    """
    if sn_lt(new_max, (new_exp - 1) & MASK):
        return exp_cmdsn, max_cmdsn
    if sn_gt(new_exp, exp_cmdsn):
        exp_cmdsn = new_exp
    if sn_gt(new_max, max_cmdsn):
        max_cmdsn = new_max
    return exp_cmdsn, max_cmdsn


def cmdsn_allowed(cmdsn: int, exp_cmdsn: int, max_cmdsn: int) -> bool:
    """May a non-immediate command with this CmdSN be sent now? (RFC 7143 §4.2.2.1)."""
    return in_window(cmdsn, exp_cmdsn, max_cmdsn)
