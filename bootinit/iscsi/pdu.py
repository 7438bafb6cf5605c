"""iSCSI PDUs: encode and decode every opcode of RFC 7143 §11.

One slotted dataclass per PDU type.  Every 48-byte Basic Header Segment (BHS,
RFC 7143 §11.2.1) has the same skeleton, read and written with a single
``struct`` call::

    byte 0      .|I| Opcode          byte 4     TotalAHSLength (4-byte words)
    bytes 1-3   opcode specific      bytes 5-7  DataSegmentLength
    bytes 8-15  LUN or opcode specific
    bytes 16-19 Initiator Task Tag   bytes 20-47  seven opcode-specific words

Each class maps its fields onto that skeleton (``_pack``/``_unpack``).

Encoding (:func:`encode`) returns a list of buffers: the header (BHS, AHS,
header digest) as one ``bytes``, then the caller's data segment *by reference*
(never copied), then padding and data digest.  :func:`encode_bytes` joins them.

Decoding (:func:`decode`) takes the BHS, the AHS and the data segment as separate
buffers (the receive parser in :mod:`bootinit.iscsi.parser` already split them).
Fields the RFC marks reserved are ignored on receipt and sent as zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from bootinit.iscsi.digest import digest_of
from bootinit.iscsi.errors import PduFormatError
from netstack.link.base import BytesLike

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF
"""The reserved task tag 0xffffffff (RFC 7143 §11.2.1.8, §11.18.4)."""
MAX_DSL = 0xFFFFFF

_BHS = struct.Struct(">BBBBIQIIIIIIII")
_Hdr = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int]
# Index of each skeleton slot in an unpacked header.
_B0, _B1, _B2, _B3, _LEN, _Q8, _ITT, _W20, _W24, _W28, _W32, _W36, _W40, _W44 = range(14)


class Opcode(IntEnum):
    """PDU opcodes (RFC 7143 §11.2.1.2)."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


class TaskAttr(IntEnum):
    """SCSI Command ATTR field (RFC 7143 §11.3.1, SAM task attributes)."""

    UNTAGGED = 0
    SIMPLE = 1
    ORDERED = 2
    HEAD_OF_QUEUE = 3
    ACA = 4


class TmfFunction(IntEnum):
    """Task Management Function codes (RFC 7143 §11.5.1)."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(IntEnum):
    """Task Management Function Response codes (RFC 7143 §11.6.1)."""

    COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    REASSIGNMENT_NOT_SUPPORTED = 4
    NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    REJECTED = 255


class LogoutReason(IntEnum):
    """Logout Request reason codes (RFC 7143 §11.14.1)."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_FOR_RECOVERY = 2


class LogoutResponseCode(IntEnum):
    """Logout Response codes (RFC 7143 §11.15.1)."""

    SUCCESS = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class SnackType(IntEnum):
    """SNACK types (RFC 7143 §11.16.1)."""

    DATA_R2T = 0
    STATUS = 1
    DATA_ACK = 2
    R_DATA = 3


class RejectReason(IntEnum):
    """Reject reason codes (RFC 7143 §11.17.1)."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OP_REJECT = 0x0A
    NEGOTIATION_RESET = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


class AsyncEvent(IntEnum):
    """Asynchronous Message AsyncEvent codes (RFC 7143 §11.9.1)."""

    SCSI_EVENT = 0
    LOGOUT_REQUEST = 1
    CONNECTION_DROP = 2
    SESSION_DROP = 3
    NEGOTIATION_REQUEST = 4
    TASK_TERMINATION = 5
    VENDOR = 255


class Stage(IntEnum):
    """Login stages for CSG/NSG (RFC 7143 §11.12.3)."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class ScsiResponseCode(IntEnum):
    """SCSI Response 'Response' field (RFC 7143 §11.4.3)."""

    COMPLETED = 0x00
    TARGET_FAILURE = 0x01


def _nbytes(data: BytesLike) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def _pad4(n: int) -> int:
    return (-n) & 3


