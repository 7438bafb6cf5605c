"""An in-process scripted iSCSI target and a fake-clock driver for session unit tests.

:class:`FakeTarget` is a small, pure target: it parses the initiator's byte stream,
logs it in (AuthMethod=None, operational keys answered by RFC 7143 rules from its
own settings), emulates a disk per LUN (INQUIRY + VPD 0x00/0x80/0x83, READ CAPACITY,
READ/WRITE(10/16), SYNCHRONIZE CACHE, TEST UNIT READY, REQUEST SENSE, REPORT LUNS),
solicits write data with R2Ts (MaxBurstLength, MaxOutstandingR2T) and sends read data
as Data-In (in order or reversed, status with the last PDU).  Knobs let a test break
it in specific ways; ``violations`` collects every rule the *initiator* broke.

:class:`Harness` connects a :class:`~bootinit.iscsi.session.Session` to the target
with a fake clock: bytes are moved both ways (optionally in small chunks) and time
jumps to the next deadline when nothing else happens.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from bootinit.iscsi.keys import decode_text, encode_text
from bootinit.iscsi.parser import PduParser
from bootinit.iscsi.pdu import (
    INITIATOR_OPCODES,
    R2T,
    RESERVED_TAG,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    ScsiCommand,
    ScsiResponse,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    TmfFunction,
    TmfResponse,
    encode_bytes,
)
from bootinit.iscsi.session import Session, SessionConfig
from bootinit.iscsi.text import Portal
from bootinit.scsi.lun import decode_lun, encode_lun
from netstack.tcp.placement import Placed

TARGET_NAME = "iqn.2026-11.org.bootinit:fake"
INITIATOR_NAME = "iqn.2026-11.org.bootinit:test"


def fixed_sense(key: int, asc: int, ascq: int) -> bytes:
    """18-byte fixed format sense data (SPC-4 §4.5.3)."""
    b = bytearray(18)
    b[0] = 0x70
    b[2] = key
    b[7] = 10
    b[12] = asc
    b[13] = ascq
    return bytes(b)


@dataclass
class FakeLun:
    """A disk: backing bytes, block size, identity."""

    blocks: int = 2048
    block_size: int = 512
    serial: str = "FAKE0001"
    naa: bytes = bytes.fromhex("6001405fa3e1b2c4")
    data: bytearray = field(default_factory=bytearray)
    sparse: dict[int, bytes] | None = None  # block -> bytes, for huge LUNs
    #: VPD 0xB0 (Block Limits) MAXIMUM TRANSFER LENGTH in blocks; None: page not listed.
    max_transfer_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.sparse is None and not self.data:
            self.data = bytearray(self.blocks * self.block_size)

    def read(self, lba: int, n: int) -> bytes:
        bs = self.block_size
        if self.sparse is None:
            return bytes(self.data[lba * bs:(lba + n) * bs])
        return b"".join(self.sparse.get(b, bytes(bs)) for b in range(lba, lba + n))

    def write(self, lba: int, payload: bytes) -> None:
        bs = self.block_size
        if self.sparse is None:
            self.data[lba * bs:lba * bs + len(payload)] = payload
            return
        for i in range(len(payload) // bs):
            self.sparse[lba + i] = payload[i * bs:(i + 1) * bs]


@dataclass
class _WriteTask:
    cmd: ScsiCommand
    buf: bytearray
    received: int = 0
    next_r2t_offset: int = 0
    r2tsn: int = 0
    outstanding: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # ttt->(off,len,got)
    unsol_datasn: int = 0
    unsol_expected: int = 0


@dataclass
class TargetSettings:
    """Negotiation values of the target (answers follow RFC 7143 §6.2 rules)."""

    max_recv_dsl: int = 8192
    max_burst: int = 262144
    first_burst: int = 65536
    initial_r2t: bool = False
    immediate_data: bool = True
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    default_time2wait: int = 0
    header_digest: bool = False
    data_digest: bool = False


def _yn(b: bool) -> str:
    return "Yes" if b else "No"


class FakeTarget:
    """See module doc.  ``luns`` maps LUN number -> :class:`FakeLun`."""

    def __init__(self, luns: dict[int, FakeLun] | None = None,
                 settings: TargetSettings | None = None, *, window: int = 32) -> None:
        self.luns = luns if luns is not None else {0: FakeLun()}
        self.s = settings or TargetSettings()
        self.window = window
        self.tsih_next = 0x10
        self.connections = 0
        self.violations: list[str] = []
        self.max_outstanding_seen = 0
        self.received: list[Pdu] = []
        self.commands: list[ScsiCommand] = []
        self.ua: set[int] = set()
        # knobs
        self.hold = False  # keep commands unanswered (in ``held``)
        self.held: list[ScsiCommand] = []
        self.answer_pings = True
        self.max_cmdsn_override: int | None = None
        self.datain_reverse = False
        self.status_in_response = False  # status as a SCSI Response, not with the Data-In
        self.datain_hook: Callable[[ScsiCommand, list[DataIn]], list[DataIn]] | None = None
        self.command_hook: Callable[[ScsiCommand], bool] | None = None
        self.tmf_response: int | None = None
        self.logout_time2wait = 0
        self.accepting = True
        self.corrupt_data_digest = 0  # corrupt the data digest of that many Data-Ins
        self.sense_hook: Callable[[ScsiCommand], bytes | None] | None = None
        self._reset_connection()

    # ------------------------------------------------------------ connection

    def _reset_connection(self) -> None:
        self.parser = PduParser(max_recv_data_segment_length=(1 << 24) - 1,
                                accept_opcodes=INITIATOR_OPCODES, pause_after_login=False)
        self.out = bytearray()
        self.logged_in = False
        self.statsn = 0x100
        self.exp_cmdsn = 0
        self.init_mrdsl = 8192
        self.hd = self.dd = False
        self.pending_digests: tuple[bool, bool] | None = None
        self.writes: dict[int, _WriteTask] = {}
        self.held = []
        self.closed = False
        self.dropped = False  # the target closed the connection
        self.ttt = 0x1000
        self.params: dict[str, str] = {}
        self._datasn: dict[int, int] = {}

    def accepting_connections(self, now: float, refuse_until: float) -> bool:
        return now >= refuse_until

    def new_connection(self) -> None:
        self.connections += 1
        self._reset_connection()

    def restart(self, *, ua: bool = True) -> None:
        """The target process restarts: connection gone, LUN data kept, UA pending."""
        self._reset_connection()
        self.dropped = True
        if ua:
            self.ua = set(self.luns)

    def take_output(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def receive(self, data: bytes) -> None:
        if self.closed or self.dropped:
            return
        for item in self.parser.feed(data):
            if not isinstance(item, Pdu):
                self.violations.append(f"data digest error from initiator: {item}")
                continue
            self.received.append(item)
            self._dispatch(item)

    def _send(self, pdu: Pdu) -> None:
        raw = encode_bytes(pdu, header_digest=self.hd, data_digest=self.dd)
        if self.corrupt_data_digest and self.dd and isinstance(pdu, DataIn) and pdu.data:
            self.corrupt_data_digest -= 1
            raw = raw[:-1] + bytes((raw[-1] ^ 0xFF,))
        self.out += raw

    def _stat(self) -> int:
        sn = self.statsn
        self.statsn += 1
        return sn

    @property
    def max_cmdsn(self) -> int:
        if self.max_cmdsn_override is not None:
            return self.max_cmdsn_override
        return (self.exp_cmdsn + self.window - 1) & 0xFFFFFFFF

    def send(self, pdu: Pdu, *, advance: bool = True) -> None:
        """Send a PDU, filling StatSN/ExpCmdSN/MaxCmdSN (for tests injecting PDUs)."""
        if hasattr(pdu, "statsn"):
            setattr(pdu, "statsn", self._stat() if advance else self.statsn)  # noqa: B010
        if hasattr(pdu, "exp_cmdsn"):
            setattr(pdu, "exp_cmdsn", self.exp_cmdsn)  # noqa: B010
            setattr(pdu, "max_cmdsn", self.max_cmdsn)  # noqa: B010
        self._send(pdu)

    # -------------------------------------------------------------- dispatch

    def _dispatch(self, pdu: Pdu) -> None:
        if isinstance(pdu, LoginRequest):
            self._login(pdu)
            return
        if not self.logged_in:
            self.violations.append(f"{type(pdu).__name__} before login completed")
            return
        if isinstance(pdu, ScsiCommand | NopOut | TaskMgmtRequest | TextRequest | LogoutRequest):
            self._check_cmdsn(pdu)
        if isinstance(pdu, ScsiCommand):
            self.commands.append(pdu)
            self._command(pdu)
        elif isinstance(pdu, DataOut):
            self._data_out(pdu)
        elif isinstance(pdu, NopOut):
            if pdu.ttt == RESERVED_TAG and self.answer_pings:
                self.send(NopIn(itt=pdu.itt, ttt=RESERVED_TAG, data=pdu.data))
        elif isinstance(pdu, TaskMgmtRequest):
            self._tmf(pdu)
        elif isinstance(pdu, LogoutRequest):
            self.send(LogoutResponse(itt=pdu.itt, time2wait=self.logout_time2wait))
            self.closed = True
        elif isinstance(pdu, TextRequest):
            data = encode_text([("TargetName", TARGET_NAME),
                                ("TargetAddress", "10.0.0.1:3260,1")])
            self.send(TextResponse(itt=pdu.itt, final=True, data=data))

    def _check_cmdsn(self, pdu: Pdu) -> None:
        sn: int = pdu.cmdsn  # type: ignore[attr-defined]
        if pdu.immediate:
            if sn != self.exp_cmdsn:
                self.violations.append(f"immediate PDU CmdSN {sn} != ExpCmdSN {self.exp_cmdsn}")
            return
        if sn != self.exp_cmdsn:
            self.violations.append(f"CmdSN {sn}, expected {self.exp_cmdsn}")
        max_sn = self.max_cmdsn
        if ((sn - self.exp_cmdsn) & 0xFFFFFFFF) > ((max_sn - self.exp_cmdsn) & 0xFFFFFFFF) \
                or ((max_sn + 1 - self.exp_cmdsn) & 0xFFFFFFFF) == 0:
            self.violations.append(f"CmdSN {sn} outside window {self.exp_cmdsn}..{max_sn}")
        self.exp_cmdsn = (sn + 1) & 0xFFFFFFFF

    # ----------------------------------------------------------------- login

    def _login(self, req: LoginRequest) -> None:
        keys = dict(decode_text(req.data)) if req.data else {}
        answers: list[tuple[str, str]] = []
        s = self.s
        if "AuthMethod" in keys:
            answers.append(("AuthMethod", "None"))
        for k, v in keys.items():
            if k in ("InitiatorName", "SessionType", "TargetName", "AuthMethod",
                     "InitiatorAlias"):
                continue
            if k == "HeaderDigest":
                want = "CRC32C" if s.header_digest else "None"
                answers.append((k, want if want in v.split(",") else v.split(",")[0]))
            elif k == "DataDigest":
                want = "CRC32C" if s.data_digest else "None"
                answers.append((k, want if want in v.split(",") else v.split(",")[0]))
            elif k == "MaxRecvDataSegmentLength":
                self.init_mrdsl = int(v)
                answers.append((k, str(s.max_recv_dsl)))
            elif k == "MaxBurstLength":
                answers.append((k, str(min(int(v), s.max_burst))))
            elif k == "FirstBurstLength":
                answers.append((k, str(min(int(v), s.first_burst))))
            elif k == "InitialR2T":
                answers.append((k, _yn(v == "Yes" or s.initial_r2t)))
            elif k == "ImmediateData":
                answers.append((k, _yn(v == "Yes" and s.immediate_data)))
            elif k == "DataPDUInOrder":
                answers.append((k, _yn(v == "Yes" or s.data_pdu_in_order)))
            elif k == "DataSequenceInOrder":
                answers.append((k, _yn(v == "Yes" or s.data_sequence_in_order)))
            elif k == "MaxOutstandingR2T":
                answers.append((k, str(min(int(v), s.max_outstanding_r2t))))
            elif k == "DefaultTime2Wait":
                answers.append((k, str(max(int(v), s.default_time2wait))))
            elif k in ("DefaultTime2Retain", "MaxConnections", "ErrorRecoveryLevel"):
                answers.append((k, str(min(int(v), 0 if k != "MaxConnections" else 1))))
            else:
                answers.append((k, v))
        self.params.update(dict(answers))
        final = req.transit and req.nsg == 3
        if not self.accepting:
            self._send(LoginResponse(itt=req.itt, isid=req.isid, status_class=3,
                                     status_detail=1, statsn=self._stat()))
            return
        tsih = 0
        if final:
            self.tsih_next += 1
            tsih = self.tsih_next
            self.exp_cmdsn = req.cmdsn
        resp = LoginResponse(
            transit=req.transit, csg=req.csg, nsg=req.nsg if req.transit else 0, isid=req.isid,
            tsih=tsih, itt=req.itt, statsn=self._stat(), exp_cmdsn=req.cmdsn,
            max_cmdsn=(req.cmdsn + self.window - 1) & 0xFFFFFFFF, data=encode_text(answers))
        self._send(resp)
        if final:
            self.logged_in = True
            self.hd = self.params.get("HeaderDigest") == "CRC32C"
            self.dd = self.params.get("DataDigest") == "CRC32C"
            self.parser.set_digests(self.hd, self.dd)

    # -------------------------------------------------------------- commands

    def _command(self, cmd: ScsiCommand) -> None:
        if self.command_hook is not None and self.command_hook(cmd):
            return
        if self.hold:
            self.held.append(cmd)
            return
        if cmd.write:
            self._start_write(cmd)
        else:
            self.execute(cmd)

    def release(self) -> None:
        """Answer the held commands."""
        held, self.held = self.held, []
        self.hold = False
        for cmd in held:
            if cmd.write:
                self._start_write(cmd)
            else:
                self.execute(cmd)

    def _start_write(self, cmd: ScsiCommand) -> None:
        p = self._p
        w = _WriteTask(cmd, bytearray(cmd.expected_length))
        imm = cmd.data_length
        w.buf[:imm] = bytes(cmd.data)
        w.received = imm
        if imm > min(p("FirstBurstLength"), self.s.max_recv_dsl):
            self.violations.append(f"immediate data {imm} too long")
        first = min(cmd.expected_length, p("FirstBurstLength"))
        if self.params.get("InitialR2T") == "No":
            w.unsol_expected = first - imm
        if not cmd.final and w.unsol_expected == 0:
            self.violations.append("F=0 without unsolicited data allowed")
        if cmd.final and w.unsol_expected > 0:
            self.violations.append("F=1 but unsolicited data was expected")
        w.next_r2t_offset = imm + w.unsol_expected
        self.writes[cmd.itt] = w
        self._issue_r2ts(w)

    def _p(self, key: str) -> int:
        return int(self.params.get(key, "0"))

    def _issue_r2ts(self, w: _WriteTask) -> None:
        if w.unsol_expected > 0:
            return  # wait for the unsolicited data first (DataSequenceInOrder)
        exp = w.cmd.expected_length
        while (w.next_r2t_offset < exp
               and len(w.outstanding) < self._p("MaxOutstandingR2T")):
            off = w.next_r2t_offset
            n = min(self._p("MaxBurstLength"), exp - off)
            self.ttt += 1
            w.outstanding[self.ttt] = (off, n, 0)
            self.send(R2T(lun=w.cmd.lun, itt=w.cmd.itt, ttt=self.ttt, r2tsn=w.r2tsn,
                          buffer_offset=off, desired_length=n), advance=False)
            w.r2tsn += 1
            w.next_r2t_offset = off + n
            self.max_outstanding_seen = max(self.max_outstanding_seen, len(w.outstanding))
        if w.received == exp and not w.outstanding:
            del self.writes[w.cmd.itt]
            self.execute(w.cmd, bytes(w.buf))

    def _data_out(self, d: DataOut) -> None:
        w = self.writes.get(d.itt)
        if w is None:
            self.violations.append(f"Data-Out for unknown ITT {d.itt:#x}")
            return
        n = d.data_length
        if n > self.s.max_recv_dsl:
            self.violations.append(f"Data-Out of {n} > MaxRecvDataSegmentLength")
        if d.ttt == RESERVED_TAG:
            if d.datasn != w.unsol_datasn:
                self.violations.append(f"unsolicited DataSN {d.datasn} != {w.unsol_datasn}")
            w.unsol_datasn += 1
            w.unsol_expected -= n
            if w.unsol_expected < 0:
                self.violations.append("too much unsolicited data")
            if d.final != (w.unsol_expected == 0):
                self.violations.append("F bit wrong on unsolicited Data-Out")
        else:
            r = w.outstanding.get(d.ttt)
            if r is None:
                self.violations.append(f"Data-Out with unknown TTT {d.ttt:#x}")
                return
            off, length, got = r
            if d.buffer_offset != off + got:
                self.violations.append(f"Data-Out offset {d.buffer_offset} != {off + got}")
            exp_sn = self._datasn.get(d.ttt, 0)
            if d.datasn != exp_sn:
                self.violations.append(f"DataSN {d.datasn} != {exp_sn} in R2T sequence")
            self._datasn[d.ttt] = exp_sn + 1
            got += n
            if got > length:
                self.violations.append("more data than the R2T asked for")
            if d.final != (got == length):
                self.violations.append("F bit wrong on solicited Data-Out")
            if got >= length:
                del w.outstanding[d.ttt]
            else:
                w.outstanding[d.ttt] = (off, length, got)
        w.buf[d.buffer_offset:d.buffer_offset + n] = bytes(d.data)
        w.received += n
        self._issue_r2ts(w)

    def _tmf(self, req: TaskMgmtRequest) -> None:
        resp: int = TmfResponse.COMPLETE
        if req.function == TmfFunction.ABORT_TASK:
            found = [c for c in self.held if c.itt == req.referenced_task_tag]
            if found:
                self.held.remove(found[0])
            else:
                resp = TmfResponse.TASK_DOES_NOT_EXIST
        elif req.function == TmfFunction.LOGICAL_UNIT_RESET:
            self.held = [c for c in self.held if c.lun != req.lun]
        if self.tmf_response is not None:
            resp = self.tmf_response
        self.send(TaskMgmtResponse(itt=req.itt, response=resp))

    # ------------------------------------------------------------ SCSI disk

    def _status(self, cmd: ScsiCommand, status: int, sense: bytes = b"",
                residual: int = 0, under: bool = False, over: bool = False) -> None:
        data = struct.pack(">H", len(sense)) + sense if sense else b""
        self.send(ScsiResponse(itt=cmd.itt, status=status, data=data, residual=residual,
                               underflow=under, overflow=over))

    def execute(self, cmd: ScsiCommand, wdata: bytes = b"") -> None:
        """Run a CDB against the LUN and answer."""
        lun_no = decode_lun(cmd.lun)
        lun = self.luns.get(lun_no)
        op = cmd.cdb[0]
        if self.sense_hook is not None:
            sense = self.sense_hook(cmd)
            if sense is not None:
                self._status(cmd, 0x02, sense)
                return
        if lun is None and op not in (0x12, 0xA0):
            self._status(cmd, 0x02, fixed_sense(0x05, 0x25, 0x00))
            return
        if lun_no in self.ua and op not in (0x12, 0xA0, 0x03):
            self.ua.discard(lun_no)
            self._status(cmd, 0x02, fixed_sense(0x06, 0x29, 0x00))
            return
        data = b""
        if op == 0x12:
            data = self._inquiry(cmd, lun)
        elif op == 0x00:
            pass
        elif op == 0x03:
            data = fixed_sense(0, 0, 0)
        elif op == 0x25:
            assert lun is not None
            last = min(lun.blocks - 1, 0xFFFFFFFF)
            data = struct.pack(">II", last, lun.block_size)
        elif op == 0x9E:
            assert lun is not None
            data = struct.pack(">QI", lun.blocks - 1, lun.block_size) + bytes(20)
        elif op in (0x28, 0x88, 0x2A, 0x8A):
            assert lun is not None
            if op in (0x28, 0x2A):
                lba, n = struct.unpack(">xxIxHx", cmd.cdb[:10])
            else:
                lba, n = struct.unpack(">xxQIxx", cmd.cdb[:16])
            if lba + n > lun.blocks:
                self._status(cmd, 0x02, fixed_sense(0x05, 0x21, 0x00))
                return
            if op in (0x2A, 0x8A):
                lun.write(lba, wdata)
                self._status(cmd, 0)
                return
            data = lun.read(lba, n)
        elif op in (0x35, 0x91):
            pass
        elif op == 0xA0:
            body = b"".join(encode_lun(k) for k in sorted(self.luns))
            data = struct.pack(">II", len(body), 0) + body
        else:
            self._status(cmd, 0x02, fixed_sense(0x05, 0x20, 0x00))
            return
        if cmd.write:
            self._status(cmd, 0)
            return
        self._send_data(cmd, data)

    def _inquiry(self, cmd: ScsiCommand, lun: FakeLun | None) -> bytes:
        evpd = cmd.cdb[1] & 1
        page = cmd.cdb[2]
        if not evpd:
            b = bytearray(36)
            b[0] = 0x00 if lun is not None else 0x7F
            b[2] = 6
            b[3] = 2
            b[4] = 31
            b[7] = 0x02
            b[8:16] = b"BOOTINIT"
            b[16:32] = b"FAKE DISK       "
            b[32:36] = b"0001"
            return bytes(b)
        assert lun is not None
        if page == 0x00:
            pages = bytes((0x00, 0x80, 0x83) if lun.max_transfer_blocks is None
                          else (0x00, 0x80, 0x83, 0xB0))
            return bytes((0, 0, 0, len(pages))) + pages
        if page == 0xB0 and lun.max_transfer_blocks is not None:
            body = bytearray(0x3C)
            body[4:8] = lun.max_transfer_blocks.to_bytes(4, "big")
            return bytes((0, 0xB0)) + struct.pack(">H", len(body)) + bytes(body)
        if page == 0x80:
            sn = lun.serial.encode()
            return bytes((0, 0x80, 0, len(sn))) + sn
        if page == 0x83:
            desc = bytes((0x01, 0x03, 0, len(lun.naa))) + lun.naa
            return bytes((0, 0x83)) + struct.pack(">H", len(desc)) + desc
        return b""

    def _send_data(self, cmd: ScsiCommand, data: bytes) -> None:
        exp = cmd.expected_length
        residual, under, over = 0, False, False
        if len(data) < exp:
            residual, under = exp - len(data), True
        elif len(data) > exp:
            residual, over = len(data) - exp, True
            data = data[:exp]
        seg = self.init_mrdsl
        pdus: list[DataIn] = []
        for i, off in enumerate(range(0, len(data), seg)):
            pdus.append(DataIn(itt=cmd.itt, lun=cmd.lun, datasn=i, buffer_offset=off,
                               data=data[off:off + seg]))
        if self.datain_reverse:
            pdus.reverse()
            for i, p in enumerate(pdus):
                p.datasn = i
        if self.datain_hook is not None:
            pdus = self.datain_hook(cmd, pdus)
        if pdus and not self.status_in_response:
            last = pdus[-1]
            last.final = last.status_present = True
            last.status = 0
            last.residual = residual
            last.underflow = under
            last.overflow = over
        for p in pdus:
            if p.status_present:
                self.send(p)
            else:
                self.send(p, advance=False)
        if not pdus or self.status_in_response:
            self._status(cmd, 0, residual=residual, under=under, over=over)

    # -------------------------------------------------------------- injection

    def async_message(self, event: int, p1: int = 0, p2: int = 0, p3: int = 0) -> None:
        self.send(AsyncMessage(event=event, parameter1=p1, parameter2=p2, parameter3=p3))

    def reject(self, pdu: Pdu, reason: int) -> None:
        header = encode_bytes(pdu)[:48]
        self.send(Reject(reason=reason, data=header))


class Harness:
    """Drive a Session against a FakeTarget with a fake clock (see module doc)."""

    def __init__(self, target: FakeTarget, config: SessionConfig | None = None, *,
                 t0: float = 1000.0, chunk: int | None = None, seed: int = 1,
                 batch: bool = False, place: bool = False, **overrides: object) -> None:
        """``chunk``: split the target's output in random pieces of 1..chunk bytes;
        ``batch``: hand those pieces over in one :meth:`Session.receive_chunks` call
        (as the TCP glue does with one batch of frames) instead of one by one;
        ``place``: as the stack with direct placement does (netstack.tcp.placement):
        each piece's head written straight into :meth:`Session.placement_window` when
        there is one and passed as ``Placed`` (and past it, with the
        :meth:`Session.placement_next` continuation, the next header and the bytes
        after it, when its ``accept`` agrees), pieces parsed ahead
        (:meth:`Session.parse_ahead`) or received, at random."""
        self.now = t0
        self.target = target
        if config is None:
            kw: dict[str, object] = {
                "initiator_name": INITIATOR_NAME, "portal": Portal("10.0.0.1", 3260),
                "target_name": TARGET_NAME, "nop_interval": None,
                "isid": bytes.fromhex("400000000001"),
            }
            kw.update(overrides)
            config = SessionConfig(**kw)  # type: ignore[arg-type]
        self.session = Session(config, now=self.now)
        self.chunk = chunk
        self.batch = batch
        self.place = place
        self.placed = 0
        self.placed_ahead = 0  # pieces taken with a continuation (placement_next)
        self.missed_ahead = 0  # pieces a continuation refused
        self.rng = random.Random(seed)
        self.up = False
        self.connects: list[Portal] = []
        self.to_target = 0
        self.refuse_until = 0.0

    def step(self) -> bool:
        """Move bytes and act on transport requests; True if anything happened."""
        s, t = self.session, self.target
        moved = False
        act = s.transport_action()
        if act is not None:
            kind, portal = act
            moved = True
            if kind == "connect":
                assert portal is not None
                self.connects.append(portal)
                s.connection_started(self.now)
                if not t.accepting_connections(self.now, self.refuse_until):
                    s.connection_lost("refused", self.now)
                else:
                    t.new_connection()
                    self.up = True
                    s.connection_made(self.now)
            else:
                self.up = False
                t.dropped = True
                s.transport_closed()
        if self.up and t.dropped:
            self.up = False
            s.connection_lost("reset by peer", self.now)
            return True
        if self.up:
            out = s.data_to_send()
            if out:
                moved = True
                self.to_target += len(out)
                t.receive(out)
            back = t.take_output()
            if back:
                moved = True
                if self.place:
                    self._deliver_placed(back)
                elif self.chunk and self.batch:
                    pieces: list[bytes | memoryview] = []
                    pos = 0
                    while pos < len(back):
                        n = self.rng.randint(1, self.chunk)
                        pieces.append(memoryview(back)[pos:pos + n])
                        pos += n
                    s.receive_chunks(pieces, self.now)
                elif self.chunk:
                    pos = 0
                    while pos < len(back) and self.up:
                        n = self.rng.randint(1, self.chunk)
                        s.receive(back[pos:pos + n], self.now)
                        pos += n
                else:
                    s.receive(back, self.now)
        return moved

    def _deliver_placed(self, back: bytes) -> None:
        s = self.session
        pos = 0
        while pos < len(back) and self.up:
            n = self.rng.randint(1, self.chunk or len(back))
            end = min(pos + n, len(back))
            chunks: list[bytes | Placed] = []
            window = s.placement_window()
            then = s.placement_next()
            adopted: memoryview | None = None
            if then is not None and self.rng.random() < 0.8:
                # the stack's _recv_placed with a continuation: window, gap,
                # continuation, spill in one readv; taken only when the continuation
                # accepts the gap, else the whole piece as ordinary bytes (what readv
                # wrote stays where it went)
                k = min(len(window) if window is not None else 0, end - pos)
                if window is not None:
                    window[:k] = back[pos:pos + k]
                g = back[pos + k:min(end, pos + k + then.gap)]
                m = min(len(then.buf), max(0, end - (pos + k + then.gap)))
                then.buf[:m] = back[pos + k + then.gap:pos + k + then.gap + m]
                span = then.accept(memoryview(g), m) if len(g) == then.gap else 0
                if not m or span:
                    # (a piece that ends before the continuation's buffer needs no
                    # accept: its bytes past the window are ordinary ones); the
                    # connection's window from then on: the span the header gave
                    if span > m:
                        adopted = then.buf[m:span]
                    chunks += [Placed(k)] if k else []
                    chunks += [g] if g else []
                    chunks += [Placed(m)] if m else []
                    self.placed += k + m
                    self.placed_ahead += bool(m)
                    pos += k + len(g) + m
                else:
                    self.missed_ahead += 1
                window = None
            if window is not None:
                k = min(len(window), end - pos)
                window[:k] = back[pos:pos + k]
                chunks.append(Placed(k))
                self.placed += k
                pos += k
            if pos < end:
                chunks.append(back[pos:end])
            pos = end
            if s.can_parse_ahead() and self.rng.random() < 0.7:
                ahead = s.parse_ahead(chunks)  # the window after the parse
                now_w = s.placement_window()
                assert (ahead is None) == (now_w is None)
                assert ahead is None or now_w is None or (
                    ahead.obj is now_w.obj and len(ahead) == len(now_w)
                    and bytes(ahead[:1]) == bytes(now_w[:1]))
            else:
                s.receive_chunks(chunks, self.now)
            if adopted is not None and self.up:
                # where the stack goes on placing is where the parser now wants it
                now_w = s.placement_window()
                assert now_w is not None and len(now_w) == len(adopted)
                for mark in (0xA5, 0x5A):  # (not yet received: written over later)
                    adopted[0] = mark
                    assert now_w[0] == mark
        if s.has_parsed_ahead():
            s.receive_chunks([], self.now)

    def settle(self) -> None:
        for _ in range(100000):
            if not self.step():
                return
        raise AssertionError("no quiescence")

    def run_until(self, pred: Callable[[], bool], max_time: float = 600.0) -> None:
        end = self.now + max_time
        while True:
            self.settle()
            if pred():
                return
            d = self.session.next_deadline()
            if d is None or d > end:
                raise AssertionError(f"stuck at t={self.now - 1000:.3f}: state "
                                     f"{self.session.state}, deadline {d}")
            self.now = max(self.now, d)
            self.session.on_deadline(self.now)

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while True:
            self.settle()
            d = self.session.next_deadline()
            if d is None or d > end:
                self.now = end
                self.session.on_deadline(self.now)
                self.settle()
                return
            self.now = max(self.now, d)
            self.session.on_deadline(self.now)

    def login(self) -> Session:
        self.run_until(lambda: self.session.ready, 60)
        return self.session
