"""Typed errors of the iSCSI layer (RFC 7143).

Every malformed input raises a subclass of :class:`IscsiError` that names the
offending field and value.  Secrets (CHAP secrets, and as a precaution every
``CHAP_*`` value) never appear in messages: use :func:`redact` when a key value
is quoted.

Which errors end the connection:

* :class:`HeaderDigestError`, :class:`PduFormatError`, :class:`DataSegmentTooLong`,
  :class:`PlacementError`: the byte stream can no longer be trusted (RFC 7143 §7.8,
  §13.1: a header digest failure means PDU boundaries are lost) -> drop the connection.
* :class:`DataDigestError`: the header was good, the PDU boundary is known; the
  session may recover (RFC 7143 §7.8.1: discard, Reject/SNACK, or retry the task).
  The parser *reports* it as a value instead of raising, with the decoded PDU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bootinit.iscsi.pdu import Pdu

_SECRET_KEYS = ("CHAP_", "SRP_", "KRB_", "SPKM_")


def redact(key: str, value: object) -> str:
    """Printable form of a key's value; authentication keys are never shown."""
    if key.startswith(_SECRET_KEYS):
        return "<redacted>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class IscsiError(Exception):
    """Base class of every error raised by ``bootinit.iscsi``."""


class PduFormatError(IscsiError):
    """A PDU field holds a value the protocol does not allow (RFC 7143 §11).

    ``field`` names the field, ``value`` is its (integer or short) value.
    Fatal for the connection when raised by the receive parser.
    """

    fatal: bool = True

    def __init__(self, field: str, value: object, reason: str = "invalid value") -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"PDU field {field}={value!r}: {reason}")


class DataSegmentTooLong(PduFormatError):
    """DataSegmentLength exceeds our declared MaxRecvDataSegmentLength (RFC 7143 §13.12)."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(
            "DataSegmentLength", length, f"exceeds MaxRecvDataSegmentLength {limit}"
        )


class PlacementError(PduFormatError):
    """A Data-In payload would fall outside the buffer registered for its ITT.

    RFC 7143 §11.7.5/§11.7.6: BufferOffset + DataSegmentLength must lie inside the
    expected data transfer; a target violating that is a protocol error.
    """

    def __init__(self, itt: int, offset: int, length: int, size: int) -> None:
        self.itt = itt
        self.offset = offset
        self.length = length
        self.size = size
        super().__init__(
            "BufferOffset",
            offset,
            f"Data-In for ITT 0x{itt:08x} of {length} bytes does not fit the "
            f"registered buffer of {size} bytes",
        )


class DigestError(IscsiError):
    """A CRC32C digest did not match (RFC 7143 §13.1).

    ``fatal`` tells whether the connection must be dropped (header digest) or the
    PDU can be recovered from (data digest, RFC 7143 §7.8.1).
    """

    fatal: bool = True
    kind: str = "header"

    def __init__(self, expected: int, received: int, pdu: Pdu | None = None) -> None:
        self.expected = expected
        self.received = received
        self.pdu = pdu
        super().__init__(
            f"{self.kind} digest mismatch: computed 0x{expected:08x}, received 0x{received:08x}"
        )


class HeaderDigestError(DigestError):
    """HeaderDigest mismatch: PDU boundaries are lost, drop the connection (§7.8)."""

    fatal = True
    kind = "header"


class DataDigestError(DigestError):
    """DataDigest mismatch: the PDU (``pdu``) is known, the session recovers (§7.8.1).

    For a Data-In whose payload was placed, the destination bytes are suspect and
    must be re-read (SNACK when ErrorRecoveryLevel >= 1, otherwise retry the task).
    """

    fatal = False
    kind = "data"


class KeyFormatError(IscsiError):
    """A text key=value item is malformed (RFC 7143 §6.1)."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.reason = reason
        shown = redact(key, value)
        super().__init__(f"text key {key!r}={shown}: {reason}")


class NegotiationError(IscsiError):
    """The peer's answer breaks a negotiation rule (RFC 7143 §6.2, §13)."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"negotiation of {key}={redact(key, value)}: {reason}")


class ProtocolError(IscsiError):
    """A well-formed PDU arrived where the protocol does not allow it."""


class AuthenticationError(IscsiError):
    """CHAP authentication failed on our side (RFC 7143 §12.1.3, RFC 1994).

    Raised for a target that answers our challenge wrongly, reflects our challenge,
    picks an algorithm we did not offer, or tries to skip required authentication.
    Never carries secrets or responses.
    """


class LoginError(IscsiError):
    """The target ended the login with a non-success status (RFC 7143 §11.13.5).

    ``status_class``/``status_detail`` are the raw bytes; ``retryable`` is True for
    statuses where trying again later may succeed (target busy, out of resources).
    """

    def __init__(
        self, status_class: int, status_detail: int, description: str, retryable: bool
    ) -> None:
        self.status_class = status_class
        self.status_detail = status_detail
        self.description = description
        self.retryable = retryable
        super().__init__(f"{description} (status 0x{status_class:02x}{status_detail:02x})")

    @property
    def status(self) -> int:
        """Status-Class and Status-Detail as one 16-bit number (0x0201 etc.)."""
        return (self.status_class << 8) | self.status_detail


class LoginInitiatorError(LoginError):
    """Status-Class 2: the target blames the initiator (bad name, auth, ...)."""


class LoginTargetError(LoginError):
    """Status-Class 3: the target cannot serve the login now."""