def _sense_of(d: BytesLike) -> bytes:
    """SenseLength-prefixed sense bytes of a data segment (§11.4.7.2, §11.9.4)."""
    if _nbytes(d) < 2:
        return b""
    n = int.from_bytes(d[0:2], "big")
    if n + 2 > _nbytes(d):
        raise PduFormatError("SenseLength", n, f"exceeds data segment of {_nbytes(d)}")
    return bytes(d[2:2 + n])


@dataclass(slots=True, kw_only=True)
class Pdu:
    """Common part of every PDU.

    ``data`` is the data segment without padding.  ``immediate`` is the I bit
    (RFC 7143 §11.2.1.1), meaningful for initiator PDUs only.
    """

    OPCODE: ClassVar[int] = -1
    immediate: bool = False
    data: BytesLike = b""

    @property
    def opcode(self) -> int:
        """The 6-bit opcode of this PDU."""
        return self.OPCODE

    @property
    def data_length(self) -> int:
        """DataSegmentLength of the encoded PDU."""
        return _nbytes(self.data)

    def _pack(self) -> tuple[int, ...]:
        """(byte1, byte2, byte3, q8, itt, w20, w24, w28, w32, w36, w40, w44)."""
        raise NotImplementedError

    def _ahs(self) -> bytes:
        """Encoded (padded) Additional Header Segments; none by default."""
        return b""

    def _post_pack(self, buf: bytearray) -> None:
        """Write fields that do not fit the skeleton (the CDB)."""

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Initiator PDUs
# ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class NopOut(Pdu):
    """NOP-Out (RFC 7143 §11.18): a ping, or the answer to a NOP-In with a TTT.

    For a ping ``itt`` is a fresh tag and ``ttt`` 0xffffffff; answering a target
    NOP-In, ``itt`` is 0xffffffff, ``ttt`` the NOP-In's TTT and ``immediate`` True.
    """

    OPCODE: ClassVar[int] = Opcode.NOP_OUT
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    exp_statsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80, 0, 0, self.lun, self.itt, self.ttt, self.cmdsn, self.exp_statsn,
                0, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(immediate=bool(h[_B0] & 0x40), data=data, lun=h[_Q8], itt=h[_ITT],
                   ttt=h[_W20], cmdsn=h[_W24], exp_statsn=h[_W28])


AHS_EXTENDED_CDB = 1
AHS_BIDI_READ_LENGTH = 2


@dataclass(slots=True, kw_only=True)
class ScsiCommand(Pdu):
    """SCSI Command (RFC 7143 §11.3).

    ``cdb`` longer than 16 bytes is carried in an Extended CDB AHS (§11.3.5,
    §11.2.2.3); ``bidi_read_length`` adds the Bidirectional Expected Read-Data
    Length AHS (§11.2.2.4).  ``data`` is immediate data (§11.3.4 / §13.11).
    """

    OPCODE: ClassVar[int] = Opcode.SCSI_COMMAND
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = TaskAttr.SIMPLE
    lun: int = 0
    itt: int = 0
    expected_length: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0
    cdb: bytes = b""
    bidi_read_length: int | None = None

    def _pack(self) -> tuple[int, ...]:
        if not 1 <= len(self.cdb) <= 16 + 1020:
            raise PduFormatError("CDB", len(self.cdb), "length must be 1..1036 bytes")
        b1 = (self.final << 7) | (self.read << 6) | (self.write << 5) | (self.attr & 7)
        return (b1, 0, 0, self.lun, self.itt, self.expected_length, self.cmdsn,
                self.exp_statsn, 0, 0, 0, 0)

    def _ahs(self) -> bytes:
        parts: list[bytes] = []
        if len(self.cdb) > 16:
            ext = self.cdb[16:]
            # AHSLength counts the reserved byte plus the CDB bytes past 16 (§11.2.2.3).
            parts.append(struct.pack(">HBB", len(ext) + 1, AHS_EXTENDED_CDB, 0) + ext
                         + bytes(_pad4(len(ext))))
        if self.bidi_read_length is not None:
            # AHSLength 5: reserved byte + 4-byte length; 8 bytes in all, no padding.
            parts.append(struct.pack(">HBBI", 5, AHS_BIDI_READ_LENGTH, 0,
                                     self.bidi_read_length))
        return b"".join(parts)

    def _post_pack(self, buf: bytearray) -> None:
        cdb16 = self.cdb[:16]
        buf[32:32 + len(cdb16)] = cdb16

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        cdb = bytes(bhs[32:48])
        bidi: int | None = None
        for ahs_type, body in iter_ahs(ahs):
            if ahs_type == AHS_EXTENDED_CDB:
                cdb += bytes(body[1:])
            elif ahs_type == AHS_BIDI_READ_LENGTH:
                if len(body) != 5:
                    raise PduFormatError("AHSLength", len(body), "bidi read length AHS must be 5")
                bidi = int.from_bytes(body[1:5], "big")
        b1 = h[_B1]
        return cls(immediate=bool(h[_B0] & 0x40), data=data, final=bool(b1 & 0x80),
                   read=bool(b1 & 0x40), write=bool(b1 & 0x20), attr=b1 & 7, lun=h[_Q8],
                   itt=h[_ITT], expected_length=h[_W20], cmdsn=h[_W24], exp_statsn=h[_W28],
                   cdb=cdb, bidi_read_length=bidi)


