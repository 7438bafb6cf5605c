"""Session recovery at ErrorRecoveryLevel 0 (RFC 7143 §7.1.5, §7.12, §6.3.5).

At ERL 0 the only recovery is session recovery: when the connection fails (TCP reset
or close, NOP-Out timeout, header digest error, a protocol violation, an Async
Message announcing a drop), every task that did not complete is kept, the initiator
waits ``DefaultTime2Wait`` (§13.15), logs in again with the same ISID and TSIH 0
(session reinstatement, §6.3.5) and re-issues the tasks with new ITTs and CmdSNs.

This module holds the pure parts the session uses:

* :class:`RecoveryPolicy`: Time2Wait, exponential backoff between attempts and the
  overall deadline after which every task fails;
* :class:`Backoff`: the attempt schedule of one recovery;
* :class:`LunIdentity`: what identifies a logical unit (VPD 0x80 serial number,
  VPD 0x83 logical-unit designator, SPC-4 §7.8.16/§7.8.6) so that a target that came
  back with a *different* LUN behind the same name is refused instead of written to.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootinit.scsi.inquiry import (
    InquiryFormatError,
    decode_device_identification,
    decode_unit_serial,
    lu_identifier,
)
from netstack.link.base import BytesLike


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """How hard to try to get a session back (all times in seconds).

    ``time2wait`` None uses the negotiated DefaultTime2Wait (capped by
    ``max_time2wait``); ``deadline`` bounds one recovery from the failure to the
    successful login; ``initial_deadline`` bounds the first login (transport
    errors and "target busy" are retried until then; authentication errors are not).
    """

    time2wait: float | None = None
    max_time2wait: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    deadline: float = 120.0
    initial_deadline: float = 30.0
    max_replays: int = 5
    """A task replayed more often than this fails (a command that kills the target)."""

    def __post_init__(self) -> None:
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff must be positive and backoff_max >= backoff_initial")
        if self.deadline <= 0 or self.initial_deadline <= 0:
            raise ValueError("recovery deadlines must be positive")

    def wait_before_login(self, negotiated: int | None) -> float:
        """Time2Wait before the first attempt of a recovery (RFC 7143 §13.15)."""
        if self.time2wait is not None:
            return self.time2wait
        if negotiated is None:
            return 0.0
        return float(min(negotiated, self.max_time2wait))


class Backoff:
    """Attempt schedule: first attempt at ``start + wait``, then doubling delays."""

    __slots__ = ("attempts", "deadline", "policy", "started")

    def __init__(self, policy: RecoveryPolicy, started: float, deadline: float) -> None:
        self.policy = policy
        self.started = started
        self.deadline = deadline
        self.attempts = 0

    def next_attempt(self, now: float) -> float | None:
        """When to try again after a failed attempt; None when past the deadline."""
        self.attempts += 1
        p = self.policy
        delay = min(p.backoff_initial * float(2 ** (self.attempts - 1)), p.backoff_max)
        when: float = now + delay
        if when >= self.deadline:
            return None
        return when


@dataclass(frozen=True, slots=True)
class LunIdentity:
    """The identity of a logical unit: VPD 0x80 serial and/or 0x83 LU designator.

    ``designator`` is ``(designator type, value)`` of the best logical-unit
    designator (NAA > EUI-64 > UUID > SCSI name > T10 vendor id, SPC-4 §7.8.6).
    """

    serial: str | None = None
    designator: tuple[int, bytes] | None = None

    @property
    def known(self) -> bool:
        """True when there is anything to compare."""
        return self.serial is not None or self.designator is not None

    def describe(self) -> str:
        """Printable identity."""
        parts = []
        if self.designator is not None:
            parts.append(f"designator {self.designator[0]}:{self.designator[1].hex()}")
        if self.serial is not None:
            parts.append(f"serial {self.serial!r}")
        return ", ".join(parts) or "no identity"

    def mismatch(self, other: LunIdentity) -> str | None:
        """Why ``other`` (seen now) is not this LUN, or None when it is."""
        if self.designator is not None and other.designator != self.designator:
            return f"expected {self.describe()}, found {other.describe()}"
        if self.serial is not None and other.serial != self.serial:
            return f"expected {self.describe()}, found {other.describe()}"
        return None


def identity_from_vpd(vpd80: BytesLike | None, vpd83: BytesLike | None) -> LunIdentity:
    """Build a :class:`LunIdentity` from raw VPD pages (either may be None/undecodable)."""
    serial: str | None = None
    designator: tuple[int, bytes] | None = None
    if vpd80 is not None:
        try:
            serial = decode_unit_serial(vpd80)
        except InquiryFormatError:
            serial = None
    if vpd83 is not None:
        try:
            d = lu_identifier(decode_device_identification(vpd83))
        except InquiryFormatError:
            d = None
        if d is not None:
            designator = (d.type, d.value)
    return LunIdentity(serial, designator)


__all__ = ["Backoff", "LunIdentity", "RecoveryPolicy", "identity_from_vpd"]
