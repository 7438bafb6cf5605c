"""SCSI status and sense data (SAM-5 status codes, SPC-4 §4.5).

:func:`decode_sense` reads fixed (0x70/0x71, SPC-4 §4.5.3) and descriptor
(0x72/0x73, SPC-4 §4.5.2) sense data into :class:`Sense` with sense key,
ASC/ASCQ, the INFORMATION field when valid and a human text for common codes.
:class:`ScsiError` is what the block layer raises for a command that did not
end with GOOD.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from netstack.link.base import BytesLike


class SenseFormatError(ValueError):
    """Sense data too short or with an unknown response code."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"sense data {field}=0x{value:02x}: {reason}")


class Status(IntEnum):
    """SCSI status codes (SAM-5 §5.3.1)."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(IntEnum):
    """Sense keys (SPC-4 §4.5.6, table 27)."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    RESERVED_C = 0xC
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


ASC_TEXT: dict[tuple[int, int], str] = {
    (0x00, 0x00): "no additional sense information",
    (0x04, 0x00): "logical unit not ready, cause not reportable",
    (0x04, 0x01): "logical unit is in process of becoming ready",
    (0x04, 0x02): "logical unit not ready, initializing command required",
    (0x04, 0x03): "logical unit not ready, manual intervention required",
    (0x04, 0x0A): "logical unit not accessible, asymmetric access state transition",
    (0x04, 0x0B): "logical unit not accessible, target port in standby state",
    (0x04, 0x0C): "logical unit not accessible, target port in unavailable state",
    (0x08, 0x00): "logical unit communication failure",
    (0x0C, 0x00): "write error",
    (0x10, 0x01): "logical block guard check failed",
    (0x11, 0x00): "unrecovered read error",
    (0x1A, 0x00): "parameter list length error",
    (0x1D, 0x00): "miscompare during verify operation",
    (0x20, 0x00): "invalid command operation code",
    (0x21, 0x00): "logical block address out of range",
    (0x24, 0x00): "invalid field in CDB",
    (0x25, 0x00): "logical unit not supported",
    (0x26, 0x00): "invalid field in parameter list",
    (0x27, 0x00): "write protected",
    (0x28, 0x00): "not ready to ready change, medium may have changed",
    (0x29, 0x00): "power on, reset, or bus device reset occurred",
    (0x29, 0x01): "power on occurred",
    (0x29, 0x02): "SCSI bus reset occurred",
    (0x29, 0x03): "bus device reset function occurred",
    (0x29, 0x04): "device internal reset",
    (0x29, 0x07): "I_T nexus loss occurred",
    (0x2A, 0x01): "mode parameters changed",
    (0x2A, 0x06): "asymmetric access state changed",
    (0x2A, 0x09): "capacity data has changed",
    (0x2F, 0x00): "commands cleared by another initiator",
    (0x3A, 0x00): "medium not present",
    (0x3F, 0x03): "inquiry data has changed",
    (0x3F, 0x0E): "reported luns data has changed",
    (0x44, 0x00): "internal target failure",
    (0x55, 0x03): "insufficient resources",
    (0x5D, 0x00): "failure prediction threshold exceeded",
}


def asc_text(asc: int, ascq: int) -> str:
    """Human text for an ASC/ASCQ pair (SPC-4 Annex D), generic when unknown."""
    text = ASC_TEXT.get((asc, ascq))
    if text is not None:
        return text
    if (asc, 0) in ASC_TEXT and asc not in (0x00,):
        return f"{ASC_TEXT[(asc, 0)]} (qualifier 0x{ascq:02x})"
    return f"ASC 0x{asc:02x} ASCQ 0x{ascq:02x}"


@dataclass(frozen=True, slots=True)
class Sense:
    """Decoded sense data."""

    response_code: int
    key: int
    asc: int
    ascq: int
    information: int | None = None
    """INFORMATION field when VALID (e.g. the failing LBA of a medium error)."""
    deferred: bool = False
    descriptor_format: bool = False
    sense_key_specific: bytes = b""

    @property
    def key_name(self) -> str:
        """Name of the sense key, e.g. ``ILLEGAL REQUEST``."""
        return SenseKey(self.key).name.replace("_", " ")

    @property
    def text(self) -> str:
        """Human description, e.g. ``ILLEGAL REQUEST: logical block address out of range``."""
        return f"{self.key_name}: {asc_text(self.asc, self.ascq)}"

    def is_(self, key: int, asc: int | None = None, ascq: int | None = None) -> bool:
        """Match key and optionally ASC/ASCQ."""
        return (self.key == key and (asc is None or self.asc == asc)
                and (ascq is None or self.ascq == ascq))

    def __str__(self) -> str:
        return f"{self.text} (key 0x{self.key:x} ASC 0x{self.asc:02x} ASCQ 0x{self.ascq:02x})"