def iter_ahs(ahs: memoryview | bytes) -> list[tuple[int, memoryview]]:
    """Split Additional Header Segments into (AHSType, AHS-specific + data) (§11.2.2)."""
    out: list[tuple[int, memoryview]] = []
    mv = memoryview(ahs)
    pos = 0
    while pos < len(mv):
        if len(mv) - pos < 4:
            raise PduFormatError("TotalAHSLength", len(mv), "truncated AHS")
        length = int.from_bytes(mv[pos:pos + 2], "big")
        ahs_type = mv[pos + 2]
        if length == 0 or pos + 3 + length > len(mv):
            raise PduFormatError("AHSLength", length, "AHS does not fit TotalAHSLength")
        out.append((ahs_type & 0x3F, mv[pos + 3:pos + 3 + length]))
        pos += 3 + length + _pad4(3 + length)
    return out


@dataclass(slots=True, kw_only=True)
class TaskMgmtRequest(Pdu):
    """Task Management Function Request (RFC 7143 §11.5)."""

    OPCODE: ClassVar[int] = Opcode.TASK_MGMT_REQUEST
    function: int = TmfFunction.ABORT_TASK
    lun: int = 0
    itt: int = 0
    referenced_task_tag: int = RESERVED_TAG
    cmdsn: int = 0
    exp_statsn: int = 0
    ref_cmdsn: int = 0
    exp_datasn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80 | (self.function & 0x7F), 0, 0, self.lun, self.itt,
                self.referenced_task_tag, self.cmdsn, self.exp_statsn, self.ref_cmdsn,
                self.exp_datasn, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(immediate=bool(h[_B0] & 0x40), data=data, function=h[_B1] & 0x7F,
                   lun=h[_Q8], itt=h[_ITT], referenced_task_tag=h[_W20], cmdsn=h[_W24],
                   exp_statsn=h[_W28], ref_cmdsn=h[_W32], exp_datasn=h[_W36])


