"""Counters of an iSCSI session: PDUs, bytes, commands, latency, errors, recoveries.

Everything a session does is counted here, cheaply (dict increments), and exposed as
one nested ``dict[str, dict[str, int]]`` (:meth:`SessionCounters.as_dict`), the same
shape as the network stack's counters, so a caller can print or diff them.

Groups:

* ``pdus_out`` / ``bytes_out`` / ``pdus_in`` / ``bytes_in``: per opcode name
  (RFC 7143 §11.2.1.2), bytes on the wire including headers, padding and digests;
* ``commands``: submitted, completed, failed, retried (UNIT ATTENTION, BUSY...),
  replayed (after recovery), timed_out, aborted, lun_reset;
* ``latency``: histogram of command latency (submission to completion) in
  buckets ``le_<seconds>`` plus ``count`` and ``sum_us``;
* ``errors``: header/data digest errors, protocol errors, rejects by reason;
* ``login``: attempts, successes, redirects, failures by reason;
* ``recovery``: started, succeeded, failed, lun_changed;
* ``nop``: pings sent/answered/timed out, target pings answered;
* ``async``: Async Messages by event (RFC 7143 §11.9.1);
* ``data``: R2Ts taken (``r2t``), and receive batches of placed Data-In payload left
  for a later pass because they completed no PDU (``placed_deferred``).
"""

from __future__ import annotations

from collections import defaultdict

from bootinit.iscsi.pdu import Opcode

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
)
"""Upper bounds (seconds) of the latency histogram buckets; one more bucket is ``inf``."""

_OPNAMES: dict[int, str] = {int(op): op.name.lower() for op in Opcode}


def opcode_name(opcode: int) -> str:
    """Lower-case name of an opcode (``scsi_command``), or ``op_0x..`` when unknown."""
    return _OPNAMES.get(opcode, f"op_0x{opcode:02x}")


def _bucket_name(bound: float) -> str:
    return f"le_{bound:g}"


class SessionCounters:
    """The counters of one session (kept across reconnects)."""

    __slots__ = ("_groups", "_lat_bounds", "_lat_counts", "_lat_names")

    def __init__(self) -> None:
        self._groups: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int))
        self._lat_bounds = LATENCY_BUCKETS
        self._lat_names = [_bucket_name(b) for b in LATENCY_BUCKETS] + ["le_inf"]
        self._lat_counts = [0] * (len(LATENCY_BUCKETS) + 1)

    def inc(self, group: str, name: str, n: int = 1) -> None:
        """Add ``n`` to ``group.name``."""
        self._groups[group][name] += n

    def get(self, group: str, name: str) -> int:
        """Current value of ``group.name`` (0 when never counted)."""
        g = self._groups.get(group)
        return 0 if g is None else g.get(name, 0)

    def pdu_out(self, opcode: int, nbytes: int) -> None:
        """One PDU of ``nbytes`` wire bytes sent."""
        name = _OPNAMES.get(opcode) or opcode_name(opcode)
        g = self._groups
        g["pdus_out"][name] += 1
        g["bytes_out"][name] += nbytes

    def pdu_in(self, opcode: int, nbytes: int) -> None:
        """One PDU of ``nbytes`` wire bytes received."""
        name = _OPNAMES.get(opcode) or opcode_name(opcode)
        g = self._groups
        g["pdus_in"][name] += 1
        g["bytes_in"][name] += nbytes

    def latency(self, seconds: float) -> None:
        """Record one command latency."""
        i = 0
        bounds = self._lat_bounds
        while i < len(bounds) and seconds > bounds[i]:
            i += 1
        self._lat_counts[i] += 1
        g = self._groups["latency"]
        g["count"] += 1
        g["sum_us"] += int(seconds * 1e6)

    def latency_histogram(self) -> dict[str, int]:
        """Bucket name -> count (non-cumulative)."""
        return dict(zip(self._lat_names, self._lat_counts, strict=True))

    def as_dict(self) -> dict[str, dict[str, int]]:
        """A snapshot: group -> name -> value (latency buckets included)."""
        out = {k: dict(v) for k, v in self._groups.items()}
        lat = out.setdefault("latency", {})
        for name, n in zip(self._lat_names, self._lat_counts, strict=True):
            if n:
                lat[name] = n
        return out


__all__ = ["LATENCY_BUCKETS", "SessionCounters", "opcode_name"]