def decode_sense(data: BytesLike) -> Sense:
    """Decode fixed or descriptor format sense data (SPC-4 §4.5)."""
    b = bytes(data)
    if len(b) < 2:
        raise SenseFormatError("length", len(b), "sense data shorter than 2 bytes")
    code = b[0] & 0x7F
    if code in (0x70, 0x71):
        if len(b) < 8:
            raise SenseFormatError("length", len(b), "fixed format sense shorter than 8 bytes")
        end = min(len(b), 8 + b[7])
        asc = b[12] if end > 12 else 0
        ascq = b[13] if end > 13 else 0
        info = int.from_bytes(b[3:7], "big") if b[0] & 0x80 else None
        sks = b[15:18] if end >= 18 and b[15] & 0x80 else b""
        return Sense(code, b[2] & 0x0F, asc, ascq, info, code == 0x71, False, sks)
    if code in (0x72, 0x73):
        if len(b) < 8:
            raise SenseFormatError("length", len(b), "descriptor sense shorter than 8 bytes")
        info = None
        sks = b""
        pos, end = 8, min(len(b), 8 + b[7])
        while pos + 2 <= end:
            dtype, dlen = b[pos], b[pos + 1]
            body = b[pos + 2:pos + 2 + dlen]
            if dtype == 0x00 and len(body) >= 10 and body[0] & 0x80:
                info = int.from_bytes(body[2:10], "big")
            elif dtype == 0x02 and len(body) >= 5 and body[2] & 0x80:
                sks = body[2:5]
            pos += 2 + dlen
        return Sense(code, b[1] & 0x0F, b[2], b[3], info, code == 0x73, True, sks)
    raise SenseFormatError("RESPONSE CODE", code, "not 0x70-0x73")


_RETRY_SENSE = ((SenseKey.UNIT_ATTENTION, None, None), (SenseKey.NOT_READY, 0x04, 0x01),
                (SenseKey.ABORTED_COMMAND, None, None))


class ScsiError(Exception):
    """A SCSI command ended with a status other than GOOD (SAM-5 §5.3).

    ``sense`` is decoded sense data for CHECK CONDITION (None when absent or
    undecodable; ``raw_sense`` keeps the bytes).
    """

    def __init__(self, status: int, sense: Sense | None = None, *, opcode: int | None = None,
                 raw_sense: bytes = b"") -> None:
        self.status = status
        self.sense = sense
        self.opcode = opcode
        self.raw_sense = raw_sense
        try:
            name = Status(status).name.replace("_", " ")
        except ValueError:
            name = f"status 0x{status:02x}"
        what = f"SCSI command 0x{opcode:02x}" if opcode is not None else "SCSI command"
        detail = f": {sense}" if sense is not None else ""
        super().__init__(f"{what} failed with {name}{detail}")

    @classmethod
    def from_response(cls, status: int, sense_bytes: bytes, opcode: int | None = None
                      ) -> ScsiError:
        """Build from a SCSI Response's status and sense bytes (bad sense is kept raw)."""
        sense: Sense | None = None
        if sense_bytes:
            try:
                sense = decode_sense(sense_bytes)
            except SenseFormatError:
                sense = None
        return cls(status, sense, opcode=opcode, raw_sense=sense_bytes)

    @property
    def retryable(self) -> bool:
        """True for conditions that usually clear by repeating the command."""
        if self.status in (Status.BUSY, Status.TASK_SET_FULL, Status.TASK_ABORTED):
            return True
        if self.sense is None:
            return False
        return any(self.sense.is_(k, a, q) for k, a, q in _RETRY_SENSE)


__all__ = [
    "ASC_TEXT", "ScsiError", "Sense", "SenseFormatError", "SenseKey", "Status", "asc_text",
    "decode_sense",
]