@dataclass(slots=True, kw_only=True)
class LoginRequest(Pdu):
    """Login Request (RFC 7143 §11.12); always immediate (I=1)."""

    OPCODE: ClassVar[int] = Opcode.LOGIN_REQUEST
    immediate: bool = True
    transit: bool = False
    cont: bool = False
    csg: int = Stage.SECURITY
    nsg: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        if len(self.isid) != 6:
            raise PduFormatError("ISID", self.isid.hex(), "must be 6 bytes")
        b1 = (self.transit << 7) | (self.cont << 6) | ((self.csg & 3) << 2) | (self.nsg & 3)
        q8 = (int.from_bytes(self.isid, "big") << 16) | (self.tsih & 0xFFFF)
        return (b1, self.version_max, self.version_min, q8, self.itt, (self.cid & 0xFFFF) << 16,
                self.cmdsn, self.exp_statsn, 0, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        b1 = h[_B1]
        return cls(immediate=bool(h[_B0] & 0x40), data=data, transit=bool(b1 & 0x80),
                   cont=bool(b1 & 0x40), csg=(b1 >> 2) & 3, nsg=b1 & 3, version_max=h[_B2],
                   version_min=h[_B3], isid=bytes(bhs[8:14]), tsih=h[_Q8] & 0xFFFF,
                   itt=h[_ITT], cid=h[_W20] >> 16, cmdsn=h[_W24], exp_statsn=h[_W28])


@dataclass(slots=True, kw_only=True)
class TextRequest(Pdu):
    """Text Request (RFC 7143 §11.10); ``final`` is F, ``cont`` is C."""

    OPCODE: ClassVar[int] = Opcode.TEXT_REQUEST
    final: bool = True
    cont: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    exp_statsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return ((self.final << 7) | (self.cont << 6), 0, 0, self.lun, self.itt, self.ttt,
                self.cmdsn, self.exp_statsn, 0, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(immediate=bool(h[_B0] & 0x40), data=data, final=bool(h[_B1] & 0x80),
                   cont=bool(h[_B1] & 0x40), lun=h[_Q8], itt=h[_ITT], ttt=h[_W20],
                   cmdsn=h[_W24], exp_statsn=h[_W28])


@dataclass(slots=True, kw_only=True)
class DataOut(Pdu):
    """SCSI Data-Out (RFC 7143 §11.7); ``data`` is typically a memoryview slice."""

    OPCODE: ClassVar[int] = Opcode.DATA_OUT
    final: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    exp_statsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (self.final << 7, 0, 0, self.lun, self.itt, self.ttt, 0, self.exp_statsn, 0,
                self.datasn, self.buffer_offset, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, final=bool(h[_B1] & 0x80), lun=h[_Q8], itt=h[_ITT],
                   ttt=h[_W20], exp_statsn=h[_W28], datasn=h[_W36], buffer_offset=h[_W40])


@dataclass(slots=True, kw_only=True)
class LogoutRequest(Pdu):
    """Logout Request (RFC 7143 §11.14)."""

    OPCODE: ClassVar[int] = Opcode.LOGOUT_REQUEST
    reason: int = LogoutReason.CLOSE_SESSION
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80 | (self.reason & 0x7F), 0, 0, 0, self.itt, (self.cid & 0xFFFF) << 16,
                self.cmdsn, self.exp_statsn, 0, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(immediate=bool(h[_B0] & 0x40), data=data, reason=h[_B1] & 0x7F,
                   itt=h[_ITT], cid=h[_W20] >> 16, cmdsn=h[_W24], exp_statsn=h[_W28])


@dataclass(slots=True, kw_only=True)
class SnackRequest(Pdu):
    """SNACK Request (RFC 7143 §11.16); ``ttt_or_snack_tag`` per the SNACK type."""

    OPCODE: ClassVar[int] = Opcode.SNACK_REQUEST
    type: int = SnackType.DATA_R2T
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt_or_snack_tag: int = RESERVED_TAG
    exp_statsn: int = 0
    begrun: int = 0
    runlength: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80 | (self.type & 0x0F), 0, 0, self.lun, self.itt, self.ttt_or_snack_tag, 0,
                self.exp_statsn, 0, 0, self.begrun, self.runlength)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, type=h[_B1] & 0x0F, lun=h[_Q8], itt=h[_ITT],
                   ttt_or_snack_tag=h[_W20], exp_statsn=h[_W28], begrun=h[_W40],
                   runlength=h[_W44])


# ---------------------------------------------------------------------------
# Target PDUs
# ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class NopIn(Pdu):
    """NOP-In (RFC 7143 §11.19): a ping answer (ITT set) or a target ping (TTT set)."""

    OPCODE: ClassVar[int] = Opcode.NOP_IN
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80, 0, 0, self.lun, self.itt, self.ttt, self.statsn, self.exp_cmdsn,
                self.max_cmdsn, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, lun=h[_Q8], itt=h[_ITT], ttt=h[_W20], statsn=h[_W24],
                   exp_cmdsn=h[_W28], max_cmdsn=h[_W32])


@dataclass(slots=True, kw_only=True)
class ScsiResponse(Pdu):
    """SCSI Response (RFC 7143 §11.4).

    ``data`` is the raw data segment (SenseLength + sense data + response data,
    §11.4.7); :attr:`sense` extracts the sense bytes.
    """

    OPCODE: ClassVar[int] = Opcode.SCSI_RESPONSE
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    overflow: bool = False
    underflow: bool = False
    response: int = ScsiResponseCode.COMPLETED
    status: int = 0
    itt: int = 0
    snack_tag: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    exp_datasn: int = 0
    bidi_residual: int = 0
    residual: int = 0

    @property
    def sense(self) -> bytes:
        """The sense data of the data segment, empty when none (§11.4.7.2)."""
        return _sense_of(self.data)

    def _pack(self) -> tuple[int, ...]:
        b1 = (0x80 | (self.bidi_overflow << 4) | (self.bidi_underflow << 3)
              | (self.overflow << 2) | (self.underflow << 1))
        return (b1, self.response, self.status, 0, self.itt, self.snack_tag, self.statsn,
                self.exp_cmdsn, self.max_cmdsn, self.exp_datasn, self.bidi_residual,
                self.residual)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        b1 = h[_B1]
        if (b1 & 0x06) == 0x06:
            raise PduFormatError("SCSI Response flags", b1, "O and U both set")
        if (b1 & 0x18) == 0x18:
            raise PduFormatError("SCSI Response flags", b1, "o and u both set")
        return cls(data=data, bidi_overflow=bool(b1 & 0x10), bidi_underflow=bool(b1 & 0x08),
                   overflow=bool(b1 & 0x04), underflow=bool(b1 & 0x02), response=h[_B2],
                   status=h[_B3], itt=h[_ITT], snack_tag=h[_W20], statsn=h[_W24],
                   exp_cmdsn=h[_W28], max_cmdsn=h[_W32], exp_datasn=h[_W36],
                   bidi_residual=h[_W40], residual=h[_W44])


@dataclass(slots=True, kw_only=True)
class TaskMgmtResponse(Pdu):
    """Task Management Function Response (RFC 7143 §11.6)."""

    OPCODE: ClassVar[int] = Opcode.TASK_MGMT_RESPONSE
    response: int = TmfResponse.COMPLETE
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80, self.response, 0, 0, self.itt, 0, self.statsn, self.exp_cmdsn,
                self.max_cmdsn, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, response=h[_B2], itt=h[_ITT], statsn=h[_W24],
                   exp_cmdsn=h[_W28], max_cmdsn=h[_W32])


@dataclass(slots=True, kw_only=True)
class LoginResponse(Pdu):
    """Login Response (RFC 7143 §11.13)."""

    OPCODE: ClassVar[int] = Opcode.LOGIN_RESPONSE
    transit: bool = False
    cont: bool = False
    csg: int = Stage.SECURITY
    nsg: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    status_class: int = 0
    status_detail: int = 0

    def _pack(self) -> tuple[int, ...]:
        b1 = (self.transit << 7) | (self.cont << 6) | ((self.csg & 3) << 2) | (self.nsg & 3)
        q8 = (int.from_bytes(self.isid, "big") << 16) | (self.tsih & 0xFFFF)
        return (b1, self.version_max, self.version_active, q8, self.itt, 0, self.statsn,
                self.exp_cmdsn, self.max_cmdsn,
                (self.status_class << 24) | (self.status_detail << 16), 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        b1 = h[_B1]
        if b1 & 0xC0 == 0xC0:
            raise PduFormatError("Login Response flags", b1, "T and C both set (§11.13.2)")
        return cls(data=data, transit=bool(b1 & 0x80), cont=bool(b1 & 0x40),
                   csg=(b1 >> 2) & 3, nsg=b1 & 3, version_max=h[_B2], version_active=h[_B3],
                   isid=bytes(bhs[8:14]), tsih=h[_Q8] & 0xFFFF, itt=h[_ITT], statsn=h[_W24],
                   exp_cmdsn=h[_W28], max_cmdsn=h[_W32], status_class=h[_W36] >> 24,
                   status_detail=(h[_W36] >> 16) & 0xFF)


@dataclass(slots=True, kw_only=True)
class TextResponse(Pdu):
    """Text Response (RFC 7143 §11.11); ``final`` is F, ``cont`` is C."""

    OPCODE: ClassVar[int] = Opcode.TEXT_RESPONSE
    final: bool = True
    cont: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0

    def _pack(self) -> tuple[int, ...]:
        return ((self.final << 7) | (self.cont << 6), 0, 0, self.lun, self.itt, self.ttt,
                self.statsn, self.exp_cmdsn, self.max_cmdsn, 0, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        b1 = h[_B1]
        if b1 & 0xC0 == 0xC0:
            raise PduFormatError("Text Response flags", b1, "F and C both set (§11.11.1)")
        return cls(data=data, final=bool(b1 & 0x80), cont=bool(b1 & 0x40), lun=h[_Q8],
                   itt=h[_ITT], ttt=h[_W20], statsn=h[_W24], exp_cmdsn=h[_W28],
                   max_cmdsn=h[_W32])


@dataclass(slots=True, kw_only=True)
class DataIn(Pdu):
    """SCSI Data-In (RFC 7143 §11.7).

    When the receive parser placed the payload into a registered buffer,
    ``placed`` is True, ``data`` is empty and ``segment_length`` tells how many
    bytes went to ``buffer_offset``.  Otherwise ``data`` holds the payload and
    ``segment_length == len(data)``.  ``status`` is valid only when
    ``status_present`` (S bit, §11.7.4), which implies ``final``.
    """

    OPCODE: ClassVar[int] = Opcode.DATA_IN
    final: bool = False
    ack: bool = False
    overflow: bool = False
    underflow: bool = False
    status_present: bool = False
    status: int = 0
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    residual: int = 0
    segment_length: int = -1
    placed: bool = False

    def __post_init__(self) -> None:
        if self.segment_length < 0:
            self.segment_length = _nbytes(self.data)

    def _pack(self) -> tuple[int, ...]:
        b1 = ((self.final << 7) | (self.ack << 6) | (self.overflow << 2)
              | (self.underflow << 1) | int(self.status_present))
        return (b1, 0, self.status if self.status_present else 0, self.lun, self.itt,
                self.ttt, self.statsn, self.exp_cmdsn, self.max_cmdsn, self.datasn,
                self.buffer_offset, self.residual)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        b1 = h[_B1]
        if b1 & 0x01 and not b1 & 0x80:
            raise PduFormatError("Data-In flags", b1, "S set without F (§11.7.1)")
        if (b1 & 0x06) == 0x06:
            raise PduFormatError("Data-In flags", b1, "O and U both set")
        return cls(data=data, final=bool(b1 & 0x80), ack=bool(b1 & 0x40),
                   overflow=bool(b1 & 0x04), underflow=bool(b1 & 0x02),
                   status_present=bool(b1 & 0x01), status=h[_B3], lun=h[_Q8], itt=h[_ITT],
                   ttt=h[_W20], statsn=h[_W24], exp_cmdsn=h[_W28], max_cmdsn=h[_W32],
                   datasn=h[_W36], buffer_offset=h[_W40], residual=h[_W44])


@dataclass(slots=True, kw_only=True)
class LogoutResponse(Pdu):
    """Logout Response (RFC 7143 §11.15)."""

    OPCODE: ClassVar[int] = Opcode.LOGOUT_RESPONSE
    response: int = LogoutResponseCode.SUCCESS
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80, self.response, 0, 0, self.itt, 0, self.statsn, self.exp_cmdsn,
                self.max_cmdsn, 0, ((self.time2wait & 0xFFFF) << 16)
                | (self.time2retain & 0xFFFF), 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, response=h[_B2], itt=h[_ITT], statsn=h[_W24],
                   exp_cmdsn=h[_W28], max_cmdsn=h[_W32], time2wait=h[_W40] >> 16,
                   time2retain=h[_W40] & 0xFFFF)


@dataclass(slots=True, kw_only=True)
class R2T(Pdu):
    """Ready To Transfer (RFC 7143 §11.8)."""

    OPCODE: ClassVar[int] = Opcode.R2T
    lun: int = 0
    itt: int = 0
    ttt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    r2tsn: int = 0
    buffer_offset: int = 0
    desired_length: int = 0

    def _pack(self) -> tuple[int, ...]:
        return (0x80, 0, 0, self.lun, self.itt, self.ttt, self.statsn, self.exp_cmdsn,
                self.max_cmdsn, self.r2tsn, self.buffer_offset, self.desired_length)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        if _nbytes(data):
            raise PduFormatError("DataSegmentLength", _nbytes(data), "R2T carries no data")
        if h[_W20] == RESERVED_TAG:
            raise PduFormatError("TargetTransferTag", h[_W20], "reserved tag in R2T (§11.8.4)")
        return cls(lun=h[_Q8], itt=h[_ITT], ttt=h[_W20], statsn=h[_W24], exp_cmdsn=h[_W28],
                   max_cmdsn=h[_W32], r2tsn=h[_W36], buffer_offset=h[_W40],
                   desired_length=h[_W44])


@dataclass(slots=True, kw_only=True)
class AsyncMessage(Pdu):
    """Asynchronous Message (RFC 7143 §11.9); ``data`` is SenseLength+sense+event data."""

    OPCODE: ClassVar[int] = Opcode.ASYNC_MESSAGE
    lun: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    event: int = AsyncEvent.SCSI_EVENT
    vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0

    @property
    def sense(self) -> bytes:
        """Sense data of a SCSI async event (AsyncEvent 0, §11.9.4); may be empty."""
        return _sense_of(self.data)

    def _pack(self) -> tuple[int, ...]:
        return (0x80, 0, 0, self.lun, RESERVED_TAG, 0, self.statsn, self.exp_cmdsn,
                self.max_cmdsn, (self.event << 24) | (self.vcode << 16) | self.parameter1,
                (self.parameter2 << 16) | self.parameter3, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, lun=h[_Q8], statsn=h[_W24], exp_cmdsn=h[_W28],
                   max_cmdsn=h[_W32], event=h[_W36] >> 24, vcode=(h[_W36] >> 16) & 0xFF,
                   parameter1=h[_W36] & 0xFFFF, parameter2=h[_W40] >> 16,
                   parameter3=h[_W40] & 0xFFFF)


@dataclass(slots=True, kw_only=True)
class Reject(Pdu):
    """Reject (RFC 7143 §11.17); ``data`` is the rejected PDU's header."""

    OPCODE: ClassVar[int] = Opcode.REJECT
    reason: int = RejectReason.PROTOCOL_ERROR
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    datasn_r2tsn: int = 0

    @property
    def rejected_itt(self) -> int | None:
        """ITT of the rejected PDU when its BHS is present (§11.17.5)."""
        if _nbytes(self.data) < BHS_LEN:
            return None
        return int.from_bytes(self.data[16:20], "big")

    def _pack(self) -> tuple[int, ...]:
        return (0x80, self.reason, 0, 0, RESERVED_TAG, 0, self.statsn, self.exp_cmdsn,
                self.max_cmdsn, self.datasn_r2tsn, 0, 0)

    @classmethod
    def _unpack(cls, h: _Hdr, bhs: memoryview, ahs: memoryview, data: BytesLike) -> Pdu:
        return cls(data=data, reason=h[_B2], statsn=h[_W24], exp_cmdsn=h[_W28],
                   max_cmdsn=h[_W32], datasn_r2tsn=h[_W36])


PDU_CLASSES: dict[int, type[Pdu]] = {
    c.OPCODE: c
    for c in (NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut,
              LogoutRequest, SnackRequest, NopIn, ScsiResponse, TaskMgmtResponse,
              LoginResponse, TextResponse, DataIn, LogoutResponse, R2T, AsyncMessage, Reject)
}
TARGET_OPCODES = frozenset(op for op in PDU_CLASSES if op & 0x20)
INITIATOR_OPCODES = frozenset(op for op in PDU_CLASSES if not op & 0x20)


# ---------------------------------------------------------------------------
# Encoding / decoding
# ---------------------------------------------------------------------------


def encode(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False
           ) -> list[BytesLike]:
    """Encode ``pdu`` as wire buffers (RFC 7143 §11.1).

    Returns ``[header]`` or ``[header, data]`` or ``[header, data, tail]`` where
    ``header`` is BHS + AHS (+ header digest), ``data`` is ``pdu.data`` itself
    (not copied: keep it unchanged until sent) and ``tail`` is the 0-3 padding
    bytes (+ data digest over data and padding).
    """
    f = pdu._pack()
    ahs = pdu._ahs()
    dsl = _nbytes(pdu.data)
    if dsl > MAX_DSL:
        raise PduFormatError("DataSegmentLength", dsl, "exceeds 2**24-1")
    if len(ahs) > 255 * 4:
        raise PduFormatError("TotalAHSLength", len(ahs) // 4, "exceeds 255 words")
    hlen = BHS_LEN + len(ahs)
    header = bytearray(hlen + (4 if header_digest else 0))
    _BHS.pack_into(header, 0, (pdu.OPCODE & 0x3F) | (pdu.immediate << 6), f[0], f[1], f[2],
                   (len(ahs) // 4) << 24 | dsl, *f[3:])
    pdu._post_pack(header)
    if ahs:
        header[BHS_LEN:hlen] = ahs
    if header_digest:
        header[hlen:] = digest_of(memoryview(header)[:hlen])
    out: list[BytesLike] = [bytes(header)]
    if dsl:
        out.append(pdu.data)
        pad = bytes(_pad4(dsl))
        tail = pad + digest_of(pdu.data, pad) if data_digest else pad
        if tail:
            out.append(tail)
    return out


def encode_bytes(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """Encode ``pdu`` into one ``bytes`` (copies the data segment once)."""
    return b"".join(encode(pdu, header_digest=header_digest, data_digest=data_digest))


def peek_lengths(bhs: BytesLike) -> tuple[int, int, int]:
    """(opcode, AHS bytes, DataSegmentLength) from a 48-byte BHS (§11.2.1)."""
    return bhs[0] & 0x3F, bhs[4] * 4, int.from_bytes(bhs[5:8], "big")


def decode(bhs: BytesLike, ahs: BytesLike = b"", data: BytesLike = b"") -> Pdu:
    """Decode one PDU from its BHS, AHS and (unpadded) data segment.

    Raises :class:`PduFormatError` for an unknown opcode or an invalid field.
    The returned PDU's ``data`` is ``data`` itself (no copy).
    """
    mv = memoryview(bhs)
    if len(mv) != BHS_LEN:
        raise PduFormatError("BHS", len(mv), "must be 48 bytes")
    h: _Hdr = _BHS.unpack(mv)
    op = h[_B0] & 0x3F
    cls = PDU_CLASSES.get(op)
    if cls is None:
        raise PduFormatError("Opcode", f"0x{op:02x}", "unknown opcode (§11.2.1.2)")
    return cls._unpack(h, mv, memoryview(ahs), data)


def decode_bytes(buf: BytesLike, *, header_digest: bool = False, data_digest: bool = False
                 ) -> Pdu:
    """Decode one whole PDU (with padding and digests) from ``buf``; for tests and tools.

    Digests are checked; errors are the same as the receive parser's.
    """
    from bootinit.iscsi.parser import PduParser

    parser = PduParser(max_recv_data_segment_length=MAX_DSL, header_digest=header_digest,
                       data_digest=data_digest)
    items = parser.feed(buf)
    if len(items) != 1 or parser.pending():
        raise PduFormatError("PDU length", _nbytes(buf), "buffer is not exactly one PDU")
    item = items[0]
    if not isinstance(item, Pdu):
        raise item
    return item


__all__ = [
    "BHS_LEN", "PDU_CLASSES", "R2T", "RESERVED_TAG", "AsyncEvent", "AsyncMessage", "DataIn",
    "DataOut", "LoginRequest", "LoginResponse", "LogoutReason", "LogoutRequest",
    "LogoutResponse", "LogoutResponseCode", "NopIn", "NopOut", "Opcode", "Pdu", "Reject",
    "RejectReason", "ScsiCommand", "ScsiResponse", "ScsiResponseCode", "SnackRequest",
    "SnackType", "Stage", "TaskAttr", "TaskMgmtRequest", "TaskMgmtResponse", "TextRequest",
    "TextResponse", "TmfFunction", "TmfResponse", "decode", "decode_bytes", "encode",
    "encode_bytes", "iter_ahs", "peek_lengths",
]
